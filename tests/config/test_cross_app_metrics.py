"""A metric naming another app (``app: web``): what a file of apps accepts, and each
mistake named by file, line and field (issue 14, cross-service evidence)."""

from __future__ import annotations

from pathlib import Path

import pytest

from entrega.config.apps import load_apps
from entrega.errors import ConfigError

TOP = 'server: {listen: "127.0.0.1:7996"}\napps:\n'
WEB = """\
  - app: web
    run: {command: "python app.py"}
    environments:
      - name: production
        router: {kind: embedded, listen: "127.0.0.1:18302"}
"""
API = """\
  - app: api
    run: {command: "python app.py"}
    environments:
      - name: production
        router: {kind: embedded, listen: "127.0.0.1:18301"}
        strategy:
          canary:
            steps:
              - weight: 10
              - analysis: {duration_s: 20, metrics: [web-errors]}
        analysis:
          web-errors: METRIC
"""
GOOD = "{app: web, measure: error-rate, judge: sequential, max_increase: 0.01}"
SINGLE = """\
app: shop
run: {command: "python app.py"}
environments:
  - name: production
    router: {kind: embedded, listen: "127.0.0.1:18303"}
    analysis:
      web-errors: METRIC
"""


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "entrega.yaml").write_text(text)
    return tmp_path / "entrega.yaml"


def test_a_metric_of_another_app_reads_that_apps_environment(tmp_path: Path) -> None:
    apps = load_apps(write(tmp_path, TOP + API.replace("METRIC", GOOD) + WEB))
    metric = apps.app("api").environment("production").analysis["web-errors"]
    assert metric.peer("production") == ("web", "production")
    named = GOOD.replace("app: web", "app: web, environment: staging")
    assert apps.app("api").environment("production").analysis["web-errors"].app == "web"
    # an explicit environment wins over the analysing one's name
    assert load_apps(write(tmp_path, TOP + API.replace("METRIC", named)
                           + WEB.replace("name: production", "name: staging"))) \
        .app("api").environment("production").analysis["web-errors"] \
        .peer("production") == ("web", "staging")


@pytest.mark.parametrize(("text", "expected"), [
    pytest.param(TOP + API.replace("METRIC", GOOD.replace("app: web", "app: front")) + WEB,
                 "entrega.yaml:14: apps[0].environments[0].analysis.web-errors.app: names app "
                 "front, which this file does not declare", id="undeclared-app"),
    pytest.param(TOP + API.replace("METRIC", GOOD) + WEB.replace("production", "staging"),
                 "entrega.yaml:14: apps[0].environments[0].analysis.web-errors.app: names web's "
                 "environment production, which web does not have", id="no-such-environment"),
    pytest.param(TOP + API.replace("METRIC", GOOD.replace("app: web",
                                                          "app: web, environment: qa")) + WEB,
                 "names web's environment qa, which web does not have",
                 id="named-environment-missing"),
    pytest.param(TOP + API.replace("METRIC", "{app: web, prometheus: {url: 'http://p',"
                                             " query: q}, max: 1}") + WEB,
                 "not provider prometheus", id="not-the-builtin-provider"),
    pytest.param(TOP + API.replace("METRIC", "{app: web, measure: feedback, judge: sequential}")
                 + WEB, "measure: one of error-rate, latency-p50, latency-p95, latency-p99 "
                        "(got feedback)", id="feedback-is-no-router-measure"),
    pytest.param(TOP + API.replace("METRIC", "{app: web, judge: threshold, max: 0.1}") + WEB,
                 "metric 'web-errors' names app web, so it measures that app's router: "
                 "measure: one of", id="name-is-no-measure"),
    pytest.param(TOP + API.replace("METRIC", "{app: web, measure: latency-p95, "
                                             "judge: mann-whitney}") + WEB,
                 "use judge: quantile for another app's latency", id="mann-whitney"),
    pytest.param(TOP + API.replace("METRIC", "{environment: production, measure: error-rate}")
                 + WEB, "environment names another app's environment: set app: too",
                 id="environment-without-app"),
    pytest.param(SINGLE.replace("METRIC", GOOD),
                 "entrega.yaml:7: environments[0].analysis.web-errors.app: names app web, but "
                 "this file declares only shop", id="single-app-file"),
    pytest.param(SINGLE.replace("METRIC", GOOD.replace("app: web", "app: shop, environment: "
                                                                   "staging")),
                 "names environment staging of shop, which has none of that name",
                 id="single-app-own-missing-environment"),
])
def test_mistakes_name_the_field(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_apps(write(tmp_path, text), shown_as="entrega.yaml")
    shown = str(caught.value)
    assert expected in shown, shown
    assert "Error" not in shown and str(tmp_path) not in shown  # no class, no server path

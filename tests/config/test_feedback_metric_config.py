"""The built-in ``feedback`` metric in entrega.yaml: named by a step, off unless named."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from entrega.cli.init_template import render
from entrega.cli.main import app
from entrega.config import load_config
from entrega.errors import ConfigError

CONFIG = """\
app: shop
run:
  command: "python app.py"
environments:
  - name: production
    router: {kind: embedded, listen: "127.0.0.1:8080"}
    strategy:
      canary:
        steps:
          - weight: 10
          - analysis: {duration_s: 60, metrics: [error-rate, feedback]}
          - weight: 100
"""


def test_a_step_names_the_built_in_feedback_metric(tmp_path: Path) -> None:
    path = tmp_path / "entrega.yaml"
    path.write_text(CONFIG)
    metric = load_config(path).environment("production").metric("feedback")
    assert (metric.provider, metric.judge, metric.measure) == ("builtin", "sequential",
                                                              "feedback")
    assert metric.max_increase == 0.05 and metric.alpha == 0.01
    result = CliRunner().invoke(app, ["config", "validate", "-c", str(path)])
    assert result.exit_code == 0, result.output
    # the console wraps long lines (the file's path comes first): words, not line breaks
    assert "valid (shop, environments: production)" in " ".join(result.stdout.split())


def test_a_feedback_entry_may_set_its_own_bounds(tmp_path: Path) -> None:
    path = tmp_path / "entrega.yaml"
    path.write_text(CONFIG + "    analysis:\n"
                    "      feedback: {judge: sequential, max_ratio: 1.5, min_requests: 10}\n")
    metric = load_config(path).environment("production").metric("feedback")
    assert (metric.judge, metric.max_ratio, metric.min_requests) == ("sequential", 1.5, 10)


@pytest.mark.parametrize(("entry", "line", "expected"), [
    pytest.param("feedback: {max_increase: 0.1}", 14,
                 "metric feedback measures ratings, judged by judge: sequential "
                 "(got judge: threshold)", id="named-feedback-with-another-judge"),
    pytest.param("ratings: {measure: feedback, judge: mann-whitney}", 14,
                 "measure feedback is judged by judge: sequential", id="measure-feedback"),
])
def test_feedback_is_judged_only_by_the_sequential_test(tmp_path: Path, entry: str,
                                                        line: int, expected: str) -> None:
    path = tmp_path / "entrega.yaml"
    path.write_text(CONFIG + f"    analysis:\n      {entry}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:{line}: environments[0].analysis"), message
    assert expected in message


def test_feedback_is_off_by_default(tmp_path: Path) -> None:
    path = tmp_path / "entrega.yaml"
    path.write_text(render("shop", "python app.py"))
    config = load_config(path)
    named = {metric for env in config.environments
             for step in (env.strategy.canary.steps if env.strategy.canary else [])
             if step.analysis for metric in step.analysis.metrics}
    assert named and "feedback" not in named

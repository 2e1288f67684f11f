"""The analysis part of entrega.yaml: judges, providers and what goes with what."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from entrega.config import MetricConfig


@pytest.mark.parametrize(("data", "provider", "judge"), [
    pytest.param({}, "builtin", "threshold", id="defaults"),
    pytest.param({"judge": "sequential", "max_increase": 0.01}, "builtin", "sequential",
                 id="sequential"),
    pytest.param({"judge": "mann-whitney", "max_ratio": 1.2}, "builtin", "mann-whitney",
                 id="mann-whitney"),
    pytest.param({"prometheus": {"url": "http://p:9090", "query": "up"}, "max": 1},
                 "prometheus", "threshold", id="provider-from-its-section"),
    pytest.param({"http": {"url": "http://x/{release}", "select": "$.a[0].b"}}, "http",
                 "threshold", id="http"),
    pytest.param({"judge": "sequential", "measure": "feedback", "max_increase": 0.05},
                 "builtin", "sequential", id="feedback"),
])
def test_valid(data, provider, judge):
    cfg = MetricConfig.model_validate(data)
    assert (cfg.provider, cfg.judge) == (provider, judge)


@pytest.mark.parametrize(("data", "message"), [
    pytest.param({"provider": "prometheus"}, "needs prometheus:", id="prometheus-settings"),
    pytest.param({"provider": "http"}, "needs http:", id="http-settings"),
    pytest.param({"http": {"url": "u", "select": "$.a"}, "judge": "sequential"},
                 "use judge: threshold", id="statistical-judge-needs-builtin"),
    pytest.param({"judge": "sequential", "measure": "latency-p95"}, "error counts",
                 id="sequential-on-latency"),
    pytest.param({"judge": "mann-whitney", "measure": "error-rate"}, "latencies",
                 id="mann-whitney-on-errors"),
    pytest.param({"judge": "sequential", "max": 0.05}, "absolute bound of judge threshold",
                 id="max-is-threshold-only"),
    pytest.param({"measure": "feedback"}, "measure feedback is judged by judge: sequential",
                 id="feedback-needs-sequential"),
    pytest.param({"judge": "mann-whitney", "measure": "feedback"},
                 "measure feedback is judged by judge: sequential",
                 id="feedback-is-no-latency"),
    pytest.param({"http": {"url": "u", "select": "data.x"}}, "should match pattern",
                 id="selector-starts-with-dollar"),
    pytest.param({"judge": "bayes"}, "Input should be", id="unknown-judge"),
    pytest.param({"judge": "sequential", "alpha": 0}, "greater than 0", id="alpha-range"),
])
def test_invalid(data, message):
    with pytest.raises(ValidationError, match=message):
        MetricConfig.model_validate(data)

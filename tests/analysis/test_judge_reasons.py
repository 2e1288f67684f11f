"""A verdict's reason states the rule as it was configured.

``max_increase: 0.002`` was once reported as "above 1x stable's": the operator could not
tell from the reason which bound had been crossed. Every judge now quotes its bound with
the config's own name and number. The metrics are configured as in entrega.yaml and judged
through ``evaluate_window``, the controller's entry point.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from entrega.analysis.evaluate import evaluate_window
from entrega.analysis.judges.sequential import format_points
from entrega.analysis.providers.base import Measurement
from entrega.config import DEFAULT_METRICS, MetricConfig
from entrega.routers.base import LATENCY_BUCKETS_MS, ReleaseMetrics

from .conftest import hist, snapshot

BASELINE = {"started_at": 1.0, "releases": {v: dataclasses.asdict(ReleaseMetrics(
    latency_buckets=hist())) for v in ("v1", "v2")}}


def latest(canary: ReleaseMetrics, stable: ReleaseMetrics) -> dict[str, object]:
    return {"started_at": 1.0, "releases": {"v2": dataclasses.asdict(canary),
                                            "v1": dataclasses.asdict(stable)}}


def slow(n: int, ms: float, *, seed: int) -> ReleaseMetrics:
    """``n`` requests with latency samples around ``ms`` (for the mann-whitney judge)."""
    samples = np.random.default_rng(seed).lognormal(np.log(ms), 0.3, n)
    upper = next(b for b in LATENCY_BUCKETS_MS if b >= ms * 2)
    return ReleaseMetrics(requests=n, errors_5xx=0, latency_buckets=hist((upper, n)),
                          samples_ms=tuple(float(s) for s in samples), samples_total=n)


CASES = [
    pytest.param(DEFAULT_METRICS["error-rate"], snapshot(250, 8), snapshot(2250, 11), "fail",
                 "canary error rate is more than 0.2 points above stable's "
                 "(max_increase: 0.002), with evidence", id="sequential-default-fails"),
    pytest.param(MetricConfig(judge="sequential", max_increase=0.01, max_ratio=1.5),
                 snapshot(250, 30), snapshot(2250, 11), "fail",
                 "canary error rate is more than 1 point above stable's (max_increase: 0.01) "
                 "and above 1.5x stable's (max_ratio: 1.5)", id="sequential-both-bounds"),
    pytest.param(DEFAULT_METRICS["error-rate"], snapshot(300, 4), snapshot(2700, 14),
                 "inconclusive", "not yet evidence that the canary error rate is below 4x "
                 "stable's or 1.00% (pass_ratio, pass_rate): the traffic so far does not "
                 "point to a pass yet", id="sequential-looks-worse"),
    pytest.param(DEFAULT_METRICS["error-rate"], snapshot(300, 1), snapshot(2700, 14),
                 "inconclusive", "not yet evidence that the canary error rate is below 4x "
                 "stable's or 1.00% (pass_ratio, pass_rate): about 65 more canary requests",
                 id="sequential-not-yet-evidence"),
    pytest.param(DEFAULT_METRICS["error-rate"], snapshot(1000, 2), snapshot(9000, 45),
                 "pass", "canary error rate is below 4x stable's or 1.00% (pass_ratio, "
                 "pass_rate), with evidence", id="sequential-passes"),
    pytest.param(DEFAULT_METRICS["error-rate"], snapshot(10, 0), snapshot(2700, 14),
                 "inconclusive", "10 canary requests, need 30 (min_requests: 30)",
                 id="sequential-min-requests-default"),
    pytest.param(MetricConfig(judge="threshold", measure="error-rate", max_increase=0.002),
                 snapshot(300, 9), snapshot(3000, 30), "fail",
                 "canary error rate 3.00% is more than 0.2 points above stable's 1.00% "
                 "(max_increase: 0.002)", id="threshold-max-increase"),
    pytest.param(MetricConfig(judge="threshold", measure="error-rate", max=0.02),
                 snapshot(300, 9), snapshot(3000, 30), "fail",
                 "canary error rate 3.00% is above 2.00% (max: 0.02)", id="threshold-max"),
    pytest.param(MetricConfig(judge="threshold", measure="latency-p95", max_ratio=1.2,
                              min_requests=50),
                 snapshot(100, 0, hist((100, 100))), snapshot(1000, 0, hist((50, 1000))),
                 "fail", "more than 1.2x (max_ratio: 1.2)", id="threshold-max-ratio"),
    pytest.param(MetricConfig(judge="threshold", measure="latency-p95", min_requests=50,
                              max_ratio=1.2), snapshot(20, 0), snapshot(1000, 0),
                 "inconclusive", "20 canary requests, need 50 (min_requests: 50)",
                 id="threshold-min-requests"),
    pytest.param(MetricConfig(judge="mann-whitney", max_ratio=1.5), slow(400, 100, seed=1),
                 slow(2000, 40, seed=2), "fail",
                 "canary latencies are more than 1.5x stable's (max_ratio: 1.5)",
                 id="mann-whitney-configured-ratio"),
    pytest.param(MetricConfig(judge="mann-whitney", max_ratio=1.2, min_requests=50),
                 slow(400, 40, seed=3), slow(2000, 40, seed=4), "pass",
                 "within 1.2x stable's (max_ratio: 1.2)", id="mann-whitney-passes"),
    pytest.param(MetricConfig(judge="mann-whitney", max_ratio=1.2, min_requests=50),
                 slow(30, 40, seed=5), slow(2000, 40, seed=6), "inconclusive",
                 "need 50 samples on each side (min_requests: 50)",
                 id="mann-whitney-min-requests"),
    pytest.param(DEFAULT_METRICS["latency-p95"], slow(400, 40, seed=3),
                 slow(2000, 40, seed=4), "pass",
                 "that the canary p95 is within 1.2x stable's (max_ratio: 1.2)",
                 id="quantile-default-passes"),
    pytest.param(DEFAULT_METRICS["latency-p95"], slow(30, 40, seed=5),
                 slow(2000, 40, seed=6), "inconclusive",
                 "30 canary requests, need 50 (min_requests: 50)",
                 id="quantile-min-requests-default"),
    pytest.param(DEFAULT_METRICS["latency-p95"], slow(400, 80, seed=7),
                 slow(2000, 40, seed=8), "fail",
                 "canary p95 is above 1.2x stable's (max_ratio: 1.2)", id="quantile-default-fails"),
]


@pytest.mark.parametrize(("metric", "canary", "stable", "verdict", "reason"), CASES)
def test_reason_states_the_configured_rule(metric: MetricConfig, canary: ReleaseMetrics,
                                           stable: ReleaseMetrics, verdict: str,
                                           reason: str) -> None:
    name = metric.measure or ("latency-p95" if metric.judge in ("mann-whitney", "quantile")
                              else "error-rate")
    _, _, verdicts = evaluate_window({name: metric}, baseline=BASELINE,
                                     latest=latest(canary, stable), canary="v2", stable="v1")
    assert verdicts[0].verdict == verdict, verdicts[0].reason
    assert reason in verdicts[0].reason, verdicts[0].reason


def test_a_provider_value_states_the_configured_rule() -> None:
    metric = MetricConfig(provider="prometheus", prometheus={"url": "http://p", "query": "q"},
                          max_increase=5)
    measured = {"m": {"canary": Measurement(value=12.0, query="q"),
                      "stable": Measurement(value=5.0, query="q")}}
    _, _, verdicts = evaluate_window({"m": metric}, baseline=BASELINE, latest=BASELINE,
                                     canary="v2", stable="v1", measurements=measured)
    assert verdicts[0].verdict == "fail"
    assert verdicts[0].reason == "canary value 12 is more than 5 above stable's 5 " \
                                 "(max_increase: 5)"


@pytest.mark.parametrize(("rate", "text"), [(0.002, "0.2 points"), (0.01, "1 point"),
                                             (0.0005, "0.05 points"), (0.25, "25 points")])
def test_format_points(rate: float, text: str) -> None:
    assert format_points(rate) == text

"""The threshold judge (point estimates against bounds) and the combination of verdicts."""

from __future__ import annotations

import pytest

from entrega.analysis.judges import (
    MetricVerdict,
    ThresholdRule,
    judge_analysis,
    judge_threshold,
    measure_value,
)

from .conftest import INF, counts, hist

ERR = "error-rate"
P95 = "latency-p95"
R = ThresholdRule

#: a healthy stable release: 1% errors over 1000 requests, every request 50-75 ms
STABLE = counts(1000, 10, hist((75, 1000)))

CASES = [
    # -- too little data is never a pass -------------------------------------------------
    pytest.param(ERR, R(max=0.05), counts(0), STABLE, "no-data", "no canary requests",
                 id="no-canary-requests"),
    pytest.param(P95, R(max=100), counts(5, buckets=()), STABLE, "no-data", "no measurement",
                 id="latency-without-histogram"),
    pytest.param(ERR, R(max=0.05), counts(29, 0), STABLE, "inconclusive",
                 "29 canary requests, need 30 (min_requests: 30)",
                 id="clean-but-below-min-requests"),
    pytest.param(ERR, R(max=0.05), counts(5, 1), STABLE, "inconclusive", "need 30",
                 id="over-max-below-min-requests-not-yet-certain"),
    pytest.param(P95, R(max=100), counts(10, buckets=hist((INF, 10))), STABLE,
                 "inconclusive", "need 30", id="slow-latency-waits-for-min-requests"),
    pytest.param(ERR, R(max_increase=0.01), counts(100, 0), counts(0), "inconclusive",
                 "no stable requests", id="relative-bound-without-stable-traffic"),
    pytest.param(ERR, R(max_ratio=1.5), counts(100, 0), None, "inconclusive",
                 "no stable requests", id="relative-bound-without-stable-window"),
    # -- gross failures do not wait for min_requests (error rates only) ------------------
    pytest.param(ERR, R(max=0.05), counts(2, 2), STABLE, "fail", "is above 5.00% (max: 0.05)",
                 id="gross-errors-certain-before-min-requests"),
    pytest.param(ERR, R(max_increase=0.05), counts(10, 10), STABLE, "fail",
                 "is more than 5 points above stable's 1.00% (max_increase: 0.05)",
                 id="every-request-failing-before-min-requests"),
    # -- failures ------------------------------------------------------------------------
    pytest.param(ERR, R(max=0.05), counts(100, 10), STABLE, "fail",
                 "canary error rate 10.00% is above 5.00% (max: 0.05)",
                 id="fail-on-max"),
    pytest.param(ERR, R(max_increase=0.02), counts(100, 6), STABLE, "fail",
                 "canary error rate 6.00% is more than 2 points above stable's 1.00% "
                 "(max_increase: 0.02)",
                 id="fail-on-max-increase"),
    pytest.param(P95, R(max_ratio=1.2), counts(100, buckets=hist((150, 100))), STABLE, "fail",
                 "is 2.00x stable's 73.8ms, more than 1.2x (max_ratio: 1.2)",
                 id="fail-on-max-ratio"),
    pytest.param(ERR, R(max_ratio=2), counts(100, 10), counts(1000, 0), "fail",
                 "10.00% is above stable's 0.00%, more than 2x (max_ratio: 2)",
                 id="fail-on-max-ratio-against-error-free-stable"),
    pytest.param(P95, R(max=100), counts(100, buckets=hist((150, 100))), None, "fail",
                 "canary latency-p95 147.5ms is above 100.0ms (max: 100)",
                 id="fail-on-max-without-stable"),
    # -- passes --------------------------------------------------------------------------
    pytest.param(ERR, R(max=0.05), counts(30, 1), STABLE, "pass", "3.33% (stable 1.00%)",
                 id="pass-at-min-requests"),
    pytest.param(ERR, R(max=0.05), counts(100, 5), STABLE, "pass", "5.00%",
                 id="pass-exactly-at-max"),
    pytest.param(ERR, R(max_increase=0.02), counts(100, 2), STABLE, "pass",
                 "2.00% (stable 1.00%), within max_increase: 0.02", id="pass-within-max-increase"),
    pytest.param(P95, R(max_ratio=1.2), counts(100, buckets=hist((75, 100))), STABLE, "pass",
                 "73.8ms (stable 73.8ms)", id="pass-within-max-ratio"),
    pytest.param(ERR, R(max_ratio=2), counts(100, 0), counts(1000, 0), "pass", "0.00%",
                 id="pass-error-free-against-error-free"),
    pytest.param(ERR, R(max=0.05), counts(100, 0), None, "pass", "stable n/a",
                 id="absolute-bound-needs-no-stable"),
]


@pytest.mark.parametrize(("measure", "rule", "canary", "stable", "verdict", "reason"), CASES)
def test_judge_threshold(measure, rule, canary, stable, verdict, reason):
    v = judge_threshold("m", measure, rule, canary, stable)
    assert (v.verdict, v.metric) == (verdict, "m")
    assert reason in v.reason


def test_verdict_carries_values_details_and_criticality():
    v = judge_threshold("errors", ERR, R(max=0.05, critical=False), counts(100, 10), STABLE)
    assert (v.canary, v.stable, v.critical) == (0.1, 0.01, False)
    assert v.details == {"canary_requests": 100, "stable_requests": 1000}
    assert v.to_dict()["details"] == v.details


@pytest.mark.parametrize(("measure", "window", "expected"), [
    pytest.param(ERR, counts(10, 1), 0.1, id="error-rate"),
    pytest.param("latency-p50", counts(10, buckets=hist((2, 10))), 1.5, id="latency-p50"),
    pytest.param("latency-p99", counts(0, buckets=()), None, id="latency-without-data"),
])
def test_measure_value(measure, window, expected):
    assert measure_value(measure, window) == expected


def test_unknown_measure_is_an_error():
    with pytest.raises(ValueError, match="unknown measure 'cpu'"):
        measure_value("cpu", counts(10))


def mv(metric: str, verdict: str, *, critical: bool = True) -> MetricVerdict:
    return MetricVerdict(metric, verdict, f"{metric} was {verdict}", critical=critical)  # type: ignore[arg-type]


COMBINED = [
    pytest.param([mv("err", "fail"), mv("p95", "pass")], "fail", ["err"],
                 id="critical-fail-fails-alone"),
    pytest.param([mv("err", "fail"), mv("p95", "no-data")], "fail", ["err"],
                 id="critical-fail-wins-over-missing-data"),
    pytest.param([mv("err", "fail"), mv("p95", "fail", critical=False)], "fail", ["err"],
                 id="only-critical-failures-named"),
    pytest.param([mv("err", "pass"), mv("p95", "fail", critical=False)], "pass",
                 ["err", "p95"], id="non-critical-fail-informs-and-passes"),
    pytest.param([mv("err", "pass"), mv("p95", "no-data", critical=False)], "pass",
                 ["err", "p95"], id="non-critical-no-data-does-not-block-a-pass"),
    pytest.param([mv("err", "pass"), mv("p95", "inconclusive", critical=False)], "pass",
                 ["err", "p95"], id="non-critical-inconclusive-does-not-block-a-pass"),
    pytest.param([mv("err", "inconclusive"), mv("p95", "fail", critical=False)],
                 "inconclusive", ["err"], id="non-critical-fail-never-fails"),
    pytest.param([mv("err", "no-data"), mv("p95", "pass", critical=False)], "inconclusive",
                 ["err"], id="critical-no-data-still-blocks"),
    pytest.param([mv("p95", "no-data", critical=False)], "pass", ["p95"],
                 id="only-non-critical-metrics-never-block"),
    pytest.param([mv("err", "pass"), mv("p95", "pass")], "pass", ["err", "p95"],
                 id="all-pass-pass"),
    pytest.param([mv("err", "pass"), mv("p95", "inconclusive")], "inconclusive", ["p95"],
                 id="one-inconclusive"),
    pytest.param([mv("err", "pass"), mv("p95", "no-data")], "inconclusive", ["p95"],
                 id="no-data-is-not-a-pass"),
    pytest.param([], "inconclusive", [], id="no-metrics-is-not-a-pass"),
]


@pytest.mark.parametrize(("verdicts", "expected", "named"), COMBINED)
def test_judge_analysis(verdicts, expected, named):
    result, reason = judge_analysis(verdicts)
    assert result == expected
    for v in verdicts:
        assert (v.metric in reason) == (v.metric in named), reason

"""The quantile judge: p95/p99 from every request of the window, its two guarantees, and
the regressions the old rank tests could not see (a slower tail with the median unchanged).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from entrega.analysis.judges.quantile import (
    QuantileRule,
    compute_confidence_ranks,
    compute_log_ratio,
    compute_quantile_evidence,
    compute_u_sketches,
    decide_quantile,
    judge_quantile,
)
from entrega.analysis.window import WindowCounts
from entrega.dataplane.sketch import LatencySketch

P95 = QuantileRule(quantile=0.95, max_ratio=1.2, pass_ratio=1.4)
P99 = QuantileRule(quantile=0.99, max_ratio=1.5, pass_ratio=2.0)


def sketch(values: np.ndarray) -> LatencySketch:
    s = LatencySketch()
    for v in values:
        s.add(float(v))
    return s


def window(values: np.ndarray, duration_s: float = 0.0) -> WindowCounts:
    return WindowCounts(len(values), 0, (), sketch=sketch(values), duration_s=duration_s)


def lognormal(seed: int, n: int, median: float = 40.0, sigma: float = 0.6) -> np.ndarray:
    return np.random.default_rng(seed).lognormal(math.log(median), sigma, n)


def tail_slower(values: np.ndarray, share: float, factor: float) -> np.ndarray:
    """The slowest ``share`` of the requests ``factor`` times slower."""
    cut = np.quantile(values, 1 - share)
    return np.where(values > cut, values * factor, values)


STABLE = lognormal(1, 9000)
CASES = [
    pytest.param(P95, lognormal(2, 1000), "pass", "within 1.2x", id="p95-healthy-passes"),
    pytest.param(P99, lognormal(3, 1000), "pass", "within 1.5x", id="p99-healthy-passes"),
    pytest.param(P95, lognormal(4, 100), "inconclusive", "not yet evidence",
                 id="p95-thin-traffic-not-yet"),
    pytest.param(P95, lognormal(5, 30), "inconclusive", "need 50 (min_requests: 50)",
                 id="min-requests"),
    pytest.param(P95, lognormal(6, 200) * 1.3, "fail", "slower across the board",
                 id="x1.3-everywhere-fails-on-location"),
    pytest.param(P99, tail_slower(lognormal(7, 300), 0.05, 3.0), "fail",
                 "canary p99 is above 1.5x", id="slowest-5pct-x3-fails-p99"),
    pytest.param(P99, tail_slower(lognormal(8, 3000), 0.02, 10.0), "fail",
                 "canary p99 is above 1.5x", id="2pct-x10-fails-p99"),
    pytest.param(P95, lognormal(9, 3000) * 1.1, "inconclusive", "",
                 id="x1.1-within-max-ratio-never-fails"),
]


@pytest.mark.parametrize(("rule", "canary", "verdict", "reason"), CASES)
def test_judge_quantile(rule, canary, verdict, reason):
    v = judge_quantile("latency", rule, window(canary), window(STABLE))
    assert v.verdict in ((verdict,) if verdict != "inconclusive" or reason else
                         ("inconclusive", "pass")), v.reason
    assert reason in v.reason, v.reason


def test_a_tail_regression_leaves_the_median_and_p95_alone_but_not_p99():
    canary = tail_slower(lognormal(10, 2000), 0.02, 10.0)
    assert judge_quantile("p95", P95, window(canary), window(STABLE)).verdict != "fail"
    assert judge_quantile("p99", P99, window(canary), window(STABLE)).verdict == "fail"


def test_thin_traffic_says_how_long_it_needs():
    v = judge_quantile("latency", P99, window(lognormal(11, 120), duration_s=12.0),
                       window(STABLE))
    assert v.verdict == "inconclusive"
    assert "more at 10 req/s" in v.reason and v.details["needs_s"] > 0


def test_no_sketch_falls_back_to_the_ring_and_no_data_says_so():
    ring = WindowCounts(1000, 0, (), samples_ms=tuple(lognormal(12, 1000)), samples_window=1000)
    stable = WindowCounts(9000, 0, (), samples_ms=tuple(STABLE), samples_window=9000)
    assert judge_quantile("latency", P95, ring, stable).verdict == "pass"
    empty = WindowCounts(1000, 0, ())
    v = judge_quantile("latency", P95, empty, stable)
    assert v.verdict == "no-data" and "no canary latency data" in v.reason


def test_u_of_sketches_matches_the_definition():
    a, b = sketch(np.array([1.0, 2.0, 3.0])), sketch(np.array([2.0, 5.0]))
    u, ties = compute_u_sketches(a, b)
    # pairs (a > b) + half the ties: 3>2 counts 1, 2=2 counts 0.5 -> 1.5
    assert u == 1.5 and ties == 6.0  # one tied group of 2: 2**3 - 2


def test_confidence_ranks_bracket_the_quantile():
    low, high = compute_confidence_ranks(10_000, 0.99)
    assert low < 9900 < high and high - low < 60


def test_mixture_ratio_is_evidence_in_the_right_direction():
    assert compute_log_ratio(20, 200, 0.05, ((2.0, 1.0),)) > 0  # 10% slow: above 5%
    assert compute_log_ratio(2, 200, 0.05, ((2.0, 1.0),)) < 0


def _ever(rule: QuantileRule, canary_draw, runs: int, checks: int, per_check: int,
          seed: int) -> tuple[float, float]:
    """Shares of runs that ever fail / ever pass when judged after every ``per_check``
    canary requests (stable at 9x), ``checks`` times."""
    rng = np.random.default_rng(seed)
    failed = passed = 0
    for _ in range(runs):
        c, s = LatencySketch(), LatencySketch()
        ever_fail = ever_pass = False
        for _ in range(checks):
            for v in canary_draw(rng, per_check):
                c.add(float(v))
            for v in rng.lognormal(math.log(40), 0.6, 9 * per_check):
                s.add(float(v))
            verdict, _ = decide_quantile(rule, compute_quantile_evidence(rule, c, s))
            ever_fail |= verdict == "fail"
            ever_pass |= verdict == "pass"
            if ever_fail:
                break
        failed += ever_fail
        passed += ever_pass and not ever_fail
    return failed / runs, passed / runs


def test_a_canary_as_good_as_stable_rarely_fails_however_often_it_is_checked():
    """alpha = 1%, checked every 10 canary requests for 3,000 requests."""
    fail, _ = _ever(P95, lambda rng, n: rng.lognormal(math.log(40), 0.6, n), runs=150,
                    checks=300, per_check=10, seed=1)
    assert fail <= 0.03


def test_a_canary_at_the_pass_margin_rarely_passes_however_often_it_is_checked():
    """beta = 5%: a canary whose p99 is exactly pass_ratio x stable's (its slowest 1% made
    slower) passes at most that often, judged every 10 requests."""
    rule = QuantileRule(quantile=0.99, max_ratio=2.0, pass_ratio=2.0)
    p99 = 40 * math.exp(0.6 * 2.3263)

    def at_margin(rng: np.random.Generator, n: int) -> np.ndarray:
        v = rng.lognormal(math.log(40), 0.6, n)
        return np.where(v > p99, np.maximum(v, 2.0 * p99), v)

    _, passed = _ever(rule, at_margin, runs=150, checks=150, per_check=10, seed=2)
    assert passed <= 0.1

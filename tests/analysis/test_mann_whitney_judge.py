"""The mann-whitney judge on request latencies, including Kayenta's weak spots."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st

from entrega.analysis.judges import MannWhitneyRule, judge_mann_whitney
from entrega.analysis.judges.mann_whitney import align_samples, compute_p_greater
from entrega.analysis.window import WindowCounts

RULE = MannWhitneyRule(max_ratio=1.2, quantile=0.95, min_requests=50)


def window(samples, *, total: int | None = None) -> WindowCounts:
    samples = tuple(float(s) for s in samples)
    n = len(samples) if total is None else total
    return WindowCounts(n, 0, (), samples, n)


def lognormal(seed: int, n: int, *, median: float = 40.0, sigma: float = 0.6):
    return np.random.default_rng(seed).lognormal(np.log(median), sigma, n)


STABLE = window(lognormal(1, 2000))

CASES = [
    pytest.param(window([]), STABLE, "no-data", "no canary requests", id="no-canary"),
    pytest.param(WindowCounts(40, 0, (), (), 0), STABLE, "no-data", "no canary latency samples",
                 id="snapshot-without-samples"),
    pytest.param(window(lognormal(2, 100)), None, "inconclusive", "no stable", id="no-stable"),
    pytest.param(window(lognormal(3, 8)), STABLE, "inconclusive", "too few samples",
                 id="below-test-minimum"),
    pytest.param(window(lognormal(4, 30)), STABLE, "inconclusive",
                 "need 50 samples on each side (min_requests: 50)",
                 id="below-min-requests"),
    pytest.param(window(lognormal(5, 500)), STABLE, "pass", "canary p95", id="same-latency"),
    pytest.param(window(lognormal(6, 500, median=44)), STABLE, "pass",
                 "within 1.2x stable's (max_ratio: 1.2)",
                 id="ten-percent-slower-is-allowed"),
    pytest.param(window(lognormal(7, 500, median=60)), STABLE, "fail", "all requests",
                 id="fifty-percent-slower-fails"),
    pytest.param(window(lognormal(8, 30, median=400)), STABLE, "fail",
                 "canary latencies are more than 1.2x stable's (max_ratio: 1.2)",
                 id="gross-regression-fails-before-min-requests"),
    # Kayenta's weak spot: a few huge values dominate per-interval averages; ranks cap them.
    pytest.param(window(np.concatenate([lognormal(9, 990), np.full(10, 30_000.0)])), STABLE,
                 "pass", "canary p95", id="a-few-huge-values"),
    # ...and a change in variance only: same median, p95 up 1.8x; the tail test sees it.
    pytest.param(window(lognormal(10, 2000, sigma=1.0)), STABLE, "fail", "the slow tail",
                 id="variance-only-change"),
]


@pytest.mark.parametrize(("canary", "stable", "verdict", "reason"), CASES)
def test_judge_mann_whitney(canary, stable, verdict, reason):
    v = judge_mann_whitney("p95", RULE, canary, stable)
    assert v.verdict == verdict, v.reason
    assert reason in v.reason


def test_variance_only_change_is_invisible_to_the_location_test():
    v = judge_mann_whitney("p95", RULE, window(lognormal(10, 2000, sigma=1.0)), STABLE)
    assert v.details["p_location"] > 0.5
    assert v.details["p_tail"] < v.details["fail_below_p"]
    assert v.canary is not None and v.stable is not None and v.canary > 1.5 * v.stable


def test_p50_has_no_tail_test():
    rule = MannWhitneyRule(quantile=0.5)
    v = judge_mann_whitney("p50", rule, window(lognormal(5, 500)), STABLE)
    assert "p_tail" not in v.details and v.verdict == "pass"


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 30), min_size=2, max_size=60),
       st.lists(st.integers(0, 30), min_size=2, max_size=60))
def test_p_value_matches_scipy_with_ties(x, y):
    xs, ys = np.asarray(x, float), np.asarray(y, float)
    pooled = np.concatenate([xs, ys])
    ranks = scipy.stats.rankdata(pooled)
    u = ranks[: len(xs)].sum() - len(xs) * (len(xs) + 1) / 2
    _, c = np.unique(pooled, return_counts=True)
    ties = float((c.astype(float) ** 3 - c).sum())
    ours = float(compute_p_greater(u, len(xs), len(ys), ties))
    theirs = scipy.stats.mannwhitneyu(xs, ys, alternative="greater", method="asymptotic").pvalue
    if np.isnan(theirs):
        assert ours == 1.0
    else:
        assert ours == pytest.approx(theirs, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize(("canary", "stable", "expected"), [
    pytest.param(window(range(100)), window(range(500)), (100, 500), id="rings-hold-all"),
    pytest.param(window(range(100)), window(range(2048), total=10240), (20, 2048),
                 id="stable-ring-holds-last-fifth"),
    pytest.param(window(range(2048), total=4096), window(range(2048), total=40960),
                 (205, 2048), id="both-overflowed"),
])
def test_align_samples_takes_the_same_recent_span(canary, stable, expected):
    xs, ys = align_samples(canary, stable)
    assert (len(xs), len(ys)) == expected
    assert xs == canary.samples_ms[len(canary.samples_ms) - len(xs):]  # the newest

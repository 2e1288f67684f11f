"""The sequential judge on error counts: known cases, its false-alarm bound, its guard."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from entrega.analysis.judges import SequentialRule, judge_sequential
from entrega.analysis.judges.sequential import compute_log_evidence, decide_sequential

from .conftest import counts

RULE = SequentialRule(max_increase=0.002)

CASES = [
    pytest.param(counts(0), counts(1000, 5), "no-data", "no canary requests",
                 id="no-canary-requests"),
    pytest.param(counts(100, 0), None, "inconclusive", "no stable requests",
                 id="no-stable-window"),
    pytest.param(counts(100, 0), counts(0), "inconclusive", "no stable requests",
                 id="no-stable-traffic"),
    pytest.param(counts(20, 0), counts(180, 1), "inconclusive",
                 "20 canary requests, need 30 (min_requests: 30)",
                 id="clean-but-few-requests"),
    pytest.param(counts(300, 1), counts(2700, 14), "inconclusive",
                 "about 65 more canary requests", id="healthy-canary-not-yet-evidence"),
    pytest.param(counts(1000, 2), counts(9000, 45), "pass", "canary 0.20% (2/1000)",
                 id="healthy-canary-passes"),
    pytest.param(counts(300, 0), counts(2700, 0), "inconclusive", "more canary requests",
                 id="no-errors-anywhere-not-yet"),
    pytest.param(counts(600, 0), counts(5400, 0), "pass", "canary 0.00%",
                 id="no-errors-anywhere-passes"),
    pytest.param(counts(250, 8), counts(2250, 11), "fail",
                 "canary error rate is more than 0.2 points above stable's (max_increase: 0.002)",
                 id="x5-at-10rps-after-25s"),
    pytest.param(counts(100, 5), counts(900, 4), "fail", "evidence",
                 id="x10-at-100rps-first-second"),
    pytest.param(counts(300, 4), counts(2700, 14), "inconclusive", "does not point to a pass",
                 id="looks-worse-not-yet-sure"),
    # Kayenta's weak spot: a counter that is almost always zero. Per-minute rates are a
    # column of zeros with a few ones; pooled counts are plain evidence.
    pytest.param(counts(1000, 6), counts(9000, 0), "fail", "(6/1000)",
                 id="sparse-counter-mostly-zero"),
    # At high volume a x3 of a tiny rate is significant but harmless: the guard holds.
    pytest.param(counts(1_000_000, 300), counts(9_000_000, 900), "pass", "canary 0.03%",
                 id="tiny-absolute-increase-at-high-volume"),
]


@pytest.mark.parametrize(("canary", "stable", "verdict", "reason"), CASES)
def test_judge_sequential(canary, stable, verdict, reason):
    v = judge_sequential("errors", RULE, canary, stable)
    assert v.verdict == verdict, v.reason
    assert reason in v.reason


def test_guarded_case_is_significant_without_the_guard():
    assert judge_sequential("e", SequentialRule(), counts(1_000_000, 300),
                            counts(9_000_000, 900)).verdict == "fail"


def test_max_ratio_moves_the_null():
    canary, stable = counts(5000, 100), counts(45000, 450)  # exactly 2x
    assert judge_sequential("e", SequentialRule(), canary, stable).verdict == "fail"
    assert judge_sequential("e", SequentialRule(max_ratio=2.0), canary,
                            stable).verdict != "fail"


def test_verdict_explains_its_numbers():
    v = judge_sequential("errors", RULE, counts(250, 8), counts(2250, 11))
    assert (v.canary, v.stable) == (8 / 250, 11 / 2250)
    d = v.details
    assert (d["canary_errors"], d["stable_requests"]) == (8, 2250)
    assert d["log_evidence"] >= d["fail_at"] == round(math.log(100), 3)


def test_no_errors_is_no_evidence():
    assert compute_log_evidence(0, 100, 0, 900) == 0.0
    assert compute_log_evidence(3, 0, 1, 900) == 0.0


@given(st.integers(0, 50), st.integers(0, 200), st.integers(1, 2000), st.integers(1, 20000))
def test_more_canary_errors_is_more_evidence(kc, ks, nc, ns):
    assert compute_log_evidence(kc + 1, nc, ks, ns) > compute_log_evidence(kc, nc, ks, ns)


@pytest.mark.parametrize("canary_rps", [1, 10, 100])
def test_healthy_canaries_checked_every_second_rarely_fail(canary_rps):
    """Ville's bound, simulated: 15 minutes of checks, once a second, of a canary exactly
    as good as stable (both at 0.5% with a shared, bursty error rate)."""
    rng = np.random.default_rng(canary_rps)
    runs, seconds = 200, 900
    shared = np.exp(rng.normal(0, 0.4, (runs, seconds)))
    nc = np.cumsum(rng.poisson(canary_rps, (runs, seconds)), axis=1)
    ns = np.cumsum(rng.poisson(9 * canary_rps, (runs, seconds)), axis=1)
    kc = np.cumsum(rng.poisson(canary_rps * 0.005 * shared), axis=1)
    ks = np.cumsum(rng.poisson(9 * canary_rps * 0.005 * shared), axis=1)
    rule = SequentialRule()
    failed = 0
    for run in range(runs):
        for t in range(0, seconds, 1):
            if decide_sequential(rule, int(kc[run, t]), int(nc[run, t]), int(ks[run, t]),
                                 int(ns[run, t]))[0] == "fail":
                failed += 1
                break
    # alpha = 1%: at most 2 of 200 expected at the bound, and the real rate is lower
    assert failed <= 5

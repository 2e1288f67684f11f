"""The ``mann-whitney`` judge: request-level latencies against stable's, with an allowed ratio.

The samples. Each request's latency from the router's ring (see ``window.py``), never
per-interval averages: a minute's p95 is one number, a minute's requests are thousands.
Canary and stable see the same noise only over the same stretch of time, so both samples
are cut to the most recent common fraction of the window: if stable's ring holds the last
20% of its window's requests and canary's all of them, the judge takes the last 20% of
each (arrivals are close to uniform within a window, so that is the same time span).

The tests. H0: canary latencies are stochastically no larger than ``max_ratio`` x stable's
(so the canary's percentiles are at most ``max_ratio`` x stable's). Two one-sided
Mann-Whitney U tests of canary against stable scaled by ``max_ratio``:

- *location*: on all samples, the most powerful for a canary slower across the board;
- *tail*: on samples censored below the pooled ``2q - 1`` quantile (p90 for latency-p95),
  so only the upper tail is ranked: it catches a change in variance only, where the
  median stays put and p95 grows, which the location test cannot see. Censoring at a
  pooled quantile is a monotone map, so stochastic order, and H0, is preserved.

A handful of huge values moves neither test much: ranks cap each value's weight, so a
canary with a few pathological requests does not fail a p95 criterion it meets.

The false-alarm bound. Each test runs at ``alpha / (2 * max_checks)`` (Bonferroni over the
two tests and up to ``max_checks`` checks of one window): whatever the correlation between
checks, P(a canary within H0 ever fails within max_checks checks) <= ``alpha``. The U
statistic uses the normal approximation with tie correction and continuity correction,
as ``scipy.stats.mannwhitneyu(method="asymptotic")`` does; failing needs at least
:data:`MIN_TEST_SAMPLES` samples on each side, where that approximation holds.

Pass and inconclusive: ``pass`` needs ``min_requests`` samples on each side and the
observed percentile within ``max_ratio`` of stable's; a canary that looks slower without
significance is ``inconclusive``.

Standard library only. Midranks, the tie term, the normal tail (``erfc``) and numpy's
default (linear) quantile are a few lines each, so the default ``latency-p95`` metric
needs no optional extra: a missing scipy can no longer surface only when a canary is
first judged. The tests hold these against scipy's values to 1e-9 and against a table of
known p-values. The cost is a pure-Python sort of both rings once per check (a few ms
for the ring's 2 x 2048 samples).
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from entrega.analysis.judges.base import MetricVerdict
from entrega.analysis.window import WindowCounts

#: Below this many samples on either side the normal approximation is too rough to fail on.
MIN_TEST_SAMPLES = 10


@dataclass(frozen=True)
class MannWhitneyRule:
    #: H0: canary latencies at most this times stable's (1.2: p95 may grow by 20%).
    max_ratio: float = 1.2
    #: The percentile the metric is about (0.95 for latency-p95): it sets the tail test.
    quantile: float = 0.95
    #: P(a canary within max_ratio ever fails within max_checks checks of one window).
    alpha: float = 0.01
    #: Checks of one window the bound covers (an hour of the default 1 s checks).
    max_checks: int = 3600
    #: Samples needed on each side before the judge can pass.
    min_requests: int = 50
    critical: bool = True


def align_samples(canary: WindowCounts, stable: WindowCounts,
                  ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The most recent common fraction of the window from both rings (module docstring)."""
    def covered(w: WindowCounts) -> float:
        return len(w.samples_ms) / w.samples_window if w.samples_window else 1.0

    fraction = min(1.0, covered(canary), covered(stable))

    def tail(w: WindowCounts) -> tuple[float, ...]:
        take = min(len(w.samples_ms), math.ceil(fraction * w.samples_window - 1e-9))
        return w.samples_ms[len(w.samples_ms) - take:] if take > 0 else ()

    return tail(canary), tail(stable)


def compute_quantile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile by linear interpolation between order statistics: numpy's
    default method, with its interpolation formula (so the figures shown are numpy's)."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("the quantile of no values")
    h = (len(ordered) - 1) * q
    low = math.floor(h)
    a, b = ordered[low], ordered[min(low + 1, len(ordered) - 1)]
    t = h - low
    # numpy's _lerp: from the nearer end, so q = 1 gives the maximum exactly
    return b - (b - a) * (1 - t) if t >= 0.5 else a + (b - a) * t


def compute_u(first: Sequence[float], second: Sequence[float]) -> tuple[float, float]:
    """U of ``first`` against ``second`` (pairs where first's value is larger, ties
    counting one half), from midranks of the pooled sample, and the tie term
    sum(t**3 - t) over groups of ``t`` equal values."""
    in_first = Counter(first)
    rank_sum = tie_term = 0.0
    below = 0
    for value, group in itertools.groupby(sorted([*first, *second])):
        t = sum(1 for _ in group)
        rank_sum += in_first[value] * (below + (t + 1) / 2)  # the group's midrank
        tie_term += t ** 3 - t
        below += t
    m = len(first)
    return rank_sum - m * (m + 1) / 2, tie_term


def compute_p_greater(u: float, m: int, n: int, tie_term: float) -> float:
    """One-sided p-value that the first sample is larger, from U of the first sample.

    ``tie_term`` is sum(t**3 - t) over groups of tied values in the pooled sample. The
    normal approximation with tie and continuity corrections: scipy's asymptotic method.
    """
    total = m + n
    if total < 2:
        return 1.0
    var = m * n / 12.0 * ((total + 1) - tie_term / (total * (total - 1)))
    if var <= 0:  # every value tied: no evidence either way
        return 1.0
    z = (u - m * n / 2.0 - 0.5) / math.sqrt(var)
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def compute_tests(rule: MannWhitneyRule, canary: Sequence[float], stable: Sequence[float],
                  ) -> dict[str, float]:
    """p-values of the location and tail tests (the tail only for quantiles above p50)."""
    x = [float(v) for v in canary]
    y = [float(v) * rule.max_ratio for v in stable]
    u, ties = compute_u(x, y)
    result = {"p_location": compute_p_greater(u, len(x), len(y), ties)}
    censor_q = 2 * rule.quantile - 1
    if censor_q > 0:
        floor = compute_quantile([*x, *y], censor_q)
        u, ties = compute_u([max(v, floor) for v in x], [max(v, floor) for v in y])
        result["p_tail"] = compute_p_greater(u, len(x), len(y), ties)
        result["tail_from_ms"] = floor
    return result


def judge_mann_whitney(metric: str, rule: MannWhitneyRule, canary: WindowCounts,
                       stable: WindowCounts | None) -> MetricVerdict:
    base: dict[str, Any] = {"critical": rule.critical}
    if canary.requests == 0 and not canary.samples_ms:
        return MetricVerdict(metric, "no-data", "no canary requests yet", **base)
    if not canary.samples_ms:
        return MetricVerdict(metric, "no-data", "no canary latency samples in the window "
                             "(the latest snapshot carries no samples_ms)", **base)
    if stable is None or not stable.samples_ms:
        return MetricVerdict(metric, "inconclusive", "no stable latency samples to compare "
                             "with", **base)
    xs, ys = align_samples(canary, stable)
    m, n = len(xs), len(ys)
    q = rule.quantile
    value = compute_quantile(xs, q) if m else None
    reference = compute_quantile(ys, q) if n else None
    details: dict[str, Any] = {
        "test": "one-sided Mann-Whitney U, canary vs max_ratio x stable (location and tail)",
        "canary_samples": m, "stable_samples": n,
        "canary_window_samples": canary.samples_window,
        "stable_window_samples": stable.samples_window,
        "max_ratio": rule.max_ratio, "alpha": rule.alpha, "max_checks": rule.max_checks,
    }
    pct = f"p{round(q * 100):g}"
    shown = f"canary {pct} {_ms(value)} vs stable {_ms(reference)} ({m} vs {n} requests)"
    bound = f"{rule.max_ratio:g}x stable's (max_ratio: {rule.max_ratio:g})"
    if m < MIN_TEST_SAMPLES or n < MIN_TEST_SAMPLES:
        return MetricVerdict(metric, "inconclusive", f"too few samples to test: {shown}",
                             value, reference, details=details, **base)
    tests = compute_tests(rule, xs, ys)
    per_test = rule.alpha / (rule.max_checks * (2 if "p_tail" in tests else 1))
    details.update({k: (v if k == "tail_from_ms" else float(f"{v:.3g}"))
                    for k, v in tests.items()})
    details["fail_below_p"] = float(f"{per_test:.3g}")
    failing = [name for name in ("p_location", "p_tail") if tests.get(name, 1.0) < per_test]
    if failing:
        which = " and ".join("all requests" if f == "p_location" else "the slow tail"
                             for f in failing)
        p = min(tests[f] for f in failing)
        return MetricVerdict(metric, "fail", f"canary latencies are more than {bound} "
                             f"in {which} (p={p:.2g} < {per_test:.2g}): {shown}",
                             value, reference, details=details, **base)
    if m < rule.min_requests or n < rule.min_requests:
        return MetricVerdict(metric, "inconclusive", f"need {rule.min_requests} samples on "
                             f"each side (min_requests: {rule.min_requests}): {shown}",
                             value, reference, details=details, **base)
    assert value is not None and reference is not None
    if value > rule.max_ratio * reference:
        p = min(v for k, v in tests.items() if k.startswith("p_"))
        return MetricVerdict(metric, "inconclusive", f"canary {pct} looks more than "
                             f"{bound}, not yet significant (p={p:.2g}): {shown}",
                             value, reference, details=details, **base)
    return MetricVerdict(metric, "pass", f"{shown}, within {bound}", value, reference,
                         details=details, **base)


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}ms"

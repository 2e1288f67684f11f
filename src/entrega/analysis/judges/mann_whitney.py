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
significance is ``inconclusive``. numpy and scipy (the ``stats`` extra) are imported here
only when the judge runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from entrega.analysis.judges.base import MetricVerdict
from entrega.analysis.window import WindowCounts
from entrega.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np

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


def _stats() -> Any:
    try:
        import numpy
        import scipy.stats
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ConfigError("the mann-whitney judge needs numpy and scipy",
                          hint="pip install 'entrega[stats]'") from exc
    return numpy, scipy.stats


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


def compute_p_greater(u: Any, m: Any, n: Any, tie_term: Any) -> Any:
    """One-sided p-value that the first sample is larger, from U of the first sample.

    ``tie_term`` is sum(t**3 - t) over groups of tied values in the pooled sample. Works
    on numpy arrays (the benchmark) as on floats; matches scipy's asymptotic method.
    """
    import numpy
    from scipy.special import ndtr

    total = m + n
    with numpy.errstate(divide="ignore", invalid="ignore"):
        var = m * n / 12.0 * ((total + 1) - tie_term / (total * (total - 1)))
        z = (u - m * n / 2.0 - 0.5) / numpy.sqrt(var)
    return numpy.where(var > 0, ndtr(-z), 1.0)


def _u_and_ties(np_: Any, stats: Any, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    pooled = np_.concatenate([x, y])
    ranks = stats.rankdata(pooled)
    u = float(ranks[: len(x)].sum() - len(x) * (len(x) + 1) / 2)
    _, counts = np_.unique(pooled, return_counts=True)
    ties = float(np_.sum(counts.astype(float) ** 3 - counts))
    return u, ties


def compute_tests(rule: MannWhitneyRule, canary: tuple[float, ...], stable: tuple[float, ...],
                  ) -> dict[str, float]:
    """p-values of the location and tail tests (the tail only for quantiles above p50)."""
    np_, stats = _stats()
    x = np_.asarray(canary, dtype=float)
    y = np_.asarray(stable, dtype=float) * rule.max_ratio
    u, ties = _u_and_ties(np_, stats, x, y)
    result = {"p_location": float(compute_p_greater(u, len(x), len(y), ties))}
    censor_q = 2 * rule.quantile - 1
    if censor_q > 0:
        floor = float(np_.quantile(np_.concatenate([x, y]), censor_q))
        u, ties = _u_and_ties(np_, stats, np_.maximum(x, floor), np_.maximum(y, floor))
        result["p_tail"] = float(compute_p_greater(u, len(x), len(y), ties))
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
    np_, _ = _stats()
    xs, ys = align_samples(canary, stable)
    m, n = len(xs), len(ys)
    q = rule.quantile
    value = float(np_.quantile(xs, q)) if m else None
    reference = float(np_.quantile(ys, q)) if n else None
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

"""The ``quantile`` judge: is the canary's p95 (p99, ...) above ``max_ratio`` x stable's?

The data. Every request of the window, from the routers' latency sketches (1% buckets,
``dataplane/sketch.py``): a window is the difference of two cumulative sketches, so the
evidence accumulates over the whole step instead of sliding with a ring. A router kind
that gives only a ring of recent samples is judged on those (the sketch of the ring).

The question asked, as counts. Let ``T = max_ratio x`` stable's q-quantile. The canary's
q-quantile is above ``T`` exactly when more than a share ``1 - q`` of canary requests are
slower than ``T``. So the canary requests slower than ``T`` are a binomial stream, and the
same kind of test as for errors applies, with a guarantee under continuous monitoring:

- *tail* (fail): mixture likelihood ratio of "the share above T is ``m (1 - q)``",
  m in :data:`TAIL_ALTERNATIVES`, against ``1 - q``. Under H0 (canary q-quantile at most
  ``T``) it is a nonnegative supermartingale, so by Ville's inequality it ever reaches
  ``2 / alpha`` with probability at most ``alpha / 2``. Stable's quantile is estimated: the
  judge takes ``T`` from an upper confidence bound of it (:data:`QUANTILE_Z` standard
  errors of the rank), so stable's sampling error makes the test more cautious, not less.
  This catches tail-only regressions a rank test cannot see: the slowest 5% three times
  slower moves p99 x1.8 and leaves the median alone.
- *location* (fail): a one-sided Mann-Whitney U test of all canary requests against all
  stable's, at ``alpha / (2 max_checks)`` per check (Bonferroni over ``max_checks``
  checks), failing only when the canary's geometric mean latency is also above
  ``max_ratio`` x stable's. It is the most powerful test for a canary slower across the
  board (x1.3 at 10 req/s is caught in about 15 s), and the ratio guard keeps a
  significant but tolerated slowdown (x1.1 at high volume) from failing.
- *pass*: mixture likelihood ratio of "the share above ``T`` is ``m (1 - q)``",
  m in :data:`PASS_ALTERNATIVES` (below 1), against ``1 - q``, with ``T`` from a *lower*
  confidence bound of stable's quantile. Under "the canary's q-quantile is above T" it
  reaches ``1 / beta`` with probability at most ``beta``: a step passes on evidence that
  the canary is within the margin, never on a point estimate.

The union of the two fail tests keeps P(a canary within ``max_ratio`` ever fails) at
most ``alpha``. Shared noise (a slow database slowing both releases) moves stable's
quantile and the canary's requests together, since both are taken over the same window.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from entrega.analysis.judges.base import MetricVerdict, describe_needs
from entrega.analysis.judges.mann_whitney import compute_p_greater
from entrega.analysis.window import WindowCounts
from entrega.dataplane.sketch import GAMMA, LatencySketch, bucket_value

#: (multiple of 1 - q, prior weight) of the tail test's alternatives: a share of slow
#: requests 1.5x to 5x what the quantile allows.
TAIL_ALTERNATIVES: tuple[tuple[float, float], ...] = ((1.5, 0.2), (2.5, 0.4), (5.0, 0.4))
#: ... and of the pass side: a share well inside what the quantile allows.
PASS_ALTERNATIVES: tuple[tuple[float, float], ...] = ((0.5, 0.4), (0.2, 0.3), (0.05, 0.3))
#: Standard errors of stable's quantile rank taken for its confidence bounds.
QUANTILE_Z = 2.0
#: Below this many requests on either side the rank test's normal approximation is too
#: rough to fail on.
MIN_TEST_SAMPLES = 10


@dataclass(frozen=True)
class QuantileRule:
    #: The percentile the metric is about (0.95 for latency-p95).
    quantile: float = 0.95
    #: The margin: the canary's quantile may be up to this times stable's; surely above
    #: it fails.
    max_ratio: float = 1.2
    #: A step passes on evidence that the canary's quantile is within this times stable's
    #: (None: ``max_ratio``). Wider than ``max_ratio``, it lets a good canary pass sooner
    #: on thin traffic; a canary between the two neither fails on the tail test nor
    #: passes quickly.
    pass_ratio: float | None = None
    #: P(a canary within max_ratio ever fails), over any number of checks.
    alpha: float = 0.01
    #: P(a canary beyond max_ratio ever passes), over any number of checks.
    beta: float = 0.05
    #: Checks of one window the location test's bound covers (an hour of 1 s checks).
    max_checks: int = 3600
    #: Canary requests needed before the judge can pass.
    min_requests: int = 50
    critical: bool = True


@dataclass(frozen=True)
class QuantileEvidence:
    """The numbers of one check; ``decide_quantile`` turns them into a verdict."""

    canary_n: int
    stable_n: int
    canary_q: float | None
    stable_q: float | None
    #: canary requests above the fail threshold, and its log likelihood ratio
    above_fail: int
    log_tail: float
    #: canary requests at or above the pass threshold, and its log likelihood ratio
    above_pass: int
    log_pass: float
    p_location: float
    #: canary's geometric mean latency / stable's
    location_ratio: float | None
    fail_threshold_ms: float | None
    pass_threshold_ms: float | None


def compute_log_ratio(successes: int, trials: int, p0: float,
                      alternatives: tuple[tuple[float, float], ...]) -> float:
    """ln of the mixture likelihood ratio of ``successes`` in ``trials`` Bernoulli trials:
    success probability ``m * p0`` (weight ``w``) for each ``(m, w)``, against ``p0``."""
    if trials <= 0:
        return 0.0
    failures = trials - successes
    terms = []
    for multiple, weight in alternatives:
        p1 = min(multiple * p0, 0.999999)
        terms.append(math.log(weight) + successes * math.log(p1 / p0)
                     + failures * (math.log1p(-p1) - math.log1p(-p0)))
    top = max(terms)
    return top + math.log(sum(math.exp(t - top) for t in terms))


def compute_confidence_ranks(n: int, q: float, z: float = QUANTILE_Z) -> tuple[int, int]:
    """1-based ranks of a lower and an upper confidence bound of the q-quantile of ``n``
    values (normal approximation to the binomial count below the true quantile)."""
    spread = z * math.sqrt(n * q * (1 - q))
    return max(1, math.floor(n * q - spread)), min(n, math.ceil(n * q + spread) + 1)


def compute_u_sketches(first: LatencySketch, second: LatencySketch) -> tuple[float, float]:
    """Mann-Whitney U of ``first`` against ``second`` with values tied within a bucket,
    and the tie term sum(t**3 - t): the rank test on every request, in one pass over the
    buckets."""
    u = tie_term = 0.0
    below_second = 0
    for index in sorted(first.counts.keys() | second.counts.keys()):
        a, b = first.counts.get(index, 0), second.counts.get(index, 0)
        u += a * (below_second + 0.5 * b)
        t = a + b
        tie_term += t ** 3 - t
        below_second += b
    return u, tie_term


def log_mean(sketch: LatencySketch) -> float:
    return sum(math.log(bucket_value(i)) * n for i, n in sketch.counts.items()) / sketch.total


def compute_quantile_evidence(rule: QuantileRule, canary: LatencySketch,
                              stable: LatencySketch) -> QuantileEvidence:
    q, tail = rule.quantile, 1 - rule.quantile
    m, n = canary.total, stable.total
    canary_q, stable_q = canary.quantile(q), stable.quantile(q)
    above_fail = above_pass = 0
    log_tail = log_pass = 0.0
    fail_at = pass_at = None
    p_location, ratio = 1.0, None
    if m and n:
        low_rank, high_rank = compute_confidence_ranks(n, q)
        fail_at = rule.max_ratio * (stable.rank_value(high_rank) or 0.0)
        pass_at = (rule.pass_ratio or rule.max_ratio) * (stable.rank_value(low_rank) or 0.0)
        above_fail = canary.count_above(fail_at)
        # one bucket lower: a request within the sketch's 1% of the threshold counts as
        # slower, so the sketch's resolution never helps a canary pass
        above_pass = canary.count_above(pass_at / GAMMA, inclusive=True)
        log_tail = compute_log_ratio(above_fail, m, tail, TAIL_ALTERNATIVES)
        log_pass = compute_log_ratio(above_pass, m, tail, PASS_ALTERNATIVES)
        u, ties = compute_u_sketches(canary, stable)
        p_location = compute_p_greater(u, m, n, ties)
        ratio = math.exp(log_mean(canary) - log_mean(stable))
    return QuantileEvidence(m, n, canary_q, stable_q, above_fail, log_tail, above_pass,
                            log_pass, p_location, ratio, fail_at, pass_at)


def decide_quantile(rule: QuantileRule, e: QuantileEvidence) -> tuple[str, str]:
    """(verdict, which test decided): ``fail`` by ``tail`` or ``location``, ``pass``,
    ``inconclusive`` or ``no-data``. The benchmark calls this on every simulated check."""
    if e.canary_n == 0:
        return "no-data", ""
    if e.stable_n == 0:
        return "inconclusive", "no stable requests"
    assert e.canary_q is not None and e.stable_q is not None
    looks_worse = e.canary_q > rule.max_ratio * e.stable_q
    if looks_worse and e.log_tail >= math.log(2 / rule.alpha):
        return "fail", "tail"
    enough = e.canary_n >= MIN_TEST_SAMPLES and e.stable_n >= MIN_TEST_SAMPLES
    if enough and e.location_ratio is not None and e.location_ratio > rule.max_ratio \
            and e.p_location < rule.alpha / (2 * rule.max_checks):
        return "fail", "location"
    if e.canary_n < rule.min_requests:
        return "inconclusive", "min_requests"
    if e.log_pass >= math.log(1 / rule.beta):
        return "pass", ""
    return "inconclusive", ""


def compute_needs_requests(rule: QuantileRule, e: QuantileEvidence) -> float | None:
    """Canary requests still needed for the pass evidence if the share of slow requests
    seen so far holds; None when it does not point to a pass."""
    if e.canary_n == 0:
        return None
    tail = 1 - rule.quantile
    share = e.above_pass / e.canary_n
    low = PASS_ALTERNATIVES[0][0] * tail
    drift = share * math.log(low / tail) + (1 - share) * (math.log1p(-low) - math.log1p(-tail))
    target = math.log(1 / rule.beta)
    needed = max(0.0, target - e.log_pass) / drift if drift > 0 else None
    if needed is not None and e.canary_n + needed < rule.min_requests:
        needed = float(rule.min_requests - e.canary_n)
    return needed


def judge_quantile(metric: str, rule: QuantileRule, canary: WindowCounts,
                   stable: WindowCounts | None) -> MetricVerdict:
    base: dict[str, Any] = {"critical": rule.critical}
    pct = f"p{round(rule.quantile * 100):g}"
    canary_sketch = window_sketch(canary)
    if canary_sketch is None or canary_sketch.total == 0:
        why = ("no canary requests yet" if canary.requests == 0 else
               "no canary latency data in the window (the router gives neither a latency "
               "sketch nor samples)")
        return MetricVerdict(metric, "no-data", why, **base)
    stable_sketch = window_sketch(stable) if stable is not None else None
    if stable_sketch is None or stable_sketch.total == 0:
        return MetricVerdict(metric, "inconclusive", "no stable latencies to compare with",
                             **base)
    e = compute_quantile_evidence(rule, canary_sketch, stable_sketch)
    verdict, by = decide_quantile(rule, e)
    details: dict[str, Any] = {
        "test": f"{pct} exceedance counts (mixture SPRT) and Mann-Whitney U on every request",
        "canary_requests": e.canary_n, "stable_requests": e.stable_n,
        "canary_above_fail_threshold": e.above_fail,
        "fail_threshold_ms": _round(e.fail_threshold_ms),
        "log_tail_evidence": round(e.log_tail, 3), "fail_at": round(math.log(2 / rule.alpha), 3),
        "p_location": float(f"{e.p_location:.3g}"),
        "fail_below_p": float(f"{rule.alpha / (2 * rule.max_checks):.3g}"),
        "location_ratio": None if e.location_ratio is None else round(e.location_ratio, 3),
        "canary_above_pass_threshold": e.above_pass,
        "pass_threshold_ms": _round(e.pass_threshold_ms),
        "log_pass_evidence": round(e.log_pass, 3), "pass_at": round(math.log(1 / rule.beta), 3),
        "max_ratio": rule.max_ratio, "alpha": rule.alpha, "beta": rule.beta,
        "max_checks": rule.max_checks,
    }
    value, reference = e.canary_q, e.stable_q
    shown = (f"canary {pct} {_ms(value)} vs stable {_ms(reference)} "
             f"({e.canary_n} vs {e.stable_n} requests)")
    bound = f"{rule.max_ratio:g}x stable's (max_ratio: {rule.max_ratio:g})"
    allowed = round((1 - rule.quantile) * 100, 3)
    if verdict == "fail" and by == "tail":
        reason = (f"canary {pct} is above {bound}: {e.above_fail} of {e.canary_n} canary "
                  f"requests ({e.above_fail / e.canary_n:.1%}, {allowed:g}% allowed) are "
                  f"slower than {_ms(e.fail_threshold_ms)}, evidence "
                  f"{math.exp(min(e.log_tail, 700)):.3g}:1; {shown}")
    elif verdict == "fail":
        reason = (f"canary requests are slower across the board, more than {bound} "
                  f"(geometric mean x{e.location_ratio:.2f}, p={e.p_location:.2g}); {shown}")
    elif verdict == "pass":
        reason = (f"{shown}: evidence {math.exp(min(e.log_pass, 700)):.3g}:1 that the canary "
                  f"{pct} is within {bound}")
    elif by == "min_requests":
        reason = (f"{e.canary_n} canary requests, need {rule.min_requests} "
                  f"(min_requests: {rule.min_requests}); {shown}")
    elif by:
        reason = by
    else:
        needs = describe_needs(compute_needs_requests(rule, e), canary, details)
        reason = f"not yet evidence that the canary {pct} is within {bound}: {needs}; {shown}"
    return MetricVerdict(metric, verdict, reason, value, reference,  # type: ignore[arg-type]
                         details=details, **base)


def window_sketch(counts: WindowCounts) -> LatencySketch | None:
    """The window's sketch; from its ring of recent samples when the router gives none."""
    if counts.sketch is not None:
        return counts.sketch
    if not counts.samples_ms:
        return None
    built = LatencySketch()
    for ms in counts.samples_ms:
        built.add(ms)
    return built


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}ms"

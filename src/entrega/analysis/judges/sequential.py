"""The ``sequential`` judge: error counts, checked as often as you like.

The test. Condition on the total number of errors K seen by canary and stable in the
window. If the canary's error rate is ``r`` times stable's, each error is the canary's
with probability ``p(r) = r*n_c / (r*n_c + n_s)`` (``n`` = requests), whatever the shared
noise does to both rates (a burst of errors hitting both releases cancels out). The
canary's share of errors ``k_c`` out of ``K`` is then binomial, and the judge computes the
mixture likelihood ratio (mSPRT) of "the canary is worse by ``r_j``" against "it is no
worse than ``max_ratio``" (H0: ``r <= max_ratio``)::

    Lambda = sum_j w_j * (p1_j/p0)**k_c * ((1-p1_j)/(1-p0))**k_s,
    p0 = p(max_ratio), p1_j = p(max_ratio * r_j)

with the alternatives ``(r_j, w_j)`` in :data:`ALTERNATIVES` (weights sum to 1).

The false-alarm bound. Under H0, Lambda is a nonnegative supermartingale with mean <= 1
(each component is a likelihood ratio, and for r below max_ratio its expectation only
shrinks), so by Ville's inequality P(Lambda ever reaches 1/alpha) <= alpha: the judge may
be asked after every request, every second, for as long as the window lasts, and the
probability that a healthy canary ever fails it is at most ``alpha`` (default 1%). In the
benchmark (``bench/analysis.py``) the measured rate is lower (overshoot, and checks once a
second). The rule of ``max_increase`` is an extra condition for failing (the observed
increase in error rate must exceed it), so it only lowers the false-alarm rate: it keeps
tiny absolute differences at high volume (0.01% -> 0.03%) from failing a canary.

Pass and inconclusive. Ruling out every regression takes a long time, so ``pass`` means
"enough canary requests (``min_requests``) and no sign of a regression": the observed canary
rate is within ``max_ratio`` of stable's or within ``max_increase`` of it. A canary that
looks worse without the evidence being conclusive yet is ``inconclusive`` (the rollout
watches longer, then asks a human), never a pass.

Why these alternatives. Mixing costs ``ln(1/w_j)`` nats for the component nearest the
truth; the weights sit on the regressions worth rolling back within seconds (x5-x10:
x9 gets most because with 100 canary req/s a x10 is decided on the first check's handful
of errors, where every nat counts) and keep 5% on x2, so small regressions are still
caught, later (x2 at 10 canary req/s: ~95% within 15 minutes). In the benchmark this
reaches 1.1x Wald's floor for x5 at 10 canary req/s (the floor knows both rates exactly).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from entrega.analysis.judges.base import MetricVerdict
from entrega.analysis.window import WindowCounts

#: (rate ratio above max_ratio, prior weight) of the mixture's alternatives; weights sum to 1.
ALTERNATIVES: tuple[tuple[float, float], ...] = ((2.0, 0.05), (5.0, 0.35), (9.0, 0.6))


@dataclass(frozen=True)
class SequentialRule:
    #: H0: the canary's error rate is at most this times stable's.
    max_ratio: float = 1.0
    #: The observed increase (canary - stable error rate) must exceed this to fail.
    max_increase: float = 0.0
    #: Probability that a canary no worse than ``max_ratio`` ever fails (Ville's bound).
    alpha: float = 0.01
    #: Canary requests needed before the judge can pass.
    min_requests: int = 30
    critical: bool = True
    alternatives: tuple[tuple[float, float], ...] = ALTERNATIVES


def compute_log_evidence(canary_errors: int, canary_requests: int, stable_errors: int,
                         stable_requests: int, *, max_ratio: float = 1.0,
                         alternatives: tuple[tuple[float, float], ...] = ALTERNATIVES,
                         ) -> float:
    """ln(Lambda), the mixture likelihood ratio above; 0.0 when there is nothing to weigh."""
    n_c, n_s = canary_requests, stable_requests
    k_c, k_s = canary_errors, stable_errors
    if n_c <= 0 or n_s <= 0 or k_c + k_s <= 0:
        return 0.0
    p0 = max_ratio * n_c / (max_ratio * n_c + n_s)
    log_p0, log_q0 = math.log(p0), math.log1p(-p0)
    terms = []
    for ratio, weight in alternatives:
        r = max_ratio * ratio
        p1 = r * n_c / (r * n_c + n_s)
        terms.append(math.log(weight) + k_c * (math.log(p1) - log_p0)
                     + k_s * (math.log1p(-p1) - log_q0))
    top = max(terms)
    return top + math.log(sum(math.exp(t - top) for t in terms))


def decide_sequential(rule: SequentialRule, canary_errors: int, canary_requests: int,
                      stable_errors: int, stable_requests: int) -> tuple[str, float]:
    """The verdict alone, with ln(Lambda): the benchmark calls this on every simulated check.

    Returns ``(verdict, log_evidence)``; the verdict is one of ``no-data``,
    ``inconclusive``, ``fail``, ``pass``.
    """
    if canary_requests <= 0:
        return "no-data", 0.0
    if stable_requests <= 0:
        return "inconclusive", 0.0
    evidence = compute_log_evidence(canary_errors, canary_requests, stable_errors,
                                    stable_requests, max_ratio=rule.max_ratio,
                                    alternatives=rule.alternatives)
    rate_c = canary_errors / canary_requests
    rate_s = stable_errors / stable_requests
    worse = rate_c - rate_s > rule.max_increase
    if worse and evidence >= -math.log(rule.alpha):
        return "fail", evidence
    if canary_requests < rule.min_requests or (worse and rate_c > rule.max_ratio * rate_s):
        return "inconclusive", evidence
    return "pass", evidence


def judge_sequential(metric: str, rule: SequentialRule, canary: WindowCounts,
                     stable: WindowCounts | None) -> MetricVerdict:
    stable_requests = stable.requests if stable else 0
    stable_errors = stable.errors if stable else 0
    verdict, evidence = decide_sequential(rule, canary.errors, canary.requests,
                                          stable_errors, stable_requests)
    rate_c = canary.error_rate
    rate_s = stable.error_rate if stable else None
    threshold = -math.log(rule.alpha)
    details: dict[str, Any] = {
        "test": "mixture SPRT on pooled error counts (conditional binomial)",
        "canary_requests": canary.requests, "canary_errors": canary.errors,
        "stable_requests": stable_requests, "stable_errors": stable_errors,
        "log_evidence": round(evidence, 3), "fail_at": round(threshold, 3),
        "alpha": rule.alpha, "max_ratio": rule.max_ratio, "max_increase": rule.max_increase,
    }
    base: dict[str, Any] = {"critical": rule.critical, "details": details}
    shown = (f"canary {_pct(rate_c)} ({canary.errors}/{canary.requests}), stable "
             f"{_pct(rate_s)} ({stable_errors}/{stable_requests})")
    odds = f"evidence {math.exp(min(evidence, 700)):.3g}:1, fails at {1 / rule.alpha:.3g}:1"
    if verdict == "no-data":
        return MetricVerdict(metric, "no-data", "no canary requests yet", **base)
    regression = compute_rule_text(rule)
    if verdict == "fail":
        reason = f"canary error rate is {regression}, with {odds}: {shown}"
    elif stable_requests == 0:
        reason = "no stable requests to compare with"
    elif verdict == "inconclusive" and canary.requests < rule.min_requests:
        reason = (f"{canary.requests} canary requests, need {rule.min_requests} "
                  f"(min_requests: {rule.min_requests}); {shown}")
    elif verdict == "inconclusive":
        reason = f"canary error rate looks {regression}, not yet conclusive ({odds}): {shown}"
    else:
        reason = f"canary error rate is not {regression}: {shown}; {odds}"
    return MetricVerdict(metric, verdict, reason, rate_c, rate_s, **base)  # type: ignore[arg-type]


def compute_rule_text(rule: SequentialRule) -> str:
    """The regression the rule fails on, in the words and numbers of the config.

    ``max_increase: 0.002`` reads "more than 0.2 points above stable's (max_increase:
    0.002)"; the default ``max_ratio`` (1: any increase) adds nothing to that.
    """
    parts = []
    if rule.max_increase > 0:
        parts.append(f"more than {format_points(rule.max_increase)} above stable's "
                     f"(max_increase: {rule.max_increase:g})")
    if rule.max_ratio != 1.0:
        parts.append(f"above {rule.max_ratio:g}x stable's (max_ratio: {rule.max_ratio:g})")
    return " and ".join(parts) or "above stable's"


def format_points(rate: float) -> str:
    """An absolute difference of error rates in percentage points: 0.002 -> "0.2 points"."""
    points = f"{rate * 100:.4g}"
    return f"{points} point" + ("" if points == "1" else "s")


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2%}"

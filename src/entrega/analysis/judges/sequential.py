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

Pass on evidence. A step passes only when the data are evidence that the canary is *not
worse than a margin*, with the same guarantee as the rollback side. The margin is wider
than the rollback's null (which is "no worse than stable at all"), since equality can
never be proved: H0_pass is "the canary's error rate is above ``pass_ratio`` x stable's
(default 4) and above ``pass_rate`` (default 1%)". Two likelihood ratios, each a
nonnegative supermartingale under H0_pass, weigh the evidence against it:

- *relative*, on the same conditional binomial as above: "the canary's share of the errors
  is that of a rate equal to stable's" (:data:`PASS_ALTERNATIVES`) against ``r =
  pass_ratio``. Shared noise cancels here too. It needs ``1 / (0.9 beta)``.
- *absolute*, on the canary's own requests: "its error rate is 0 or ``pass_rate / 4``"
  against ``pass_rate``. This is what lets an app with no errors at all pass: with no
  errors anywhere there is nothing to compare, but about 600 clean canary requests are
  evidence that its rate is below 1%. It needs ``1 / (0.1 beta)``, and never passes a
  canary that looks worse than stable (see ``_absolute_applies``).

By a union bound over the two (``PASS_SPLIT``), P(a canary worse than both margins ever
passes, however often it is checked) <= ``beta`` (default 5%). Until then the verdict is
``inconclusive``, and the reason says how long the current traffic needs to reach the
evidence (``needs_s``). Evidence once reached stays reached for the window (Ville's bound
covers the whole path): the rollout passes a step whose metrics have each passed at some
check of it (``rollouts.canary.passed_on_evidence``).

Why the margin is 4x. A canary's errors are few: at 10 canary req/s and 0.5% errors, a
90 s step sees about 4.5. Telling x1 from x4 with that is at the edge of what any test can
do (an oracle that knows stable's rate, looking once at 90 s, passes 95% of healthy
canaries and 0.7% of x4 ones); a valid sequential test conditioned on stable's counts does
less. ``bench.analysis``'s step block measures the trade at these defaults.

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

from entrega.analysis.judges.base import MetricVerdict, describe_needs
from entrega.analysis.window import WindowCounts

#: (rate ratio above max_ratio, prior weight) of the mixture's alternatives; weights sum to 1.
ALTERNATIVES: tuple[tuple[float, float], ...] = ((2.0, 0.05), (5.0, 0.35), (9.0, 0.6))
#: The pass side's relative alternatives: (canary rate / stable's, prior weight).
PASS_ALTERNATIVES: tuple[tuple[float, float], ...] = ((1.0, 1.0),)
#: How the pass side's ``beta`` is split between its relative and absolute branches: the
#: relative one decides for most apps, the absolute one only for apps with almost no errors.
PASS_SPLIT = (0.9, 0.1)


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
    #: Pass needs evidence that the canary's rate is below this times stable's...
    pass_ratio: float = 4.0
    #: ... or below this absolute rate.
    pass_rate: float = 0.01
    #: Probability that a canary worse than both margins ever passes.
    beta: float = 0.05


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
    return _log_sum_exp(terms)


def compute_pass_evidence(canary_errors: int, canary_requests: int, stable_errors: int,
                          stable_requests: int, *, pass_ratio: float = 3.0,
                          pass_rate: float = 0.01) -> tuple[float, float]:
    """ln of the two pass-side likelihood ratios (module docstring): (relative, absolute)."""
    k_c, n_c, k_s, n_s = canary_errors, canary_requests, stable_errors, stable_requests
    relative = 0.0
    if n_c > 0 and n_s > 0 and k_c + k_s > 0:
        p0 = pass_ratio * n_c / (pass_ratio * n_c + n_s)
        terms = []
        for ratio, weight in PASS_ALTERNATIVES:
            p1 = ratio * n_c / (ratio * n_c + n_s)
            terms.append(math.log(weight) + k_c * math.log(p1 / p0)
                         + k_s * (math.log1p(-p1) - math.log1p(-p0)))
        relative = _log_sum_exp(terms)
    absolute = 0.0
    if n_c > 0:
        clean = (n_c - k_c) * -math.log1p(-pass_rate)  # the p = 0 alternative
        terms = [math.log(0.5) + clean] if k_c == 0 else []
        low = pass_rate / 4
        terms.append(math.log(0.5) + k_c * math.log(low / pass_rate)
                     + (n_c - k_c) * (math.log1p(-low) - math.log1p(-pass_rate)))
        absolute = _log_sum_exp(terms)
    return relative, absolute


def compute_needs_requests(rule: SequentialRule, canary_errors: int, canary_requests: int,
                           stable_errors: int, stable_requests: int) -> float | None:
    """Canary requests still needed for the pass evidence, if the rates seen so far hold;
    None when they do not point to a pass (the canary looks too close to the margin)."""
    n_c, n_s = canary_requests, stable_requests
    if n_c <= 0:
        return None
    relative, absolute = compute_pass_evidence(
        canary_errors, n_c, stable_errors, n_s, pass_ratio=rule.pass_ratio,
        pass_rate=rule.pass_rate)
    rate_c = canary_errors / n_c
    best: float | None = None
    if n_s > 0:
        rate_s = stable_errors / n_s
        p0 = rule.pass_ratio * n_c / (rule.pass_ratio * n_c + n_s)
        p1 = n_c / (n_c + n_s)
        drift = rate_c * math.log(p1 / p0) + n_s / n_c * rate_s * (
            math.log1p(-p1) - math.log1p(-p0))
        if drift > 0:
            best = max(0.0, _pass_target(rule, 0) - relative) / drift
    low = rule.pass_rate / 4
    drift = rate_c * math.log(low / rule.pass_rate) + (1 - rate_c) * (
        math.log1p(-low) - math.log1p(-rule.pass_rate))
    if canary_errors == 0:
        drift = -math.log1p(-rule.pass_rate)
    if drift > 0:
        needed = max(0.0, _pass_target(rule, 1) - absolute) / drift
        best = needed if best is None else min(best, needed)
    return best


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
    if canary_requests < rule.min_requests:
        return "inconclusive", evidence
    relative, absolute = compute_pass_evidence(
        canary_errors, canary_requests, stable_errors, stable_requests,
        pass_ratio=rule.pass_ratio, pass_rate=rule.pass_rate)
    if relative >= _pass_target(rule, 0):
        return "pass", evidence
    if absolute >= _pass_target(rule, 1) and _absolute_applies(rule, canary_errors, rate_c,
                                                               rate_s):
        return "pass", evidence
    return "inconclusive", evidence


def judge_sequential(metric: str, rule: SequentialRule, canary: WindowCounts,
                     stable: WindowCounts | None, *, what: tuple[str, str] = ("requests",
                                                                            "error rate"),
                     ) -> MetricVerdict:
    """``what`` names the counts in the reason: (the trials, the rate's name), e.g.
    ``("ratings", "share of low ratings")`` for the feedback metric."""
    trials, rate_name = what
    stable_requests = stable.requests if stable else 0
    stable_errors = stable.errors if stable else 0
    verdict, evidence = decide_sequential(rule, canary.errors, canary.requests,
                                          stable_errors, stable_requests)
    relative, absolute = compute_pass_evidence(
        canary.errors, canary.requests, stable_errors, stable_requests,
        pass_ratio=rule.pass_ratio, pass_rate=rule.pass_rate)
    pass_evidence = max(relative, absolute - _pass_target(rule, 1) + _pass_target(rule, 0))
    rate_c = canary.error_rate
    rate_s = stable.error_rate if stable else None
    threshold = -math.log(rule.alpha)
    details: dict[str, Any] = {
        "test": "mixture SPRT on pooled error counts (conditional binomial)",
        "canary_requests": canary.requests, "canary_errors": canary.errors,
        "stable_requests": stable_requests, "stable_errors": stable_errors,
        "log_evidence": round(evidence, 3), "fail_at": round(threshold, 3),
        "log_pass_evidence": round(pass_evidence, 3),
        "pass_at": round(_pass_target(rule, 0), 3),
        "alpha": rule.alpha, "beta": rule.beta, "max_ratio": rule.max_ratio,
        "max_increase": rule.max_increase, "pass_ratio": rule.pass_ratio,
        "pass_rate": rule.pass_rate,
    }
    base: dict[str, Any] = {"critical": rule.critical, "details": details}
    shown = (f"canary {_pct(rate_c)} ({canary.errors}/{canary.requests}), stable "
             f"{_pct(rate_s)} ({stable_errors}/{stable_requests})")
    odds = f"evidence {math.exp(min(evidence, 700)):.3g}:1, fails at {1 / rule.alpha:.3g}:1"
    if verdict == "no-data":
        return MetricVerdict(metric, "no-data", f"no canary {trials} yet", **base)
    regression = compute_rule_text(rule)
    margin = (f"below {rule.pass_ratio:g}x stable's or {_pct(rule.pass_rate)} "
              f"(pass_ratio, pass_rate)")
    if verdict == "fail":
        reason = f"canary {rate_name} is {regression}, with {odds}: {shown}"
    elif stable_requests == 0:
        reason = f"no stable {trials} to compare with"
    elif verdict == "inconclusive" and canary.requests < rule.min_requests:
        reason = (f"{canary.requests} canary {trials}, need {rule.min_requests} "
                  f"(min_requests: {rule.min_requests}); {shown}")
    elif verdict == "inconclusive":
        needs = describe_needs(compute_needs_requests(
            rule, canary.errors, canary.requests, stable_errors, stable_requests),
            canary, details)
        reason = f"not yet evidence that the canary {rate_name} is {margin}: {needs}; {shown}"
    else:
        reason = (f"canary {rate_name} is {margin}, with evidence "
                  f"{math.exp(min(pass_evidence, 700)):.3g}:1: {shown}")
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


def _absolute_applies(rule: SequentialRule, canary_errors: int, rate_c: float,
                      rate_s: float) -> bool:
    """The absolute branch is for errors too rare to compare; it does not pass a canary
    that looks worse than stable by half the pass margin (in ratio) and by more than
    ``max_increase`` (a x4 canary of a 0.25% stable is under 1%, yet plainly worse; a x3 of
    0.01% is not worth a person's time). An extra condition to pass only lowers the chance
    of passing, so the guarantee holds."""
    return canary_errors == 0 or rate_c < math.sqrt(rule.pass_ratio) * rate_s \
        or rate_c - rate_s <= rule.max_increase


def _pass_target(rule: SequentialRule, branch: int) -> float:
    """ln of the evidence a pass-side branch needs: 1 / its share of ``beta``."""
    return math.log(1 / (PASS_SPLIT[branch] * rule.beta))


def _log_sum_exp(terms: list[float]) -> float:
    top = max(terms)
    return top + math.log(sum(math.exp(t - top) for t in terms))


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2%}"

"""Users' ratings as evidence: the ``feedback`` metric, judged (pure).

The feedback intake files each rating (1-5) under the release the user was served (the
router's ``entrega-release`` cookie) and the environment serving it. For one analysis
window the controller counts, per release, the ratings given since the window began and
the low ones (1 or 2), and hands them in as :class:`FeedbackCounts`.

Ratings are trials as requests are, and a low rating is a failure as a 5xx is: the
``sequential`` judge applies unchanged, with ratings as its requests and low ratings as
its errors, and so does its guarantee. A canary whose share of low ratings is at most
``max_ratio`` times stable's fails with probability at most ``alpha``, however often it is
checked; conditioning on the low ratings both releases got cancels what moves both (a bad
day for everyone). The guarantee takes ratings as independent given the release: one
person rating again and again is bounded by the intake's per-client rate limit, not
removed.

The judge speaks of requests and errors; the reason and details users read are rebuilt
here from its verdict and the counts, in the words of ratings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from entrega.analysis.judges import MetricVerdict, SequentialRule, judge_sequential
from entrega.analysis.window import WindowCounts

#: The judge's detail keys for its counts, and what they are called for ratings.
_COUNT_KEYS = {"canary_requests": "canary_ratings", "canary_errors": "canary_low",
               "stable_requests": "stable_ratings", "stable_errors": "stable_low"}


@dataclass(frozen=True)
class FeedbackCounts:
    """Ratings given in one analysis window, per release; ``low``: ratings of 1 or 2."""

    canary_ratings: int
    canary_low: int
    stable_ratings: int = 0
    stable_low: int = 0


def judge_feedback(metric: str, rule: SequentialRule, counts: FeedbackCounts | None, *,
                   has_stable: bool) -> MetricVerdict:
    """The ``sequential`` verdict on the share of low ratings, canary against stable.

    ``counts`` None means the ratings were not read (no-data, never a pass);
    ``has_stable`` False (a first release has no stable) is inconclusive at best.
    """
    if counts is None:
        return MetricVerdict(metric, "no-data", "ratings were not read",
                             critical=rule.critical)
    canary = WindowCounts(counts.canary_ratings, counts.canary_low, ())
    stable = WindowCounts(counts.stable_ratings, counts.stable_low, ()) if has_stable else None
    judged = judge_sequential(metric, rule, canary, stable)
    details: dict[str, Any] = {
        "test": "mixture SPRT on pooled low-rating counts (conditional binomial)",
        "low_ratings": "1 or 2 (of 5)",
        "canary_ratings": counts.canary_ratings, "canary_low": counts.canary_low,
        "stable_ratings": counts.stable_ratings if has_stable else 0,
        "stable_low": counts.stable_low if has_stable else 0,
        **{k: v for k, v in judged.details.items() if k not in _COUNT_KEYS and k != "test"},
    }
    reason = compute_feedback_reason(judged.verdict, rule, counts, has_stable=has_stable,
                                     log_evidence=judged.details.get("log_evidence"))
    return MetricVerdict(metric, judged.verdict, reason, _share(counts.canary_low,
                         counts.canary_ratings),
                         _share(counts.stable_low, counts.stable_ratings) if has_stable
                         else None, rule.critical, details)


def compute_feedback_reason(verdict: str, rule: SequentialRule, counts: FeedbackCounts, *,
                            has_stable: bool, log_evidence: float | None) -> str:
    """What a user reads: the verdict, the bound as configured, and the counts."""
    stable_ratings = counts.stable_ratings if has_stable else 0
    stable_low = counts.stable_low if has_stable else 0
    shown = (f"canary {_pct(_share(counts.canary_low, counts.canary_ratings))} low "
             f"({counts.canary_low} of {counts.canary_ratings} ratings), stable "
             f"{_pct(_share(stable_low, stable_ratings))} ({stable_low} of "
             f"{stable_ratings} ratings)")
    odds = ("" if log_evidence is None else
            f"evidence {math.exp(min(float(log_evidence), 700)):.3g}:1, fails at "
            f"{1 / rule.alpha:.3g}:1")
    with_odds, in_odds = (f", with {odds}", f" ({odds})") if odds else ("", "")
    regression = compute_feedback_rule_text(rule)
    if verdict == "no-data":
        return f"no canary ratings yet; {shown}"
    if verdict == "fail":
        return f"canary's share of low ratings is {regression}{with_odds}: {shown}"
    if verdict == "pass":
        return f"canary's share of low ratings is not {regression}: {shown}{in_odds}"
    if stable_ratings == 0:
        return f"no stable ratings to compare with; {shown}"
    if counts.canary_ratings < rule.min_requests:
        return (f"{counts.canary_ratings} canary ratings, need {rule.min_requests} "
                f"(min_requests: {rule.min_requests}); {shown}")
    rate_c = counts.canary_low / counts.canary_ratings
    if rate_c - stable_low / stable_ratings > rule.max_increase:
        return (f"canary's share of low ratings looks {regression}, not yet "
                f"conclusive{in_odds}: {shown}")
    return (f"not yet enough ratings to tell whether the canary's share of low ratings is "
            f"{regression}{in_odds}: {shown}")


def compute_feedback_rule_text(rule: SequentialRule) -> str:
    """The regression the rule fails on: "more than 5 points above stable's
    (max_increase: 0.05)"; the default ``max_ratio`` (1: any increase) adds nothing."""
    parts = []
    if rule.max_increase > 0:
        points = f"{rule.max_increase * 100:.4g}"
        parts.append(f"more than {points} point{'' if points == '1' else 's'} above "
                     f"stable's (max_increase: {rule.max_increase:g})")
    if rule.max_ratio != 1.0:
        parts.append(f"above {rule.max_ratio:g}x stable's (max_ratio: {rule.max_ratio:g})")
    return " and ".join(parts) or "above stable's"


def _share(low: int, ratings: int) -> float | None:
    return low / ratings if ratings else None


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"

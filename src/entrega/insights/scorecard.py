"""A release's scorecard against the release it replaced (pure).

Each figure is shown side by side with its change and whether that change is
significant. Significance comes from the analysis judges, run once on the releases'
whole lives instead of on a canary window, in both directions (is the new release
worse? is it better?):

- error rate and the share of 1-2 ratings: the ``sequential`` judge (counts of bad
  outcomes among requests, or among ratings);
- latency p50/p95/p99: the ``mann-whitney`` judge at that quantile, on latencies drawn
  from the router's histogram (each bucket's requests at the bucket's middle; ties are
  what binned data has, and the U test corrects for them), thinned to at most
  :data:`MAX_LATENCY_SAMPLES` per release;
- mean rating: the ``mann-whitney`` judge on the ratings themselves (ordinal data, which
  is what a rank test is for).

Traffic, feedback counts and restarts are shown without a test: they measure exposure,
not quality. A judge that cannot decide (too little data) leaves ``significant`` as None
with its reason.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from entrega.analysis.judges import (
    MannWhitneyRule,
    MetricVerdict,
    SequentialRule,
    judge_mann_whitney,
    judge_sequential,
)
from entrega.analysis.window import WindowCounts
from entrega.insights.series import Totals
from entrega.routers.base import LATENCY_BUCKETS_MS

#: Latencies per release fed to the rank test: enough to see a 10% shift in a quantile,
#: few enough that the test runs in milliseconds whatever the traffic was.
MAX_LATENCY_SAMPLES = 4000
#: One test, not a sequence of checks: alpha is spent once.
ALPHA = 0.01


@dataclass(frozen=True)
class ReleaseFigures:
    """What is known about one release in one environment over its whole life."""

    version: str
    totals: Totals = Totals()
    restarts: int = 0
    time_at_weight: dict[int, float] = field(default_factory=dict)
    ratings: tuple[int, ...] = ()
    feedback_count: int = 0

    @property
    def mean_rating(self) -> float | None:
        return sum(self.ratings) / len(self.ratings) if self.ratings else None

    @property
    def low_rating_share(self) -> float | None:
        return sum(1 for r in self.ratings if r <= 2) / len(self.ratings) \
            if self.ratings else None


@dataclass(frozen=True)
class Significance:
    significant: bool | None
    #: "worse" or "better" when significant
    direction: str | None
    reason: str


@dataclass(frozen=True)
class Figure:
    name: str
    label: str
    unit: str
    current: float | None
    previous: float | None
    higher_is_better: bool | None
    significance: Significance | None = None

    @property
    def change(self) -> float | None:
        if self.current is None or self.previous is None:
            return None
        return self.current - self.previous

    @property
    def change_ratio(self) -> float | None:
        if self.change is None or not self.previous:
            return None
        return self.change / abs(self.previous)

    def to_dict(self) -> dict[str, Any]:
        s = self.significance
        return {"name": self.name, "label": self.label, "unit": self.unit,
                "current": self.current, "previous": self.previous, "change": self.change,
                "change_ratio": self.change_ratio, "higher_is_better": self.higher_is_better,
                "significant": s.significant if s else None,
                "direction": s.direction if s else None, "reason": s.reason if s else ""}


def _evidence(verdict: MetricVerdict) -> str:
    """The judge's test statistic in words about releases (its own reason speaks of a
    canary and a stable, and in milliseconds)."""
    d = verdict.details
    if "log_evidence" in d:
        odds = math.exp(min(float(d["log_evidence"]), 700.0))
        return f"sequential test: evidence {odds:.3g}:1, decides at {1 / d['alpha']:.3g}:1"
    ps = [float(v) for k, v in d.items() if k.startswith("p_")]
    if ps:
        return f"Mann-Whitney U: p={min(ps):.2g}, decides below {d.get('fail_below_p', ALPHA)}"
    return verdict.reason


def _both_ways(judge: Callable[[bool], MetricVerdict]) -> Significance:
    """Run a judge asking "is the new release worse?" then "is it better?"."""
    worse = judge(False)
    if worse.verdict == "fail":
        return Significance(True, "worse", _evidence(worse))
    better = judge(True)
    if better.verdict == "fail":
        return Significance(True, "better", _evidence(better))
    if "no-data" in (worse.verdict, better.verdict):
        return Significance(None, None, "no data on one side")
    if not worse.details or not any(k.startswith(("p_", "log_")) for k in worse.details):
        return Significance(None, None, "too few to test")
    return Significance(False, None, _evidence(worse))


def judge_rate(name: str, bad_now: int, n_now: int, bad_before: int, n_before: int, *,
               min_n: int = 30) -> Significance:
    """Is the share of bad outcomes (errors, low ratings) significantly different?"""
    if n_now == 0 or n_before == 0:
        return Significance(None, None, "no data on one side")
    rule = SequentialRule(alpha=ALPHA, min_requests=min_n)
    now = WindowCounts(n_now, bad_now, ())
    before = WindowCounts(n_before, bad_before, ())
    return _both_ways(lambda swap: judge_sequential(
        name, rule, before if swap else now, now if swap else before))


def _midpoints() -> tuple[float, ...]:
    lowers = (0.0, *LATENCY_BUCKETS_MS)
    uppers = (*LATENCY_BUCKETS_MS, LATENCY_BUCKETS_MS[-1] * 1.5)
    return tuple((lo + hi) / 2 for lo, hi in zip(lowers, uppers, strict=True))


def latency_samples(buckets: Sequence[int], limit: int = MAX_LATENCY_SAMPLES,
                    ) -> tuple[float, ...]:
    """Latencies drawn from a histogram: each bucket's share of ``limit`` at its middle."""
    total = sum(buckets)
    if total == 0:
        return ()
    scale = min(1.0, limit / total)
    out: list[float] = []
    for value, count in zip(_midpoints(), buckets, strict=False):
        out.extend([value] * round(count * scale))
    return tuple(out)


def _samples_window(values: tuple[float, ...]) -> WindowCounts:
    return WindowCounts(len(values), 0, (), values, len(values))


def judge_latency(name: str, quantile: float, now: Totals, before: Totals) -> Significance:
    xs, ys = latency_samples(now.latency_buckets), latency_samples(before.latency_buckets)
    if not xs or not ys:
        return Significance(None, None, "no latencies on one side")
    rule = MannWhitneyRule(max_ratio=1.0, quantile=quantile, alpha=ALPHA, max_checks=1,
                           min_requests=30)
    a, b = _samples_window(xs), _samples_window(ys)
    return _both_ways(lambda swap: judge_mann_whitney(
        name, rule, b if swap else a, a if swap else b))


def judge_ratings(now: Sequence[int], before: Sequence[int]) -> Significance:
    """Ranks of "badness" (6 - rating): the new release is worse if it ranks higher."""
    if not now or not before:
        return Significance(None, None, "no ratings on one side")
    rule = MannWhitneyRule(max_ratio=1.0, quantile=0.5, alpha=ALPHA, max_checks=1,
                           min_requests=10)
    a = _samples_window(tuple(6.0 - r for r in now))
    b = _samples_window(tuple(6.0 - r for r in before))
    return _both_ways(lambda swap: judge_mann_whitney(
        "rating", rule, b if swap else a, a if swap else b))


def compute_scorecard(current: ReleaseFigures,
                      previous: ReleaseFigures | None) -> list[Figure]:
    """The figures of ``current`` beside ``previous`` (the release it replaced)."""
    prev = previous or ReleaseFigures(version="")
    c, p = current.totals, prev.totals
    has_prev = previous is not None
    figures = [
        Figure("requests", "requests served", "", c.requests,
               p.requests if has_prev else None, None),
        Figure("error_rate", "error rate (5xx)", "ratio", c.error_rate, p.error_rate, False,
               judge_rate("error-rate", c.errors, c.requests, p.errors, p.requests)
               if has_prev else None),
    ]
    for q in (0.5, 0.95, 0.99):
        pct = f"p{round(q * 100)}"
        figures.append(Figure(f"latency_{pct}", f"latency {pct}", "ms", c.percentile_ms(q),
                              p.percentile_ms(q) if has_prev else None, False,
                              judge_latency(f"latency-{pct}", q, c, p) if has_prev else None))
    figures += [
        Figure("restarts", "instance restarts", "", current.restarts,
               prev.restarts if has_prev else None, False),
        Figure("feedback", "feedback received", "", current.feedback_count,
               prev.feedback_count if has_prev else None, None),
        Figure("mean_rating", "mean rating (1-5)", "rating", current.mean_rating,
               prev.mean_rating, True,
               judge_ratings(current.ratings, prev.ratings) if has_prev else None),
        Figure("low_ratings", "share of 1-2 ratings", "ratio", current.low_rating_share,
               prev.low_rating_share, False,
               judge_rate("low-ratings", sum(1 for r in current.ratings if r <= 2),
                          len(current.ratings), sum(1 for r in prev.ratings if r <= 2),
                          len(prev.ratings), min_n=10) if has_prev else None),
    ]
    return figures


def compute_quality(figures: Sequence[Figure]) -> str:
    """One word on the release's figures: worse, better, mixed, or no significant change."""
    directions = {f.significance.direction for f in figures
                  if f.significance and f.significance.significant}
    if directions == {"worse"}:
        return "worse"
    if directions == {"better"}:
        return "better"
    if directions:
        return "mixed"
    return "no significant change"

"""Scorecard figures and their significance, judged by the analysis judges."""

from __future__ import annotations

import pytest

from entrega.insights.scorecard import (
    ReleaseFigures,
    compute_quality,
    compute_scorecard,
    judge_latency,
    judge_rate,
    judge_ratings,
    latency_samples,
)
from entrega.insights.series import Totals
from tests.insights.stack import buckets_around


def totals(requests: int, errors: int, ms: float) -> Totals:
    return Totals(requests, errors, tuple(buckets_around(ms, requests)))


@pytest.mark.parametrize(("now", "before", "significant", "direction"), [
    ((50, 1000), (5, 1000), True, "worse"),
    ((5, 1000), (50, 1000), True, "better"),
    ((6, 1000), (5, 1000), False, None),
    ((0, 0), (5, 1000), None, None),
], ids=["10x-errors", "10x-fewer", "noise", "no-traffic"])
def test_error_rate_significance(now: tuple[int, int], before: tuple[int, int],
                                 significant: bool | None, direction: str | None) -> None:
    result = judge_rate("error-rate", now[0], now[1], before[0], before[1])
    assert (result.significant, result.direction) == (significant, direction)


@pytest.mark.parametrize(("now_ms", "before_ms", "significant", "direction"), [
    (40, 12, True, "worse"), (12, 40, True, "better"), (12, 12, False, None),
], ids=["slower", "faster", "same"])
def test_latency_significance(now_ms: float, before_ms: float, significant: bool,
                              direction: str | None) -> None:
    result = judge_latency("latency-p95", 0.95, totals(500, 0, now_ms), totals(500, 0, before_ms))
    assert (result.significant, result.direction) == (significant, direction)
    assert "Mann-Whitney" in result.reason


@pytest.mark.parametrize(("now", "before", "significant", "direction"), [
    ([1, 2, 1, 2, 1, 2, 1, 1, 2, 1, 2, 1], [5, 4, 5, 4, 5, 5, 4, 5, 4, 5, 5, 4], True, "worse"),
    ([5, 4, 5, 4, 5, 5, 4, 5, 4, 5, 5, 4], [1, 2, 1, 2, 1, 2, 1, 1, 2, 1, 2, 1], True, "better"),
    ([4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 4, 5], [5, 4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 4], False, None),
    ([1, 1], [5, 5], None, None),
    ([], [5, 5, 5], None, None),
], ids=["lower", "higher", "same", "too-few", "none"])
def test_rating_significance(now: list[int], before: list[int], significant: bool | None,
                             direction: str | None) -> None:
    result = judge_ratings(now, before)
    assert (result.significant, result.direction) == (significant, direction)


def test_latency_samples_keep_the_histogram_shape_within_the_cap() -> None:
    values = latency_samples([0] * 5 + [30_000, 10_000] + [0] * 17, limit=4000)
    assert len(values) == 4000
    assert values.count(values[0]) == 3000  # three quarters in the first non-empty bucket


def test_scorecard_against_the_replaced_release() -> None:
    current = ReleaseFigures("v2", totals(2000, 40, 40), restarts=2,
                             ratings=(1, 2, 1, 2, 1, 2, 1, 1, 2, 1, 2, 1), feedback_count=12)
    previous = ReleaseFigures("v1", totals(6000, 30, 12), ratings=(5, 4) * 6,
                              feedback_count=14)
    figures = {f.name: f for f in compute_scorecard(current, previous)}
    assert figures["requests"].current == 2000 and figures["requests"].previous == 6000
    assert figures["error_rate"].change == pytest.approx(0.02 - 0.005)
    assert figures["error_rate"].significance is not None
    assert figures["error_rate"].significance.direction == "worse"
    assert figures["latency_p95"].to_dict()["direction"] == "worse"
    assert figures["mean_rating"].to_dict()["direction"] == "worse"
    assert figures["restarts"].change == 2 and figures["restarts"].significance is None
    assert compute_quality(list(figures.values())) == "worse"


def test_first_release_has_nothing_to_compare() -> None:
    figures = compute_scorecard(ReleaseFigures("v1", totals(100, 0, 10)), None)
    assert all(f.previous is None or f.name in ("mean_rating", "low_ratings") for f in figures)
    assert all(f.significance is None for f in figures)
    assert compute_quality(figures) == "no significant change"

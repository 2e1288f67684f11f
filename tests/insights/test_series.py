"""Cumulative router samples -> a release's intervals, totals, series, time at each weight."""

from __future__ import annotations

import pytest

from entrega.insights.series import (
    Sample,
    compute_intervals,
    compute_series,
    compute_time_at_weight,
    compute_totals,
)


def s(t: float, requests: int, errors: int = 0, started: float = 0.0,
      buckets: tuple[int, ...] = ()) -> Sample:
    return Sample(t, started, requests, errors, buckets or (requests,))


@pytest.mark.parametrize(("samples", "expected"), [
    ([], []),
    ([s(10, 100)], [(0, 10, 100)]),
    ([s(10, 100), s(15, 160, 2)], [(0, 10, 100), (10, 15, 60)]),
    # unchanged counters: no interval
    ([s(10, 100), s(15, 100)], [(0, 10, 100)]),
    # the router restarted (started_at changed): the new counters are the whole interval
    ([s(10, 100), s(15, 150), s(20, 30, started=17)], [(0, 10, 100), (10, 15, 50),
                                                      (17, 20, 30)]),
    # counters went down with the same started_at (release forgotten, then seen again)
    ([s(10, 100), s(15, 20)], [(0, 10, 100), (10, 15, 20)]),
    # out-of-order input is sorted by time
    ([s(15, 160), s(10, 100)], [(0, 10, 100), (10, 15, 60)]),
], ids=["none", "first-sample-counts-since-router-start", "delta", "idle", "router-restart",
        "counters-reset", "unsorted"])
def test_intervals(samples: list[Sample], expected: list[tuple[float, float, int]]) -> None:
    assert [(i.start, i.end, i.requests) for i in compute_intervals(samples)] == expected


def test_first_interval_starts_no_earlier_than_the_release() -> None:
    intervals = compute_intervals([s(100, 10, started=0), s(110, 30)], not_before=95)
    assert [(i.start, i.end) for i in intervals] == [(95, 100), (100, 110)]
    restarted = compute_intervals([s(100, 10, started=98)], not_before=95)
    assert restarted[0].start == 98


def test_totals_add_errors_and_histograms() -> None:
    intervals = compute_intervals([s(10, 100, 1, buckets=(90, 10)),
                                   s(20, 300, 7, buckets=(250, 50))])
    totals = compute_totals(intervals)
    assert (totals.requests, totals.errors, totals.latency_buckets) == (300, 7, (250, 50))
    assert totals.error_rate == pytest.approx(7 / 300)
    assert (totals.first_seen, totals.last_seen) == (0, 20)


def test_series_spreads_intervals_over_the_bins_they_overlap() -> None:
    intervals = compute_intervals([s(5, 10), s(15, 30, 2), s(25, 30, 2), s(35, 90, 8)])
    points = compute_series(intervals, start=0, end=40, bins=4)
    # (0,5] 10 requests; (5,15] 20 split 10/10; idle until 25; (25,35] 60 split 30/30
    assert [p.requests for p in points] == pytest.approx([20, 10, 30, 30])
    assert [p.error_rate for p in points] == pytest.approx([0.05, 0.1, 0.1, 0.1])
    assert points[3].rps == pytest.approx(3.0)
    assert sum(p.requests for p in points) == pytest.approx(90)


@pytest.mark.parametrize(("traffic", "now", "expected"), [
    ([], 100, {}),
    ([(0, {"v1": 100})], 100, {}),
    ([(0, {"v1": 100}), (10, {"v1": 80, "v2": 20}), (40, {"v2": 100})], 100,
     {20: 30.0, 100: 60.0}),
    # rolled back: 20% for 15 s, then nothing
    ([(10, {"v1": 80, "v2": 20}), (25, {"v1": 100})], 100, {20: 15.0}),
    # two rollouts of the same release add up
    ([(0, {"v1": 90, "v2": 10}), (5, {"v1": 100}), (50, {"v1": 90, "v2": 10}),
      (60, {"v2": 100})], 70, {10: 15.0, 100: 10.0}),
], ids=["no-traffic", "other-release", "canary-promoted", "rolled-back", "two-rollouts"])
def test_time_at_weight(traffic: list[tuple[float, dict[str, int]]], now: float,
                        expected: dict[int, float]) -> None:
    assert compute_time_at_weight(traffic, "v2", now=now) == expected

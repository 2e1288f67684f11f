"""Cumulative router counters -> one window's counts, and percentiles from histograms."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from entrega.analysis.window import compute_window, histogram_percentile
from entrega.dataplane.sketch import LatencySketch
from entrega.routers.base import LATENCY_BUCKETS_MS, ReleaseMetrics

from .conftest import INF, N_BUCKETS, counts, hist, snapshot

WINDOWS = [
    pytest.param(None, None, False, (0, 0, ()), id="no-snapshot-yet-is-empty"),
    pytest.param(None, snapshot(40, 2), False, (40, 2, hist((2, 40))),
                 id="no-baseline-takes-latest-whole"),
    pytest.param(snapshot(100, 3, hist((2, 90), (50, 10))),
                 snapshot(160, 9, hist((2, 130), (50, 20), (INF, 10))), False,
                 (60, 6, hist((2, 40), (50, 10), (INF, 10))), id="delta-of-counters"),
    pytest.param(snapshot(100, 3), snapshot(100, 3), False, (0, 0, hist()),
                 id="no-traffic-since-baseline"),
    pytest.param(snapshot(500, 50), snapshot(20, 1), False, (20, 1, hist((2, 20))),
                 id="requests-went-down-router-restarted"),
    pytest.param(snapshot(100, 30), snapshot(120, 2), False, (120, 2, hist((2, 120))),
                 id="errors-went-down-router-restarted"),
    pytest.param(snapshot(100, 0, hist((50, 100))), snapshot(130, 0, hist((2, 130))), False,
                 (130, 0, hist((2, 130))), id="bucket-went-down-router-restarted"),
    pytest.param(snapshot(10, 1), snapshot(200, 5), True, (200, 5, hist((2, 200))),
                 id="restart-flag-wins-over-higher-counters"),
    pytest.param(ReleaseMetrics(), snapshot(25, 1), False, (25, 1, hist((2, 25))),
                 id="baseline-before-any-traffic-has-no-buckets"),
]


@pytest.mark.parametrize(("baseline", "latest", "restarted", "expected"), WINDOWS)
def test_compute_window(baseline, latest, restarted, expected):
    w = compute_window(baseline, latest, router_restarted=restarted)
    assert (w.requests, w.errors, w.latency_buckets) == expected
    assert w.requests >= 0 and w.errors >= 0 and all(b >= 0 for b in w.latency_buckets)


@pytest.mark.parametrize(("window", "expected"), [
    pytest.param(counts(0), None, id="no-requests-no-rate"),
    pytest.param(counts(50, 0), 0.0, id="clean"),
    pytest.param(counts(50, 5), 0.1, id="one-in-ten"),
])
def test_error_rate(window, expected):
    assert window.error_rate == expected


PERCENTILES = [
    pytest.param((), 0.5, None, id="no-buckets"),
    pytest.param(hist(), 0.95, None, id="all-zero"),
    pytest.param(hist((1, 100)), 0.5, 0.5, id="first-bucket-starts-at-zero"),
    pytest.param(hist((2, 10)), 0.5, 1.5, id="uniform-within-a-bucket-median"),
    pytest.param(hist((2, 10)), 0.0, 1.0, id="q0-is-the-lower-bound"),
    pytest.param(hist((2, 10)), 1.0, 2.0, id="q1-is-the-upper-bound"),
    pytest.param(hist((1, 50), (5, 50)), 0.5, 1.0, id="median-at-a-bucket-edge"),
    pytest.param(hist((1, 50), (5, 50)), 0.75, 4.0, id="inside-the-second-bucket"),
    pytest.param(hist((1, 50), (5, 50)), 0.99, 4.96, id="p99-near-the-top"),
    pytest.param(hist((100, 40), (150, 60)), 0.95, 145.83333333333334, id="p95-interpolates"),
    pytest.param(hist((INF, 7)), 0.5, 10_000.0, id="last-bucket-reports-its-lower-bound"),
    pytest.param(hist((1, 99), (INF, 1)), 0.99, 1.0, id="p99-below-the-slow-tail"),
    pytest.param(hist((1, 99), (INF, 1)), 1.0, 10_000.0, id="max-in-the-slow-tail"),
]


@pytest.mark.parametrize(("buckets", "q", "expected"), PERCENTILES)
def test_histogram_percentile(buckets, q, expected):
    result = histogram_percentile(buckets, q)
    if expected is None:
        assert result is None
    else:
        assert result == pytest.approx(expected)


def test_percentile_with_other_bounds():
    assert histogram_percentile((0, 4, 0), 0.5, bounds=(10.0, 20.0)) == pytest.approx(15.0)
    assert histogram_percentile((0, 0, 3), 0.5, bounds=(10.0, 20.0)) == 20.0


def test_window_percentile_uses_the_router_buckets():
    assert counts(10, buckets=hist((300, 10))).percentile_ms(0.5) == pytest.approx(250.0)


@given(st.lists(st.integers(0, 1_000), min_size=N_BUCKETS, max_size=N_BUCKETS),
       st.floats(0, 1), st.floats(0, 1))
def test_percentiles_are_monotone_and_within_the_buckets(buckets, q1, q2):
    lo, hi = sorted((q1, q2))
    a, b = histogram_percentile(tuple(buckets), lo), histogram_percentile(tuple(buckets), hi)
    if sum(buckets) == 0:
        assert a is None and b is None
        return
    assert a is not None and b is not None
    assert 0.0 <= a <= b + 1e-9 <= LATENCY_BUCKETS_MS[-1] + 1e-9


def ring(total: int, size: int = 8) -> tuple[float, ...]:
    """The last ``size`` of ``total`` samples numbered 1..total (as a router's ring)."""
    return tuple(float(i) for i in range(max(1, total - size + 1), total + 1))


SAMPLE_WINDOWS = [
    pytest.param(ReleaseMetrics(samples_total=0),
                 ReleaseMetrics(samples_ms=ring(5), samples_total=5), ((1., 2., 3., 4., 5.), 5),
                 id="all-new"),
    pytest.param(ReleaseMetrics(samples_total=3),
                 ReleaseMetrics(samples_ms=ring(5), samples_total=5), ((4., 5.), 2),
                 id="only-the-new-ones"),
    pytest.param(ReleaseMetrics(samples_total=2),
                 ReleaseMetrics(samples_ms=ring(30), samples_total=30),
                 (tuple(float(i) for i in range(23, 31)), 28), id="ring-overflowed-keeps-newest"),
    pytest.param(ReleaseMetrics(samples_total=5),
                 ReleaseMetrics(samples_ms=(), samples_total=9), ((), 4),
                 id="latest-without-ring"),
    pytest.param(ReleaseMetrics(samples_total=50),
                 ReleaseMetrics(samples_ms=ring(4), samples_total=4), ((1., 2., 3., 4.), 4),
                 id="samples-went-down-router-restarted"),
]


@pytest.mark.parametrize(("baseline", "latest", "expected"), SAMPLE_WINDOWS)
def test_window_samples_are_the_newest_entries_of_the_latest_ring(baseline, latest, expected):
    w = compute_window(baseline, latest)
    assert (w.samples_ms, w.samples_window) == expected


def sketch(*latencies: tuple[float, int]) -> LatencySketch:
    """A cumulative sketch from (latency ms, requests) pairs."""
    s = LatencySketch()
    for ms, n in latencies:
        s.add(ms, n)
    return s


def with_sketch(m: ReleaseMetrics, s: LatencySketch | None) -> ReleaseMetrics:
    return dataclasses.replace(m, latency_sketch=s)


SKETCH_WINDOWS = [
    pytest.param(None, with_sketch(snapshot(30), sketch((2, 20), (40, 10))), False,
                 sketch((2, 20), (40, 10)), id="no-baseline-takes-latest-whole"),
    pytest.param(with_sketch(snapshot(30), sketch((2, 20), (40, 10))),
                 with_sketch(snapshot(45), sketch((2, 25), (40, 10), (900, 10))), False,
                 sketch((2, 5), (900, 10)), id="latest-minus-baseline"),
    pytest.param(with_sketch(snapshot(30), sketch((2, 30))),
                 with_sketch(snapshot(30), sketch((2, 30))), False,
                 LatencySketch(), id="no-traffic-is-an-empty-sketch"),
    pytest.param(with_sketch(snapshot(500), sketch((2, 500))),
                 with_sketch(snapshot(20), sketch((2, 20))), False,
                 sketch((2, 20)), id="requests-went-down-router-restarted"),
    pytest.param(with_sketch(snapshot(10), sketch((2, 10))),
                 with_sketch(snapshot(40), sketch((2, 40))), True,
                 sketch((2, 40)), id="restart-flag-takes-latest-whole"),
    pytest.param(with_sketch(snapshot(10), sketch((300, 10))),
                 with_sketch(snapshot(12), sketch((2, 12))), False,
                 sketch((2, 12)), id="sketch-bucket-went-down-takes-latest-whole"),
    pytest.param(ReleaseMetrics(), with_sketch(snapshot(5), sketch((7, 5))), False,
                 sketch((7, 5)), id="baseline-without-sketch-before-any-request"),
    pytest.param(snapshot(10), with_sketch(snapshot(40), sketch((2, 40))), False,
                 None, id="baseline-without-sketch-has-no-window-sketch"),
    pytest.param(snapshot(10), snapshot(40), False, None, id="router-kind-without-sketch"),
    pytest.param(None, snapshot(40), False, None, id="latest-without-sketch"),
]


@pytest.mark.parametrize(("baseline", "latest", "restarted", "expected"), SKETCH_WINDOWS)
def test_window_sketch_is_latest_minus_baseline(baseline, latest, restarted, expected):
    w = compute_window(baseline, latest, router_restarted=restarted)
    assert w.sketch == expected
    if expected is not None:
        assert w.sketch is not None and w.sketch.total == expected.total


def test_a_window_sketch_has_every_request_of_the_window_however_many():
    """More requests than the ring holds: the ring keeps the newest, the sketch all."""
    before = [float(1 + i % 50) for i in range(3_000)]
    during = [float(100 + i % 400) for i in range(10_000)]
    baseline = with_sketch(snapshot(3_000), sketch(*((ms, 1) for ms in before)))
    latest = with_sketch(snapshot(13_000), sketch(*((ms, 1) for ms in before + during)))
    w = compute_window(baseline, latest)
    assert w.sketch is not None and w.sketch.total == 10_000 == w.requests
    assert w.sketch.quantile(0.0) == pytest.approx(100, rel=0.01)
    assert w.sketch.quantile(0.5) == pytest.approx(sorted(during)[4_999], rel=0.01)

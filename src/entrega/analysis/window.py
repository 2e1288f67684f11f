"""Turning two cumulative router snapshots into one window's figures (pure).

Routers report counters since they started. A window is the difference between the
snapshot taken when the window began (its *baseline*) and the latest one. A counter that
went down means the router restarted in between; the latest snapshot is then the whole
window (we lose what came before the restart, never invent data).

Request-level latencies come from the router's ring of recent samples (``samples_ms``,
newest last, with ``samples_total`` counting every sample ever recorded). Only the
*latest* snapshot carries the ring; the baseline, persisted in the store, carries just
``samples_total``. The window's samples are the last ``latest.samples_total -
baseline.samples_total`` entries of the latest ring, capped at the ring's length: when more
requests than the ring holds arrived during the window, the window's samples are its most
recent ones (``samples_window`` says how many requests the window really had).

The latency sketch (``latency_sketch``, on routers that keep one) has no such cap: both
snapshots carry it whole, and the window's sketch is the latest minus the baseline,
bucket by bucket, so it holds every request of the window within 1%. After a restart it
is the latest sketch whole, like the counters. When the baseline has no sketch but the
latest has (a baseline stored before the router kept one), the window has none unless
the baseline had counted no request: the latest alone would count requests from before
the window.
"""

from __future__ import annotations

from dataclasses import dataclass

from entrega.dataplane.sketch import LatencySketch
from entrega.routers.base import LATENCY_BUCKETS_MS, ReleaseMetrics


@dataclass(frozen=True)
class WindowCounts:
    requests: int
    errors: int
    latency_buckets: tuple[int, ...]
    #: the window's most recent request latencies (ms), oldest first; at most a ring's worth
    samples_ms: tuple[float, ...] = ()
    #: latency samples recorded during the whole window (>= len(samples_ms))
    samples_window: int = 0
    #: how long the window has run (s); 0 when unknown. Turns counts into rates, so a
    #: judge can say how long the current traffic needs to decide.
    duration_s: float = 0.0
    #: every request of the window, from the routers' latency sketches (None when the
    #: router kind gives none)
    sketch: LatencySketch | None = None

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None

    def percentile_ms(self, q: float) -> float | None:
        return histogram_percentile(self.latency_buckets, q)


def compute_window(baseline: ReleaseMetrics | None, latest: ReleaseMetrics | None,
                   *, router_restarted: bool = False) -> WindowCounts:
    if latest is None:
        return WindowCounts(0, 0, ())
    if baseline is None or router_restarted or _went_down(baseline, latest):
        return WindowCounts(latest.requests, latest.errors_5xx, latest.latency_buckets,
                            *_window_samples(0, latest), sketch=latest.latency_sketch)
    buckets = latest.latency_buckets
    if len(baseline.latency_buckets) == len(buckets):
        buckets = tuple(a - b for a, b in zip(buckets, baseline.latency_buckets, strict=True))
    return WindowCounts(latest.requests - baseline.requests,
                        latest.errors_5xx - baseline.errors_5xx, buckets,
                        *_window_samples(baseline.samples_total, latest),
                        sketch=_window_sketch(baseline, latest.latency_sketch))


def _window_sketch(baseline: ReleaseMetrics,
                   latest: LatencySketch | None) -> LatencySketch | None:
    if latest is None:
        return None
    if baseline.latency_sketch is None:
        # nothing to subtract only if the baseline had seen no request
        return latest if baseline.requests == 0 else None
    window = latest.minus(baseline.latency_sketch)
    # a bucket that went down: the router restarted although no counter showed it
    return latest if window is None else window


def _window_samples(since_total: int, latest: ReleaseMetrics,
                    ) -> tuple[tuple[float, ...], int]:
    new = max(0, latest.samples_total - since_total)
    take = min(new, len(latest.samples_ms))
    return (latest.samples_ms[len(latest.samples_ms) - take:] if take else ()), new


def _went_down(baseline: ReleaseMetrics, latest: ReleaseMetrics) -> bool:
    """Any counter lower than at the baseline: the router restarted in between."""
    if latest.requests < baseline.requests or latest.errors_5xx < baseline.errors_5xx:
        return True
    if latest.samples_total < baseline.samples_total:
        return True
    if len(baseline.latency_buckets) != len(latest.latency_buckets):
        return False
    return any(a < b for a, b in zip(latest.latency_buckets, baseline.latency_buckets,
                                     strict=True))


def histogram_percentile(buckets: tuple[int, ...], q: float,
                         bounds: tuple[float, ...] = LATENCY_BUCKETS_MS) -> float | None:
    """The q-quantile (0..1) from fixed buckets, interpolating linearly inside a bucket.

    The last bucket has no upper bound; a quantile that falls in it is reported as its
    lower bound (we know only that it is at least that slow).
    """
    total = sum(buckets)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for i, count in enumerate(buckets):
        if count and seen + count >= rank:
            lower = bounds[i - 1] if i > 0 else 0.0
            if i >= len(bounds):
                return lower
            upper = bounds[i]
            return lower + (upper - lower) * (rank - seen) / count
        seen += count
    return bounds[-1]

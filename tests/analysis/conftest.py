"""Builders for the analysis tables: router snapshots, window counts and latency histograms.

Histograms use the routers' fixed buckets (``LATENCY_BUCKETS_MS`` plus a last +inf bucket),
addressed here by the upper bound of a bucket so tables read in milliseconds.
"""

from __future__ import annotations

import math

from entrega.analysis.window import WindowCounts
from entrega.routers.base import LATENCY_BUCKETS_MS, ReleaseMetrics

__all__ = ["INF", "N_BUCKETS", "counts", "hist", "snapshot"]

INF = math.inf
N_BUCKETS = len(LATENCY_BUCKETS_MS) + 1


def hist(*pairs: tuple[float, int]) -> tuple[int, ...]:
    """A histogram from (bucket upper bound in ms, count) pairs; INF is the last bucket."""
    buckets = [0] * N_BUCKETS
    for upper, count in pairs:
        index = N_BUCKETS - 1 if upper == INF else LATENCY_BUCKETS_MS.index(upper)
        buckets[index] += count
    return tuple(buckets)


def snapshot(requests: int, errors: int = 0, buckets: tuple[int, ...] | None = None,
             ) -> ReleaseMetrics:
    """A cumulative router snapshot; by default every request took 1-2 ms."""
    if buckets is None:
        buckets = hist((2, requests))
    return ReleaseMetrics(requests=requests, errors_5xx=errors, latency_buckets=buckets)


def counts(requests: int, errors: int = 0, buckets: tuple[int, ...] | None = None,
           ) -> WindowCounts:
    """One window's figures; by default every request took 1-2 ms."""
    if buckets is None:
        buckets = hist((2, requests))
    return WindowCounts(requests, errors, buckets)

"""Per-release traffic counters of the embedded router.

Everything here is cumulative since the router process started (``started_at``): the
controller takes differences between two snapshots (see ``reports.ReleaseMetrics``).
Recording one request is O(1): a scan of the fixed bucket bounds from the lowest (most
requests take under a millisecond, so it usually stops at the first), a few integer
additions, one store into a preallocated ring, and one logarithm and one dict update for
the latency sketch. The ring is a list rather than an ``array``: the mypyc build
(setup.py) stores into a list natively.

The sketch (``dataplane/sketch.py``) is what the analysis judges: every request of a
window, within 1%, as the difference of two snapshots. The fixed buckets feed Prometheus
and the insights; the ring (recent latencies) is for display. Its bucket formula is
``sketch.bucket_index`` written out here: a call into the uncompiled sketch module would
cost more than the formula itself.
"""

from __future__ import annotations

import math
import time
from typing import Final

from entrega.dataplane.reports import LATENCY_BUCKETS_MS
from entrega.dataplane.sketch import INV_LN_GAMMA, MIN_INDEX, MIN_MS

#: Size of the ring of recent latencies; a power of two so the slot is ``total & MASK``.
SAMPLES_RING_SIZE: Final = 2048
_MASK: Final = SAMPLES_RING_SIZE - 1
_BOUNDS: Final = tuple(float(bound) for bound in LATENCY_BUCKETS_MS)
_LAST: Final = len(LATENCY_BUCKETS_MS)  # the +inf bucket
_SKETCH_MIN_MS: Final = MIN_MS
_SKETCH_MIN_INDEX: Final = MIN_INDEX
_SKETCH_INV_LN_GAMMA: Final = INV_LN_GAMMA

#: Stats of releases no longer routed (and with nothing in flight) are forgotten beyond
#: this many releases, so a router living through hundreds of releases stays small.
MAX_RELEASES_KEPT = 64


class ReleaseStats:
    """Counters of one release; mutated only by the event loop thread."""

    __slots__ = ("requests", "errors_5xx", "buckets", "latency_sum_ms", "inflight",
                 "samples_total", "_ring", "sketch")

    def __init__(self) -> None:
        self.requests = 0
        self.errors_5xx = 0
        self.buckets = [0] * (len(_BOUNDS) + 1)
        self.latency_sum_ms = 0.0
        self.inflight = 0
        self.samples_total = 0
        self._ring = [0.0] * SAMPLES_RING_SIZE
        #: bucket index -> requests (``LatencySketch.counts``), cumulative
        self.sketch: dict[int, int] = {}

    def record(self, status: int, latency_ms: float) -> None:
        """Count one finished request (``status`` 0: the client left before any answer)."""
        self.requests += 1
        if status >= 500:
            self.errors_5xx += 1
        # a latency equal to a bound falls in that bound's bucket (Prometheus' ``le``)
        bucket = _LAST
        for i, bound in enumerate(_BOUNDS):
            if latency_ms <= bound:
                bucket = i
                break
        self.buckets[bucket] += 1
        self.latency_sum_ms += latency_ms
        total = self.samples_total
        self._ring[total & _MASK] = latency_ms
        self.samples_total = total + 1
        if latency_ms <= _SKETCH_MIN_MS:
            index = _SKETCH_MIN_INDEX
        else:
            index = math.ceil(math.log(latency_ms) * _SKETCH_INV_LN_GAMMA)
        sketch = self.sketch
        sketch[index] = sketch.get(index, 0) + 1

    def samples_ms(self) -> list[float]:
        """The ring's contents, oldest first (newest last)."""
        total = self.samples_total
        if total <= SAMPLES_RING_SIZE:
            return self._ring[:total]
        start = total & _MASK
        return self._ring[start:] + self._ring[:start]

    def to_dict(self) -> dict[str, object]:
        return {
            "requests": self.requests,
            "errors_5xx": self.errors_5xx,
            "latency_buckets": list(self.buckets),
            "latency_sum_ms": round(self.latency_sum_ms, 3),
            "inflight": self.inflight,
            "samples_ms": [round(s, 3) for s in self.samples_ms()],
            "samples_total": self.samples_total,
            "latency_sketch": [[i, n] for i, n in sorted(self.sketch.items())],
        }


class MetricsRegistry:
    """Stats by release version, created on first use and kept across route changes."""

    def __init__(self) -> None:
        self.started_at = time.time()
        self.releases: dict[str, ReleaseStats] = {}

    def for_release(self, version: str) -> ReleaseStats:
        stats = self.releases.get(version)
        if stats is None:
            stats = self.releases[version] = ReleaseStats()
        return stats

    def forget_old(self, routed: set[str]) -> None:
        """Drop the oldest unrouted, idle releases beyond ``MAX_RELEASES_KEPT``."""
        excess = len(self.releases) - MAX_RELEASES_KEPT
        if excess <= 0:
            return
        for version in list(self.releases):  # insertion order: oldest first
            if excess <= 0:
                break
            if version not in routed and self.releases[version].inflight == 0:
                del self.releases[version]
                excess -= 1

    def to_dict(self) -> dict[str, object]:
        return {
            "started_at": self.started_at,
            "releases": {v: s.to_dict() for v, s in self.releases.items()},
        }

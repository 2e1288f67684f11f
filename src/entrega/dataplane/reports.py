"""What a router reports back to the controller: per-release counters and its own restarts.

The embedded router keeps these counters in its data path (``http/metrics.py``) and sums
them over its workers (``process/worker_metrics.py``); the HAProxy adapter reads them from
HAProxy's stats. Either way the controller sees the same types, defined here at the bottom
of the data plane so that both sides import them and neither imports the other.
"""

from __future__ import annotations

from dataclasses import dataclass

from entrega.dataplane.sketch import LatencySketch

#: Upper bounds (ms) of the fixed latency histogram buckets; the last bucket is +inf.
LATENCY_BUCKETS_MS: tuple[float, ...] = (
    1, 2, 3, 5, 7.5, 10, 15, 20, 30, 50, 75, 100, 150, 200, 300, 500, 750,
    1000, 1500, 2000, 3000, 5000, 10000,
)


@dataclass(frozen=True)
class ReleaseMetrics:
    """Cumulative counters of one release since the router started (``started_at``).

    Consumers take differences between two snapshots; a counter that went down means
    the router restarted, and the later snapshot is then the whole difference.
    """

    requests: int = 0
    #: responses with status >= 500, including the router's own 502/503/504
    errors_5xx: int = 0
    #: counts per bucket of LATENCY_BUCKETS_MS, plus one last +inf bucket
    latency_buckets: tuple[int, ...] = ()
    latency_sum_ms: float = 0.0
    inflight: int = 0
    #: most recent request latencies (ms), a bounded ring, newest last
    samples_ms: tuple[float, ...] = ()
    #: total number of samples ever recorded (so a consumer can take just the new ones)
    samples_total: int = 0
    #: every request's latency in log buckets (1% relative error), cumulative like the
    #: counters; ``None`` when the router kind cannot give one. On the
    #: wire (``GET /metrics``, a stored snapshot): ``[[index, count], ...]``.
    latency_sketch: LatencySketch | None = None


@dataclass(frozen=True)
class DataPlaneRestart:
    """A process the data plane restarted by itself, without the controller (a router
    worker that died). The controller records each one as an event (``history``)."""

    #: what was restarted, e.g. ``"router worker 0"``
    what: str
    #: unix time of the restart
    at: float
    #: why, e.g. ``"exited with signal 9"``
    reason: str


@dataclass(frozen=True)
class RouterMetrics:
    """One snapshot of a router's counters. Two snapshots with the same ``started_at`` and
    ``series`` are readings of one monotonic series, so their difference is a window;
    either differing means the counters started again in between."""

    #: when the counters started (unix time): read from the router, never recomputed as
    #: ``now - uptime`` (that drifts from one reading to the next)
    started_at: float
    releases: dict[str, ReleaseMetrics]
    #: the most recent restarts the router did by itself (bounded, oldest first); a
    #: consumer records the ones newer than the last it saw
    restarts: tuple[DataPlaneRestart, ...] = ()
    #: which process's counters these are, where ``started_at`` alone may not tell (HAProxy
    #: reports its start to the second, and a reload within that second starts new
    #: counters in a new worker); empty when ``started_at`` is enough
    series: str = ""

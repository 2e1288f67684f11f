"""One router's counters from the counters of its workers (``--workers N``).

Consumers (the controller's analysis, the insights collector, Prometheus) read the router
as one cumulative series per release and take differences between snapshots; a counter
that goes down reads as a router restart (see ``analysis/window.py``). So the sum over
workers must never go down, even when a worker dies and its replacement counts from zero.
:class:`WorkerLedger` keeps the last counters each worker reported; when a worker dies
they are *retired*: added to the sum for good. A worker's counters live in memory the
supervisor shares (``counter_memory.py``), read on each report and once more after the
worker died, so what it retires is everything it counted, up to its last request: the
totals are exact across worker deaths. Only the ring of recent latencies and the count in
flight come over the worker's link, and die with it.

Fields and names are those of ``ReleaseStats.to_dict()``: counters, buckets and
``samples_total`` add up, the latency sketches merge (bucket by bucket, so the merged
sketch is exactly the sketch of every worker's requests, and a retired worker's sketch
stays in it like its counters), ``inflight`` adds up over live workers only, and the rings of
recent latencies are interleaved newest-first, one sample of each worker in turn. Without
timestamps that is the fairest order: SO_REUSEPORT spreads connections evenly over the
workers, so the newest k samples of the merged ring hold about k/N of each, and the
Mann-Whitney judge, which takes the newest ``samples_total`` difference of them, sees
every worker's traffic.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from entrega.dataplane.sketch import LatencySketch

#: ``ReleaseStats.to_dict()`` of one release
ReleaseDict = Mapping[str, Any]
#: release version -> its counters, as in ``MetricsRegistry.to_dict()["releases"]``
ReleasesDict = Mapping[str, ReleaseDict]


def sum_releases(workers: Iterable[ReleasesDict]) -> dict[str, dict[str, Any]]:
    """Per-release sums over several workers' counters (pure)."""
    by_release: dict[str, list[ReleaseDict]] = {}
    for releases in workers:
        for version, stats in releases.items():
            by_release.setdefault(version, []).append(stats)
    return {version: sum_release(stats) for version, stats in by_release.items()}


def sum_release(parts: list[ReleaseDict]) -> dict[str, Any]:
    width = max(len(p["latency_buckets"]) for p in parts)
    buckets = [0] * width
    for p in parts:
        for i, count in enumerate(p["latency_buckets"]):
            buckets[i] += count
    return {
        "requests": sum(p["requests"] for p in parts),
        "errors_5xx": sum(p["errors_5xx"] for p in parts),
        "latency_buckets": buckets,
        "latency_sum_ms": round(sum(p["latency_sum_ms"] for p in parts), 3),
        "inflight": sum(p["inflight"] for p in parts),
        "samples_ms": interleave_newest_first([p["samples_ms"] for p in parts]),
        "samples_total": sum(p["samples_total"] for p in parts),
        "latency_sketch": merge_sketches([p.get("latency_sketch") or [] for p in parts]),
    }


def merge_sketches(wires: list[list[list[int]]]) -> list[list[int]]:
    """Wire forms of latency sketches (``LatencySketch.to_wire()``) -> that of their merge."""
    merged = LatencySketch()
    for wire in wires:
        merged = merged.merge(LatencySketch.from_wire(wire))
    return merged.to_wire()


def interleave_newest_first(rings: list[list[float]]) -> list[float]:
    """Rings (each oldest first) -> one list, oldest first, whose tail alternates between
    the rings' newest samples."""
    newest_first = [ring[::-1] for ring in rings if ring]
    merged: list[float] = []
    for depth in range(max((len(r) for r in newest_first), default=0)):
        merged.extend(r[depth] for r in newest_first if depth < len(r))
    merged.reverse()
    return merged


def overlay(shared: ReleasesDict, answered: ReleasesDict) -> dict[str, dict[str, Any]]:
    """A live worker's report: the counters it keeps in shared memory (``shared``), with
    the ring and the count in flight of its link answer (``answered``, empty when it did
    not answer). A release counted only in the worker's private memory (its name too long
    for a slot, or no slot free) is taken from the answer as it is."""
    report = {version: dict(stats) for version, stats in answered.items()}
    for version, counters in shared.items():
        live = answered.get(version, {})
        report[version] = {**counters, "inflight": live.get("inflight", 0),
                           "samples_ms": live.get("samples_ms", [])}
    return report


def retire(releases: ReleasesDict) -> dict[str, dict[str, Any]]:
    """A dead worker's last counters as they stay in the sum: nothing in flight any more,
    no samples to offer (its ring died with it), everything it counted kept."""
    return {version: {**stats, "inflight": 0, "samples_ms": []}
            for version, stats in releases.items()}


class WorkerLedger:
    """The supervisor's memory of what each worker (by spawn id) last reported."""

    def __init__(self) -> None:
        #: sums of the last counters of every worker that died
        self.retired: dict[str, dict[str, Any]] = {}
        #: spawn id -> last counters of a live worker
        self.last: dict[int, ReleasesDict] = {}
        self._dead: set[int] = set()

    def observe(self, worker_id: int, releases: ReleasesDict) -> None:
        """Record a live worker's report; a report that arrives after the worker was
        declared dead is ignored (it is already in ``retired``)."""
        if worker_id not in self._dead:
            self.last[worker_id] = releases

    def worker_died(self, worker_id: int, final: ReleasesDict | None = None) -> None:
        """Retire a worker's counters: ``final``, what its shared memory held after it
        died, over its last report (which keeps the releases it counted privately)."""
        self._dead.add(worker_id)
        releases = self.last.pop(worker_id, None)
        if final:
            releases = {**(releases or {}), **overlay(final, {})}
        if releases:
            self.retired = sum_releases([self.retired, retire(releases)])

    def total(self) -> dict[str, dict[str, Any]]:
        """Retired counters plus every live worker's last report."""
        return sum_releases([self.retired, *self.last.values()])


@dataclass(frozen=True)
class SummedRelease:
    """The attributes ``render_prometheus`` reads, from a summed ``ReleaseDict``."""

    requests: int
    errors_5xx: int
    buckets: list[int]
    latency_sum_ms: float
    inflight: int

    @classmethod
    def from_dict(cls, stats: ReleaseDict) -> SummedRelease:
        return cls(requests=stats["requests"], errors_5xx=stats["errors_5xx"],
                   buckets=list(stats["latency_buckets"]),
                   latency_sum_ms=stats["latency_sum_ms"], inflight=stats["inflight"])


@dataclass(frozen=True)
class SummedMetrics:
    started_at: float
    releases: dict[str, SummedRelease]

    @classmethod
    def from_dict(cls, started_at: float, releases: ReleasesDict) -> SummedMetrics:
        return cls(started_at, {v: SummedRelease.from_dict(s) for v, s in releases.items()})

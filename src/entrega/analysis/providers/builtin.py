"""The builtin provider: the router's own per-release counters, latency histogram,
latency sketch and ring of recent latencies.

A snapshot is plain JSON so the controller can keep a window's baseline in the store
(``analysis_runs.baseline``) and judge the same window after a restart. Every snapshot
carries ``samples_total`` (one integer per release). Only the *latest* snapshot of a check
carries the ring itself (``samples_ms``, up to a few thousand floats per release): the
baseline needs just the count to know which ring entries are new (see ``window.py``), and
persisting rings would bloat the store once a second.

Both carry the release's cumulative latency sketch (``latency_sketch``, ``[index, count]``
pairs, a few hundred at most), when the router kind keeps one: the baseline needs all of
it, since a window's sketch is the latest minus the baseline, bucket by bucket.
"""

from __future__ import annotations

from typing import Any

from entrega.dataplane.sketch import LatencySketch
from entrega.errors import InvalidRecord
from entrega.routers.base import ReleaseMetrics, Router


async def snapshot(router: Router, *, samples: bool = False) -> dict[str, Any]:
    """The router's counters now; ``samples=True`` adds the latency rings (latest only)."""
    metrics = await router.metrics()
    releases: dict[str, Any] = {}
    for version, m in metrics.releases.items():
        data: dict[str, Any] = {"requests": m.requests, "errors_5xx": m.errors_5xx,
                                "latency_buckets": list(m.latency_buckets),
                                "samples_total": m.samples_total}
        if m.latency_sketch is not None:
            data["latency_sketch"] = m.latency_sketch.to_wire()
        if samples:
            data["samples_ms"] = list(m.samples_ms)
        releases[version] = data
    return {"started_at": metrics.started_at, "series": metrics.series, "releases": releases}


def router_restarted(baseline: dict[str, Any], latest: dict[str, Any]) -> bool:
    """Whether the router's counters started again between two snapshots, so that the
    latest one is the whole window. A baseline persisted before snapshots named their
    ``series`` has none: it is then judged by ``started_at`` alone."""
    if baseline.get("started_at") != latest.get("started_at"):
        return True
    return "series" in baseline and baseline["series"] != latest.get("series", "")


def release_metrics(snap: dict[str, Any], version: str | None) -> ReleaseMetrics | None:
    if version is None:
        return None
    data = snap.get("releases", {}).get(version)
    if data is None:
        return None
    return ReleaseMetrics(requests=int(data["requests"]), errors_5xx=int(data["errors_5xx"]),
                          latency_buckets=tuple(int(c) for c in data["latency_buckets"]),
                          samples_ms=tuple(float(s) for s in data.get("samples_ms") or ()),
                          samples_total=int(data.get("samples_total") or 0),
                          latency_sketch=_sketch(data.get("latency_sketch"), version))


def _sketch(wire: Any, version: str) -> LatencySketch | None:
    """A snapshot's sketch; ``None`` when it has none (a router kind without one, or a
    baseline stored before sketches existed)."""
    if wire is None:
        return None
    try:
        return LatencySketch.from_wire(wire)
    except ValueError as exc:
        raise InvalidRecord(f"the snapshot of release {version!r}: latency_sketch: {exc}",
                            ) from None

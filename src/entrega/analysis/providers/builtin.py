"""The builtin provider: the router's own per-release counters, latency histogram and
ring of recent latencies.

A snapshot is plain JSON so the controller can keep a window's baseline in the store
(``analysis_runs.baseline``) and judge the same window after a restart. Every snapshot
carries ``samples_total`` (one integer per release). Only the *latest* snapshot of a check
carries the ring itself (``samples_ms``, up to a few thousand floats per release): the
baseline needs just the count to know which ring entries are new (see ``window.py``), and
persisting rings would bloat the store once a second.
"""

from __future__ import annotations

from typing import Any

from entrega.routers.base import ReleaseMetrics, Router


async def snapshot(router: Router, *, samples: bool = False) -> dict[str, Any]:
    """The router's counters now; ``samples=True`` adds the latency rings (latest only)."""
    metrics = await router.metrics()
    releases: dict[str, Any] = {}
    for version, m in metrics.releases.items():
        data: dict[str, Any] = {"requests": m.requests, "errors_5xx": m.errors_5xx,
                                "latency_buckets": list(m.latency_buckets),
                                "samples_total": m.samples_total}
        if samples:
            data["samples_ms"] = list(m.samples_ms)
        releases[version] = data
    return {"started_at": metrics.started_at, "series": metrics.series, "releases": releases}


def release_metrics(snap: dict[str, Any], version: str | None) -> ReleaseMetrics | None:
    if version is None:
        return None
    data = snap.get("releases", {}).get(version)
    if data is None:
        return None
    return ReleaseMetrics(requests=int(data["requests"]), errors_5xx=int(data["errors_5xx"]),
                          latency_buckets=tuple(int(c) for c in data["latency_buckets"]),
                          samples_ms=tuple(float(s) for s in data.get("samples_ms") or ()),
                          samples_total=int(data.get("samples_total") or 0))

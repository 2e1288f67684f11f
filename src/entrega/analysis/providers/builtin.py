"""The builtin provider: the router's own per-release counters and latency histogram.

A snapshot is plain JSON so the controller can keep a window's baseline in the store
(analysis_runs.baseline) and judge the same window after a restart.
"""

from __future__ import annotations

from typing import Any

from entrega.routers.base import ReleaseMetrics, Router


async def snapshot(router: Router) -> dict[str, Any]:
    metrics = await router.metrics()
    return {
        "started_at": metrics.started_at,
        "releases": {
            version: {"requests": m.requests, "errors_5xx": m.errors_5xx,
                      "latency_buckets": list(m.latency_buckets)}
            for version, m in metrics.releases.items()
        },
    }


def release_metrics(snap: dict[str, Any], version: str | None) -> ReleaseMetrics | None:
    if version is None:
        return None
    data = snap.get("releases", {}).get(version)
    if data is None:
        return None
    return ReleaseMetrics(requests=int(data["requests"]), errors_5xx=int(data["errors_5xx"]),
                          latency_buckets=tuple(int(c) for c in data["latency_buckets"]))

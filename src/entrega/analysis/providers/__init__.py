"""Metric providers: raw measurements only; judging happens in ``entrega.analysis.judges``.

``builtin`` (the router's counters, by snapshots) is always there; ``prometheus`` and
``http`` are external providers behind ``MetricProvider``. The controller calls
:func:`measure_external` once per check, beside its builtin snapshot, and passes the result
to ``evaluate_window(..., measurements=...)``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import httpx

from entrega.analysis.providers.base import Measurement, MeasureWindow, MetricProvider
from entrega.analysis.providers.http import HttpProvider
from entrega.analysis.providers.prometheus import PrometheusProvider
from entrega.config import MetricConfig

__all__ = ["PROVIDERS", "Measurement", "MeasureWindow", "MetricProvider", "measure_external"]

#: External providers by ``provider:`` kind.
PROVIDERS: dict[str, type[PrometheusProvider] | type[HttpProvider]] = {
    "prometheus": PrometheusProvider,
    "http": HttpProvider,
}


async def measure_external(metrics: Mapping[str, MetricConfig], *, app: str, canary: str,
                           stable: str | None, window: MeasureWindow,
                           client: httpx.AsyncClient | None = None,
                           ) -> dict[str, dict[str, Measurement]]:
    """Measure every non-builtin metric for canary and stable, concurrently.

    Returns ``{metric: {"canary": Measurement, "stable": Measurement}}`` (no ``stable``
    key without a stable release). Never raises for an unreachable server: that is a
    Measurement without a value.

    Without an external metric nothing is opened: an HTTP client costs ~50 ms of CPU to
    create (it loads the CA bundle), and a thousand canaries checked every second on the
    router's counters alone must not pay that per check (``bench/scale.py``).
    """
    if all(cfg.provider == "builtin" for cfg in metrics.values()):
        return {}
    owned = client is None
    client = client or httpx.AsyncClient()
    try:
        jobs: list[tuple[str, str, asyncio.Task[Measurement]]] = []
        async with asyncio.TaskGroup() as group:
            for name, cfg in metrics.items():
                if cfg.provider == "builtin":
                    continue
                provider = PROVIDERS[cfg.provider](app=app, client=client)
                for role, release in (("canary", canary), ("stable", stable)):
                    if release is not None:
                        task = group.create_task(provider.measure(metric=cfg, release=release,
                                                                  window=window))
                        jobs.append((name, role, task))
        result: dict[str, dict[str, Measurement]] = {}
        for name, role, task in jobs:
            result.setdefault(name, {})[role] = task.result()
        return result
    finally:
        if owned:
            await client.aclose()

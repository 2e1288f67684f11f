"""Sampling every router's per-release counters into the store, for the release's whole life.

The analysis only looks at a canary's windows; scorecards need each release's traffic
from its first request to its last. The controller calls :meth:`MetricsCollector.
maybe_collect` on every pass; it samples at most every ``interval_s`` and writes one
*cumulative* snapshot per (environment, release) whose counters or weight changed since the
last one written (an idle release costs nothing). Cumulative rather than deltas: a
restarted controller needs no memory to go on, and a lost sample loses resolution, not
requests (``insights.series`` takes the differences).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from entrega.errors import EntregaError
from entrega.routers.base import Router
from entrega.store.insights_repository import InsightsRepository
from entrega.store.models import ReleaseSample

log = logging.getLogger("entrega.insights")

#: Seconds between samples. Five gives a release that lived a minute a dozen points on
#: its plots, and costs one row per live release per five seconds (17k rows a day).
INTERVAL_S = 5.0


class HasRouter(Protocol):
    @property
    def router(self) -> Router: ...


class MetricsCollector:
    def __init__(self, app: str, insights: InsightsRepository, *,
                 interval_s: float = INTERVAL_S,
                 write: Callable[[Sequence[ReleaseSample]], int] | None = None) -> None:
        self.app = app
        self.insights = insights
        #: where the samples go: the store at once, or with a server's other writes
        #: that may wait a moment (controller/batched.py)
        self.write = write or insights.add_samples
        self.interval_s = interval_s
        self._last_at: float | None = None
        self._written: dict[tuple[str, str], ReleaseSample] | None = None

    async def maybe_collect(self, runtimes: Mapping[str, HasRouter], *, now: float) -> int:
        """Sample every environment's router if ``interval_s`` has passed since the last
        time; returns the number of samples written. Never raises for a router that does
        not answer (the next pass tries again)."""
        if self._last_at is not None and now - self._last_at < self.interval_s:
            return 0
        self._last_at = now
        return await self.collect(runtimes, now=now)

    async def collect(self, runtimes: Mapping[str, HasRouter], *, now: float) -> int:
        if self._written is None:
            self._written = self.insights.latest_samples(self.app)
        rows: list[ReleaseSample] = []
        for environment, runtime in runtimes.items():
            try:
                metrics = await runtime.router.metrics()
            except EntregaError as exc:
                log.debug("no metrics from %s's router: %s", environment, exc)
                continue
            try:
                weights: dict[str, int] = dict((await runtime.router.get_routes()).weights)
            except EntregaError:
                weights = {}
            for version, m in metrics.releases.items():
                weight = weights.get(version, 0) if weights else None
                last = self._written.get((environment, version))
                if last is not None and last.router_started_at == metrics.started_at \
                        and last.requests == m.requests and last.errors_5xx == m.errors_5xx \
                        and last.inflight == m.inflight and last.weight == weight:
                    continue
                row = ReleaseSample(
                    time=now, app=self.app, environment=environment, version=version,
                    router_started_at=metrics.started_at, requests=m.requests,
                    errors_5xx=m.errors_5xx, latency_buckets=list(m.latency_buckets),
                    latency_sum_ms=m.latency_sum_ms, inflight=m.inflight, weight=weight)
                rows.append(row)
                self._written[(environment, version)] = row
        return self.write(rows)

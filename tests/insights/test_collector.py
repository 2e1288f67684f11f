"""The collector against a real embedded router process and real backends."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from entrega.insights.collector import MetricsCollector
from entrega.insights.series import Sample, compute_intervals, compute_totals
from entrega.routers.base import Router
from entrega.store import Store
from entrega.store.insights_repository import InsightsRepository
from tests.routers.conftest import (  # noqa: F401 - fixtures
    Backend,
    RouterFactory,
    backends,
    make_router,
    make_routes,
)

pytestmark = pytest.mark.real


@dataclass
class Runtime:
    router: Router


def totals_of(insights: InsightsRepository, version: str) -> tuple[int, int]:
    rows = insights.samples("shop", version, environment="production")
    t = compute_totals(compute_intervals([Sample(r.time, r.router_started_at, r.requests,
                                                 r.errors_5xx, tuple(r.latency_buckets))
                                          for r in rows]))
    return t.requests, sum(t.latency_buckets)


async def test_samples_each_release_over_its_life(store: Store,
                                                  backends: dict[str, Backend],  # noqa: F811
                                                  make_router: RouterFactory,  # noqa: F811
                                                  ) -> None:
    insights = InsightsRepository(store)
    router = await make_router()
    await router.set_routes(make_routes(backends, {"v1": 50, "v2": 50},
                                        releases=("v1", "v2")))
    runtimes = {"production": Runtime(router)}
    collector = MetricsCollector("shop", insights, interval_s=5)
    async with httpx.AsyncClient(base_url=f"http://{router.listen}", timeout=10) as client:
        for _ in range(40):
            assert (await client.get("/")).status_code == 200
        assert await collector.maybe_collect(runtimes, now=1000.0) == 2
        assert await collector.maybe_collect(runtimes, now=1003.0) == 0  # within interval_s
        # nothing happened: nothing written
        assert await collector.maybe_collect(runtimes, now=1005.0) == 0
        await router.set_routes(make_routes(backends, {"v2": 100}, releases=("v2",)))
        for _ in range(30):
            await client.get("/")
        assert await collector.maybe_collect(runtimes, now=1010.0) >= 1
    v1_requests, v1_latencies = totals_of(insights, "v1")
    v2_requests, v2_latencies = totals_of(insights, "v2")
    assert v1_requests + v2_requests == 70
    assert v1_latencies == v1_requests and v2_latencies == v2_requests
    assert v2_requests >= 30
    latest = insights.latest_samples("shop")
    assert latest[("production", "v2")].weight == 100
    # A restarted controller picks up where the store is: no duplicate sample.
    again = MetricsCollector("shop", insights, interval_s=5)
    assert await again.maybe_collect(runtimes, now=1020.0) == 0


async def test_a_router_that_does_not_answer_is_skipped(tmp_path: Path, store: Store) -> None:
    from entrega.routers.embedded import EmbeddedRouter

    down = EmbeddedRouter(name="down", listen="127.0.0.1:1", preview_listen=None,
                          state_dir=tmp_path, app="shop")
    collector = MetricsCollector("shop", InsightsRepository(store))
    assert await collector.maybe_collect({"production": Runtime(down)}, now=1.0) == 0
    await down.close()

"""An analysis window is the difference of two snapshots of one monotonic series, on every
router kind: real routers, real requests, counted against what the clients saw.

Requests sent before the window's baseline must not be in the window, and every request
sent after it must be, for the canary and for the stable alike.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import httpx
import pytest

from entrega.analysis.evaluate import compute_windows, router_restarted
from entrega.analysis.providers.builtin import snapshot
from entrega.routers.embedded import EmbeddedRouter
from entrega.routers.haproxy import HaproxyRouter
from tests.routers.conftest import (
    Backend,
    HaproxyFactory,
    RouterFactory,
    make_routes,
    reload_haproxy,
    wait_for,
)

pytestmark = pytest.mark.real

CANARY, STABLE = "v2", "v1"
Router = EmbeddedRouter | HaproxyRouter


@pytest.fixture(params=["embedded", "haproxy"])
async def router(request: pytest.FixtureRequest, make_router: RouterFactory,
                 make_haproxy: HaproxyFactory, backends: dict[str, Backend]) -> Router:
    made: Router = await (make_router() if request.param == "embedded" else make_haproxy())
    await made.set_routes(make_routes(backends, {STABLE: 50, CANARY: 50},
                                      releases=(STABLE, CANARY)))
    return made


async def send(router: Router, n: int, *, path: str = "/") -> tuple[Counter[str], Counter[str]]:
    """``n`` requests of new visitors: (requests, 5xx answers) by the release that served."""
    served: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    async with httpx.AsyncClient(base_url=f"http://{router.listen}") as c:
        for _ in range(n):
            r = await c.get(path)
            release = r.headers["x-entrega-release"]
            served[release] += 1
            if r.status_code >= 500:
                failed[release] += 1
            c.cookies.clear()
    return served, failed


async def settled(router: Router, baseline: dict[str, Any], sent: int) -> dict[str, Any]:
    """The latest snapshot once the router has counted ``sent`` requests in the window
    (a router may count a request a moment after its client has the answer); a window
    that counts more than that fails the test's equality check, not this wait."""
    latest: dict[str, Any] = {}

    async def counted() -> bool:
        nonlocal latest
        latest = await snapshot(router, samples=True)
        canary, stable = compute_windows(baseline, latest, canary=CANARY, stable=STABLE)
        assert stable is not None
        return canary.requests + stable.requests >= sent

    await wait_for(counted, what=f"{sent} requests counted in the window")
    return latest


async def test_window_counts_the_requests_after_its_baseline(router: Router) -> None:
    await send(router, 40)  # before the window: never in it
    await send(router, 4, path="/status?code=500")
    await asyncio.sleep(1.1)  # a second passes: an uptime-based start time would move
    baseline = await snapshot(router)
    served, _ = await send(router, 60)
    errors_served, failed = await send(router, 6, path="/status?code=500")
    served += errors_served
    latest = await settled(router, baseline, 66)

    assert not router_restarted(baseline, latest)
    canary, stable = compute_windows(baseline, latest, canary=CANARY, stable=STABLE)
    assert stable is not None
    assert served[CANARY] > 0 and served[STABLE] > 0, served
    assert (canary.requests, canary.errors) == (served[CANARY], failed[CANARY])
    assert (stable.requests, stable.errors) == (served[STABLE], failed[STABLE])

    # the next window starts where this one ended
    served, _ = await send(router, 30)
    later = await settled(router, latest, 30)
    canary, stable = compute_windows(latest, later, canary=CANARY, stable=STABLE)
    assert stable is not None
    assert (canary.requests, stable.requests) == (served[CANARY], served[STABLE])


async def test_haproxy_reload_continues_the_series(
        make_haproxy: HaproxyFactory, backends: dict[str, Backend]) -> None:
    """HAProxy's counters come from entrega's log sink, which outlives HAProxy's workers: a
    reload (a new worker) continues the series, and the window is exactly the requests
    served after its baseline, across the reload."""
    haproxy = await make_haproxy()
    await haproxy.set_routes(make_routes(backends, {STABLE: 50, CANARY: 50},
                                         releases=(STABLE, CANARY)))
    await send(haproxy, 40)
    baseline = await snapshot(haproxy)
    await reload_haproxy(haproxy)
    served, _ = await send(haproxy, 20)
    latest = await settled(haproxy, baseline, 20)
    assert not router_restarted(baseline, latest)
    canary, stable = compute_windows(baseline, latest, canary=CANARY, stable=STABLE)
    assert stable is not None
    assert (canary.requests, stable.requests) == (served[CANARY], served[STABLE])

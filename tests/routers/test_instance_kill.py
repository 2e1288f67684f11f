"""An app instance killed (kill -9) mid-request or while pooled, through both routers.

What is retried (once, on the release's other instance): a GET/HEAD/OPTIONS that got no
response byte, and any request whose connection was refused. What never is: a request
whose bytes may have reached the dead app other than those (a POST: 502 is the truth).
Real backend processes, a real router process, real HAProxy.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import httpx
import pytest

from entrega.routers.base import Router, Routes
from tests.routers.conftest import (
    Backend,
    HaproxyFactory,
    RouterFactory,
    start_backend,
    wait_for,
)

pytestmark = pytest.mark.real

ANYWHERE = httpx.Limits(max_connections=100, max_keepalive_connections=100)


@pytest.fixture
def pair() -> Iterator[tuple[Backend, Backend]]:
    """Two instances of release v1, of which the tests kill the first."""
    a, b = start_backend("v1-doomed"), start_backend("v1-live")
    yield a, b
    for backend in (a, b):
        with contextlib.suppress(ProcessLookupError):
            backend.proc.kill()
        backend.proc.wait(10)


@pytest.fixture(params=["embedded", "haproxy"])
async def any_router(request: pytest.FixtureRequest, make_router: RouterFactory,
                     make_haproxy: HaproxyFactory) -> AsyncIterator[tuple[Router, str]]:
    if request.param == "embedded":
        router: Router = await make_router("kill")
        yield router, f"http://{router.listen}"
    else:
        haproxy = await make_haproxy("kill")
        yield haproxy, f"http://{haproxy.listen}"


async def _routed(any_router: tuple[Router, str], pair: tuple[Backend, Backend]) -> str:
    router, url = any_router
    a, b = pair
    await router.set_routes(Routes(backends={"v1": (a.endpoint, b.endpoint)},
                                   weights={"v1": 100}))
    return url


async def _kill_while_sleeping(pair: tuple[Backend, Backend], total: int,
                               send: Callable[[], Awaitable[httpx.Response]]
                               ) -> tuple[list[httpx.Response], int]:
    """Send ``total`` requests at once, kill -9 the first instance once all of them are
    being served (read whole, held in /slow by one instance or the other); returns the
    answers and how many of the requests the killed instance held."""
    a, b = pair
    tasks = [asyncio.ensure_future(send()) for _ in range(total)]

    async def all_held() -> bool:
        return await a.sleeping() + await b.sleeping() == total

    await wait_for(all_held, what=f"{total} requests held by the two instances")
    held = await a.sleeping()
    assert held > 0, "round-robin sent nothing to the instance to kill"
    a.proc.kill()
    a.proc.wait(10)
    return list(await asyncio.gather(*tasks)), held


async def test_gets_in_flight_on_a_killed_instance_are_served_by_the_other(
        any_router: tuple[Router, str], pair: tuple[Backend, Backend]) -> None:
    url = await _routed(any_router, pair)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=ANYWHERE) as c:
        responses, _ = await _kill_while_sleeping(pair, 12, lambda: c.get("/slow?ms=1500"))
        assert [r.status_code for r in responses] == [200] * 12
        assert {r.headers["x-backend"] for r in responses} == {"v1-live"}
        # later requests: the dead instance is still in the table, refused, passed over
        later = await asyncio.gather(*(c.get("/") for _ in range(20)))
        assert [r.status_code for r in later] == [200] * 20


async def test_instance_killed_while_pooled_loses_no_request(
        any_router: tuple[Router, str], pair: tuple[Backend, Backend]) -> None:
    url = await _routed(any_router, pair)
    a, _ = pair
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=ANYWHERE) as c:
        # idle keep-alive connections to both instances in the router's pool
        warm = await asyncio.gather(*(c.get("/") for _ in range(20)))
        assert {r.headers["x-backend"] for r in warm} == {"v1-doomed", "v1-live"}
        a.proc.kill()
        a.proc.wait(10)
        for method in ("GET", "HEAD", "OPTIONS", "POST"):
            responses = await asyncio.gather(*(c.request(method, "/") for _ in range(10)))
            assert [r.status_code for r in responses] == [200] * 10, method
            assert {r.headers["x-backend"] for r in responses} == {"v1-live"}


async def test_post_that_reached_the_killed_instance_is_not_replayed(
        any_router: tuple[Router, str], pair: tuple[Backend, Backend]) -> None:
    url = await _routed(any_router, pair)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=ANYWHERE) as c:
        responses, held = await _kill_while_sleeping(
            pair, 6, lambda: c.post("/slow?ms=1500", content=b"order #1"))
    # the live instance's POSTs answered; each one the dead instance held got a 502
    # (sent again to the live one, it would have been answered 200)
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * (6 - held) + [502] * held

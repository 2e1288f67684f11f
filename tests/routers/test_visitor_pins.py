"""Visitors that keep their cookies (mobile apps, ``requests.Session``, ``httpx.Client``)
through a rollout, on a real router process and on real HAProxy.

A visitor's pin belongs to the rollout it was drawn in: pins from before the rollout
are drawn again, so the canary gets its share of them; within the rollout each visitor
stays on one release and only moves to the canary as its weight grows.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from entrega.routers.base import Router, Routes
from tests.routers.conftest import Backend, HaproxyFactory, RouterFactory, make_routes

pytestmark = pytest.mark.real

VISITORS = 1000


@dataclass
class Visitor:
    """One client keeping its own cookies; ``seen``: releases that answered it."""

    cookies: dict[str, str] = field(default_factory=dict)
    seen: list[str] = field(default_factory=list)


async def visit(url: str, visitors: list[Visitor], *, rounds: int) -> None:
    """Every visitor makes ``rounds`` requests, sending its cookies and keeping new ones.

    (A few raw keep-alive connections shared by all visitors: a thousand visitors a round
    through httpx would cost this shared machine minutes.)"""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    queue = [v for _ in range(rounds) for v in visitors]
    queue.reverse()

    async def connection() -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            while queue:
                visitor = queue.pop()
                cookie = "; ".join(f"{k}={v}" for k, v in visitor.cookies.items())
                writer.write(f"GET / HTTP/1.1\r\nHost: shop\r\n"
                             f"{'Cookie: ' + cookie + chr(13) + chr(10) if cookie else ''}"
                             "\r\n".encode())
                head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)).decode()
                status, *lines = head.split("\r\n")
                assert status.startswith("HTTP/1.1 200"), status
                headers = [line.partition(": ") for line in lines if line]
                length = next(int(v) for k, _, v in headers if k.lower() == "content-length")
                await reader.readexactly(length)
                for k, _, v in headers:
                    if k.lower() == "set-cookie":
                        name, _, rest = v.partition("=")
                        visitor.cookies[name] = rest.split(";", 1)[0]
                    elif k.lower() == "x-entrega-release":
                        visitor.seen.append(v)
        finally:
            writer.close()

    await asyncio.gather(*(connection() for _ in range(8)))


def on_canary(visitors: list[Visitor]) -> set[int]:
    """The visitors the canary (v2) served, each having seen one release only."""
    assert all(len(set(v.seen)) == 1 for v in visitors), "a visitor changed release"
    assert all(v.cookies["entrega-release"] == v.seen[-1] for v in visitors)
    return {i for i, v in enumerate(visitors) if v.seen[-1] == "v2"}


def forget_seen(visitors: list[Visitor]) -> None:
    for visitor in visitors:
        visitor.seen.clear()


@pytest.fixture(params=["embedded", "haproxy"])
async def any_router(request: pytest.FixtureRequest, make_router: RouterFactory,
                     make_haproxy: HaproxyFactory) -> AsyncIterator[tuple[Router, str]]:
    if request.param == "embedded":
        router: Router = await make_router("pins")
        yield router, f"http://{router.listen}"
    else:
        haproxy = await make_haproxy("pins")
        yield haproxy, f"http://{haproxy.listen}"


async def test_pins_from_before_a_rollout_do_not_starve_its_canary(
        any_router: tuple[Router, str], backends: dict[str, Backend]) -> None:
    router, url = any_router

    async def route(weights: dict[str, int], salt: str) -> None:
        routes = dataclasses.replace(make_routes(backends, weights, releases=("v1", "v2")),
                                     pin_salt=salt)
        await router.set_routes(routes)
        assert (await router.get_routes()).same_table(routes)  # the salt reads back

    visitors = [Visitor() for _ in range(VISITORS)]
    await route({"v1": 100}, "rollout-6")  # the previous rollout ended on v1
    await visit(url, visitors, rounds=1)
    assert all(v.cookies["entrega-release"] == "v1" for v in visitors)

    # rollout 7 starts its canary at 10%: 10% +- 3% of these pinned visitors get it
    await route({"v1": 90, "v2": 10}, "rollout-7")
    forget_seen(visitors)
    await visit(url, visitors, rounds=2)
    at_10 = on_canary(visitors)
    assert abs(len(at_10) - VISITORS * 0.10) <= VISITORS * 0.03, len(at_10)

    # the weight grows: the canary's visitors stay, others join it
    await route({"v1": 50, "v2": 50}, "rollout-7")
    forget_seen(visitors)
    await visit(url, visitors, rounds=1)
    at_50 = on_canary(visitors)
    assert at_10 <= at_50
    assert abs(len(at_50) - VISITORS * 0.5) <= 4 * math.sqrt(VISITORS * 0.25), len(at_50)

    # the next rollout draws again, independently of this one
    await route({"v1": 90, "v2": 10}, "rollout-8")
    forget_seen(visitors)
    await visit(url, visitors, rounds=2)
    next_10 = on_canary(visitors)
    assert abs(len(next_10) - VISITORS * 0.10) <= VISITORS * 0.03, len(next_10)
    # independent draws share ~1% of visitors (10 of 1000), the same draw would share 10%
    assert len(next_10 & at_10) < 40, len(next_10 & at_10)


async def test_rollback_moves_pinned_canary_visitors_back(
        any_router: tuple[Router, str], backends: dict[str, Backend]) -> None:
    router, url = any_router

    def routes(weights: dict[str, int]) -> Routes:
        return dataclasses.replace(make_routes(backends, weights, releases=("v1", "v2")),
                                   pin_salt="rollout-9")

    visitors = [Visitor() for _ in range(200)]
    await router.set_routes(routes({"v1": 50, "v2": 50}))
    await visit(url, visitors, rounds=1)
    assert on_canary(visitors)
    await router.set_routes(routes({"v1": 100, "v2": 0}))  # the same rollout, rolled back
    forget_seen(visitors)
    await visit(url, visitors, rounds=1)
    assert not on_canary(visitors)  # and their entrega-release cookie says v1 again

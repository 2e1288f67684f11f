"""Feedback through a real embedded router to a real server: per visitor, not per router.

Visitors are told apart by their loopback addresses (127.0.0.2, 127.0.0.3...): the router
appends the address it sees to X-Forwarded-For and proves itself with its key; a process
that connects to the server directly is one client whatever X-Forwarded-For it writes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from entrega.dataplane import proof
from entrega.feedback import FeedbackSettings
from entrega.net import free_port
from entrega.routers.embedded import EmbeddedRouter
from tests.insights.stack import Stack, make_stack, served

pytestmark = pytest.mark.real


@pytest.fixture
async def wired(tmp_path: Path) -> AsyncIterator[tuple[Stack, str, str]]:
    """(stack, the server's URL, the router's URL) with a burst of 3 per client."""
    stack = make_stack(tmp_path, settings=FeedbackSettings(burst=3, rate_per_minute=6))
    async with served(stack.app) as api:
        router = EmbeddedRouter(name="shop-production", listen=f"127.0.0.1:{free_port()}",
                                preview_listen=None, state_dir=stack.service.config.state_path,
                                app="shop", control_plane_url=api)
        await router.ensure_running()
        try:
            yield stack, api, f"http://{router.listen}"
        finally:
            await asyncio.wait_for(router.shutdown(), 15)
            await router.close()


async def post_from(address: str, url: str, headers: dict[str, str] | None = None) -> int:
    transport = httpx.AsyncHTTPTransport(local_address=address)
    async with httpx.AsyncClient(transport=transport, timeout=10) as client:
        response = await client.post(url + "/.entrega/feedback", json={"rating": 4},
                                     headers=headers)
        return response.status_code


async def test_the_router_keeps_per_visitor_limits(wired: tuple[Stack, str, str]) -> None:
    stack, _, router = wired
    first = [await post_from("127.0.0.2", router) for _ in range(4)]
    assert first == [201, 201, 201, 429]
    # Another visitor through the same router has a bucket of its own...
    assert await post_from("127.0.0.3", router) == 201
    # ...and a visitor writing its own X-Forwarded-For (and a key of its own) gets none more.
    forging = [await post_from("127.0.0.4", router, {
        "X-Forwarded-For": f"127.0.113.{n}", proof.HEADER: "f" * 64}) for n in range(4)]
    assert forging == [201, 201, 201, 429]
    assert len({r.client for r in stack.insights.feedback("shop")}) == 3


async def test_a_direct_client_is_limited_as_one(wired: tuple[Stack, str, str]) -> None:
    stack, api, _ = wired
    statuses = [await post_from("127.0.0.5", api, {"X-Forwarded-For": f"127.0.113.{n}"})
                for n in range(5)]
    assert statuses == [201, 201, 201, 429, 429]
    assert len({r.client for r in stack.insights.feedback("shop")}) == 1


def test_the_key_file_is_private_and_stable(tmp_path: Path) -> None:
    path = proof.key_path(tmp_path)
    key = proof.load_or_create_key(path)
    assert len(key) == 64 and path.stat().st_mode & 0o777 == 0o600
    assert proof.load_or_create_key(path) == key
    assert proof.read_key(str(path)) == key and proof.read_key(str(tmp_path / "no")) == b""

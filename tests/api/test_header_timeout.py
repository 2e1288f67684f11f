"""The API on a real socket cuts off a client whose request head is too slow (slowloris),
and only that one."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from tests.api.slow_client import trickle_head
from tests.insights.stack import Stack, served

pytestmark = pytest.mark.real


async def test_a_slow_head_is_cut_off_and_others_are_served(stack: Stack) -> None:
    async with served(stack.app, header_timeout_s=1.0) as api:
        port = int(api.rsplit(":", 1)[1])
        async with httpx.AsyncClient(base_url=api, timeout=5) as client:
            slow = await asyncio.open_connection("127.0.0.1", port)
            silent = await asyncio.open_connection("127.0.0.1", port)
            trickling = asyncio.create_task(trickle_head(*slow, every_s=0.2, for_s=8))
            # Meanwhile a normal client is served at once, twice on one connection.
            for _ in range(2):
                started = time.monotonic()
                assert (await client.get("/healthz")).status_code == 200
                assert time.monotonic() - started < 0.5
            took_s, said = await trickling
            assert 0.9 < took_s < 3, f"cut off after {took_s:.1f} s"
            assert said.startswith(b"HTTP/1.1 408 ")
            # A connection that never says anything is closed too.
            assert (await asyncio.wait_for(silent[0].read(), 3)).startswith(b"HTTP/1.1 408 ")
            # A keep-alive connection idle between requests is not cut off by the deadline
            # of a head that has not begun; the next request on it is served.
            await asyncio.sleep(1.5)
            assert (await client.get("/healthz")).status_code == 200
            for _, writer in (slow, silent):
                writer.close()

"""The shop example app on its own: routes, injected failures and graceful shutdown."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from entrega.net import free_port
from entrega.waiting import wait_until

from .conftest import SHOP_APP

pytestmark = pytest.mark.real

RunShop = Callable[..., Awaitable[tuple["subprocess.Popen[bytes]", str]]]

@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(trust_env=False) as client:
        yield client


@pytest.fixture
async def shop(tmp_path: Path, client: httpx.AsyncClient) -> AsyncIterator[RunShop]:
    """Start the shop app in ``tmp_path`` (version 1.2.3); returns (process, base URL)."""
    processes: list[subprocess.Popen[bytes]] = []

    async def run(settings: dict[str, object] | None = None) -> tuple[
            subprocess.Popen[bytes], str]:
        shutil.copy(SHOP_APP, tmp_path / "app.py")
        (tmp_path / "VERSION").write_text("1.2.3\n")
        if settings is not None:
            (tmp_path / "shop.json").write_text(json.dumps(settings))
        port = free_port()
        process = subprocess.Popen([sys.executable, "app.py"], cwd=tmp_path,
                                   env={"PORT": str(port)}, stdout=subprocess.DEVNULL)
        processes.append(process)
        base = f"http://127.0.0.1:{port}"
        async def listening() -> bool:
            try:
                await client.get(f"{base}/healthz")
            except httpx.ConnectError:
                assert process.poll() is None, "the shop app exited"
                return False
            return True

        assert await wait_until(listening, timeout_s=10), "the shop app did not listen in 10 s"
        return process, base

    yield run
    for process in processes:
        process.kill()
        process.wait()


async def test_routes(shop: RunShop, client: httpx.AsyncClient) -> None:
    _, base = await shop()

    health = await client.get(f"{base}/healthz")
    assert (health.status_code, health.text) == (200, "ok\n")
    for path in ("/", "/api/products"):
        response = await client.get(base + path)
        assert response.status_code == 200
        assert response.headers["content-length"] == str(len(response.content))
        assert response.json()["version"] == "1.2.3"
        assert len(response.json()["products"]) == 3
    slow = await client.get(f"{base}/slow?ms=50")
    assert slow.json() == {"version": "1.2.3", "slept_ms": 50}
    echo = await client.post(f"{base}/echo", content=b"hola")
    assert echo.content == b"hola"
    assert (await client.get(f"{base}/nope")).status_code == 404


async def test_error_rate_fails_roughly_that_fraction_of_api_requests(
        shop: RunShop, client: httpx.AsyncClient) -> None:
    _, base = await shop({"error_rate": 0.3})

    statuses = [(await client.get(f"{base}/api/products")).status_code for _ in range(300)]
    health = [(await client.get(f"{base}/healthz")).status_code for _ in range(30)]

    assert set(statuses) == {200, 500}
    assert 0.18 < statuses.count(500) / len(statuses) < 0.42  # p(outside) < 1e-5
    assert set(health) == {200}


async def test_fail_health_and_latency(shop: RunShop, client: httpx.AsyncClient) -> None:
    _, base = await shop({"fail_health": True, "latency_ms": 200})

    assert (await client.get(f"{base}/healthz")).status_code == 503
    began = time.monotonic()
    assert (await client.get(f"{base}/")).status_code == 200
    assert time.monotonic() - began >= 0.2


async def test_sigterm_finishes_in_flight_requests_and_exits_0(
        shop: RunShop, client: httpx.AsyncClient) -> None:
    process, base = await shop()
    async with httpx.AsyncClient(trust_env=False) as idle:
        await idle.get(f"{base}/healthz")  # leaves an idle keep-alive connection open
        async with client.stream("GET", f"{base}/slow?ms=800") as response:
            process.send_signal(signal.SIGTERM)
            body = await response.aread()
        code = await asyncio.to_thread(process.wait, 5)

    assert json.loads(body)["slept_ms"] == 800
    assert code == 0
    with pytest.raises(httpx.ConnectError):
        await client.get(f"{base}/healthz")

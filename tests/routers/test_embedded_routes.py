"""Route changes, draining, persistence and the lifecycle of the router process."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from collections import Counter
from pathlib import Path

import httpx
import pytest

from entrega.errors import RouterError, RouterUnreachable
from entrega.net import MAX_SOCKET_PATH, Endpoint, free_port
from entrega.routers.base import Routes
from entrega.routers.embedded import EmbeddedRouter
from tests.routers.conftest import Backend, RouterFactory, make_routes, wait_for

pytestmark = pytest.mark.real


async def test_no_failed_request_during_100_weight_changes(
        router: EmbeddedRouter, backends: dict[str, Backend]) -> None:
    await router.set_routes(make_routes(backends, {"v1": 100, "v2": 0}))
    stop = asyncio.Event()
    statuses: Counter[int] = Counter()
    releases: Counter[str] = Counter()

    async def hammer() -> None:
        async with httpx.AsyncClient(base_url=f"http://{router.listen}", timeout=10) as c:
            while not stop.is_set():
                r = await c.get("/")
                statuses[r.status_code] += 1
                releases[r.headers.get("x-entrega-release", "-")] += 1
                c.cookies.clear()  # new visitors: follow the weights, not a pin

    workers = [asyncio.create_task(hammer()) for _ in range(6)]
    try:
        for i in range(100):
            w = (i * 37) % 101
            await router.set_routes(make_routes(backends, {"v1": w, "v2": 100 - w}))
    finally:
        stop.set()
        await asyncio.gather(*workers)
    assert set(statuses) == {200}, statuses
    assert sum(statuses.values()) > 300 and set(releases) == {"v1", "v2"}


async def test_removed_release_drains_its_requests_in_flight(
        router: EmbeddedRouter, client: httpx.AsyncClient, backends: dict[str, Backend]) -> None:
    await router.set_routes(make_routes(backends, {"v3": 100}))
    slow = [asyncio.create_task(client.get("/slow?ms=1500")) for _ in range(5)]
    await wait_for(lambda: _inflight(router, "v3", 5), what="5 slow requests in flight")

    await router.set_routes(make_routes(backends, {"v2": 100}, releases=("v2",)))
    routes = await router.get_routes()
    assert set(routes.backends) == {"v2"} and routes.draining == {"v3": 5}
    assert (await client.get("/")).headers["x-entrega-release"] == "v2"

    for response in await asyncio.gather(*slow):
        assert (response.status_code, response.text) == (200, "v3")
    assert (await router.get_routes()).draining == {}


async def test_removed_endpoint_finishes_its_requests(
        router: EmbeddedRouter, client: httpx.AsyncClient, backends: dict[str, Backend]) -> None:
    routes = make_routes(backends, {"v1": 100}, releases=("v1",))
    await router.set_routes(routes)
    slow = [asyncio.create_task(client.get("/slow?ms=800")) for _ in range(4)]
    await wait_for(lambda: _inflight(router, "v1", 4), what="requests in flight")
    only_b = Routes(backends={"v1": (backends["v1-b"].endpoint,)}, weights={"v1": 100})
    await router.set_routes(only_b)
    assert {(await client.get("/")).text for _ in range(6)} == {"v1-b"}
    done = await asyncio.gather(*slow)
    assert [r.status_code for r in done] == [200] * 4
    assert Counter(r.text for r in done) == {"v1-a": 2, "v1-b": 2}


async def test_routes_survive_kill_9_and_restart(
        router: EmbeddedRouter, backends: dict[str, Backend]) -> None:
    routes = make_routes(backends, {"v1": 30, "v2": 70}, preview="v3")
    await router.set_routes(routes)
    pid = router.pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    await wait_for(lambda: _unreachable(router), what="router gone")
    with pytest.raises(RouterUnreachable):
        await router.get_routes()
    await router.ensure_running()
    assert router.pid() != pid
    assert (await router.get_routes()).same_table(routes)
    async with httpx.AsyncClient(base_url=f"http://{router.listen}") as c:
        assert (await c.get("/")).status_code == 200


async def test_ensure_running_adopts_a_running_router(
        router: EmbeddedRouter, backends: dict[str, Backend], tmp_path: Path) -> None:
    await router.set_routes(make_routes(backends, {"v2": 100}))
    again = EmbeddedRouter(name="r", listen=router.listen, preview_listen=None,
                           state_dir=tmp_path, app="shop")
    await again.ensure_running()
    assert again.pid() == router.pid()
    assert (await again.get_routes()).weights == {"v2": 100}
    other = EmbeddedRouter(name="r", listen="127.0.0.1:1", preview_listen=None,
                           state_dir=tmp_path)
    with pytest.raises(RouterError, match="already runs"):
        await other.ensure_running()
    await again.close()
    await other.close()


async def test_busy_port_fails_with_the_address(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        address = f"127.0.0.1:{busy.getsockname()[1]}"
        router = EmbeddedRouter(name="busy", listen=address, preview_listen=None,
                                state_dir=tmp_path)
        with pytest.raises(RouterError, match=f"cannot listen on {address}"):
            await router.ensure_running()
        await router.close()


async def test_control_api_errors_are_clear(router: EmbeddedRouter) -> None:
    async with httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(
            uds=str(router.socket_path)), base_url="http://router") as control:
        r = await control.put("/routes", content=b"{not json")
        assert r.status_code == 400 and "not valid JSON" in r.json()["error"]
        r = await control.put("/routes", json={"backends": {"v1": [{"port": 1}]}})
        assert r.status_code == 400 and "missing field 'host'" in r.json()["error"]
        r = await control.put("/routes", json={"backends": {}, "weights": {"v1": 100}})
        assert r.status_code == 400 and "not in backends" in r.json()["error"]
        assert (await control.get("/nope")).status_code == 404
        assert (await control.delete("/routes")).status_code == 405
        health = (await control.get("/health")).json()
        assert health["ok"] is True and health["pid"] == router.pid()
    endpoint = Endpoint("127.0.0.1", 9, "0")
    with pytest.raises(RouterError, match="sum to 100"):
        await router.set_routes(Routes(backends={"v": (endpoint,)}, weights={"v": 50}))
    assert (await router.get_routes()).backends == {}  # nothing was applied


async def test_graceful_shutdown_finishes_requests_in_flight(
        make_router: RouterFactory, backends: dict[str, Backend]) -> None:
    router = await make_router("drain")
    await router.set_routes(make_routes(backends, {"v2": 100}))
    async with httpx.AsyncClient(base_url=f"http://{router.listen}") as c:
        slow = asyncio.create_task(c.get("/slow?ms=700"))
        await wait_for(lambda: _inflight(router, "v2", 1), what="request in flight")
        await router.shutdown()  # returns once the process is gone
        response = await slow
    assert (response.status_code, response.text) == (200, "v2")
    with pytest.raises(RouterUnreachable):
        await router.get_routes()
    await router.shutdown()  # idempotent


async def test_sigterm_drains_then_exits(
        make_router: RouterFactory, backends: dict[str, Backend]) -> None:
    router = await make_router("term")
    await router.set_routes(make_routes(backends, {"v2": 100}))
    pid = router.pid()
    assert pid is not None
    async with httpx.AsyncClient(base_url=f"http://{router.listen}") as c:
        assert (await c.get("/")).status_code == 200  # an idle keep-alive connection
        slow = asyncio.create_task(c.get("/slow?ms=600"))
        await wait_for(lambda: _inflight(router, "v2", 1), what="request in flight")
        os.kill(pid, signal.SIGTERM)
        response = await slow
        assert (response.status_code, response.text) == (200, "v2")
    # Its log says what held the exit up, if anything does (the drain's deadline is 10 s).
    try:
        await wait_for(lambda: _unreachable(router), timeout_s=20, what="router exit")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; its log:\n{router.log_path.read_text()}") from None
    await wait_for(lambda: _no_file(router.pid_path), what="pidfile removed")
    log = router.log_path.read_text()
    assert "stopped" in log
    assert "drain deadline" not in log and "killing it" not in log, log


async def test_an_idle_keep_alive_client_asking_during_the_drain_gets_its_answer(
        make_router: RouterFactory, backends: dict[str, Backend]) -> None:
    """A draining router does not close an idle keep-alive connection under a request its
    client is sending: the request is answered, with ``Connection: close``, and only then
    is the connection closed (the client's next request opens a fresh one)."""
    router = await make_router("idle")
    await router.set_routes(make_routes(backends, {"v2": 100}))
    pid = router.pid()
    assert pid is not None
    host, port = router.listen.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    request = f"GET / HTTP/1.1\r\nHost: {router.listen}\r\n\r\n".encode()
    writer.write(request)
    first = await reader.readuntil(b"\r\n\r\n")
    assert b" 200 " in first.split(b"\r\n", 1)[0]
    await reader.readexactly(int(first.lower().split(b"content-length: ")[1].split(b"\r")[0]))
    os.kill(pid, signal.SIGTERM)  # the connection is idle now: the drain starts
    await asyncio.sleep(0.3)
    writer.write(request)  # the client asks again on its kept connection
    second = await asyncio.wait_for(reader.read(), timeout=5)  # read until closed
    writer.close()
    head = second.split(b"\r\n\r\n", 1)[0].lower()
    assert head.startswith(b"http/1.1 200 "), second[:200]
    assert b"connection: close" in head
    try:
        await wait_for(lambda: _unreachable(router), timeout_s=20, what="router exit")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; its log:\n{router.log_path.read_text()}") from None
    log = router.log_path.read_text()
    assert "drain deadline" not in log and "killing it" not in log, log


async def _no_file(path: Path) -> bool:
    return not path.exists()


async def test_long_state_dir_uses_a_short_socket_path(
        tmp_path: Path, backends: dict[str, Backend]) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    router = EmbeddedRouter(name="deep", listen=f"127.0.0.1:{free_port()}", preview_listen=None,
                            state_dir=deep)
    assert str(router.socket_path).startswith("/tmp/entrega-")
    assert len(str(router.socket_path)) <= MAX_SOCKET_PATH
    assert router.socket_path == EmbeddedRouter(
        name="deep", listen="x:1", preview_listen=None, state_dir=deep).socket_path
    await router.ensure_running()
    try:
        await router.set_routes(make_routes(backends, {"v2": 100}))
        assert (deep / "routers" / "deep" / "routes.json").exists()
    finally:
        await router.shutdown()
        await router.close()


async def _inflight(router: EmbeddedRouter, release: str, n: int) -> bool:
    metrics = await router.metrics()
    return release in metrics.releases and metrics.releases[release].inflight >= n


async def _unreachable(router: EmbeddedRouter) -> bool:
    try:
        await router.get_routes()
    except RouterUnreachable:
        return True
    return False

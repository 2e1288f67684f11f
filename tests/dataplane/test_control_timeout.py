"""The router's control socket cuts off a client whose request head is too slow."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from entrega.dataplane.admin.control import ControlServer
from entrega.dataplane.routes import Routes
from tests.api.slow_client import trickle_head


class IdlePlane:
    """A data plane with no traffic: the control API is what is under test."""

    def health(self) -> dict[str, object]:
        return {}

    async def routes(self) -> dict[str, object]:
        return Routes().to_dict()

    async def apply(self, routes: Routes) -> None:
        pass

    async def metrics(self) -> dict[str, object]:
        return {}

    async def connections(self) -> int:
        return 0


async def test_a_slow_control_client_is_cut_off(tmp_path: Path) -> None:
    stopped = asyncio.Event()
    control = ControlServer(IdlePlane(), state_path=tmp_path / "r.json",
                            info={}, on_shutdown=stopped.set, header_timeout_s=1.0)
    path = str(tmp_path / "control.sock")
    server = await control.start(path)
    try:
        slow = await asyncio.open_unix_connection(path)
        trickling = asyncio.create_task(trickle_head(*slow, every_s=0.2, for_s=8))
        transport = httpx.AsyncHTTPTransport(uds=path)
        async with httpx.AsyncClient(transport=transport, base_url="http://router") as client:
            for _ in range(3):
                assert (await client.get("/health")).json()["ok"] is True
        took_s, _ = await trickling
        assert 0.9 < took_s < 3, f"cut off after {took_s:.1f} s"
        slow[1].close()
    finally:
        server.close()
        await server.wait_closed()


async def test_closing_the_control_api_ends_the_connections_kept_alive(tmp_path: Path) -> None:
    """A router that stops must not go on answering a client's kept-alive connection (it
    would look alive until the header timeout): ``close`` ends them at once."""
    control = ControlServer(IdlePlane(), state_path=tmp_path / "r.json",
                            info={}, on_shutdown=lambda: None, header_timeout_s=10.0)
    path = str(tmp_path / "control.sock")
    await control.start(path)
    reader, writer = await asyncio.open_unix_connection(path)
    writer.write(b"GET /health HTTP/1.1\r\nHost: router\r\n\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    await reader.readexactly(length)  # the connection is idle now, and kept alive
    control.close()
    assert await asyncio.wait_for(reader.read(), timeout=2) == b""  # closed, not in 10 s
    writer.close()

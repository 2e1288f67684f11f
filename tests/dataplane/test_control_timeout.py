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

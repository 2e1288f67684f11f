"""Every router kind refuses the same route tables with the same sentence (the rules are
``Routes.validate``, written once): the embedded router's control API and the HAProxy
router, both in process (neither needs its data plane running to refuse a table)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from entrega.dataplane.admin.control import ControlServer
from entrega.dataplane.http.proxy import Proxy, ProxySettings
from entrega.errors import RouterError, RouterUnreachable
from entrega.net import Endpoint
from entrega.routers.base import CohortRule, Routes
from entrega.routers.haproxy import HaproxyRouter
from tests.dataplane.plane import ProxyPlane

A = Endpoint("127.0.0.1", 9001, "0")
B = Endpoint("127.0.0.1", 9002, "0")

REFUSED = [
    Routes(backends={"v1": (A,)}, weights={"v1": 60}),
    Routes(backends={"v1": (A,)}, weights={"v2": 100}),
    Routes(backends={"v1": ()}, weights={"v1": 100}),
    # HAProxy's own check once let this through: the weights sum to 100
    Routes(backends={"v1": (A,), "v2": (B,)}, weights={"v1": 101, "v2": -1}),
    Routes(backends={"v1": (A,)}, weights={"v1": 100}, cohort=CohortRule(release="v9")),
    Routes(backends={"v1": (A,)}, weights={"v1": 100},
           cohort=CohortRule(release="v1", percent=101)),
    Routes(backends={"v1": (A,)}, weights={"v1": 100}, preview="v9"),
    Routes(backends={"v1": (Endpoint("127.0.0.1", 0),)}),
]
IDS = ["sum", "unknown-release", "no-endpoints", "over-100", "cohort-release",
       "cohort-percent", "preview", "port-0"]


def rule_broken_by(routes: Routes) -> str:
    with pytest.raises(ValueError) as refused:
        routes.validate()
    return str(refused.value)


@pytest.fixture
async def control(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    server = ControlServer(ProxyPlane(Proxy(ProxySettings())), state_path=tmp_path / "r.json",
                           info={}, on_shutdown=lambda: None)
    path = str(tmp_path / "control.sock")
    listening = await server.start(path)
    transport = httpx.AsyncHTTPTransport(uds=path)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://router") as client:
            yield client
    finally:
        listening.close()
        await listening.wait_closed()


@pytest.mark.parametrize("routes", REFUSED, ids=IDS)
async def test_the_embedded_router_refuses_by_the_shared_rules(
        control: httpx.AsyncClient, routes: Routes, tmp_path: Path) -> None:
    answer = await control.put("/routes", json=routes.to_dict())
    assert answer.status_code == 400
    assert answer.json()["error"] == f"PUT /routes: invalid route table: {rule_broken_by(routes)}"
    assert not (tmp_path / "r.json").exists()  # nothing was persisted


@pytest.mark.parametrize("routes", REFUSED, ids=IDS)
async def test_the_haproxy_router_refuses_by_the_shared_rules(
        routes: Routes, tmp_path: Path) -> None:
    # never started: a refused table is refused before HAProxy is asked anything
    router = HaproxyRouter(name="h", listen="127.0.0.1:1", preview_listen=None,
                           state_dir=tmp_path, app="shop")
    with pytest.raises(RouterError) as refused:
        await asyncio.wait_for(router.set_routes(routes), timeout=5)
    assert not isinstance(refused.value, RouterUnreachable)
    assert str(refused.value).startswith(
        f"haproxy router 'h': invalid route table: {rule_broken_by(routes)}")

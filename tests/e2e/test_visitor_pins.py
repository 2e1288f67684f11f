"""Visitors that keep their cookies (mobile apps, ``requests.Session``) through real
rollouts: the controller salts the router's pin draw with the rollout, so visitors pinned
before a rollout get its canary at its weight, and each rollout draws its own visitors."""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx
import pytest

from entrega.config import load_config
from entrega.routers.base import Routes
from entrega.routers.embedded import EmbeddedRouter
from tests.e2e.conftest import Deployment, wait_for

pytestmark = [pytest.mark.real, pytest.mark.slow]

VISITORS = 300


def visit(dep: Deployment, cookies: list[dict[str, str]]) -> list[str]:
    """One request per visitor, each sending and keeping its own cookies."""
    seen = []
    with httpx.Client(timeout=10) as client:
        for jar in cookies:
            client.cookies.clear()
            client.cookies.update(jar)
            response = client.get(dep.router_url + "/api/products")
            assert response.status_code == 200
            jar.update(dict(response.cookies))
            seen.append(response.headers["x-entrega-release"])
    return seen


def live_routes(dep: Deployment) -> Routes:
    config = load_config(dep.config)
    router = EmbeddedRouter(name="shop-production", listen=f"127.0.0.1:{dep.router_port}",
                            preview_listen=f"127.0.0.1:{dep.preview_port}",
                            state_dir=config.state_path, app="shop")

    async def read() -> Routes:
        try:
            return await router.get_routes()
        finally:
            await router.close()
    return asyncio.run(read())


def test_pinned_visitors_reach_each_rollouts_canary(deployment: Deployment) -> None:
    dep = deployment
    dep.wait_phase(dep.deploy("v1")["id"], {"succeeded"})
    cookies: list[dict[str, str]] = [{} for _ in range(VISITORS)]
    wait_for(lambda: set(visit(dep, cookies[:5])) == {"v1"}, what="v1 to serve")
    assert set(visit(dep, cookies)) == {"v1"}  # every visitor pinned while v1 ran alone

    on_canary: list[set[int]] = []
    for version in ("v2", "v3"):
        rollout = dep.deploy(version)
        assert dep.wait_phase(rollout["id"], {"paused"})["weights"][version] == 20
        assert live_routes(dep).pin_salt == f"rollout-{rollout['id']}"
        first, again = visit(dep, cookies), visit(dep, cookies)
        assert first == again, "a visitor changed release within the rollout"
        canary = {i for i, release in enumerate(first) if release == version}
        # 20% of 300 = 60, binomial sd ~ 6.9: 5 sd either way
        assert abs(len(canary) - 60) <= 35, Counter(first)
        on_canary.append(canary)
        dep.cli("promote")
        dep.wait_phase(rollout["id"], {"succeeded"})
    # each rollout drew its own canary visitors: independent draws share ~4% (12),
    # the same draw would share them all
    assert len(on_canary[0] & on_canary[1]) < 35, on_canary

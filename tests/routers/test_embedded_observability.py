"""Prometheus metrics of the router process, and the ``/.entrega/`` control-plane passthrough."""

from __future__ import annotations

import json
import re

import httpx
import pytest

from entrega.net import free_port
from entrega.routers.embedded import EmbeddedRouter
from tests.routers.conftest import Backend, RouterFactory, make_routes

pytestmark = pytest.mark.real


def samples(text: str) -> dict[str, float]:
    """``name{labels}`` -> value for every sample line of an exposition."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
    return out


async def test_prometheus_metrics_per_release(
        make_router: RouterFactory, backends: dict[str, Backend]) -> None:
    metrics_listen = f"127.0.0.1:{free_port()}"
    router = await make_router("prom", metrics_listen=metrics_listen)
    await router.set_routes(make_routes(backends, {"v1": 100, "v2": 0}))
    async with httpx.AsyncClient(base_url=f"http://{router.listen}") as c:
        for _ in range(7):
            assert (await c.get("/")).status_code == 200
        assert (await c.get("/status?code=503")).status_code == 503
        assert (await c.get("/slow?ms=60")).status_code == 200
    async with httpx.AsyncClient(base_url=f"http://{metrics_listen}") as m:
        r = await m.get("/metrics")
        assert (await m.get("/other")).status_code == 404
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert "# TYPE entrega_router_request_duration_seconds histogram" in r.text
    s = samples(r.text)
    assert s['entrega_router_requests_total{release="v1"}'] == 9
    assert s['entrega_router_responses_5xx_total{release="v1"}'] == 1
    assert s['entrega_router_requests_total{release="v2"}'] == 0
    assert s['entrega_router_inflight{release="v1"}'] == 0
    assert s['entrega_router_request_duration_seconds_count{release="v1"}'] == 9
    assert s['entrega_router_request_duration_seconds_bucket{release="v1",le="+Inf"}'] == 9
    # the 60 ms request is above the 50 ms bound and within the 75 ms one... or slower
    assert s['entrega_router_request_duration_seconds_bucket{release="v1",le="0.05"}'] == 8
    assert s['entrega_router_request_duration_seconds_sum{release="v1"}'] >= 0.06
    buckets = [v for k, v in s.items() if k.startswith(
        'entrega_router_request_duration_seconds_bucket{release="v1"')]
    assert buckets == sorted(buckets)  # cumulative
    les = re.findall(r'le="([^"]+)"', r.text)
    assert les[:3] == ["0.001", "0.002", "0.003"] and les[-1] == "+Inf"
    # the same counters as the control API
    assert (await router.metrics()).releases["v1"].requests == 9


async def test_control_plane_passthrough(
        make_router: RouterFactory, backends: dict[str, Backend]) -> None:
    plane = backends["v3"]  # stands in for entrega's server
    router = await make_router("cp", control_plane_url=f"http://127.0.0.1:{plane.port}")
    await router.set_routes(make_routes(backends, {"v1": 100}, releases=("v1",)))
    async with httpx.AsyncClient(base_url=f"http://{router.listen}") as c:
        assert (await c.get("/")).status_code == 200  # pinned to v1 by the cookie now
        r = await c.post("/.entrega/feedback?x=1", json={"rating": 5})
        seen = json.loads(r.text)
        assert (r.status_code, seen["backend"], seen["method"]) == (200, "v3", "POST")
        assert seen["path"] == "/.entrega/feedback?x=1" and seen["size"] > 0
        assert seen["headers"]["x-entrega-release"] == "v1"
        assert "x-entrega-release" not in r.headers and "set-cookie" not in r.headers
        r = await c.get("/.entrega/feedback.js")
        assert json.loads(r.text)["path"] == "/.entrega/feedback.js"
    async with httpx.AsyncClient(base_url=f"http://{router.listen}") as fresh:
        seen = json.loads((await fresh.get("/.entrega/feedback")).text)
        assert "x-entrega-release" not in seen["headers"]  # no pin: no release to name
    releases = (await router.metrics()).releases
    assert releases["v1"].requests == 1  # passthrough requests are in no release's counters
    assert set(releases) == {"v1"}


async def test_passthrough_is_404_without_a_control_plane(
        router: EmbeddedRouter, client: httpx.AsyncClient, backends: dict[str, Backend]) -> None:
    await router.set_routes(make_routes(backends, {"v1": 100}, releases=("v1",)))
    r = await client.get("/.entrega/feedback")
    assert r.status_code == 404 and "--control-plane-url" in r.text
    assert (await client.get("/")).status_code == 200  # the connection is still usable
    assert (await router.metrics()).releases["v1"].requests == 1

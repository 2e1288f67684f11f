"""The HAProxy router against the real HAProxy from Debian, with real traffic.

The fixture fails (never skips) when haproxy is missing: ``scripts/install-system-deps.sh``
installs it.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections import Counter
from pathlib import Path

import httpx
import pytest

from entrega.dataplane.http.cohort import user_bucket
from entrega.errors import RouterError
from entrega.net import free_port
from entrega.routers.base import CohortRule, pin_tag
from entrega.routers.haproxy import HaproxyRouter
from tests.routers.conftest import Backend, HaproxyFactory, make_routes, wait_for

pytestmark = pytest.mark.real

PIN = "entrega-release"
@pytest.fixture
async def haproxy(make_haproxy: HaproxyFactory) -> HaproxyRouter:
    return await make_haproxy(preview_listen=f"127.0.0.1:{free_port()}")


async def visit(router: HaproxyRouter, n: int, **kw: object) -> Counter[str]:
    """``n`` requests of new visitors (no cookie kept); releases that answered."""
    counts: Counter[str] = Counter()
    async with httpx.AsyncClient(base_url=f"http://{router.listen}") as c:
        for _ in range(n):
            r = await c.get("/", **kw)  # type: ignore[arg-type]
            assert r.status_code == 200, r.text
            assert r.text.startswith(r.headers["x-entrega-release"])
            counts[r.headers["x-entrega-release"]] += 1
            c.cookies.clear()
    return counts


async def test_weights_observed_on_real_traffic(
        haproxy: HaproxyRouter, backends: dict[str, Backend]) -> None:
    routes = make_routes(backends, {"v1": 80, "v2": 20})
    await haproxy.set_routes(routes)
    counts = await visit(haproxy, 1500)
    sd = math.sqrt(1500 * 0.2 * 0.8)
    assert abs(counts["v2"] - 300) < 5 * sd, counts
    assert (await haproxy.get_routes()).same_table(routes)
    await wait_for(lambda: _counted(haproxy, "v1", counts["v1"]),
                   what="the log sink to count every request")  # lines arrive just after
    metrics = await haproxy.metrics()
    assert metrics.releases["v2"].requests == counts["v2"]
    assert metrics.releases["v1"].requests == counts["v1"]
    assert metrics.releases["v1"].errors_5xx == 0


async def test_release_header_pins_and_rollback(
        haproxy: HaproxyRouter, backends: dict[str, Backend]) -> None:
    await haproxy.set_routes(make_routes(backends, {"v1": 50, "v2": 50}))
    async with httpx.AsyncClient(base_url=f"http://{haproxy.listen}") as c:
        r = await c.get("/")
        pinned = r.headers["x-entrega-release"]
        release_cookie, pin_cookie = r.headers.get_list("set-cookie")
        assert release_cookie == f"{PIN}={pinned}; Path=/; HttpOnly; SameSite=Lax"
        assert re.fullmatch(f"entrega-pin={pin_tag('')}\\.[0-9]{{1,2}}; Path=/; HttpOnly; "
                            "SameSite=Lax", pin_cookie), pin_cookie
        for _ in range(20):
            r = await c.get("/")
            assert r.headers["x-entrega-release"] == pinned and "set-cookie" not in r.headers
        c.cookies.clear()
        while (await c.get("/")).headers["x-entrega-release"] != "v2":
            c.cookies.clear()  # a new visitor, until one is drawn to v2
        await haproxy.set_routes(make_routes(backends, {"v1": 100, "v2": 0}))  # rollback
        r = await c.get("/")
        assert r.headers["x-entrega-release"] == "v1"
        assert r.headers["set-cookie"].startswith(f"{PIN}=v1;")
        assert c.cookies[PIN] == "v1"


async def test_cohort_header_allowlist_and_percent(
        haproxy: HaproxyRouter, backends: dict[str, Backend]) -> None:
    cohort = CohortRule(release="v2", header="X-Entrega-Cohort", header_value="beta",
                        user_header="X-User", user_cookie="uid",
                        users=frozenset({"alice"}), percent=30)
    routes = make_routes(backends, {"v1": 100, "v2": 0}, cohort=cohort)
    await haproxy.set_routes(routes)  # a cohort at run time: map and ACL updates only
    assert (await haproxy.get_routes()).same_table(routes)

    async def release(*, headers: dict[str, str] | None = None,
                      cookies: dict[str, str] | None = None) -> str:
        async with httpx.AsyncClient(base_url=f"http://{haproxy.listen}", cookies=cookies) as c:
            r = await c.get("/", headers=headers)
        assert r.status_code == 200
        return r.headers["x-entrega-release"]

    assert await release(headers={"X-Entrega-Cohort": "beta"}) == "v2"
    assert await release(headers={"X-Entrega-Cohort": "gamma"}) == "v1"
    assert await release(headers={"X-User": "alice"}) == "v2"
    assert await release(cookies={"uid": "alice"}) == "v2"
    users = [f"user{i}" for i in range(80)]
    got = {u: await release(headers={"X-User": u}) for u in users}
    # the same murmur3 buckets as the embedded router
    assert got == {u: "v2" if user_bucket("shop", u) <= 30 else "v1" for u in users}
    # the allowlist and the percent change at runtime, without a reload
    pid = (await haproxy.api.info())["Pid"]
    grown = CohortRule(release="v2", header="X-Entrega-Cohort", header_value="beta",
                       user_header="X-User", user_cookie="uid",
                       users=frozenset({"bob"}), percent=60)
    await haproxy.set_routes(make_routes(backends, {"v1": 100, "v2": 0}, cohort=grown))
    assert (await haproxy.api.info())["Pid"] == pid
    assert await release(headers={"X-User": "bob"}) == "v2"
    assert await release(headers={"X-User": "alice"}) == (
        "v2" if user_bucket("shop", "alice") <= 60 else "v1")
    got = {u: await release(headers={"X-User": u}) for u in users}
    assert got == {u: "v2" if user_bucket("shop", u) <= 60 else "v1" for u in users}


async def test_no_failed_request_while_shifting_adding_and_removing(
        haproxy: HaproxyRouter, backends: dict[str, Backend]) -> None:
    await haproxy.set_routes(make_routes(backends, {"v1": 100, "v2": 0},
                                         releases=("v1", "v2")))
    stop = asyncio.Event()
    statuses: Counter[int] = Counter()
    releases: Counter[str] = Counter()

    async def hammer() -> None:
        async with httpx.AsyncClient(base_url=f"http://{haproxy.listen}", timeout=10) as c:
            while not stop.is_set():
                r = await c.get("/")
                statuses[r.status_code] += 1
                releases[r.headers.get("x-entrega-release", "-")] += 1
                c.cookies.clear()

    workers = [asyncio.create_task(hammer()) for _ in range(6)]
    try:
        for i in range(30):
            w = (i * 37) % 101
            await haproxy.set_routes(make_routes(backends, {"v1": w, "v2": 100 - w},
                                                 releases=("v1", "v2")))
        # a third release comes (a new slot, dynamic servers), takes traffic, then goes
        await haproxy.set_routes(make_routes(backends, {"v1": 40, "v2": 30, "v3": 30}))
        await wait_for(lambda: _seen(releases, "v3"), what="traffic on v3")
        await haproxy.set_routes(make_routes(backends, {"v1": 50, "v2": 50},
                                             releases=("v1", "v2")))
        before = sum(statuses.values())
        await wait_for(lambda: _more(statuses, before + 200), what="200 more requests")
    finally:
        stop.set()
        await asyncio.gather(*workers)
    assert set(statuses) == {200}, statuses
    assert set(releases) == {"v1", "v2", "v3"}
    routes = await haproxy.get_routes()
    assert set(routes.backends) == {"v1", "v2"} and routes.weights == {"v1": 50, "v2": 50}


async def _seen(releases: Counter[str], version: str) -> bool:
    await asyncio.sleep(0)
    return releases[version] > 0


async def _more(statuses: Counter[int], n: int) -> bool:
    await asyncio.sleep(0)
    return sum(statuses.values()) >= n


async def test_removed_release_drains_then_its_servers_are_deleted(
        haproxy: HaproxyRouter, backends: dict[str, Backend]) -> None:
    await haproxy.set_routes(make_routes(backends, {"v3": 100}, releases=("v3",)))
    async with httpx.AsyncClient(base_url=f"http://{haproxy.listen}") as c:
        slow = [asyncio.create_task(c.get("/slow?ms=1500")) for _ in range(3)]
        await wait_for(lambda: _inflight(haproxy, "v3", 3), what="3 requests in flight")
        await haproxy.set_routes(make_routes(backends, {"v2": 100}, releases=("v2",)))
        routes = await haproxy.get_routes()
        assert set(routes.backends) == {"v2"} and routes.draining == {"v3": 3}
        assert (await c.get("/")).headers["x-entrega-release"] == "v2"
        for response in await asyncio.gather(*slow):
            assert (response.status_code, response.text) == (200, "v3")
    await haproxy.set_routes(make_routes(backends, {"v2": 100}, releases=("v2",)))
    assert (await haproxy.get_routes()).draining == {}
    slots = dict(await haproxy.api.show_map(haproxy.files.map("backends.map")))
    assert set(slots) == {"v2"}  # v3's slot is free again


async def _counted(router: HaproxyRouter, version: str, n: int) -> bool:
    releases = (await router.metrics()).releases
    return version in releases and releases[version].requests >= n


async def _inflight(router: HaproxyRouter, version: str, n: int) -> bool:
    releases = (await router.metrics()).releases
    return version in releases and releases[version].inflight >= n


async def test_preview_listener_metrics_and_5xx(
        haproxy: HaproxyRouter, backends: dict[str, Backend]) -> None:
    assert haproxy.preview_listen is not None
    async with httpx.AsyncClient(base_url=f"http://{haproxy.preview_listen}") as c:
        assert (await c.get("/")).status_code == 503
        await haproxy.set_routes(make_routes(backends, {"v1": 100}, preview="v3"))
        r = await c.get("/")
        assert (r.status_code, r.text, r.headers["x-entrega-release"]) == (200, "v3", "v3")
    async with httpx.AsyncClient(base_url=f"http://{haproxy.listen}") as c:
        assert (await c.get("/status?code=500")).status_code == 500
    await wait_for(lambda: _counted(haproxy, "v1", 1), what="the log sink to count it")
    metrics = await haproxy.metrics()
    assert metrics.releases["v1"].errors_5xx == 1 and metrics.releases["v1"].requests == 1
    assert metrics.releases["v3"].requests == 1
    assert metrics.started_at > 0


async def test_adopts_a_running_haproxy_and_refuses_bad_tables(
        make_haproxy: HaproxyFactory, backends: dict[str, Backend], tmp_path: Path) -> None:
    first = await make_haproxy("adopt", stats_listen=f"127.0.0.1:{free_port()}")
    routes = make_routes(backends, {"v1": 70, "v2": 30})
    await first.set_routes(routes)
    again = HaproxyRouter(name="adopt", listen=first.listen, preview_listen=None,
                          state_dir=tmp_path, app="shop", stats_listen=first.stats_listen)
    await again.ensure_running()
    assert again.pid() == first.pid()
    assert (await again.get_routes()).same_table(routes)
    with pytest.raises(RouterError, match="sum to 100"):
        await again.set_routes(make_routes(backends, {"v1": 70}))
    with pytest.raises(RouterError, match="letters, digits"):
        await again.set_routes(make_routes(backends, {}).__class__(
            backends={"v 1": (backends["v2"].endpoint,)}, weights={"v 1": 100}))
    async with httpx.AsyncClient(base_url=f"http://{first.stats_listen}") as c:
        text = (await c.get("/metrics")).text
    assert "haproxy_backend_http_responses_total" in text


async def test_host_header_checks(haproxy: HaproxyRouter,
                                  backends: dict[str, Backend]) -> None:
    await haproxy.set_routes(make_routes(backends, {"v3": 100}))
    host, port = haproxy.listen.rsplit(":", 1)

    async def status(head: bytes) -> bytes:
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(head + b"Connection: close\r\n\r\n")
        try:
            return (await asyncio.wait_for(reader.read(-1), 10)).split(b"\r\n", 1)[0]
        finally:
            writer.close()

    # our rule: HTTP/1.1 without Host; HAProxy's own: two different values
    assert await status(b"GET / HTTP/1.1\r\n") == b"HTTP/1.1 400 Bad request"
    assert await status(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n") == \
        b"HTTP/1.1 400 Bad request"
    # HAProxy merges two equal values into one Host (the app sees one): served
    assert await status(b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n") == b"HTTP/1.1 200 OK"
    assert await status(b"GET / HTTP/1.1\r\nHost: a\r\n") == b"HTTP/1.1 200 OK"
    assert await status(b"GET / HTTP/1.0\r\n") == b"HTTP/1.1 200 OK"

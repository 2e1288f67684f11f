"""The embedded router's data path, through a real router process and real backends."""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import time
from collections import Counter
from collections.abc import AsyncIterator

import httpx
import pytest

from entrega.dataplane.http.cohort import user_bucket
from entrega.net import Endpoint, free_port
from entrega.routers.base import CohortRule, Routes
from entrega.routers.embedded import EmbeddedRouter
from tests.routers.conftest import (
    Backend,
    RouterFactory,
    make_routes,
    wait_for,
    worker_pids,
)

pytestmark = pytest.mark.real

PATTERN = bytes(range(256)) * 256


def pattern_sha(n: int) -> str:
    reps, rest = divmod(n, len(PATTERN))
    h = hashlib.sha256()
    for _ in range(reps):
        h.update(PATTERN)
    h.update(PATTERN[:rest])
    return h.hexdigest()


async def raw(router: EmbeddedRouter, payload: bytes, *, timeout_s: float = 10.0) -> bytes:
    """Send raw bytes, read until the router closes the connection."""
    host, port = router.listen.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(payload)
    try:
        return await asyncio.wait_for(reader.read(-1), timeout_s)
    finally:
        writer.close()


async def inflight(router: EmbeddedRouter, release: str) -> int:
    return (await router.metrics()).releases[release].inflight


# -- routing ----------------------------------------------------------------------------------

async def test_weights_split_traffic_within_binomial_tolerance(
        router: EmbeddedRouter, client: httpx.AsyncClient, backends: dict[str, Backend]) -> None:
    await router.set_routes(make_routes(backends, {"v1": 90, "v2": 10}))
    counts: Counter[str] = Counter()

    async def worker(n: int) -> None:
        async with httpx.AsyncClient(base_url=f"http://{router.listen}") as c:
            for _ in range(n):
                r = await c.get("/")
                assert r.status_code == 200
                counts[r.headers["x-entrega-release"]] += 1
                c.cookies.clear()  # a new visitor each time, not one pinned to its release

    await asyncio.gather(*(worker(250) for _ in range(8)))
    assert sum(counts.values()) == 2000 and set(counts) == {"v1", "v2"}
    sd = math.sqrt(2000 * 0.1 * 0.9)
    assert abs(counts["v2"] - 200) < 5 * sd, counts
    metrics = await router.metrics()
    assert metrics.releases["v1"].requests == counts["v1"]
    assert metrics.releases["v2"].requests == counts["v2"]
    assert metrics.releases["v3"].requests == 0  # weight 0: no traffic


async def test_release_header_and_round_robin_over_instances(
        router: EmbeddedRouter, client: httpx.AsyncClient, backends: dict[str, Backend]) -> None:
    await router.set_routes(make_routes(backends, {"v1": 100}))
    bodies = []
    for _ in range(6):
        r = await client.get("/")
        assert r.headers["x-entrega-release"] == "v1"
        bodies.append(r.text)
    assert Counter(bodies) == {"v1-a": 3, "v1-b": 3}


async def test_forwarded_headers_and_hop_by_hop_stripped(
        router: EmbeddedRouter, client: httpx.AsyncClient, backends: dict[str, Backend]) -> None:
    await router.set_routes(make_routes(backends, {"v2": 100}))
    r = await client.get("/headers", headers={
        "X-Forwarded-For": "127.0.113.7", "Connection": "keep-alive, X-Secret",
        "X-Secret": "hop", "Keep-Alive": "timeout=5", "TE": "trailers",
        "Proxy-Connection": "keep-alive", "X-Kept": "yes"})
    seen = json.loads(r.text)
    assert seen["x-forwarded-for"] == "127.0.113.7, 127.0.0.1"
    assert seen["x-forwarded-proto"] == "http"
    assert seen["x-kept"] == "yes"
    for hop in ("x-secret", "keep-alive", "te", "proxy-connection", "connection"):
        assert hop not in seen, hop
    assert r.headers["x-entrega-release"] == "v2"


async def test_header_names_are_matched_whatever_their_case(
        router: EmbeddedRouter, backends: dict[str, Backend]) -> None:
    await router.set_routes(make_routes(backends, {"v2": 100}))
    reply = await raw(router, (
        b"GET /headers HTTP/1.1\r\nhOsT: x\r\nx-FORWARDED-for: 127.0.113.7\r\n"
        b"kEEP-aLIVE: timeout=5\r\ncONNECTION: X-Secret, close\r\nX-SECRET: hop\r\n"
        b"pROXY-cONNECTION: keep-alive\r\nX-Kept: yes\r\n\r\n"))
    seen = json.loads(reply.split(b"\r\n\r\n", 1)[1])
    assert seen["x-forwarded-for"] == "127.0.113.7, 127.0.0.1"
    assert seen["host"] == "x" and seen["x-kept"] == "yes"
    for hop in ("x-secret", "keep-alive", "proxy-connection", "connection"):
        assert hop not in seen, hop
    assert b"Connection: close" in reply  # the client's close, in capitals or not


async def test_cohort_header_allowlist_and_hash(
        router: EmbeddedRouter, client: httpx.AsyncClient, backends: dict[str, Backend]) -> None:
    cohort = CohortRule(release="v2", header="X-Beta", user_header="X-User",
                        user_cookie="uid", users=frozenset({"alice"}), percent=25)
    await router.set_routes(make_routes(backends, {"v1": 100, "v2": 0}, cohort=cohort))

    async def release(**headers: str) -> str:
        r = await client.get("/", headers=headers)
        return r.headers["x-entrega-release"]

    assert await release() == "v1"
    assert await release(**{"X-Beta": "1"}) == "v2"
    assert await release(**{"X-User": "alice"}) == "v2"
    assert await release(Cookie="theme=dark; uid=alice") == "v2"
    users = [f"user{i}" for i in range(60)]
    expected = {u: "v2" if user_bucket("shop", u) <= 25 else "v1" for u in users}
    got = {u: await release(**{"X-User": u}) for u in users}
    assert got == expected
    assert set(got.values()) == {"v1", "v2"}


async def test_preview_listener_serves_only_the_preview_release(
        make_router: RouterFactory, backends: dict[str, Backend]) -> None:
    router = await make_router("pv", preview=True)
    async with httpx.AsyncClient(base_url=f"http://{router.preview_listen}") as c:
        assert (await c.get("/")).status_code == 503  # no preview release yet
        await router.set_routes(make_routes(backends, {"v1": 100}, preview="v3"))
        for _ in range(5):
            r = await c.get("/")
            assert (r.status_code, r.text, r.headers["x-entrega-release"]) == (200, "v3", "v3")


# -- connections -------------------------------------------------------------------------------

async def test_keep_alive_on_both_sides(
        router: EmbeddedRouter, backends: dict[str, Backend]) -> None:
    await router.set_routes(make_routes(backends, {"v2": 100}))
    before = backends["v2"].connections()
    host, port = router.listen.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    for _ in range(20):  # one client connection, twenty requests
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and b"Connection: close" not in head
        assert await reader.readexactly(2) == b"v2"
    writer.close()
    async with httpx.AsyncClient(base_url=f"http://{router.listen}",
                                 limits=httpx.Limits(max_connections=1)) as c:
        for _ in range(30):
            assert (await c.get("/")).status_code == 200
    # sequential requests: the router reused one pooled upstream connection throughout
    assert backends["v2"].connections() - before == 1


async def test_http10_client_and_connection_close(
        router: EmbeddedRouter, backends: dict[str, Backend]) -> None:
    await router.set_routes(make_routes(backends, {"v2": 100}))
    reply = await raw(router, b"GET / HTTP/1.0\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 200") and reply.endswith(b"\r\n\r\nv2")
    assert b"X-Entrega-Release: v2" in reply
    reply = await raw(router, b"GET /until-close?n=5000 HTTP/1.0\r\n\r\n")
    assert b"Transfer-Encoding" not in reply and reply.split(b"\r\n\r\n", 1)[1] == PATTERN[:5000]
    reply = await raw(router, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert b"Connection: close" in reply and reply.endswith(b"v2")


async def test_http10_keep_alive_client(
        router: EmbeddedRouter, backends: dict[str, Backend]) -> None:
    # HTTP/1.0 with Connection: keep-alive: the answer says keep-alive, is never chunked
    # (a close-delimited body closes after all), and the connection serves a second request
    await router.set_routes(make_routes(backends, {"v2": 100}))
    host, port = router.listen.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        for _ in range(2):
            writer.write(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            assert head.startswith(b"HTTP/1.1 200") and b"Connection: keep-alive" in head
            assert b"Transfer-Encoding" not in head
            assert await reader.readexactly(2) == b"v2"
        writer.write(b"GET /until-close?n=300 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        reply = await asyncio.wait_for(reader.read(), 10)  # read to the close
        assert b"Transfer-Encoding" not in reply and b"Connection: close" in reply
        assert reply.split(b"\r\n\r\n", 1)[1] == PATTERN[:300]
    finally:
        writer.close()


async def test_pipelined_requests_answered_in_order(
        router: EmbeddedRouter, backends: dict[str, Backend]) -> None:
    await router.set_routes(make_routes(backends, {"v2": 100}))
    body = b"0123456789"
    reply = await raw(router, (
        b"GET /slow?ms=200 HTTP/1.1\r\nHost: x\r\n\r\n"
        b"POST /sha HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n" + body +
        b"GET /headers HTTP/1.1\r\nHost: x\r\nX-Order: third\r\nConnection: close\r\n\r\n"))
    parts = reply.split(b"HTTP/1.1 200 ")
    assert len(parts) == 4
    assert parts[1].endswith(b"v2")
    assert hashlib.sha256(body).hexdigest().encode() in parts[2]
    assert b'"x-order": "third"' in parts[3]


# -- bodies ----------------------------------------------------------------------------------

async def test_large_request_and_response_bodies_intact(
        router: EmbeddedRouter, client: httpx.AsyncClient, backends: dict[str, Backend]) -> None:
    await router.set_routes(make_routes(backends, {"v2": 100}))
    n = 20 * 1024 * 1024
    r = await client.get(f"/bytes?n={n}")
    assert len(r.content) == n and hashlib.sha256(r.content).hexdigest() == pattern_sha(n)

    payload = PATTERN * 320  # 20 MiB
    r = await client.post("/sha", content=payload)
    assert r.json() == {"sha256": hashlib.sha256(payload).hexdigest(), "size": len(payload)}

    async def chunks() -> AsyncIterator[bytes]:  # no length: chunked request body
        for _ in range(320):
            yield PATTERN

    r = await client.post("/sha", content=chunks())
    assert r.json() == {"sha256": hashlib.sha256(payload).hexdigest(), "size": len(payload)}


async def test_chunked_until_close_and_head_responses(
        router: EmbeddedRouter, client: httpx.AsyncClient, backends: dict[str, Backend]) -> None:
    await router.set_routes(make_routes(backends, {"v2": 100}))
    r = await client.get("/chunked?n=30&size=1000")
    assert r.headers["transfer-encoding"] == "chunked"
    assert r.content == b"".join(bytes([65 + i % 26]) * 1000 for i in range(30))
    r = await client.get("/until-close?n=100000")
    assert r.content == (PATTERN * 2)[:100000]
    r = await client.head("/")
    assert r.status_code == 200 and r.headers["content-length"] == "2" and r.content == b""
    r = await client.get("/")  # the connection after HEAD still works
    assert r.text == "v2"


async def test_client_disconnect_mid_response_leaves_router_healthy(
        router: EmbeddedRouter, client: httpx.AsyncClient, backends: dict[str, Backend]) -> None:
    await router.set_routes(make_routes(backends, {"v2": 100}))
    host, port = router.listen.rsplit(":", 1)
    for _ in range(3):
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"GET /bytes?n=200000000 HTTP/1.1\r\nHost: x\r\n\r\n")
        await reader.readexactly(100_000)
        writer.close()
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"GET /slow?ms=5000 HTTP/1.1\r\nHost: x\r\n\r\n")  # leaves before the answer
    await wait_for(lambda: _inflight_at_least(router, "v2", 1), what="request in flight")
    writer.close()
    await wait_for(lambda: _inflight_is(router, "v2", 0), what="inflight back to 0")
    r = await client.get("/")
    assert r.status_code == 200 and r.text == "v2"


def rss_bytes(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def test_stalled_client_does_not_balloon_router_memory(
        router: EmbeddedRouter, backends: dict[str, Backend]) -> None:
    await router.set_routes(make_routes(backends, {"v2": 100}))
    (pid,) = await worker_pids(router)  # the process that buffers, not its supervisor
    before = rss_bytes(pid)
    total = 200 * 1024 * 1024
    host, port = router.listen.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port), limit=1 << 20)
    writer.write(f"GET /bytes?n={total} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    received = len(await reader.readexactly(1 << 20))
    # a stalled client: without flow control the router would buffer ~200 MB meanwhile
    transport = writer.transport
    transport.pause_reading()
    await asyncio.sleep(1.0)
    grown = rss_bytes(pid) - before
    transport.resume_reading()
    assert grown < 40 * 1024 * 1024, f"router RSS grew by {grown >> 20} MiB"
    while received < total:
        chunk = await reader.read(1 << 20)
        assert chunk, f"connection closed after {received} bytes"
        received += len(chunk)
    assert received == total and b"Content-Length: %d" % total in head
    writer.close()


async def _inflight_is(router: EmbeddedRouter, release: str, n: int) -> bool:
    return await inflight(router, release) == n


async def _inflight_at_least(router: EmbeddedRouter, release: str, n: int) -> bool:
    return await inflight(router, release) >= n


# -- errors ----------------------------------------------------------------------------------

async def test_503_when_no_release_is_routable(client: httpx.AsyncClient) -> None:
    r = await client.get("/")
    assert r.status_code == 503 and "no release" in r.text
    assert "x-entrega-release" not in r.headers


async def test_502_on_dead_endpoint_counted_as_release_error(
        router: EmbeddedRouter, client: httpx.AsyncClient) -> None:
    dead = Endpoint("127.0.0.1", free_port(), "0")
    await router.set_routes(Routes(backends={"v9": (dead,)}, weights={"v9": 100}))
    r = await client.get("/")
    assert r.status_code == 502 and r.headers["x-entrega-release"] == "v9"
    metrics = (await router.metrics()).releases["v9"]
    assert metrics.errors_5xx == 1 and metrics.inflight == 0


async def test_dead_instance_is_skipped_for_a_live_one(
        router: EmbeddedRouter, client: httpx.AsyncClient, backends: dict[str, Backend]) -> None:
    dead = Endpoint("127.0.0.1", free_port(), "1")
    await router.set_routes(Routes(backends={"v2": (backends["v2"].endpoint, dead)},
                                   weights={"v2": 100}))
    statuses = [(await client.get("/")).status_code for _ in range(6)]
    assert statuses == [200] * 6


async def test_504_when_upstream_is_too_slow(
        make_router: RouterFactory, backends: dict[str, Backend]) -> None:
    router = await make_router("slow", upstream_timeout_s=0.5)
    await router.set_routes(make_routes(backends, {"v2": 100}))
    async with httpx.AsyncClient(base_url=f"http://{router.listen}") as c:
        started = time.monotonic()
        r = await c.get("/slow?ms=5000")
        assert r.status_code == 504 and r.headers["x-entrega-release"] == "v2"
        assert time.monotonic() - started < 3
        assert (await c.get("/")).status_code == 200
    assert (await router.metrics()).releases["v2"].errors_5xx == 1


async def test_truncated_upstream_response_closes_client(
        router: EmbeddedRouter, client: httpx.AsyncClient, backends: dict[str, Backend]) -> None:
    await router.set_routes(make_routes(backends, {"v2": 100}))
    with pytest.raises(httpx.RemoteProtocolError):
        await client.get("/truncate")
    assert (await router.metrics()).releases["v2"].errors_5xx == 1
    assert (await client.get("/")).status_code == 200


async def test_pooled_connection_closed_by_upstream_is_retried_if_idempotent(
        router: EmbeddedRouter, backends: dict[str, Backend]) -> None:
    await router.set_routes(make_routes(backends, {"v3": 100}))
    async with httpx.AsyncClient(base_url=f"http://{router.listen}") as c:
        for method in ("GET", "HEAD", "OPTIONS"):
            assert (await c.get("/arm-close")).status_code == 200
            # the pooled connection is dropped by the backend as this request arrives
            r = await c.request(method, "/")
            assert r.status_code == 200 and r.headers["x-backend"] == "v3"
        # A POST whose head reached the app is not replayed (the app may have acted on
        # it, as when it is killed mid-request): 502, and nothing sent twice.
        assert (await c.get("/arm-close")).status_code == 200
        r = await c.post("/sha", content=b"x" * 1000)
        assert r.status_code == 502 and r.headers["x-entrega-release"] == "v3"
        assert (await c.post("/sha", content=b"x" * 1000)).json()["size"] == 1000


async def test_request_head_limits(make_router: RouterFactory,
                                   backends: dict[str, Backend]) -> None:
    router = await make_router("lim", header_timeout_s=0.5)
    await router.set_routes(make_routes(backends, {"v2": 100}))
    reply = await raw(router, b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000 +
                      b"\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 431")
    reply = await raw(router, b"NOT HTTP AT ALL\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 400")
    started = time.monotonic()
    reply = await raw(router, b"GET / HTTP/1.1\r\nHost: x\r\n")  # never finishes its head
    assert reply == b"" and time.monotonic() - started < 5


@pytest.mark.parametrize("head", [
    b"GET / HTTP/1.1\r\n",                                 # HTTP/1.1 without Host
    b"GET / HTTP/1.1\r\nHost: shop\r\nHost: evil\r\n",   # two, different
    b"GET / HTTP/1.1\r\nHost: shop\r\nhost: shop\r\n",   # two, equal
    b"GET / HTTP/1.0\r\nHost: shop\r\nHost: evil\r\n",   # HTTP/1.0 may omit it, not double it
    b"POST /sha HTTP/1.1\r\nContent-Length: 3\r\n",      # (its body is not forwarded)
], ids=["missing", "two-different", "two-equal", "http10-two", "post-missing"])
async def test_request_without_exactly_one_host_is_refused(
        router: EmbeddedRouter, backends: dict[str, Backend], head: bytes) -> None:
    await router.set_routes(make_routes(backends, {"v3": 100}))
    before = backends["v3"].connections()
    reply = await raw(router, head + b"\r\n" + (b"abc" if head.startswith(b"POST") else b""))
    assert reply.startswith(b"HTTP/1.1 400 ") and b"Connection: close" in reply
    assert b"exactly one Host header" in reply and b"X-Entrega-Release" not in reply
    assert backends["v3"].connections() == before  # nothing reached the app
    # one Host, or an HTTP/1.0 request without one (the router adds its own), are served
    reply = await raw(router, b"GET / HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 200") and reply.endswith(b"v3")
    assert (await raw(router, b"GET / HTTP/1.0\r\n\r\n")).endswith(b"v3")


async def test_websocket_upgrade_is_spliced(
        router: EmbeddedRouter, backends: dict[str, Backend]) -> None:
    await router.set_routes(make_routes(backends, {"v2": 100}))
    host, port = router.listen.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
                 b"Upgrade: websocket\r\n\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101") and b"Upgrade: websocket" in head
    assert b"X-Entrega-Release: v2" in head
    for i in range(5):
        message = b"frame-%d" % i * 1000
        writer.write(message)
        assert await reader.readexactly(len(message)) == message
    assert await inflight(router, "v2") == 1
    writer.close()
    await wait_for(lambda: _inflight_is(router, "v2", 0), what="tunnel closed")

"""``--workers N``: worker processes sharing the port, one route table, summed metrics.

Which worker serves a connection is observed from the kernel, not the router: an
accepted connection is a socket file descriptor of the process that accepted it, so
/proc/<worker pid>/fd against the ESTABLISHED entries of /proc/net/tcp on the router's
port tells how many client connections each worker holds.
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import signal
import socket
import time
from pathlib import Path

import httpx
import pytest

from entrega.dataplane.http.metrics import ReleaseStats
from entrega.dataplane.process.worker_metrics import WorkerLedger, interleave_newest_first
from entrega.dataplane.sketch import LatencySketch
from entrega.errors import RouterError
from entrega.net import free_port
from entrega.routers.embedded import EmbeddedRouter
from tests.routers.conftest import Backend, RouterFactory, make_routes, wait_for


def stats(requests: int, inflight: int = 0, samples: tuple[float, ...] = ()) -> dict[str, object]:
    """``ReleaseStats.to_dict()`` of a worker that answered ``requests`` requests."""
    return {"requests": requests, "errors_5xx": 0, "latency_buckets": [requests, 0],
            "latency_sum_ms": float(requests), "inflight": inflight,
            "samples_ms": list(samples), "samples_total": requests}


@pytest.mark.parametrize(("rings", "merged"), [
    ([[1, 2, 3], [10, 20, 30]], [10, 1, 20, 2, 30, 3]),
    ([[1, 2, 3, 4], [30]], [1, 2, 3, 30, 4]),
    ([[], [5, 6]], [5, 6]),
    ([], []),
], ids=["equal-rings", "newest-of-each-last", "one-empty", "none"])
def test_rings_interleave_newest_last(rings: list[list[float]], merged: list[float]) -> None:
    assert interleave_newest_first(rings) == merged


def test_ledger_keeps_a_dead_workers_counters() -> None:
    ledger = WorkerLedger()
    ledger.observe(1, {"v1": stats(10, inflight=2, samples=(1.0, 2.0))})
    ledger.observe(2, {"v1": stats(5, samples=(7.0,))})
    assert ledger.total()["v1"]["requests"] == 15
    ledger.worker_died(1)
    ledger.observe(1, {"v1": stats(11)})  # a late answer of the dead worker: ignored
    ledger.observe(3, {"v1": stats(1, samples=(9.0,))})  # its replacement counts from 0
    total = ledger.total()["v1"]
    assert (total["requests"], total["samples_total"], total["inflight"]) == (16, 16, 0)
    assert total["samples_ms"] == [9.0, 7.0] and total["latency_buckets"] == [16, 0]


def worker_report(latencies_ms: list[float]) -> dict[str, object]:
    """What a worker's ``ReleaseStats`` reports after answering these requests."""
    stats = ReleaseStats()
    for ms in latencies_ms:
        stats.record(200, ms)
    return stats.to_dict()


def sketch_of(latencies_ms: list[float]) -> LatencySketch:
    sketch = LatencySketch()
    for ms in latencies_ms:
        sketch.add(ms)
    return sketch


def test_ledger_merges_the_workers_sketches_and_keeps_a_dead_workers() -> None:
    first, second = [1.5, 2.0, 40.0, 900.0], [2.0, 3.3, 3.3]
    ledger = WorkerLedger()
    ledger.observe(1, {"v1": worker_report(first)})
    ledger.observe(2, {"v1": worker_report(second), "v2": worker_report([70.0])})
    total = ledger.total()
    assert LatencySketch.from_wire(total["v1"]["latency_sketch"]) == sketch_of(first + second)
    assert LatencySketch.from_wire(total["v2"]["latency_sketch"]) == sketch_of([70.0])

    ledger.worker_died(1)
    ledger.observe(1, {"v1": worker_report(first + [5.0])})  # late: ignored
    replacement = [8.0, 8.0]
    ledger.observe(3, {"v1": worker_report(replacement)})
    v1 = ledger.total()["v1"]
    merged = LatencySketch.from_wire(v1["latency_sketch"])
    assert merged == sketch_of(first + second + replacement)
    assert merged.total == v1["requests"] == v1["samples_total"] == 9


async def health(router: EmbeddedRouter) -> dict[str, object]:
    async with httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(
            uds=str(router.socket_path)), base_url="http://router") as control:
        data = (await control.get("/health")).json()
    assert isinstance(data, dict)
    return data


async def worker_pids(router: EmbeddedRouter) -> list[int]:
    workers = (await health(router))["workers"]
    assert isinstance(workers, dict)
    return list(workers["pids"])


def alive(pid: int) -> bool:
    """Running (a zombie waiting for its parent to reap it is not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def connections_held(pid: int, port: int) -> int:
    """Established TCP connections to local ``port`` whose socket ``pid`` holds."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            next(f)
            for line in f:
                fields = line.split()
                local_port = int(fields[1].rsplit(":", 1)[1], 16)
                if local_port == port and fields[3] == "01":  # 01: ESTABLISHED
                    inodes.add(fields[9])
    held = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in inodes:
            held += 1
    return held


async def open_clients(router: EmbeddedRouter, n: int) -> list[asyncio.StreamWriter]:
    """``n`` keep-alive client connections, each with one request answered."""
    host, port = router.listen.rsplit(":", 1)
    writers = []
    for _ in range(n):
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"GET / HTTP/1.1\r\nHost: shop\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        await reader.readexactly(length)
        writers.append(writer)
    return writers


async def fresh_requests(router: EmbeddedRouter, n: int, path: str = "/") -> list[httpx.Response]:
    """``n`` requests, each on a new connection and without the pin cookie."""
    responses = []
    async with httpx.AsyncClient(base_url=f"http://{router.listen}", timeout=10,
                                 headers={"Connection": "close"}) as c:
        for _ in range(n):
            c.cookies.clear()
            responses.append(await c.get(path))
    return responses


@pytest.mark.real
async def test_connections_land_on_every_worker_and_metrics_are_summed(
        make_router: RouterFactory, backends: dict[str, Backend]) -> None:
    metrics_listen = f"127.0.0.1:{free_port()}"
    router = await make_router("two", workers=2, metrics_listen=metrics_listen)
    pids = await worker_pids(router)
    assert len(pids) == 2 and router.pid() not in pids
    await router.set_routes(make_routes(backends, {"v1": 100}, releases=("v1",)))

    clients = await open_clients(router, 40)
    try:
        port = int(router.listen.rsplit(":", 1)[1])
        held = {pid: connections_held(pid, port) for pid in pids}
        assert sum(held.values()) == 40 and min(held.values()) > 0, held
    finally:
        for writer in clients:
            writer.close()
    for r in await fresh_requests(router, 20):
        assert r.status_code == 200

    v1 = (await router.metrics()).releases["v1"]
    assert v1.requests == 60 and v1.samples_total == 60 and sum(v1.latency_buckets) == 60
    assert len(v1.samples_ms) == 60 and v1.inflight == 0
    async with httpx.AsyncClient() as c:
        text = (await c.get(f"http://{metrics_listen}/metrics")).text
    assert 'entrega_router_requests_total{release="v1"} 60' in text.splitlines()


def nearest_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


@pytest.mark.real
async def test_every_request_is_in_the_summed_latency_sketch_within_one_percent(
        make_router: RouterFactory, backends: dict[str, Backend]) -> None:
    router = await make_router("sketch", workers=2)
    await router.set_routes(make_routes(backends, {"v2": 100}, releases=("v2",)))
    delays_ms = [5] * 60 + [30] * 30 + [120] * 10
    random.Random(12).shuffle(delays_ms)
    client_ms: list[float] = []

    async def timed(c: httpx.AsyncClient, delay_ms: int) -> None:
        started = time.perf_counter()
        response = await c.get(f"/slow?ms={delay_ms}")
        client_ms.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200

    # each request on a connection of its own, 10 at a time: both workers take some
    async with httpx.AsyncClient(base_url=f"http://{router.listen}", timeout=10,
                                 headers={"Connection": "close"}) as c:
        for batch in range(0, len(delays_ms), 10):
            await asyncio.gather(*(timed(c, d) for d in delays_ms[batch:batch + 10]))

    v2 = (await router.metrics()).releases["v2"]
    sketch = v2.latency_sketch
    assert sketch is not None
    assert sketch.total == v2.requests == len(delays_ms) == len(v2.samples_ms)
    router_ms = list(v2.samples_ms)  # every request's latency, as the router measured it
    for q in (0.01, 0.25, 0.5, 0.6, 0.9, 0.95, 0.99, 1.0):
        estimate = sketch.quantile(q)
        assert estimate is not None
        exact = nearest_rank(router_ms, q)
        # the ring rounds to the microsecond
        assert abs(estimate - exact) <= 0.01 * exact + 0.001, (q, estimate, exact)
        # each request took the router at least the backend's delay and at most what the
        # client saw, so every quantile sits between theirs (the backend runs on uvloop,
        # whose timers count whole milliseconds from a cached loop time: up to ~1 ms early)
        assert (nearest_rank(delays_ms, q) - 1.5) * 0.99 <= estimate, (q, estimate)
        assert estimate <= nearest_rank(client_ms, q) * 1.01, (q, estimate)


@pytest.mark.real
async def test_route_change_reaches_every_worker_before_the_answer_then_shutdown(
        make_router: RouterFactory, backends: dict[str, Backend]) -> None:
    router = await make_router("swap", workers=2)
    await router.set_routes(make_routes(backends, {"v1": 100, "v2": 0}))
    assert {r.text for r in await fresh_requests(router, 20)} == {"v1-a", "v1-b"}

    await router.set_routes(make_routes(backends, {"v1": 0, "v2": 100}))
    responses = await fresh_requests(router, 200)
    assert {(r.status_code, r.headers["x-entrega-release"]) for r in responses} == {(200, "v2")}
    routes = await router.get_routes()
    assert routes.weights == {"v1": 0, "v2": 100} and routes.draining == {}

    pids = await worker_pids(router)
    await router.shutdown()  # POST /shutdown: returns once the supervisor has gone
    assert not any(alive(pid) for pid in pids)


@pytest.mark.real
async def test_killed_worker_is_restarted_and_totals_never_go_back(
        make_router: RouterFactory, backends: dict[str, Backend]) -> None:
    router = await make_router("kill", workers=2)
    await router.set_routes(make_routes(backends, {"v2": 100}, releases=("v2",)))
    assert all(r.status_code == 200 for r in await fresh_requests(router, 40))
    before = (await router.metrics()).releases["v2"].requests
    assert before == 40
    victim, survivor = await worker_pids(router)

    os.kill(victim, signal.SIGKILL)

    async def replaced() -> bool:
        pids = await worker_pids(router)
        return len(pids) == 2 and victim not in pids

    await wait_for(replaced, what="the killed worker to be replaced")
    assert survivor in await worker_pids(router)
    # served by the survivor and the new worker, which got the table before accepting
    responses = await fresh_requests(router, 60)
    assert {(r.status_code, r.text) for r in responses} == {(200, "v2")}
    assert (await router.metrics()).releases["v2"].requests == before + 60
    log = router.log_path.read_text()
    assert f"(pid {victim}) exited with signal 9; restarting it" in log and "serving" in log


@pytest.mark.real
async def test_port_busy_fails_at_once_even_for_a_shared_port(
        make_router: RouterFactory, tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        address = f"127.0.0.1:{busy.getsockname()[1]}"
        router = EmbeddedRouter(name="busy", listen=address, preview_listen=None,
                                state_dir=tmp_path, workers=2)
        with pytest.raises(RouterError, match=f"exited with code 2.*cannot listen on {address}"):
            await router.ensure_running()
        await router.close()
    # a running multi-worker router's SO_REUSEPORT sockets are not shared with another
    running = await make_router("first", workers=2)
    second = EmbeddedRouter(name="second", listen=running.listen, preview_listen=None,
                            state_dir=tmp_path, workers=2)
    with pytest.raises(RouterError, match=f"cannot listen on {running.listen}"):
        await second.ensure_running()
    await second.close()


@pytest.mark.real
async def test_sigterm_drains_every_worker_then_exits(
        make_router: RouterFactory, backends: dict[str, Backend]) -> None:
    router = await make_router("term", workers=2, preview=True)
    await router.set_routes(make_routes(backends, {"v2": 100}, preview="v3"))
    pid = router.pid()
    pids = await worker_pids(router)
    assert pid is not None and (await health(router))["pid"] == pid
    async with httpx.AsyncClient(timeout=10) as c:
        assert (await c.get(f"http://{router.preview_listen}/")).text == "v3"
        slow = [asyncio.create_task(c.get(f"http://{router.listen}/slow?ms=700"))
                for _ in range(6)]

        async def all_in_flight() -> bool:
            return (await router.metrics()).releases["v2"].inflight == 6

        await wait_for(all_in_flight, what="6 requests in flight")
        os.kill(pid, signal.SIGTERM)
        for response in await asyncio.gather(*slow):
            assert (response.status_code, response.text) == (200, "v2")

    async def gone() -> bool:
        return not any(alive(p) for p in [pid, *pids])

    await wait_for(gone, what="supervisor and workers to exit")
    assert not router.pid_path.exists() and not router.socket_path.exists()
    assert "stopped" in router.log_path.read_text()
    host, port = router.listen.rsplit(":", 1)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((host, int(port)), timeout=1).close()


@pytest.mark.real
async def test_adopting_with_another_worker_count_is_refused(
        make_router: RouterFactory, tmp_path: Path) -> None:
    router = await make_router("adopt", workers=2)
    same = EmbeddedRouter(name="adopt", listen=router.listen, preview_listen=None,
                          state_dir=tmp_path, workers=2)
    await same.ensure_running()
    assert same.pid() == router.pid()
    other = EmbeddedRouter(name="adopt", listen=router.listen, preview_listen=None,
                           state_dir=tmp_path, workers=3)
    with pytest.raises(RouterError, match="with 2 worker"):
        await other.ensure_running()
    await same.close()
    await other.close()

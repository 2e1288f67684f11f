"""A worker's counters outlive it: the router's totals are exact across ``kill -9``.

Each worker keeps its counters in memory its supervisor shares (process/counter_memory.py);
the supervisor reads it on every ``GET /metrics`` and once more after the worker died. The
real-process tests kill a worker that answered requests nobody has asked the router about
yet: every one of them must be in the totals, and in the latency sketch.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from entrega.dataplane.http.metrics import (
    MAX_NAME_BYTES,
    MAX_RELEASES_KEPT,
    REGION_SLOTS,
    MetricsRegistry,
    ReleaseStats,
)
from entrega.dataplane.process.counter_memory import CounterMemory, attach
from entrega.dataplane.process.worker_metrics import WorkerLedger
from entrega.routers.embedded import EmbeddedRouter
from tests.routers.conftest import Backend, RouterFactory, make_routes, wait_for, worker_pids
from tests.routers.test_embedded_workers import connections_held


def shared_registry() -> tuple[CounterMemory, MetricsRegistry]:
    """A region as the supervisor makes it, written through the worker's side."""
    memory = CounterMemory()
    assert memory.fd is not None
    region = attach(os.dup(memory.fd))
    memory.handed_over()
    return memory, MetricsRegistry(region)


def test_what_a_worker_counts_is_read_from_the_shared_memory() -> None:
    memory, registry = shared_registry()
    assert memory.read() == {}  # no release yet
    for status, ms in ((200, 0.5), (503, 12.0), (200, 20_000.0)):
        registry.for_release("v1").record(status, ms)
    registry.for_release("v2")
    shared = memory.read()
    assert shared is not None and set(shared) == {"v1", "v2"}
    private = ReleaseStats()
    for status, ms in ((200, 0.5), (503, 12.0), (200, 20_000.0)):
        private.record(status, ms)
    expected = private.to_dict()
    del expected["inflight"], expected["samples_ms"]
    assert shared["v1"] == expected == {**expected, "requests": 3, "errors_5xx": 1,
                                         "samples_total": 3}
    assert shared["v2"]["requests"] == 0 and shared["v2"]["latency_sketch"] == []
    memory.close()
    assert memory.read() is None  # closed: nothing more to read


def test_a_forgotten_release_frees_its_slot_and_a_long_name_counts_privately() -> None:
    memory, registry = shared_registry()
    for i in range(MAX_RELEASES_KEPT + 5):
        registry.for_release(f"r{i}").record(200, 1.0)
    registry.forget_old({"r0"})
    shared = memory.read()
    assert shared is not None and len(shared) == MAX_RELEASES_KEPT
    assert "r0" in shared and "r1" not in shared
    # the freed slots are used again, from zero
    registry.for_release("new").record(200, 2.0)
    shared = memory.read()
    assert shared is not None and shared["new"]["requests"] == 1
    long_name = "v" * (MAX_NAME_BYTES + 1)
    registry.for_release(long_name).record(200, 1.0)
    shared = memory.read()
    assert shared is not None and long_name not in shared
    assert registry.to_dict()["releases"][long_name]["requests"] == 1  # type: ignore[index]
    assert len(registry.slots) <= REGION_SLOTS
    memory.close()


def test_a_dead_workers_final_counters_replace_its_last_report() -> None:
    memory, registry = shared_registry()
    stats = registry.for_release("v1")
    stats.record(200, 1.0)
    ledger = WorkerLedger()
    ledger.observe(1, registry.to_dict()["releases"])  # type: ignore[arg-type]
    for _ in range(9):  # after its last report
        stats.record(200, 3.0)
    ledger.worker_died(1, memory.read())
    total = ledger.total()["v1"]
    assert (total["requests"], total["samples_total"], total["inflight"]) == (10, 10, 0)
    assert sum(n for _, n in total["latency_sketch"]) == 10
    memory.close()


WRITER = """
import sys
import time
from entrega.dataplane.http.metrics import MetricsRegistry
from entrega.dataplane.process.counter_memory import attach
registry = MetricsRegistry(attach(int(sys.argv[1])))
v1 = registry.for_release("v1")
sys.stdout.write("ready\\n")
sys.stdout.flush()
i = 0
while True:
    v1.record(503 if i % 7 == 0 else 200, (i % 400) * 0.37)
    i += 1
    pause_until = time.perf_counter() + 10e-6  # 100,000 requests/s: a busy worker
    while time.perf_counter() < pause_until:
        pass
    if i % 50 == 0:  # churn: slots claimed and freed while the supervisor reads
        for k in range(70):
            registry.for_release(f"old-{i}-{k}")
        registry.forget_old({"v1"})
"""


def test_reads_while_a_worker_writes_are_never_torn() -> None:
    """Another process records 100,000 requests a second and reassigns slots meanwhile;
    every read names only real releases and never sees a counter go down, and reads are
    snapshots (every request in every counter), but where the writer was preempted in the
    middle of ``record`` for longer than the reader waits (this machine is busy)."""
    memory = CounterMemory()
    assert memory.fd is not None
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(memory.fd)],
                              pass_fds=[memory.fd], stdout=subprocess.PIPE)
    memory.handed_over()
    try:
        assert writer.stdout is not None and writer.stdout.readline() == b"ready\n"
        last = 0
        reads = snapshots = 0
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            shared = memory.read()
            assert shared is not None
            reads += 1
            assert all(v == "v1" or v.startswith("old-") for v in shared), list(shared)
            v1 = shared["v1"]
            requests = v1["requests"]
            assert requests >= last
            last = requests
            in_buckets = sum(v1["latency_buckets"])
            in_sketch = sum(n for _, n in v1["latency_sketch"])
            assert v1["samples_total"] == requests
            if in_buckets == in_sketch == requests:
                snapshots += 1
                assert v1["errors_5xx"] == (requests + 6) // 7  # i % 7 == 0 for i < requests
        assert last > 1000 and reads > 50
        assert snapshots >= 0.98 * reads, (snapshots, reads)
    finally:
        writer.kill()
        writer.wait()
    final = memory.read()
    assert final is not None
    v1 = final["v1"]
    # the writer is dead: a kill inside ``record`` may leave one request half counted,
    # in its bucket but not yet in ``requests`` (stored last: dataplane/http/metrics.py)
    assert v1["requests"] <= sum(v1["latency_buckets"]) <= v1["requests"] + 1
    memory.close()


async def keep_alive_clients(router: EmbeddedRouter, n: int
                             ) -> list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    host, port = router.listen.rsplit(":", 1)
    return [await asyncio.open_connection(host, int(port)) for _ in range(n)]


async def one_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"GET / HTTP/1.1\r\nHost: shop\r\n\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    await reader.readexactly(length)


@pytest.mark.real
async def test_a_killed_workers_unreported_requests_stay_in_the_totals(
        make_router: RouterFactory, backends: dict[str, Backend]) -> None:
    router = await make_router("exact", workers=2)
    await router.set_routes(make_routes(backends, {"v2": 100}, releases=("v2",)))
    clients = await keep_alive_clients(router, 20)
    for _ in range(3):
        for reader, writer in clients:
            await one_request(reader, writer)
    port = int(router.listen.rsplit(":", 1)[1])
    pids = await worker_pids(router)
    held = {pid: connections_held(pid, port) for pid in pids}
    assert sum(held.values()) == 20 and min(held.values()) > 0, held
    victim = pids[0]
    # No GET /metrics since the first request: the victim has reported nothing.
    os.kill(victim, signal.SIGKILL)
    for _, writer in clients:
        writer.close()

    async def replaced() -> bool:
        now = await worker_pids(router)
        return len(now) == 2 and victim not in now

    await wait_for(replaced, what="the killed worker to be replaced")
    v2 = (await router.metrics()).releases["v2"]
    assert v2.latency_sketch is not None
    assert (v2.requests, v2.samples_total, sum(v2.latency_buckets), v2.latency_sketch.total) \
        == (60, 60, 60, 60), held


@pytest.mark.real
async def test_totals_are_exact_across_several_kills_under_load(
        make_router: RouterFactory, backends: dict[str, Backend]) -> None:
    router = await make_router("load", workers=2)
    await router.set_routes(make_routes(backends, {"v2": 100}, releases=("v2",)))
    answered = failed = 0
    stop = asyncio.Event()

    async def client() -> None:
        nonlocal answered, failed
        async with httpx.AsyncClient(base_url=f"http://{router.listen}", timeout=10,
                                     headers={"Connection": "close"}) as c:
            while not stop.is_set():
                try:
                    await c.get("/")
                    answered += 1  # any answer, 5xx included, is a request the router counts
                except httpx.HTTPError:
                    failed += 1  # in flight in the killed worker: counted or not

    load = [asyncio.create_task(client()) for _ in range(4)]
    kills = 0
    try:
        for kill in range(4):
            await asyncio.sleep(0.4)
            victim = (await worker_pids(router))[kill % 2]
            os.kill(victim, signal.SIGKILL)
            kills += 1

            async def replaced(victim: int = victim) -> bool:
                now = await worker_pids(router)
                return len(now) == 2 and victim not in now

            await wait_for(replaced, what="the killed worker to be replaced")
        await asyncio.sleep(0.4)
    finally:
        stop.set()
        await asyncio.gather(*load)
    v2 = (await router.metrics()).releases["v2"]
    assert v2.latency_sketch is not None
    assert answered > 100 and kills == 4
    assert answered <= v2.requests <= answered + failed, (answered, failed, v2.requests)
    assert v2.samples_total == sum(v2.latency_buckets) == v2.latency_sketch.total \
        == v2.requests
    restarts = (await router.metrics()).restarts
    assert len(restarts) == 4

"""The data plane heals itself: a worker killed under load is replaced on the same sockets
by the supervisor, without the controller, and the restart is reported in the metrics.

The load is real: clients open a new TCP connection for every request (the case a dead
listener would refuse), through the router to real backends, while the worker process is
killed with SIGKILL. Only requests in flight in the killed worker may fail; at most one
per client is in flight at any time, so failures are bounded by the number of clients.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from dataclasses import dataclass

import httpx
import pytest

from entrega.dataplane.process.restarts import (
    FREE_RESTARTS,
    MAX_PAUSE_S,
    WINDOW_S,
    compute_restart_pause_s,
    describe_exit,
)
from entrega.routers.embedded import EmbeddedRouter
from tests.routers.conftest import Backend, RouterFactory, make_routes, wait_for

CLIENTS = 8


@pytest.mark.parametrize(("deaths", "now", "pause_s"), [
    ([], 0.0, 0.0),
    ([100.0], 100.0, 0.0),
    ([100.0 + i for i in range(FREE_RESTARTS)], 105.0, 0.0),
    ([100.0 + i * 0.01 for i in range(FREE_RESTARTS + 1)], 100.1, 0.5),
    ([100.0 + i * 0.01 for i in range(FREE_RESTARTS + 3)], 100.1, 2.0),
    ([100.0 + i * 0.01 for i in range(FREE_RESTARTS + 30)], 101.0, MAX_PAUSE_S),
    ([0.0] * 50 + [200.0], 200.0, 0.0),
    ([100.0 - WINDOW_S] + [100.0] * FREE_RESTARTS, 100.0, 0.0),
], ids=["first-death", "one-death", "free-restarts-used", "one-beyond", "three-beyond",
        "capped", "old-deaths-forgotten", "window-edge-excluded"])
def test_restart_pause_is_zero_until_a_crash_loop(
        deaths: list[float], now: float, pause_s: float) -> None:
    assert compute_restart_pause_s(deaths, now=now) == pause_s


@pytest.mark.parametrize(("code", "reason"), [
    (-9, "exited with signal 9"), (1, "exited with code 1"), (0, "exited with code 0")])
def test_exit_reasons_read_well(code: int, reason: str) -> None:
    assert describe_exit(code) == reason


@dataclass
class Outcome:
    started: float
    ended: float
    #: "ok", "refused" (connection refused) or "failed" (reset, closed early...)
    kind: str
    status: int = 0
    release: str | None = None


async def one_request(host: str, port: int) -> Outcome:
    """GET / on a new connection, read to the end (``Connection: close``)."""
    started = time.monotonic()
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except ConnectionRefusedError:
        return Outcome(started, time.monotonic(), "refused")
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n")
        data = await asyncio.wait_for(reader.read(-1), 10)
    except (OSError, TimeoutError):
        return Outcome(started, time.monotonic(), "failed")
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    if not body or not lines[0].startswith("HTTP/1.1 "):
        return Outcome(started, time.monotonic(), "failed")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:] if ": " in line)
    return Outcome(started, time.monotonic(), "ok", int(lines[0].split()[1]),
                   headers.get("x-entrega-release"))


async def load(router: EmbeddedRouter, stop: asyncio.Event, outcomes: list[Outcome]) -> None:
    host, port = router.listen.rsplit(":", 1)

    async def client() -> None:
        while not stop.is_set():
            outcomes.append(outcome := await one_request(host, int(port)))
            if outcome.kind == "refused":
                await asyncio.sleep(0.005)  # nothing listens yet: do not spin

    await asyncio.gather(*(client() for _ in range(CLIENTS)))


async def workers_of(router: EmbeddedRouter) -> dict[str, object]:
    async with httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(
            uds=str(router.socket_path)), base_url="http://router") as control:
        workers = (await control.get("/health")).json()["workers"]
    assert isinstance(workers, dict)
    return workers


async def kill_worker_under_load(router: EmbeddedRouter) -> tuple[list[Outcome], float, int]:
    """SIGKILL the only worker while clients run; (outcomes, kill time, killed pid)."""
    before = await workers_of(router)
    (victim,) = before["pids"]  # type: ignore[misc]

    async def spare_ready() -> bool:
        return (await workers_of(router))["spare"] is not None

    await wait_for(spare_ready, what="a spare worker")
    outcomes: list[Outcome] = []
    stop = asyncio.Event()
    clients = asyncio.create_task(load(router, stop, outcomes))
    await wait_for(lambda: _at_least(outcomes, 100), what="100 requests before the kill")
    killed_at = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    await wait_for(lambda: _ok_after(outcomes, killed_at, 100), what="100 requests after")
    stop.set()
    await clients

    async def replaced() -> bool:
        pids = (await workers_of(router))["pids"]
        return isinstance(pids, list) and len(pids) == 1 and victim not in pids

    await wait_for(replaced, what="a new worker")
    return outcomes, killed_at, victim


async def _at_least(outcomes: list[Outcome], n: int) -> bool:
    return len(outcomes) >= n


async def _ok_after(outcomes: list[Outcome], t: float, n: int) -> bool:
    return sum(o.kind == "ok" and o.started > t for o in outcomes) >= n


@pytest.mark.real
async def test_killed_worker_is_replaced_on_the_same_socket_without_refusing(
        make_router: RouterFactory, backends: dict[str, Backend]) -> None:
    router = await make_router("heal", preview=True)  # workers: 1, the default
    await router.set_routes(make_routes(backends, {"v1": 50, "v2": 50}, preview="v3"))

    for kill in (1, 2):  # the second kill is served by the spare started after the first
        outcomes, killed_at, victim = await kill_worker_under_load(router)

        refused = [o for o in outcomes if o.kind == "refused"]
        failed = [o for o in outcomes if o.kind == "failed"]
        answered = [o for o in outcomes if o.kind == "ok"]
        assert refused == [], f"{len(refused)} connections refused while the worker was dead"
        assert len(failed) <= CLIENTS, f"{len(failed)} failed, more than were in flight"
        # the new worker had the table before it accepted: no 503 without a release
        assert {(o.status, o.release) for o in answered} <= {(200, "v1"), (200, "v2")}
        first = min(o.ended for o in answered if o.started > killed_at)
        log = router.log_path.read_text()
        measured = re.findall(r"worker 0 \(pid \d+\) serving, (\d+) ms after", log)
        print(f"\nkill {kill}: {len(outcomes)} requests, {len(failed)} failed, 0 refused; "
              f"first answer {(first - killed_at) * 1000:.0f} ms after the kill; supervisor: "
              f"new worker accepting {measured[-1]} ms after the death")
        assert len(measured) == kill and first - killed_at < 1.0
        assert f"worker 0 (pid {victim}) exited with signal 9; restarting it" in log

    async with httpx.AsyncClient(timeout=10) as c:  # the preview listener too
        assert (await c.get(f"http://{router.preview_listen}/")).text == "v3"
    restarts = (await router.metrics()).restarts
    assert [(r.what, r.reason) for r in restarts] == [
        ("router worker 0", "exited with signal 9")] * 2
    assert restarts[0].at <= restarts[1].at <= time.time()


@pytest.mark.real
async def test_restarts_are_reported_once_each_and_survive_adoption(
        make_router: RouterFactory, backends: dict[str, Backend]) -> None:
    router = await make_router("report", workers=2)
    await router.set_routes(make_routes(backends, {"v2": 100}, releases=("v2",)))
    workers = await workers_of(router)
    assert (await router.metrics()).restarts == ()

    async def spare_other_than(pid: object) -> bool:
        spare = (await workers_of(router))["spare"]
        return spare is not None and spare != pid

    await wait_for(lambda: spare_other_than(None), what="a spare worker")
    spare = (await workers_of(router))["spare"]
    assert isinstance(spare, int)
    os.kill(spare, signal.SIGKILL)  # a spare serves nothing: replaced, not reported
    await wait_for(lambda: spare_other_than(spare), what="another spare")
    assert (await workers_of(router))["pids"] == workers["pids"]
    assert (await router.metrics()).restarts == ()

    pids = workers["pids"]
    assert isinstance(pids, list)
    os.kill(pids[1], signal.SIGKILL)

    async def reported() -> bool:
        return len((await router.metrics()).restarts) == 1

    await wait_for(reported, what="the restart in the metrics")
    # a controller that restarts adopts the supervisor and sees the same restarts
    again = EmbeddedRouter(name="report", listen=router.listen, preview_listen=None,
                           state_dir=router.dir.parent.parent, app="shop", workers=2)
    await again.ensure_running()
    assert again.pid() == router.pid()
    (restart,) = (await again.metrics()).restarts
    assert restart.what == "router worker 1" and restart.reason == "exited with signal 9"
    await again.close()


@pytest.mark.real
async def test_a_starting_router_answers_only_from_its_saved_table(
        make_router: RouterFactory, backends: dict[str, Backend]) -> None:
    router = await make_router("saved")
    await router.set_routes(make_routes(backends, {"v2": 100}, releases=("v2",)))
    await router.shutdown()  # routes.json stays
    outcomes: list[Outcome] = []
    stop = asyncio.Event()
    clients = asyncio.create_task(load(router, stop, outcomes))  # from before it listens
    await router.ensure_running()
    await wait_for(lambda: _ok_after(outcomes, 0.0, 50), what="50 answers")
    stop.set()
    await clients
    answered = {(o.status, o.release) for o in outcomes if o.kind == "ok"}
    assert answered == {(200, "v2")}, "a connection was answered before the table was loaded"
    assert not [o for o in outcomes if o.kind == "failed"]

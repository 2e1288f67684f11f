"""A router on every host (``router: {kind: embedded, placement: every_host}``), on real
sshd test hosts (127.0.1.1-3), as behind a load balancer that may send a request to any
host.

Covers: each host's router started by the host agent with the host's python3 (the
router's pure-Python path, no httptools), listening on the host's own address and
routing to every instance of the fleet; a host's router killed (supervisor and workers)
with a stale table on its disk, started again by the controller and given the current
table; a bad canary with traffic entering through two different hosts' routers, the same
weights on every host, judged on the metrics summed over the hosts and rolled back on its
own; status showing each host's router in step; the routers outliving the controller
and adopted by the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from rich.console import Console

from entrega.cli.render import status_view
from entrega.config import Config
from entrega.net import free_port
from entrega.routers.base import Routes
from entrega.routers.every_host import EveryHostRouter
from entrega.service import Service
from tests.controller.conftest import wait_until
from tests.fleet.delivery import deploy, kill_processes_under, services
from tests.fleet.hosts import TestFleet
from tests.fleet.test_ssh_target import write_config as fleet_config

pytestmark = [pytest.mark.real, pytest.mark.slow]

#: A reconcile pass asks every host over SSH; a loaded machine makes that slow.
TIMEOUT_S = 150

#: A small app: its version on every path; release "v2" is broken (500 on /api/).
APP = """\
import json, os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

VERSION = os.environ["ENTREGA_VERSION"]

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        broken = VERSION == "v2" and self.path.startswith("/api/")
        body = json.dumps({"version": VERSION, "host": os.environ["HOST"]}).encode()
        self.send_response(500 if broken else 200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

ThreadingHTTPServer((os.environ["HOST"], int(os.environ["PORT"])), Handler).serve_forever()
"""

ANALYSIS = """\
    analysis:
      error-rate: {judge: sequential, max_increase: 0.002, min_requests: 20, pass_rate: 0.2}
"""

STRATEGY = """\
      canary:
        steps:
          - weight: 50
          - analysis: {duration_s: 60, metrics: [error-rate]}
          - weight: 100
"""


def write_config(root: Path, fleet: TestFleet, port: int) -> Config:
    router = f'{{kind: embedded, placement: every_host, listen: "0.0.0.0:{port}"}}'
    return fleet_config(root, fleet, STRATEGY + ANALYSIS, instances_per_host=1, router=router)


def app_release(root: Path, version: str) -> Path:
    path = root / "artifacts" / version
    path.mkdir(parents=True, exist_ok=True)
    (path / "app.py").write_text(APP)
    return path


@pytest.fixture
async def every_host_service(test_fleet: TestFleet, tmp_path: Path
                             ) -> AsyncIterator[Callable[[], Service]]:
    port = free_port("127.0.1.1")
    async with services(test_fleet, lambda: write_config(
            tmp_path / "controller", test_fleet, port)) as make:
        yield make


class Traffic(threading.Thread):
    """Requests entering through several hosts' routers in turn, as a load balancer in
    front would send them; counts the answers per (router, version, status)."""

    def __init__(self, listens: list[str]) -> None:
        super().__init__(daemon=True)
        self.listens = listens
        self.answers: dict[tuple[str, str, int], int] = {}
        self.failures: list[str] = []
        self._halt = threading.Event()

    def run(self) -> None:
        with httpx.Client(trust_env=False, timeout=5) as client:
            i = 0
            while not self._halt.is_set():
                listen = self.listens[i % len(self.listens)]
                i += 1
                # each request a new visitor: a pin cookie kept would send them all to
                # one release
                client.cookies.clear()
                try:
                    response = client.get(f"http://{listen}/api/products")
                    version = response.headers.get("x-entrega-release", "?")
                    key = (listen, version, response.status_code)
                    self.answers[key] = self.answers.get(key, 0) + 1
                except httpx.HTTPError as exc:
                    self.failures.append(f"{listen}: {exc!r}")
                self._halt.wait(0.01)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=10)


async def judged(service: Service, rid: int, traffic: Traffic) -> None:
    """Wait for the canary's verdict; on a timeout, say where the rollout stood."""
    try:
        await wait_until(lambda: phase(service, rid) in ("rolled_back", "succeeded"),
                         timeout_s=TIMEOUT_S, what="the bad canary judged")
    except AssertionError as exc:
        row = service.repo.rollout(rid)
        events = [e.message for e in service.repo.events(app="shop", environment="production")]
        raise AssertionError(f"{exc}: {row.phase if row else None} "
                             f"{row.state if row else None}; events: {events[-12:]}; "
                             f"traffic: {traffic.answers} {traffic.failures[-3:]}") from None


def phase(service: Service, rid: int) -> str:
    row = service.repo.rollout(rid)
    assert row is not None
    return row.phase


async def get(listen: str) -> httpx.Response:
    async with httpx.AsyncClient(trust_env=False) as client:
        return await client.get(f"http://{listen}/api/products", timeout=5)


async def host_tables(router: EveryHostRouter) -> list[Routes]:
    return [Routes.from_dict(await link.control("GET", "/routes")) for link in router.hosts]


async def test_routers_on_every_host_in_lockstep_a_bad_canary_rolled_back_on_summed_metrics(
        test_fleet: TestFleet, every_host_service: Callable[[], Service]) -> None:
    service = every_host_service()
    await service.controller.start()
    rt = service.controller.runtimes["production"]
    router = rt.router
    assert isinstance(router, EveryHostRouter)
    listens = [link.listen for link in router.hosts]
    # the hosts' routers are reached over the target's own pooled SSH connections
    assert all(link.fleet is rt.target.fleet for link in router.hosts)  # type: ignore[attr-defined]
    port = listens[0].rsplit(":", 1)[1]
    assert listens == [f"{h.address}:{port}" for h in test_fleet.hosts]
    root = service.config.base_dir
    try:
        rid = await deploy(service, "v1", app_release(root, "v1"))
        await wait_until(lambda: phase(service, rid) == "succeeded", timeout_s=TIMEOUT_S,
                         what="v1 on the fleet")

        # Every host's router (the host's python3: no httptools there) routes to the
        # instances of every host, with one table.
        for listen in listens:
            answer = await get(listen)
            assert answer.status_code == 200 and answer.json()["version"] == "v1"
        hosts_seen = set()
        for _ in range(12):
            hosts_seen.add((await get(listens[0])).json()["host"])
        assert hosts_seen == {h.address for h in test_fleet.hosts}
        tables = await host_tables(router)
        assert all(t.same_table(tables[0]) for t in tables) and tables[0].weights == {"v1": 100}

        # host2's router dies (supervisor and workers) and its saved table is stale: the
        # controller starts it again and gives it the current table.
        host2 = test_fleet.hosts[1]
        router_dir = host2.base_dir / "shop" / "state" / "routers" / "shop-production"
        pid = int((router_dir / "router.pid").read_text())
        os.killpg(pid, signal.SIGKILL)
        (router_dir / "routes.json").write_text(json.dumps(Routes().to_dict()))
        with contextlib.suppress(httpx.HTTPError):
            await get(listens[1])  # refused, or answered by a worker on its way out

        async def host2_back_in_step() -> bool:
            with contextlib.suppress(httpx.HTTPError):
                answer = await get(listens[1])
                return answer.status_code == 200 and answer.json()["version"] == "v1"
            return False

        await wait_until(host2_back_in_step, timeout_s=TIMEOUT_S,
                         what="host2's router started again with the current table")
        assert int((router_dir / "router.pid").read_text()) != pid
        restarted = [e.message for e in service.repo.events(app="shop",
                                                            environment="production")]
        assert any("router of production on host2 did not answer" in m
                   for m in restarted), restarted[-10:]

        # A bad canary, traffic entering through host1's and host2's routers.
        traffic = Traffic(listens[:2])
        traffic.start()
        try:
            rid = await deploy(service, "v2", app_release(root, "v2"))

            async def canary_on_every_host() -> bool:
                tables = await host_tables(router)
                return all(t.weights == {"v1": 50, "v2": 50} for t in tables)

            await wait_until(canary_on_every_host, timeout_s=TIMEOUT_S,
                             what="the canary's weights on every host's router")
            await judged(service, rid, traffic)
        finally:
            traffic.stop()
        assert phase(service, rid) == "rolled_back"
        # v2's errors entered through both routers; the analysis read the sum.
        for listen in listens[:2]:
            assert traffic.answers.get((listen, "v2", 500), 0) > 0, traffic.answers
        per_host = [(await link.control("GET", "/metrics"))["releases"] for link in router.hosts]
        summed = (await router.metrics()).releases["v2"]
        assert summed.requests == sum(r.get("v2", {}).get("requests", 0) for r in per_host)
        assert summed.errors_5xx == sum(r.get("v2", {}).get("errors_5xx", 0)
                                        for r in per_host)
        assert all(r.get("v2", {}).get("errors_5xx", 0) > 0 for r in per_host[:2])
        assert summed.latency_sketch is not None
        assert summed.latency_sketch.total == summed.requests

        # All traffic is back on v1, on every host alike.
        async def stable_everywhere() -> bool:
            tables = await host_tables(router)
            return all(t.weights == {"v1": 100} and t.same_table(tables[0]) for t in tables)

        await wait_until(stable_everywhere, timeout_s=TIMEOUT_S, what="v1 alone everywhere")

        # status: each host's router, in step with the current table
        await rt.router.get_routes()
        status = service.status()
        hosts = status.environments[0].hosts
        assert [(h.name, h.router.listen if h.router else None) for h in hosts] == [
            (h.name, listen) for h, listen in zip(test_fleet.hosts, listens, strict=True)]
        assert all(h.router is not None and h.router.state == "in step" for h in hosts)
        console = Console(width=200, record=True)
        console.print(status_view(status))
        shown = console.export_text()
        assert f"{listens[1]} in step" in shown
    finally:
        await service.controller.stop()

    # The routers outlive the controller; the next one adopts them (no second start).
    pid_files = [h.base_dir / "shop" / "state" / "routers" / "shop-production" / "router.pid"
                 for h in test_fleet.hosts]
    pids = [int(p.read_text()) for p in pid_files]
    assert (await get(listens[2])).json()["version"] == "v1"
    successor = every_host_service()
    await successor.controller.start()
    try:
        await successor.controller.reconcile_once()
        assert [int(p.read_text()) for p in pid_files] == pids
        adopted = [e.message for e in successor.repo.events(app="shop",
                                                            environment="production")
                   if e.kind == "adopted"]
        assert adopted and "router" in adopted[-1], adopted
        hosts = successor.status().environments[0].hosts
        assert [h.router.state if h.router else None for h in hosts] == ["in step"] * 3
        assert (await get(listens[2])).json()["version"] == "v1"
    finally:
        await successor.controller.stop()
        await asyncio.sleep(0)


async def test_with_the_first_host_down_a_release_is_verified_through_another_hosts_router(
        test_fleet: TestFleet, tmp_path: Path) -> None:
    """``verify:`` goes through a host's router; host1 (the first listed) is down, left out
    by ``max_failed``: the checks go through the next host that answers, and pass."""
    port = free_port("127.0.1.1")
    router = f'{{kind: embedded, placement: every_host, listen: "0.0.0.0:{port}"}}'
    strategy = """\
      progress_deadline_s: 600
      canary:
        max_failed: 1
        steps:
          - weight: 100
    verify:
      - http: {path: /api/products, expect_status: 200}
"""
    root = tmp_path / "controller"
    async with services(test_fleet, lambda: fleet_config(
            root, test_fleet, strategy, instances_per_host=1, router=router)) as make:
        service = make()
        await service.controller.start()
        try:
            rid = await deploy(service, "v1", app_release(root, "v1"))
            await wait_until(lambda: phase(service, rid) == "succeeded", timeout_s=TIMEOUT_S,
                             what="v1 on every host")
            first = test_fleet.hosts[0]
            first.stop()
            kill_processes_under(first.root)
            rid = await deploy(service, "v3", app_release(root, "v3"))
            await wait_until(lambda: phase(service, rid) in ("succeeded", "rolled_back",
                                                             "failed"),
                             timeout_s=TIMEOUT_S, what="the v3 rollout to end")
            row = service.repo.rollout(rid)
            assert row is not None
            assert row.phase == "succeeded", row.state.get("message")
            verified = [e.message for e in service.repo.events(app="shop",
                                                               environment="production")
                        if e.kind == "verified" and e.version == "v3"]
            assert verified and f"http://127.0.1.2:{port}" in verified[-1], verified
            assert (await get(f"127.0.1.3:{port}")).json()["version"] == "v3"
        finally:
            await service.controller.stop()

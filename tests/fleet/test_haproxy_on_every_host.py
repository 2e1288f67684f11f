"""HAProxy on every host (``router: {kind: haproxy, placement: every_host}``), on real sshd
test hosts (127.0.1.1-3), as behind a load balancer that may send a request to any host.

Covers: each host's HAProxy and log sink started by the host agent, listening on the
host's own address and routing to every instance of the fleet; the same weights on every
host, read back from each host's runtime API (over SSH); a bad canary with traffic
entering through two different hosts' HAProxy, judged on the metrics summed over the
hosts' sinks and rolled back on its own with no failed request; one host's HAProxy killed
(kill -9 of its master and workers) and brought back by the controller with the current
table; status showing each host's router in step; HAProxy outliving the controller and
adopted by the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from rich.console import Console

from entrega.cli.render import status_view
from entrega.config import Config
from entrega.net import free_port
from entrega.routers.every_host import EveryHostRouter, RouterOnHost
from entrega.routers.haproxy.on_host import HostHaproxyRouter
from entrega.service import Service
from tests.controller.conftest import wait_until
from tests.fleet.delivery import deploy, services
from tests.fleet.hosts import TestFleet
from tests.fleet.test_routers_on_every_host import (
    ANALYSIS,
    STRATEGY,
    TIMEOUT_S,
    Traffic,
    app_release,
    get,
    judged,
    phase,
)
from tests.fleet.test_ssh_target import write_config as fleet_config

pytestmark = [pytest.mark.real, pytest.mark.slow]


def write_config(root: Path, fleet: TestFleet, port: int) -> Config:
    router = f'{{kind: haproxy, placement: every_host, listen: "0.0.0.0:{port}"}}'
    return fleet_config(root, fleet, STRATEGY + ANALYSIS, instances_per_host=1, router=router)


@pytest.fixture
async def haproxy_service(test_fleet: TestFleet, tmp_path: Path
                          ) -> AsyncIterator[Callable[[], Service]]:
    port = free_port("127.0.1.1")
    async with services(test_fleet, lambda: write_config(
            tmp_path / "controller", test_fleet, port)) as make:
        yield make


def host_haproxies(router: EveryHostRouter) -> list[HostHaproxyRouter]:
    found = []
    for link in router.hosts:
        assert isinstance(link, RouterOnHost)
        assert isinstance(link.router, HostHaproxyRouter)
        found.append(link.router)
    return found


async def runtime_weights(haproxy: HostHaproxyRouter) -> dict[str, str]:
    """The weights this host's HAProxy holds, as its runtime API answers (over SSH)."""
    settings = await haproxy.api.show_map(haproxy.files.map("settings.map"))
    return {k.split(":", 1)[1]: v for k, v in settings if k.startswith("weight:")}


def haproxy_processes(master: int) -> list[int]:
    """HAProxy's master and its workers (the master's children)."""
    found = [master]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == master:
                    found.append(int(entry.name))
    return found


async def test_haproxy_on_every_host_in_lockstep_a_bad_canary_rolled_back_on_summed_metrics(
        test_fleet: TestFleet, haproxy_service: Callable[[], Service]) -> None:
    service = haproxy_service()
    await service.controller.start()
    rt = service.controller.runtimes["production"]
    router = rt.router
    assert isinstance(router, EveryHostRouter)
    haproxies = host_haproxies(router)
    listens = [link.listen for link in router.hosts]
    port = listens[0].rsplit(":", 1)[1]
    assert listens == [f"{h.address}:{port}" for h in test_fleet.hosts]
    root = service.config.base_dir
    router_dirs = [h.base_dir / "shop" / "state" / "routers" / "shop-production"
                   for h in test_fleet.hosts]
    try:
        rid = await deploy(service, "v1", app_release(root, "v1"))
        await wait_until(lambda: phase(service, rid) == "succeeded", timeout_s=TIMEOUT_S,
                         what="v1 on the fleet")

        # Every host runs its own HAProxy and log sink, their files under the agent's
        # state directory; each routes to the instances of every host.
        for router_dir in router_dirs:
            assert (router_dir / "haproxy.cfg").exists()
            assert int((router_dir / "haproxy.pid").read_text()) > 0
            assert int((router_dir / "logsink.pid").read_text()) > 0
        # (the phase is committed before its routes are applied: they may still be on
        # their way to some host)
        async def v1_everywhere() -> bool:
            with contextlib.suppress(httpx.HTTPError):
                answers = [await get(listen) for listen in listens]
                return all(a.status_code == 200 and a.json()["version"] == "v1"
                           for a in answers)
            return False

        await wait_until(v1_everywhere, timeout_s=TIMEOUT_S, what="v1 through every HAProxy")
        for listen in listens:
            answer = await get(listen)
            assert answer.headers["x-entrega-release"] == "v1"
        hosts_seen = set()
        for _ in range(12):
            hosts_seen.add((await get(listens[0])).json()["host"])
        assert hosts_seen == {h.address for h in test_fleet.hosts}
        assert [await runtime_weights(h) for h in haproxies] == [{"v1": "100"}] * 3

        # host2's HAProxy is killed outright (master and workers): the controller starts
        # it again, with the current table.
        pidfile = router_dirs[1] / "haproxy.pid"
        master = int(pidfile.read_text())
        killed = haproxy_processes(master)
        assert len(killed) >= 2, killed  # the master and at least one worker
        for pid in killed:
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(httpx.HTTPError):
            await get(listens[1])

        async def host2_back() -> bool:
            with contextlib.suppress(httpx.HTTPError):
                answer = await get(listens[1])
                return answer.status_code == 200 and answer.json()["version"] == "v1"
            return False

        await wait_until(host2_back, timeout_s=TIMEOUT_S,
                         what="host2's HAProxy started again with the current table")
        assert int(pidfile.read_text()) != master
        assert await runtime_weights(haproxies[1]) == {"v1": "100"}
        events = [e.message for e in service.repo.events(app="shop",
                                                         environment="production")]
        assert any("router of production on host2 did not answer" in m for m in events), \
            events[-10:]

        # A bad canary, traffic entering through host1's and host2's HAProxy.
        traffic = Traffic(listens[:2])
        traffic.start()
        try:
            rid = await deploy(service, "v2", app_release(root, "v2"))

            async def canary_on_every_host() -> bool:
                weights = [await runtime_weights(h) for h in haproxies]
                return all(w == {"v1": "50", "v2": "50"} for w in weights)

            await wait_until(canary_on_every_host, timeout_s=TIMEOUT_S,
                             what="the canary's weights in every host's HAProxy")
            await judged(service, rid, traffic)
        finally:
            traffic.stop()
        assert phase(service, rid) == "rolled_back"
        # no request failed: every answer came from a release, v1's all good (v2's 500s
        # are the app's own)
        assert traffic.failures == []
        assert {(version, status) for (_l, version, status) in traffic.answers} <= {
            ("v1", 200), ("v2", 500)}, traffic.answers
        for listen in listens[:2]:
            assert traffic.answers.get((listen, "v2", 500), 0) > 0, traffic.answers
        # the analysis read the sum of every host's sink
        per_host = [(await h.metrics()).releases for h in haproxies]
        summed = (await router.metrics()).releases["v2"]
        assert summed.requests == sum(r["v2"].requests for r in per_host if "v2" in r)
        assert summed.errors_5xx == sum(r["v2"].errors_5xx for r in per_host if "v2" in r)
        assert all(r["v2"].errors_5xx > 0 for r in per_host[:2])
        assert summed.latency_sketch is not None
        assert summed.latency_sketch.total == summed.requests

        # All traffic is back on v1, on every host alike.
        async def stable_everywhere() -> bool:
            return [await runtime_weights(h) for h in haproxies] == [{"v1": "100"}] * 3

        await wait_until(stable_everywhere, timeout_s=TIMEOUT_S, what="v1 alone everywhere")

        # status: each host's router, in step with the current table (once the
        # controller's last change, which takes several runtime commands per host, is
        # on every host)
        async def in_step_everywhere() -> bool:
            await rt.router.get_routes()
            hosts = service.status().environments[0].hosts
            return all(h.router is not None and h.router.state == "in step" for h in hosts)

        await wait_until(in_step_everywhere, timeout_s=TIMEOUT_S, what="every host in step")
        hosts = service.status().environments[0].hosts
        assert [(h.name, h.router.listen if h.router else None) for h in hosts] == [
            (h.name, listen) for h, listen in zip(test_fleet.hosts, listens, strict=True)]
        status = service.status()
        console = Console(width=200, record=True)
        console.print(status_view(status))
        assert f"{listens[1]} in step" in console.export_text()
    finally:
        await service.controller.stop()

    # HAProxy and its sink outlive the controller; the next one adopts them.
    pids = [int((d / name).read_text()) for d in router_dirs
            for name in ("haproxy.pid", "logsink.pid")]
    assert (await get(listens[2])).json()["version"] == "v1"
    successor = haproxy_service()
    await successor.controller.start()
    try:
        await successor.controller.reconcile_once()
        assert [int((d / name).read_text()) for d in router_dirs
                for name in ("haproxy.pid", "logsink.pid")] == pids
        hosts = successor.status().environments[0].hosts
        assert [h.router.state if h.router else None for h in hosts] == ["in step"] * 3
        assert (await get(listens[2])).json()["version"] == "v1"
    finally:
        await successor.controller.stop()
        await asyncio.sleep(0)

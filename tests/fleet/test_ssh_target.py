"""Delivery to a fleet: the controller's rollouts on instances that run on real sshd test
hosts (127.0.1.i), each supervised there by the host agent it installed, behind one
embedded router on this machine that reaches every host's instances.

Covers: fresh hosts delivered to (agent and release installed by content, once);
a canary from v1 to v2 across the hosts, traffic through the router reaching every host;
the old release stopped on every host; instances that outlive the controller and are
adopted by the next one (no second start); a crash-looping release failing with the
host's stderr.
"""

from __future__ import annotations

import getpass
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from rich.console import Console

from entrega.cli.render import status_view
from entrega.config import Config, load_config
from entrega.controller.loop import Controller
from entrega.net import free_port
from entrega.service import Service
from entrega.views import HostView
from tests.controller.conftest import wait_until
from tests.fleet.delivery import (
    deploy,
    hosts_yaml,
    kill_processes_under,
    release,
    services,
    versions_served,
)
from tests.fleet.hosts import TestFleet

pytestmark = [pytest.mark.real, pytest.mark.slow]

CANARY = """\
      canary:
        steps:
          - weight: 50
          - pause: {duration_s: 1}
          - weight: 100
"""


def write_config(root: Path, fleet: TestFleet, strategy: str = CANARY, *,
                 instances_per_host: int = 2, router: str | None = None) -> Config:
    """The shop on the fleet; ``strategy`` ends the file (an ``analysis:`` may follow
    it); ``router`` replaces the one router in front (a flow mapping)."""
    hosts = hosts_yaml(fleet)
    router = router or f'{{kind: embedded, listen: "127.0.0.1:{free_port()}"}}'
    root.mkdir(parents=True, exist_ok=True)
    path = root / "entrega.yaml"
    path.write_text(f"""\
app: shop
server: {{listen: "127.0.0.1:{free_port()}"}}
run:
  command: "{sys.executable} app.py"
  health: {{path: /healthz, interval_s: 0.1, healthy_threshold: 2}}
  drain_s: 1
environments:
  - name: production
    target:
      kind: ssh
      hosts:
{hosts}      user: {getpass.getuser()}
      identity_file: {fleet.identity_file}
      known_hosts: {fleet.known_hosts}
      instances_per_host: {instances_per_host}
      connect_timeout_s: 5
      command_timeout_s: 30
    router: {router}
    strategy:
{strategy}""")
    return load_config(path)


@pytest.fixture
async def fleet_service(test_fleet: TestFleet, tmp_path: Path
                        ) -> AsyncIterator[Callable[..., Service]]:
    async with services(test_fleet, lambda strategy=CANARY: write_config(
            tmp_path / "controller", test_fleet, strategy)) as make:
        yield make


async def test_a_canary_across_the_fleet_then_a_new_controller_adopts_it(
        test_fleet: TestFleet, fleet_service: Callable[..., Service]) -> None:
    service = fleet_service()
    await service.controller.start()
    rt = service.controller.runtimes["production"]
    root = service.config.base_dir
    try:
        rid = await deploy(service, "v1", release(root, "v1"))
        await wait_until(lambda: service.repo.rollout(rid).phase == "succeeded",  # type: ignore[union-attr]
                         timeout_s=60, what="v1 on the fleet")
        instances = [i for i in await rt.target.observe() if i.alive]
        # Two instances on each of the three hosts, each listening on its host's address.
        assert sorted((i.extra["host"], i.endpoint.host) for i in instances) == sorted(  # type: ignore[union-attr]
            (h.name, h.address) for h in test_fleet.hosts for _ in range(2))
        listen = rt.config.router.listen
        assert await versions_served(listen, 12) == {"v1": 12}

        rid = await deploy(service, "v2", release(root, "v2"))
        await wait_until(lambda: service.repo.rollout(rid).phase == "succeeded",  # type: ignore[union-attr]
                         timeout_s=60, what="v2 on the fleet")
        assert await versions_served(listen, 12) == {"v2": 12}
        # v1 is stopped on every host once v2 took all traffic.
        await wait_until(lambda: _alive_versions(rt), timeout_s=30, what="v1 stopped")
        started = {(i.instance, i.pid) for i in await rt.target.observe() if i.alive}
    finally:
        await service.controller.stop()

    # A new controller (the old one gone) adopts what runs on the hosts: no new start.
    restarted = Controller(service.config, service.repo, service.artifacts)
    await restarted.start()
    try:
        rt = restarted.runtimes["production"]
        assert {(i.instance, i.pid) for i in await rt.target.observe() if i.alive} == started
        assert await versions_served(rt.config.router.listen, 6) == {"v2": 6}
    finally:
        await restarted.stop()


async def _alive_versions(rt: object) -> bool:
    alive = {i.version for i in await rt.target.observe() if i.alive}  # type: ignore[attr-defined]
    return alive == {"v2"}


CRASHES = """\
import sys
sys.stderr.write("shop: cannot reach the database\\n")
sys.exit(4)
"""


async def test_a_release_that_crashes_on_the_hosts_fails_with_their_words(
        fleet_service: Callable[..., Service]) -> None:
    service = fleet_service("      canary:\n        steps:\n          - weight: 100\n")
    await service.controller.start()
    try:
        rid = await deploy(service, "v1", release(service.config.base_dir, "v1", CRASHES))
        await wait_until(lambda: service.repo.rollout(rid).phase == "failed",  # type: ignore[union-attr]
                         timeout_s=60, what="v1 to fail")
        message = service.repo.rollout(rid).state["message"]  # type: ignore[union-attr]
        assert "v1 cannot run: instance host" in message, message
        assert "last exit code 4" in message and "shop: cannot reach the database" in message
    finally:
        await service.controller.stop()


async def test_a_host_that_comes_back_empty_is_brought_to_the_stable_release(
        test_fleet: TestFleet, fleet_service: Callable[..., Service]) -> None:
    service = fleet_service("      canary:\n        steps:\n          - weight: 100\n")
    await service.controller.start()
    rt = service.controller.runtimes["production"]
    try:
        rid = await deploy(service, "v1", release(service.config.base_dir, "v1"))
        await wait_until(lambda: service.repo.rollout(rid).phase == "succeeded",  # type: ignore[union-attr]
                         timeout_s=60, what="v1 on the fleet")
        # host2 goes down with everything on it (a reboot): sshd and its instances.
        lost = test_fleet.hosts[1]
        lost.stop()
        kill_processes_under(lost.root)
        # status (and the dashboard, from the same view) shows the host down, by name.
        down = await wait_until(lambda: [h for h in hosts_of(service) if not h.reachable],
                                timeout_s=30, what="host2 to show as unreachable")
        assert [h.name for h in down] == ["host2"] and "host2" in (down[0].error or "")
        # The router no longer sends to host2's addresses; the others serve meanwhile,
        # and the controller waits for host2, never on it.
        async def host2_unrouted() -> bool:
            return await routed_hosts(rt) == {"host1", "host3"}

        await wait_until(host2_unrouted, timeout_s=30,
                         what="host2's instances out of the route table")
        assert await versions_served(rt.config.router.listen, 12) == {"v1": 12}
        shown = render_text(status_view(service.status()))
        assert "host2" in shown and "unreachable" in shown
        lost.start()
        [event] = await wait_until(
            lambda: [e for e in service.repo.events("shop", limit=100)
                     if e.kind == "instance_restarted"], timeout_s=60,
            what="host2's instances to be started again")
        assert event.version == "v1" and event.data == {"restarted": 2}
        alive = [i for i in await rt.target.observe() if i.alive]
        assert sorted(i.instance for i in alive) == sorted(
            f"{h.name}/{n}" for h in test_fleet.hosts for n in range(2))
        assert await versions_served(rt.config.router.listen, 12) == {"v1": 12}
        await wait_until(lambda: all(h.reachable and h.instances == {"v1": 2}
                                     for h in hosts_of(service)),
                         timeout_s=30, what="every host to show two v1 instances")
    finally:
        await service.controller.stop()


async def routed_hosts(rt: object) -> set[str]:
    routes = await rt.router.get_routes()  # type: ignore[attr-defined]
    return {e.instance.split("/")[0] for e in routes.backends.get("v1", ())}


def hosts_of(service: Service) -> list[HostView]:
    [environment] = service.status().environments
    return environment.hosts


def render_text(renderable: object) -> str:
    console = Console(width=200, record=True)
    console.print(renderable)
    return console.export_text()


async def test_a_host_that_does_not_answer_fails_the_rollout_by_its_deadline_naming_it(
        test_fleet: TestFleet, fleet_service: Callable[..., Service]) -> None:
    service = fleet_service("      progress_deadline_s: 8\n"
                            "      canary:\n        steps:\n          - weight: 100\n")
    test_fleet.hosts[2].stop()
    await service.controller.start()
    try:
        rid = await deploy(service, "v1", release(service.config.base_dir, "v1"))
        await wait_until(lambda: service.repo.rollout(rid).phase == "failed",  # type: ignore[union-attr]
                         timeout_s=60, what="v1 to fail by its deadline")
        message = service.repo.rollout(rid).state["message"]  # type: ignore[union-attr]
        assert message.startswith("v1 was not ready within 8s: "), message
        assert "host3" in message, message
    finally:
        await service.controller.stop()

"""Canary over real sshd test hosts (127.0.1.1-3), behind one embedded router on
127.0.0.1: ``canary_hosts`` and ``max_failed``.

Covers: a canary on the first host only (its weight to that host's instances), resumed
by a new controller from the stored state (the canary's instances adopted, not started
again), started on the other hosts before it takes all traffic, with a client sending
requests through the router the whole time and none failing; and a host whose sshd and
processes are killed mid-canary: left out within max_failed, named in the events and in
status, the rollout completing on the other hosts, and the host, once back, brought to
the environment's stable release.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from entrega.cli.render import status_view
from entrega.controller.loop import Controller
from entrega.service import Service
from tests.controller.conftest import wait_until
from tests.fleet.delivery import deploy, kill_processes_under, release, services, versions_served
from tests.fleet.hosts import TestFleet
from tests.fleet.test_rolling import Client, alive_by_host, until_phase
from tests.fleet.test_ssh_target import render_text, write_config

pytestmark = [pytest.mark.real, pytest.mark.slow]

#: A reconcile pass asks the hosts' agents over SSH: about a second on an idle machine,
#: ten on a loaded one.
TIMEOUT_S = 120


def canary(extra: str) -> str:
    return f"""\
      progress_deadline_s: 60
      canary:
{extra}        steps:
          - weight: 50
          - pause: {{}}
          - weight: 100
"""


@pytest.fixture
async def canary_service(test_fleet: TestFleet, tmp_path: Path
                         ) -> AsyncIterator[Callable[[str], Service]]:
    async with services(test_fleet, lambda strategy: write_config(
            tmp_path / "controller", test_fleet, strategy)) as make:
        yield make


async def routed_by_version(service: Service) -> dict[str, set[str]]:
    """release -> the hosts whose instances the router sends its traffic to."""
    routes = await service.controller.runtimes["production"].router.get_routes()
    return {version: {e.instance.split("/")[0] for e in endpoints}
            for version, endpoints in routes.backends.items()}


async def new_visitors(listen: str, count: int) -> dict[str, int]:
    """Which release answered each of ``count`` visitors, each a client of its own (the
    router pins a visitor to the release it drew, by a cookie)."""
    seen: dict[str, int] = {}
    for _ in range(count):
        async with httpx.AsyncClient(trust_env=False) as client:
            response = await client.get(f"http://{listen}/api/products", timeout=5)
            assert response.status_code == 200, response.text[:200]
            version = response.json()["version"]
            seen[version] = seen.get(version, 0) + 1
    return seen


async def test_a_canary_on_one_host_resumes_after_a_restart_and_widens_before_all_traffic(
        test_fleet: TestFleet, canary_service: Callable[[str], Service]) -> None:
    service = canary_service(canary("        canary_hosts: 1\n"))
    await service.controller.start()
    root = service.config.base_dir
    first, second, third = (h.name for h in test_fleet.hosts)
    listen = service.controller.runtimes["production"].config.router.listen
    client = Client(listen)
    try:
        rid = await deploy(service, "v1", release(root, "v1"))
        await until_phase(service, rid, "succeeded", "v1 on the fleet")
        client.start()
        rid = await deploy(service, "v2", release(root, "v2"))
        await until_phase(service, rid, "paused", "v2 paused at 50% on its canary host")
        assert await alive_by_host(service) == {first: {"v1", "v2"}, second: {"v1"},
                                                third: {"v1"}}
        assert await routed_by_version(service) == {"v1": {first, second, third},
                                                    "v2": {first}}
        assert set(await new_visitors(listen, 24)) == {"v1", "v2"}
    finally:
        await service.controller.stop()
    target = service.controller.runtimes["production"].target
    before = {(i.instance, i.pid) for i in await target.observe()
              if i.alive and i.version == "v2"}
    assert len(before) == 2

    # A new controller resumes from the stored state: the canary stays on the first host.
    restarted = Controller(service.config, service.repo, service.artifacts)
    service.controller = restarted
    await restarted.start()
    try:
        row = service.repo.rollout(rid)
        assert row is not None and row.state["fleet"]["hosts"] == [first]
        await service.promote(environment="production", actor="alice")
        await until_phase(service, rid, "succeeded", "v2 after the promote")
        await wait_until(lambda: _only_v2(service, [first, second, third]), timeout_s=60,
                         what="v1 stopped on every host")
        after = {(i.instance, i.pid)
                 for i in await restarted.runtimes["production"].target.observe()
                 if i.alive and i.version == "v2" and i.extra["host"] == first}
        assert after == before  # adopted by the new controller, not started again
        assert await versions_served(listen, 9) == {"v2": 9}
    finally:
        client.stop()
        await restarted.stop()

    assert client.failures == [], client.failures[:5]
    events = [e.message for e in service.repo.events(app="shop", environment="production")]
    widened = events.index(f"starting v2 on {second}, {third} before it takes all traffic")
    all_traffic = events.index("step 3/3: v2 receives 100% of traffic")
    assert widened < all_traffic, events


async def _only_v2(service: Service, hosts: list[str]) -> bool:
    return await alive_by_host(service) == {h: {"v2"} for h in hosts}


async def test_a_host_killed_mid_canary_is_left_out_and_gets_the_stable_release_back(
        test_fleet: TestFleet, canary_service: Callable[[str], Service]) -> None:
    service = canary_service(canary("        max_failed: 1\n"))
    await service.controller.start()
    root = service.config.base_dir
    first, second, third = (h.name for h in test_fleet.hosts)
    rt = service.controller.runtimes["production"]
    try:
        rid = await deploy(service, "v1", release(root, "v1"))
        await until_phase(service, rid, "succeeded", "v1 on the fleet")
        rid = await deploy(service, "v2", release(root, "v2"))
        await until_phase(service, rid, "paused", "v2 paused at 50% on every host")
        # host2 goes down with everything on it: sshd and the instances.
        lost = test_fleet.hosts[1]
        lost.stop()
        kill_processes_under(lost.root)

        def left_out() -> dict[str, str]:
            row = service.repo.rollout(rid)
            assert row is not None
            return dict((row.state.get("fleet") or {}).get("failed") or {})

        failed = await wait_until(left_out, timeout_s=TIMEOUT_S, what="host2 left out")
        assert list(failed) == [second] and "stopped answering" in failed[second], failed

        async def v2_off_host2() -> bool:  # the route change follows the stored state
            return (await routed_by_version(service)).get("v2") == {first, third}

        await wait_until(v2_off_host2, timeout_s=30, what="host2's v2 out of the routes")
        view = service.status().environments[0].rollout
        assert view is not None and list(view.hosts_left_out) == [second]

        await service.promote(environment="production", actor="alice")
        await until_phase(service, rid, "succeeded", "v2 on the hosts left")
        events = [e.message for e in service.repo.events(app="shop", environment="production")]
        assert any(m.startswith(f"{second} left out of v2 (1/1 host(s) allowed by "
                                f"max_failed): {second}: stopped answering") for m in events), \
            events
        assert await versions_served(rt.config.router.listen, 9) == {"v2": 9}
        shown = render_text(status_view(service.status()))
        assert "left out" in shown and second in shown, shown

        # host2 comes back empty: the controller brings it to the stable release, v2, as
        # lost instances of the environment's release (kept for when it answers).
        lost.start()
        await wait_until(lambda: _only_v2(service, [first, second, third]),
                         timeout_s=TIMEOUT_S, what="host2 to run v2")

        def restarted() -> list[object]:
            return [e.data for e in service.repo.events("shop", limit=200)
                    if e.kind == "instance_restarted" and e.version == "v2"]

        # The instances answer the observation before the start that brought them back has
        # returned and recorded it: wait for the event, not only for the instances.
        assert await wait_until(restarted, timeout_s=30,
                                what="the restart event") == [{"restarted": 2}]
        await wait_until(lambda: _routed_everywhere(service), timeout_s=30,
                         what="host2's v2 instances in the route table")
        assert await versions_served(rt.config.router.listen, 9) == {"v2": 9}
    finally:
        await service.controller.stop()


async def _routed_everywhere(service: Service) -> bool:
    return await routed_by_version(service) == {"v2": {"host1", "host2", "host3"}}


async def test_a_host_down_while_the_canary_starts_is_left_out_without_waiting_the_deadline(
        test_fleet: TestFleet, canary_service: Callable[[str], Service]) -> None:
    """A dead host is not waited for until ``progress_deadline_s`` (10 minutes here) when
    ``max_failed`` allows leaving it out: once it has failed every observation for
    ``HOST_DOWN_AFTER_S``, the canary goes on with the other hosts."""
    strategy = canary("        max_failed: 1\n").replace("progress_deadline_s: 60",
                                                         "progress_deadline_s: 600")
    service = canary_service(strategy)
    await service.controller.start()
    root = service.config.base_dir
    first, second, third = (h.name for h in test_fleet.hosts)
    try:
        rid = await deploy(service, "v1", release(root, "v1"))
        await until_phase(service, rid, "succeeded", "v1 on the fleet")
        lost = test_fleet.hosts[1]
        lost.stop()
        kill_processes_under(lost.root)
        rid = await deploy(service, "v2", release(root, "v2"))
        await until_phase(service, rid, "paused", "v2 at 50% on the hosts left")
        row = service.repo.rollout(rid)
        assert row is not None
        failed = (row.state.get("fleet") or {}).get("failed") or {}
        assert list(failed) == [second], failed
        assert failed[second].startswith("went down while v2 started: no answer for "), failed

        async def v2_on_the_others() -> bool:  # the route change follows the stored state
            return (await routed_by_version(service)).get("v2") == {first, third}

        await wait_until(v2_on_the_others, timeout_s=30, what="v2 routed to host1 and host3")
    finally:
        await service.controller.stop()

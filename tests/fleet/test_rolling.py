"""Rolling over real sshd test hosts (127.0.1.1-3), one host per batch, behind one
embedded router on 127.0.0.1, with a client sending requests through the router the
whole time.

Covers: a good release moving host by host with no failed request (each host drained
from the old release, started, probed, served, then the old instance stopped), and a
release that crashes on the second host: the rollout stops there, the old release is
started again on the first host and takes all traffic back, and the third host never
saw the new release.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from entrega.controller.loop import Controller
from entrega.service import Service
from tests.controller.conftest import wait_until
from tests.fleet.delivery import SHOP, deploy, release, services, versions_served
from tests.fleet.hosts import TestFleet
from tests.fleet.test_ssh_target import write_config

pytestmark = [pytest.mark.real, pytest.mark.slow]

#: A reconcile pass asks the hosts' agents over SSH (a python3 started per call): about a
#: second on an idle machine, ten on a loaded one; a rollout of three batches takes a few.
TIMEOUT_S = 120

ROLLING = """\
      rolling: {batch: 1, max_failed: 0}
"""

#: The shop app, except on one host (by the address it listens on) where it cannot start.
CRASHES_ON = """\
import os, runpy, sys
if os.environ.get("HOST") == {address!r}:
    sys.stderr.write("shop: this host has no database\\n")
    sys.exit(4)
runpy.run_path("shop.py", run_name="__main__")
"""


@pytest.fixture
async def rolling_service(test_fleet: TestFleet, tmp_path: Path
                          ) -> AsyncIterator[Callable[[], Service]]:
    async with services(test_fleet, lambda: write_config(
            tmp_path / "controller", test_fleet, ROLLING)) as make:
        yield make


class Client(threading.Thread):
    """Requests through the router, one after the other, until stopped; counts what
    each version answered and every failure (a refused connection, a 5xx...)."""

    def __init__(self, listen: str, *, new_visitor_each_time: bool = False) -> None:
        super().__init__(daemon=True)
        self.url = f"http://{listen}/api/products"
        #: without its cookies, each request is a new visitor (not pinned to a release)
        self.new_visitor_each_time = new_visitor_each_time
        self.served: dict[str, int] = {}
        self.failures: list[str] = []
        self._halt = threading.Event()

    def run(self) -> None:
        with httpx.Client(trust_env=False, timeout=5) as client:
            while not self._halt.is_set():
                if self.new_visitor_each_time:
                    client.cookies.clear()
                try:
                    response = client.get(self.url)
                    if response.status_code != 200:
                        self.failures.append(f"{response.status_code}: {response.text[:80]}")
                        continue
                    version = response.json()["version"]
                    self.served[version] = self.served.get(version, 0) + 1
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=10)


async def alive_by_host(service: Service) -> dict[str, set[str]]:
    """host -> the versions with a live instance there."""
    found: dict[str, set[str]] = {}
    for i in await service.controller.runtimes["production"].target.observe():
        if i.alive:
            found.setdefault(str(i.extra["host"]), set()).add(i.version)
    return found


def phase(service: Service, rid: int) -> str:
    row = service.repo.rollout(rid)
    assert row is not None
    return row.phase


async def until_phase(service: Service, rid: int, wanted: str, what: str) -> None:
    """Wait for the rollout's phase; on a timeout the message says where it stood."""
    try:
        await wait_until(lambda: phase(service, rid) == wanted, timeout_s=TIMEOUT_S, what=what)
    except AssertionError as exc:
        row = service.repo.rollout(rid)
        events = [e.message for e in service.repo.events(app="shop", environment="production")]
        raise AssertionError(f"{exc}: {row.phase if row else None} "
                             f"{row.state if row else None}; events: {events[-15:]}") from None


async def test_a_good_release_rolls_host_by_host_without_a_failed_request(
        test_fleet: TestFleet, rolling_service: Callable[[], Service]) -> None:
    service = rolling_service()
    await service.controller.start()
    root = service.config.base_dir
    listen = service.controller.runtimes["production"].config.router.listen
    hosts = [h.name for h in test_fleet.hosts]
    client = Client(listen)
    try:
        rid = await deploy(service, "v1", release(root, "v1"))
        await until_phase(service, rid, "succeeded", "v1 on the fleet")
        client.start()
        rid = await deploy(service, "v2", release(root, "v2"))
        await until_phase(service, rid, "succeeded", "v2 rolled over the fleet")
        await wait_until(lambda: _only(service, "v2", hosts), timeout_s=30,
                         what="v1 stopped on every host")
        # The instances are gone a moment before each stop's event is written: the
        # controller must not be stopped in between (it would cancel the stop's end).
        await wait_until(lambda: len(_stop_events(service)) == len(hosts), timeout_s=30,
                         what="every stop of v1 recorded")
    finally:
        client.stop()
        await service.controller.stop()

    assert client.failures == [], client.failures[:5]
    assert client.served.get("v1", 0) > 0 and client.served.get("v2", 0) > 0, client.served
    events = [e.message for e in service.repo.events(app="shop", environment="production")]
    # one host at a time, in the config's order, the weights following the hosts
    served = [m for m in events if "now serve v2" in m]
    assert [m.split(": ")[1].split(" now")[0] for m in served] == hosts, events
    assert [m.rsplit("(", 1)[1] for m in served] == [
        "33% of traffic)", "67% of traffic)", "100% of traffic)"], served
    stopped = [m for m in events if m.startswith("v1 stopped on")]
    assert sorted(stopped) == sorted(f"v1 stopped on {h} (rollout {rid})" for h in hosts), \
        events


def _stop_events(service: Service) -> list[str]:
    return [e.message for e in service.repo.events(app="shop", environment="production")
            if e.message.startswith("v1 stopped on")]


async def _only(service: Service, version: str, hosts: list[str]) -> bool:
    return await alive_by_host(service) == {h: {version} for h in hosts}


async def test_a_release_crashing_on_the_second_host_is_restored_on_the_first(
        test_fleet: TestFleet, rolling_service: Callable[[], Service]) -> None:
    service = rolling_service()
    await service.controller.start()
    root = service.config.base_dir
    rt = service.controller.runtimes["production"]
    first, second, third = (h.name for h in test_fleet.hosts)
    try:
        rid = await deploy(service, "v1", release(root, "v1"))
        await until_phase(service, rid, "succeeded", "v1 on the fleet")
        bad = release(root, "v2", CRASHES_ON.format(address=test_fleet.hosts[1].address))
        shutil.copy(SHOP, bad / "shop.py")
        rid = await deploy(service, "v2", bad)
        await until_phase(service, rid, "rolled_back", "v2 to be rolled back")
        row = service.repo.rollout(rid)
        assert row is not None
        message = row.state["message"]
        assert f"1 host(s) failed ({second})" in message, message
        assert "shop: this host has no database" in message, message
        assert row.state["rolling"]["done"] == [first]
        # v1 runs everywhere again and takes all traffic; v2 is gone; the third host never
        # saw it
        await wait_until(lambda: _only(service, "v1", [first, second, third]),
                         timeout_s=30, what="v1 alone on every host")
        assert await versions_served(rt.config.router.listen, 9) == {"v1": 9}
        events = [e.message for e in service.repo.events(app="shop", environment="production")]
        assert any(m == f"starting v1 again on {first}" for m in events), events
        assert not any(third in m for m in events if "starting v2" in m), events
    finally:
        await service.controller.stop()


async def test_a_controller_restarted_mid_batch_resumes_without_a_second_start(
        test_fleet: TestFleet, rolling_service: Callable[[], Service]) -> None:
    service = rolling_service()
    await service.controller.start()
    root = service.config.base_dir
    first = test_fleet.hosts[0].name
    hosts = [h.name for h in test_fleet.hosts]
    try:
        rid = await deploy(service, "v1", release(root, "v1"))
        await until_phase(service, rid, "succeeded", "v1 on the fleet")
        rid = await deploy(service, "v2", release(root, "v2"))

        def second_batch() -> bool:
            row = service.repo.rollout(rid)
            assert row is not None
            rolling = row.state.get("rolling") or {}
            return rolling.get("done") == [first] and row.phase == "starting"

        await wait_until(second_batch, timeout_s=TIMEOUT_S, what="the second batch")
    finally:
        await service.controller.stop()
    target = service.controller.runtimes["production"].target
    before = {(i.instance, i.pid) for i in await target.observe()
              if i.alive and i.version == "v2" and i.extra["host"] == first}
    assert len(before) == 2

    restarted = Controller(service.config, service.repo, service.artifacts)
    service.controller = restarted
    await restarted.start()
    try:
        await until_phase(service, rid, "succeeded", "v2 after the restart")
        await wait_until(lambda: _only(service, "v2", hosts), timeout_s=30,
                         what="v1 stopped on every host")
        after = {(i.instance, i.pid)
                 for i in await restarted.runtimes["production"].target.observe()
                 if i.alive and i.version == "v2" and i.extra["host"] == first}
        assert after == before  # the first host's instances were adopted, not restarted
    finally:
        await restarted.stop()

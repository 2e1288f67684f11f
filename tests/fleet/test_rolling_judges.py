"""Rolling over real sshd test hosts (127.0.1.1-3) behind one embedded router, with a
client sending requests through the router the whole time: the analysis between batches
(a release with a high error rate is judged against the old one on live traffic after
its first batch and rolled back), and ``max_unavailable: 0`` (the route table keeps every
host serving while the release moves host by host)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from entrega.service import Service
from entrega.targets.base import host_of
from tests.controller.conftest import wait_until
from tests.fleet.delivery import deploy, release, services, versions_served
from tests.fleet.hosts import TestFleet
from tests.fleet.test_rolling import Client, alive_by_host, phase, until_phase
from tests.fleet.test_ssh_target import write_config

pytestmark = [pytest.mark.real, pytest.mark.slow]

#: The strategy block ends the environment in write_config, so the metrics follow it.
JUDGED = """\
      rolling:
        batch: 1
        analysis: {duration_s: 60, check_every_s: 0.5, metrics: [error-rate]}
    analysis:
      error-rate: {judge: sequential, max_increase: 0.002, min_requests: 20, pass_rate: 0.2}
"""

NEVER_UNAVAILABLE = """\
      rolling: {batch: 1, max_unavailable: 0}
"""


class Users(Client):
    """Many users, one request each: the router pins a user to the release it drew
    (a cookie), and one pinned client would show the judges only one side."""

    def run(self) -> None:
        with httpx.Client(trust_env=False, timeout=5) as client:
            while not self._halt.is_set():
                client.cookies.clear()
                try:
                    response = client.get(self.url)
                    version = response.json().get("version", "?")
                    self.served[version] = self.served.get(version, 0) + 1
                    if response.status_code != 200:
                        self.failures.append(f"{response.status_code}: {response.text[:80]}")
                except (httpx.HTTPError, ValueError) as exc:
                    self.failures.append(repr(exc))


@pytest.fixture
async def fleet_service(test_fleet: TestFleet, tmp_path: Path
                        ) -> AsyncIterator[Callable[[str], Service]]:
    async with services(test_fleet, lambda strategy: write_config(
            tmp_path / "controller", test_fleet, strategy)) as make:
        yield make


def messages(service: Service) -> list[str]:
    return [e.message for e in service.repo.events(app="shop", environment="production")]


async def test_a_release_with_a_high_error_rate_is_rolled_back_by_the_analysis_of_its_first_batch(
        test_fleet: TestFleet, fleet_service: Callable[[str], Service]) -> None:
    service = fleet_service(JUDGED)
    await service.controller.start()
    root = service.config.base_dir
    rt = service.controller.runtimes["production"]
    first, second, third = (h.name for h in test_fleet.hosts)
    client = Users(rt.config.router.listen)
    try:
        rid = await deploy(service, "v1", release(root, "v1"))
        await until_phase(service, rid, "succeeded", "v1 on the fleet")
        client.start()
        bad = release(root, "v2")
        # the shop app reads this on every request: half of v2's answers are 500s
        (bad / "shop.json").write_text(json.dumps({"error_rate": 0.5}))
        rid = await deploy(service, "v2", bad)
        await until_phase(service, rid, "rolled_back", "v2 to be rolled back by the analysis")
        await wait_until(lambda: _only(service, "v1", [first, second, third]),
                         timeout_s=30, what="v1 alone on every host")
    finally:
        client.stop()
        await service.controller.stop()

    row = service.repo.rollout(rid)
    assert row is not None
    message = row.state["message"]
    assert message.startswith("batch 1/3: analysis failed: "), message
    assert "error rate" in message, message
    assert row.state["rolling"]["done"] == [first]
    assert row.state["analysis_history"][-1]["verdict"] == "fail"
    run = service.repo.analysis_run(rid, row.state["analysis_history"][-1]["window"])
    assert run is not None and run.verdict == "fail"
    explained = service.analysis(rid)  # what `entrega analysis explain` shows: batch 1/3
    assert (explained.steps, explained.windows[-1].step) == (3, 1)
    # v2 took live traffic on its first host only, and the judges saw its errors there
    assert client.served.get("v2", 0) > 0, client.served
    assert any("500" in f for f in client.failures), client.failures[:3]
    events = messages(service)
    assert "batch 1/3: analysis of error-rate started" in events, events
    assert f"starting v1 again on {first}" in events, events
    assert not any(h in m for m in events if "starting v2" in m for h in (second, third)), \
        events
    # all traffic back on v1 at once, then v2 stopped
    assert await versions_served(rt.config.router.listen, 9) == {"v1": 9}


async def test_max_unavailable_0_keeps_every_host_in_the_route_table(
        test_fleet: TestFleet, fleet_service: Callable[[str], Service]) -> None:
    service = fleet_service(NEVER_UNAVAILABLE)
    await service.controller.start()
    root = service.config.base_dir
    rt = service.controller.runtimes["production"]
    hosts = [h.name for h in test_fleet.hosts]
    client = Client(rt.config.router.listen)
    serving: list[int] = []
    watcher: asyncio.Task[None] | None = None
    try:
        rid = await deploy(service, "v1", release(root, "v1"))
        await until_phase(service, rid, "succeeded", "v1 on the fleet")
        client.start()
        rid = await deploy(service, "v2", release(root, "v2"))

        async def watch() -> None:
            """The router's own table, read as often as the loop allows."""
            while phase(service, rid) not in ("succeeded", "rolled_back", "failed"):
                routes = await rt.router.get_routes()
                serving.append(len({host_of(e.instance)
                                    for version, endpoints in routes.backends.items()
                                    if routes.weights.get(version, 0) > 0
                                    for e in endpoints}))
                await asyncio.sleep(0.01)

        watcher = asyncio.create_task(watch())
        await until_phase(service, rid, "succeeded", "v2 rolled over the fleet")
        await watcher
        await wait_until(lambda: _only(service, "v2", hosts), timeout_s=30,
                         what="v1 stopped on every host")
    finally:
        if watcher is not None and not watcher.done():  # the rollout did not end
            watcher.cancel()
        client.stop()
        await service.controller.stop()

    assert len(serving) > 20, serving
    assert min(serving) == len(hosts), serving
    assert client.failures == [], client.failures[:5]
    assert client.served.get("v1", 0) > 0 and client.served.get("v2", 0) > 0, client.served
    events = messages(service)
    assert not any("drained" in m for m in events), events
    kept = [m for m in events if "keep serving v1 until v2 is ready there" in m]
    assert [m.split(": ")[1].split(" keep")[0] for m in kept] == hosts, events


async def _only(service: Service, version: str, hosts: list[str]) -> bool:
    return await alive_by_host(service) == {h: {version} for h in hosts}

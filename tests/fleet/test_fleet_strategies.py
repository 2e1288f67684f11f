"""Canary analysis and blue-green across real sshd hosts (127.0.1.1-3), unchanged from one
machine: a canary whose error rate rises on live traffic is rolled back automatically (all
traffic back to the stable release on every host, then the canary's instances stop on
every host), and a blue-green release is previewed on every host, switched, and its
predecessor kept warm until the switch is final.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from entrega.config import Config, load_config
from entrega.net import free_port
from entrega.service import Service
from tests.controller.conftest import wait_until
from tests.fleet.delivery import deploy, release, services, versions_served
from tests.fleet.hosts import TestFleet
from tests.fleet.test_rolling import Client, alive_by_host
from tests.fleet.test_ssh_target import write_config

pytestmark = [pytest.mark.real, pytest.mark.slow]

TIMEOUT_S = 120

ANALYSED_CANARY = """\
      canary:
        steps:
          - weight: 50
          - analysis: {duration_s: 60, check_every_s: 1, metrics: [error-rate]}
          - weight: 100
    analysis:
      error-rate: {judge: sequential, max_increase: 0.002, min_requests: 20, pass_rate: 0.2}
"""

BLUE_GREEN = """\
      blue-green: {auto_promote: false, scale_down_delay_s: 20}
"""


def with_preview(path: Path) -> Config:
    """The fleet config at ``path`` with a preview address on its router (blue-green's)."""
    text = re.sub(r'(router: \{kind: embedded, listen: "[^"]+")',
                  rf'\1, preview_listen: "127.0.0.1:{free_port()}"', path.read_text())
    path.write_text(text)
    return load_config(path)


@pytest.fixture
async def strategy_service(test_fleet: TestFleet, tmp_path: Path
                           ) -> AsyncIterator[Callable[[str], Service]]:
    def config_of(strategy: str) -> Config:
        config = write_config(tmp_path / "controller", test_fleet, strategy)
        if "blue-green" in strategy:
            return with_preview(tmp_path / "controller" / "entrega.yaml")
        return config

    async with services(test_fleet, config_of) as make:
        yield make


async def test_a_canary_worse_on_live_traffic_is_rolled_back_on_every_host(
        test_fleet: TestFleet, strategy_service: Callable[[str], Service]) -> None:
    service = strategy_service(ANALYSED_CANARY)
    await service.controller.start()
    root = service.config.base_dir
    hosts = [h.name for h in test_fleet.hosts]
    listen = service.controller.runtimes["production"].config.router.listen
    client = Client(listen, new_visitor_each_time=True)
    try:
        rid = await deploy(service, "v1", release(root, "v1"))
        await wait_until(lambda: service.repo.rollout(rid).phase == "succeeded",  # type: ignore[union-attr]
                         timeout_s=TIMEOUT_S, what="v1 on the fleet")
        bad = release(root, "v2")
        (bad / "shop.json").write_text(json.dumps({"error_rate": 0.5}))
        client.start()
        rid = await deploy(service, "v2", bad)
        try:
            await wait_until(lambda: service.repo.rollout(rid).phase == "rolled_back",  # type: ignore[union-attr]
                             timeout_s=TIMEOUT_S, what="the bad canary to be rolled back")
        except AssertionError:
            raise AssertionError(f"{service.repo.rollout(rid)}; " + "\n".join(
                e.message for e in service.repo.events("shop", limit=30))) from None
        client.stop()
        assert client.served.get("v2", 0) > 0  # the canary did get traffic on the fleet
        assert await versions_served(listen, 12) == {"v1": 12}
        await wait_until(lambda: _only(service, "v1", hosts), timeout_s=30,
                         what="v2 stopped on every host")
    finally:
        client.stop()
        await service.controller.stop()
    # The rollback says why, in the judge's words.
    said = [e.message for e in service.repo.events("shop", limit=50)]
    assert any("error-rate" in m and "failed" in m for m in said), said


async def test_blue_green_previews_switches_and_keeps_the_old_release_warm_on_every_host(
        test_fleet: TestFleet, strategy_service: Callable[[str], Service]) -> None:
    service = strategy_service(BLUE_GREEN)
    await service.controller.start()
    root = service.config.base_dir
    hosts = [h.name for h in test_fleet.hosts]
    router = service.controller.runtimes["production"].config.router
    assert router.preview_listen is not None
    client = Client(router.listen)
    try:
        rid = await deploy(service, "v1", release(root, "v1"))
        await wait_until(lambda: service.repo.rollout(rid).phase == "succeeded",  # type: ignore[union-attr]
                         timeout_s=TIMEOUT_S, what="v1 on the fleet")
        client.start()
        rid = await deploy(service, "v2", release(root, "v2"))
        await wait_until(lambda: service.repo.rollout(rid).phase == "paused",  # type: ignore[union-attr]
                         timeout_s=TIMEOUT_S, what="v2 in preview")
        # The preview serves the new release from every host; users still get the old.
        assert await versions_served(router.preview_listen, 12) == {"v2": 12}
        assert await versions_served(router.listen, 12) == {"v1": 12}
        assert await alive_by_host(service) == {h: {"v1", "v2"} for h in hosts}
        await service.promote(environment="production", actor="test")
        await wait_until(lambda: service.repo.rollout(rid).phase == "scaling_down",  # type: ignore[union-attr]
                         timeout_s=TIMEOUT_S, what="the switch")
        assert await versions_served(router.listen, 12) == {"v2": 12}
        # The old release is kept warm on every host until the switch is final...
        assert await alive_by_host(service) == {h: {"v1", "v2"} for h in hosts}
        await wait_until(lambda: service.repo.rollout(rid).phase == "succeeded",  # type: ignore[union-attr]
                         timeout_s=TIMEOUT_S, what="the switch to be final")
        # ...then stopped on every host.
        await wait_until(lambda: _only(service, "v2", hosts), timeout_s=30,
                         what="v1 stopped on every host")
    finally:
        client.stop()
        await service.controller.stop()
    assert client.failures == [], client.failures[:5]


async def _only(service: Service, version: str, hosts: list[str]) -> bool:
    return await alive_by_host(service) == {h: {version} for h in hosts}

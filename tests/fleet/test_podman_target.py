"""Delivery to a fleet as containers: ``runtime: podman`` on the real sshd test hosts
(127.0.1.i). The controller ships each release's artifact (an OCI archive of a busybox
image built by the test) to every host, the host agent loads it and runs a container per
instance on the host's address, and one embedded router on this machine sends traffic to
them: v1, then a canary to v2, v1's containers stopped on every host, and a new
controller adopting the running containers instead of starting them again.
"""

from __future__ import annotations

import getpass
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from entrega.config import Config, load_config
from entrega.controller.loop import Controller
from entrega.dataplane.instances.containers import image_id_of
from entrega.net import free_port
from entrega.service import Service
from tests.controller.conftest import wait_until
from tests.fleet.delivery import deploy, hosts_yaml, services, versions_served
from tests.fleet.hosts import TestFleet
from tests.fleet.podman import build_release, remove_containers, remove_image, require_podman

pytestmark = [pytest.mark.real, pytest.mark.slow]


def write_config(root: Path, fleet: TestFleet) -> Config:
    hosts = hosts_yaml(fleet)
    root.mkdir(parents=True, exist_ok=True)
    path = root / "entrega.yaml"
    path.write_text(f"""\
app: shop
server: {{listen: "127.0.0.1:{free_port()}"}}
run:                                  # no command: the image's own runs
  health: {{path: /healthz, interval_s: 0.1, healthy_threshold: 2}}
  drain_s: 1
environments:
  - name: production
    target:
      kind: ssh
      runtime: podman
      hosts:
{hosts}      user: {getpass.getuser()}
      identity_file: {fleet.identity_file}
      known_hosts: {fleet.known_hosts}
      connect_timeout_s: 5
      command_timeout_s: 120
    router: {{kind: embedded, listen: "127.0.0.1:{free_port()}"}}
    strategy:
      canary:
        steps:
          - weight: 50
          - pause: {{duration_s: 1}}
          - weight: 100
""")
    return load_config(path)


@pytest.fixture
async def podman_fleet_service(test_fleet: TestFleet, tmp_path: Path
                               ) -> AsyncIterator[Callable[[], Service]]:
    require_podman()
    try:
        async with services(test_fleet, lambda: write_config(
                tmp_path / "controller", test_fleet)) as make:
            yield make
    finally:
        # The containers outlive sshd and the controller: every host's, whatever happened.
        for host in test_fleet.hosts:
            remove_containers(f"entrega.home={(host.base_dir / 'shop' / 'state').resolve()}")
        # And the images the hosts loaded (one podman serves the three test hosts).
        for archive in tmp_path.glob("images/artifacts/*/image.tar"):
            image_id = image_id_of(archive)
            if image_id is not None:
                remove_image(image_id)


async def served(listen: str, requests: int) -> dict[str, int]:
    """Which release answered (the busybox image serves its version at /VERSION)."""
    return await versions_served(listen, requests, path="/VERSION",
                                 version_of=lambda response: response.text)


async def alive_versions(rt: object) -> set[str]:
    return {i.version for i in await rt.target.observe() if i.alive}  # type: ignore[attr-defined]


async def test_v1_then_a_canary_to_v2_as_containers_on_the_fleet_then_adopted(
        test_fleet: TestFleet, podman_fleet_service: Callable[[], Service],
        tmp_path: Path) -> None:
    service = podman_fleet_service()
    await service.controller.start()
    rt = service.controller.runtimes["production"]
    images = tmp_path / "images"
    try:
        rid = await deploy(service, "v1", build_release(images, "v1"))
        await wait_until(lambda: service.repo.rollout(rid).phase == "succeeded",  # type: ignore[union-attr]
                         timeout_s=120, what="v1 on the fleet")
        instances = [i for i in await rt.target.observe() if i.alive]
        # One container on each host, listening on its host's address.
        assert sorted((i.extra["host"], i.endpoint.host, i.extra["status"])  # type: ignore[union-attr]
                      for i in instances) == sorted(
            (h.name, h.address, "running") for h in test_fleet.hosts)
        listen = rt.config.router.listen
        assert await served(listen, 9) == {"v1": 9}

        rid = await deploy(service, "v2", build_release(images, "v2"))
        await wait_until(lambda: service.repo.rollout(rid).phase == "succeeded",  # type: ignore[union-attr]
                         timeout_s=120, what="v2 on the fleet")
        assert await served(listen, 9) == {"v2": 9}
        # v1's containers are stopped (and removed) on every host once v2 took all traffic.
        await wait_until(lambda: _only_v2(rt), timeout_s=60, what="v1 stopped")
        started = {(i.instance, i.pid) for i in await rt.target.observe() if i.alive}
        assert len(started) == len(test_fleet.hosts)
    finally:
        await service.controller.stop()

    # A new controller (the old one gone) adopts the running containers: no new start.
    restarted = Controller(service.config, service.repo, service.artifacts)
    await restarted.start()
    try:
        rt = restarted.runtimes["production"]
        assert {(i.instance, i.pid) for i in await rt.target.observe() if i.alive} == started
        assert await served(rt.config.router.listen, 6) == {"v2": 6}
    finally:
        await restarted.stop()


async def _only_v2(rt: object) -> bool:
    return await alive_versions(rt) == {"v2"}

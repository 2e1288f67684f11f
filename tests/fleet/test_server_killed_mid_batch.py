"""`kill -9` of a real `entrega server` in the middle of a rolling batch over real sshd
hosts: the hosts keep serving (no failed request through the router), and a new server
on the same store resumes the rollout where it stood. The batch already done keeps its
instances (same pids: adopted, not started again), the batch in flight is finished, not
started twice, and the rollout succeeds with every host on the new release.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from entrega.config import Config
from entrega.server import build_service
from entrega.service import Service
from entrega.waiting import wait_until_sync
from tests.controller.conftest import wait_until
from tests.fleet.delivery import kill_processes_under, release
from tests.fleet.hosts import TestFleet
from tests.fleet.test_rolling import Client, alive_by_host
from tests.fleet.test_ssh_target import write_config

pytestmark = [pytest.mark.real, pytest.mark.slow]

#: A pause between batches gives the kill a moment when one batch is done and the next
#: has not begun; the kill lands when the second batch starts.
ROLLING = "      rolling: {batch: 1, max_failed: 0, pause_between_batches_s: 1}\n"
TIMEOUT_S = 120


class Server:
    """``entrega server`` as its own process, as a user runs it."""

    def __init__(self, config: Config, path: Path) -> None:
        self.config, self.path = config, path
        self.api = f"http://{config.server.listen}"
        self.log_path = path.parent / "server.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "entrega", "server", "-c", str(self.path)],
                cwd=self.path.parent, stdout=log, stderr=subprocess.STDOUT)

        def healthy() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"the server exited:\n{self.log()}")
            try:
                return httpx.get(f"{self.api}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        if not wait_until_sync(healthy, timeout_s=90):
            raise AssertionError(f"the server did not answer within 90 s:\n{self.log()}")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()

    def log(self) -> str:
        return self.log_path.read_text()[-4000:] if self.log_path.exists() else ""

    def deploy(self, version: str) -> int:
        artifact = release(self.config.base_dir, version)
        done = subprocess.run(
            [sys.executable, "-m", "entrega", "deploy", version, "--artifact", str(artifact),
             "--json", "-c", str(self.path)],
            capture_output=True, text=True, timeout=120, cwd=self.path.parent, check=False)
        assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n{self.log()}"
        return int(json.loads(done.stdout)["id"])

    def rollout(self, rid: int) -> dict[str, Any]:
        return dict(httpx.get(f"{self.api}/api/v1/rollouts/{rid}", timeout=10).json())


@pytest.fixture
def server(test_fleet: TestFleet, tmp_path: Path) -> Iterator[tuple[Server, Service]]:
    config = write_config(tmp_path / "controller", test_fleet, ROLLING)
    running = Server(config, tmp_path / "controller" / "entrega.yaml")
    # The store and the hosts as the test sees them (no controller of its own runs).
    service, _store = build_service(config)
    try:
        yield running, service
    finally:
        running.stop()
        subprocess.run([sys.executable, "-m", "entrega", "down", "-c", str(running.path)],
                       capture_output=True, timeout=60, check=False)
        kill_processes_under(test_fleet.root)


async def v2_by_host(service: Service) -> dict[str, set[tuple[str, int | None]]]:
    found: dict[str, set[tuple[str, int | None]]] = {}
    for i in await service.controller.runtimes["production"].target.observe():
        if i.alive and i.version == "v2":
            found.setdefault(str(i.extra["host"]), set()).add((i.instance, i.pid))
    return found


async def test_a_server_killed_mid_batch_resumes_without_a_second_start(
        test_fleet: TestFleet, server: tuple[Server, Service]) -> None:
    running, service = server
    hosts = [h.name for h in test_fleet.hosts]
    running.start()
    rid = running.deploy("v1")
    await wait_until(lambda: running.rollout(rid)["phase"] == "succeeded",
                     timeout_s=TIMEOUT_S, what="v1 on the fleet")
    client = Client(service.config.environments[0].router.listen)
    client.start()
    try:
        rid = running.deploy("v2")

        def second_batch_started() -> bool:
            row = service.repo.rollout(rid)
            assert row is not None
            rolling = row.state.get("rolling") or {}
            return rolling.get("done") == hosts[:1] and row.phase == "starting"

        await wait_until(second_batch_started, timeout_s=TIMEOUT_S, what="the second batch")
        running.kill()

        async def first_batch() -> dict[str, set[tuple[str, int | None]]] | None:
            # one observation skips a host that did not answer in time (a loaded machine)
            found = await v2_by_host(service)
            return found if hosts[0] in found else None

        before = await wait_until(first_batch, timeout_s=30,
                                  what="the first batch's host to be observed")
        assert len(before[hosts[0]]) == 2, before

        running.start()
        await wait_until(lambda: running.rollout(rid)["phase"] == "succeeded",
                         timeout_s=TIMEOUT_S, what="v2 after the restart")
        await wait_until(lambda: _only_v2(service, hosts), timeout_s=30,
                         what="v1 stopped on every host")
        after = await v2_by_host(service)
    finally:
        client.stop()
    # The first host's instances were adopted, the second's finished (those started
    # before the kill adopted too): two a host, none started twice.
    assert after[hosts[0]] == before[hosts[0]]
    assert before.get(hosts[1], set()) <= after[hosts[1]]
    assert all(len(after[h]) == 2 for h in hosts), after
    assert client.failures == [], client.failures[:5]
    assert client.served.get("v1", 0) > 0 and client.served.get("v2", 0) > 0


async def _only_v2(service: Service, hosts: list[str]) -> bool:
    return await alive_by_host(service) == {h: {"v2"} for h in hosts}

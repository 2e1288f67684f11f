"""What the fleet delivery tests share: the shop release, the hosts as entrega.yaml lists
them, controllers that are torn down with everything the hosts' agents started, and the
traffic that checks which release answers."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx

from entrega.config import Config
from entrega.controller.teardown import stop_data_plane
from entrega.server import build_service
from entrega.service import Service
from entrega.views import DeployStarted
from tests.fleet.hosts import TestFleet

SHOP = Path(__file__).resolve().parents[2] / "examples" / "shop" / "app.py"


def hosts_yaml(fleet: TestFleet) -> str:
    """The fleet's hosts as the items of ``target.hosts`` (indented for it)."""
    return "".join(f"        - {{name: {h.name}, address: {h.address}, port: {h.port}, "
                   f"base_dir: {h.base_dir}}}\n" for h in fleet.hosts)


def release(root: Path, version: str, app: str | None = None) -> Path:
    """A release of the shop app (or of ``app``, with the shop beside it as shop.py)."""
    path = root / "artifacts" / version
    path.mkdir(parents=True, exist_ok=True)
    shutil.copy(SHOP, path / "app.py")
    if app is not None:
        shutil.copy(SHOP, path / "shop.py")
        (path / "app.py").write_text(app)
    (path / "VERSION").write_text(version)
    return path


def processes_under(directory: Path) -> list[int]:
    """Pids of the processes whose command line or working directory is under
    ``directory`` (the instances and supervisors a test host's agent started)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            cwd = os.readlink(entry / "cwd")
            if str(directory) in cmdline or cwd.startswith(str(directory)):
                found.append(int(entry.name))
    return found


def kill_processes_under(directory: Path) -> None:
    """Every process of a host at once, as when the machine dies: all are frozen first
    (SIGSTOP), then killed. Killed one by one in pid order, a supervisor whose app has the
    lower pid (pids wrap around on a long-running machine) would see its app die and start
    another before its own turn came, and that one would outlive the "dead" host. Processes
    started meanwhile are caught by the next round."""
    for _ in range(10):
        pids = processes_under(directory)
        if not pids:
            return
        for sig in (signal.SIGSTOP, signal.SIGKILL):
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
        time.sleep(0.05)
    raise AssertionError(f"processes under {directory} still run: {processes_under(directory)}")


@contextlib.asynccontextmanager
async def services(fleet: TestFleet, config_of: Callable[..., Config]
                   ) -> AsyncIterator[Callable[..., Service]]:
    """Services (store + controller, not started) built from ``config_of(...)``; at the
    end every data plane they started is stopped, and what the hosts' agents started
    (it outlives sshd and the controller) is killed."""
    configs: list[Config] = []

    def make(*args: object, **kwargs: object) -> Service:
        config = config_of(*args, **kwargs)
        configs.append(config)
        service, _store = build_service(config)
        return service

    try:
        yield make
    finally:
        for config in configs:
            with contextlib.suppress(Exception):
                await stop_data_plane(config, drain_s=0)
        kill_processes_under(fleet.root)


async def deploy(service: Service, version: str, artifact: Path) -> int:
    await service.create_release(version=version, artifact=artifact, meta={}, actor="ci")
    started = await service.deploy(environment="production", version=version, actor="ci")
    assert isinstance(started, DeployStarted)
    return started.rollout.id


async def versions_served(listen: str, requests: int, *, path: str = "/api/products",
                          version_of: Callable[[httpx.Response], str] = lambda r:
                          r.json()["version"]) -> dict[str, int]:
    """Which release answered each of ``requests`` requests through the router (every
    one must be a 200)."""
    seen: dict[str, int] = {}
    async with httpx.AsyncClient(trust_env=False) as client:
        for _ in range(requests):
            response = await client.get(f"http://{listen}{path}", timeout=5)
            assert response.status_code == 200, response.text[:200]
            version = version_of(response)
            seen[version] = seen.get(version, 0) + 1
    return seen

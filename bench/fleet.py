"""How long does entrega take to deliver a release to a fleet, next to Ansible doing the same?

Ten real sshd hosts on this machine (127.0.1.1-10, tests/fleet/hosts.py), a 1 MB artifact
(a tiny stdlib app, bench/fleet_app.py, and 1 MB of random bytes), delivered by both in
one run, each under steady traffic the whole time (bench/fleet_load.py, 100 requests a
second, in a process of its own):

- entrega: the controller in this process (as tests/fleet/test_ssh_target.py runs it),
  ``target: {kind: ssh}`` over the hosts, one instance a host, behind an embedded router
  on 127.0.0.1 that the traffic goes through. ``canary_s`` is a canary straight to 100%
  (``steps: [{weight: 100}]``, no bake): from handing entrega the artifact to the rollout's
  end (new instances healthy on every host, traffic moved, old ones stopped).
  ``entrega_s`` is the same for ``strategy: {rolling: {batch: "25%"}}`` when entrega's
  config accepts it (the rolling strategy is issue 13's next item); until then it is
  null, with ``"entrega_rolling": "not available"``.
- Ansible (bench/fleet_ansible.py): ``ansible-playbook``, ``serial: 25%``, ``forks: 10``,
  pipelining: copy, unpack, switch, restart, wait for health; traffic straight to the
  hosts' app ports, round-robin (no router: what such a playbook gives its users).

Both sides first deliver v1 untimed, to every host at once (entrega installs its host
agent then; Ansible opens its kept connections), then the timed v2 (and v3 for rolling).
``ratio_to_ansible`` is entrega_s / ansible_s (target <= 0.25, with ``failed_requests``
0); ``canary_ratio_to_ansible`` is canary_s / ansible_s. ``delivered`` says which side
ended with every host serving the new version (checked on each host's own port).

    python -m bench.fleet [--json] [--quick] [--hosts 10] [--artifact-kib 1024]

``--quick`` (the suite's smoke test): 3 hosts, a 64 KiB artifact, under a minute.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from tests.fleet.delivery import kill_processes_under  # what the hosts run outlives sshd
from tests.fleet.hosts import SSHD, TestFleet
from tests.fleet.hosts import free_port as free_port_on

from bench.fleet_ansible import AnsibleHost, run_playbook, write_project
from entrega.config import Config, load_config
from entrega.controller.teardown import stop_data_plane
from entrega.errors import ConfigError
from entrega.net import free_port
from entrega.server import build_service
from entrega.service import Service
from entrega.views import DeployStarted
from entrega.vocabulary import Phase
from entrega.waiting import wait_until

APP = Path(__file__).with_name("fleet_app.py")
#: The interpreter the app (and Ansible's modules) run with on the hosts.
HOST_PYTHON = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
#: The longest a delivery may take before the benchmark calls it stuck (s).
DELIVERY_TIMEOUT_S = 300.0
LOAD_RPS = 100.0

CANARY = "      canary:\n        steps:\n          - weight: 100\n"
ROLLING = '      rolling: {batch: "25%"}\n'

CONFIG = """\
app: fleet-bench
server: {{listen: "127.0.0.1:{server}"}}
run:
  command: "{python} app.py"
  health: {{path: /healthz, interval_s: 0.1, healthy_threshold: 2}}
  drain_s: 1
environments:
  - name: production
    target:
      kind: ssh
      hosts:
{hosts}      user: {user}
      identity_file: {identity}
      known_hosts: {known_hosts}
      instances_per_host: 1
      max_parallel: 10
      connect_timeout_s: 10
      command_timeout_s: 60
    router: {{kind: embedded, listen: "127.0.0.1:{router}"}}
    strategy:
{strategy}"""


# -- the artifact -----------------------------------------------------------------------

def make_artifact(root: Path, version: str, payload_bytes: int) -> Path:
    """``<version>.tar.gz``: app.py, VERSION and payload.bin (random, so incompressible:
    the tarball weighs what it says)."""
    path = root / f"{version}.tar.gz"
    members = {"app.py": APP.read_bytes(), "VERSION": version.encode(),
               "payload.bin": os.urandom(payload_bytes)}
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, int(time.time())
            tar.addfile(info, io.BytesIO(data))
    return path


# -- traffic ----------------------------------------------------------------------------

class Load:
    """bench/fleet_load.py in a process of its own, from ``start`` to ``stop``."""

    def __init__(self, urls: list[str], rps: float = LOAD_RPS) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.fleet_load", "--rps", str(rps), *urls],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            cwd=Path(__file__).resolve().parents[1])
        assert self.process.stdout is not None and self.process.stdin is not None
        if self.process.stdout.readline().strip() != "started":
            raise SystemExit("the traffic generator did not start")

    def stop(self) -> dict[str, Any]:
        out, _ = self.process.communicate("stop\n", timeout=30)
        result: dict[str, Any] = json.loads(out)
        return result


# -- entrega ----------------------------------------------------------------------------

def write_config(root: Path, fleet: TestFleet, strategy: str) -> Path:
    hosts = "".join(f"        - {{name: {h.name}, address: {h.address}, port: {h.port}, "
                    f"base_dir: {h.base_dir}}}\n" for h in fleet.hosts)
    root.mkdir(parents=True, exist_ok=True)
    path = root / "entrega.yaml"
    path.write_text(CONFIG.format(server=free_port(), router=free_port(), hosts=hosts,
                                  python=HOST_PYTHON, user=getpass.getuser(),
                                  identity=fleet.identity_file,
                                  known_hosts=fleet.known_hosts, strategy=strategy))
    return path


def rolling_config(canary_config: Path) -> Config | None:
    """The same configuration with ``strategy: {rolling: {batch: "25%"}}``, or None
    while entrega's config does not accept it (the rolling strategy is not built yet)."""
    path = canary_config.with_name("entrega-rolling.yaml")
    path.write_text(canary_config.read_text().replace(CANARY, ROLLING))
    try:
        return load_config(path)
    except ConfigError:
        return None


async def deliver(service: Service, version: str, artifact: Path) -> float:
    """Create the release and roll it out; returns the seconds until the rollout ended.
    A rollout that fails ends the benchmark with entrega's own message."""
    started = time.perf_counter()
    await service.create_release(version=version, artifact=artifact, meta={},
                                 actor="bench")
    deployed = await service.deploy(environment="production", version=version,
                                    actor="bench")
    if not isinstance(deployed, DeployStarted):  # one rollout at a time: none should run
        raise SystemExit(f"entrega queued {version} behind another rollout")
    rollout_id = deployed.rollout.id

    def ended() -> Any:
        rollout = service.repo.rollout(rollout_id)
        return rollout if rollout is not None and Phase(rollout.phase).terminal else None

    rollout = await wait_until(ended, timeout_s=DELIVERY_TIMEOUT_S)
    elapsed = time.perf_counter() - started
    if rollout is None:
        raise SystemExit(f"entrega did not deliver {version} within {DELIVERY_TIMEOUT_S} s")
    if rollout.phase != Phase.SUCCEEDED:
        raise SystemExit(f"entrega's rollout of {version} ended {rollout.phase}: "
                         f"{rollout.state.get('message', '')}")
    return elapsed


async def serving_everywhere(service: Service, fleet: TestFleet, version: str) -> bool:
    """Every host has a live instance of ``version`` that answers with it on its port."""
    target = service.controller.runtimes["production"].target
    instances = [i for i in await target.observe() if i.alive and i.version == version]
    on_hosts = {i.extra.get("host") for i in instances}
    if on_hosts != {h.name for h in fleet.hosts}:
        return False
    async with httpx.AsyncClient(trust_env=False, timeout=5) as client:
        for instance in instances:
            answer = await client.get(f"http://{instance.endpoint.host}:"  # type: ignore[union-attr]
                                      f"{instance.endpoint.port}/")  # type: ignore[union-attr]
            if answer.json().get("version") != version:
                return False
    return True


async def timed_under_load(service: Service, fleet: TestFleet, version: str,
                           artifact: Path) -> tuple[float, dict[str, Any], bool]:
    listen = service.controller.runtimes["production"].config.router.listen
    load = Load([f"http://{listen}/"])
    try:
        elapsed = await deliver(service, version, artifact)
    finally:
        traffic = load.stop()
    return elapsed, traffic, await serving_everywhere(service, fleet, version)


async def entrega_side(root: Path, fleet: TestFleet, artifacts: dict[str, Path]
                       ) -> dict[str, Any]:
    path = write_config(root, fleet, CANARY)
    config = load_config(path)
    result: dict[str, Any] = {}
    service, _store = build_service(config)
    await service.controller.start()
    try:
        # untimed: the host agent installed on every host, v1 started
        await deliver(service, "v1", artifacts["v1"])
        canary_s, traffic, delivered = await timed_under_load(
            service, fleet, "v2", artifacts["v2"])
        result.update(canary_s=canary_s, canary_traffic=traffic, canary_delivered=delivered)
    finally:
        await service.controller.stop()
    rolling = rolling_config(path)
    if rolling is None:
        result["rolling"] = None
        return result
    # A new controller on the rolling configuration adopts what runs (same store).
    service, _store = build_service(rolling)
    await service.controller.start()
    try:
        rolling_s, traffic, delivered = await timed_under_load(
            service, fleet, "v3", artifacts["v3"])
        result["rolling"] = {"s": rolling_s, "traffic": traffic, "delivered": delivered}
    finally:
        await service.controller.stop()
    return result


# -- Ansible ----------------------------------------------------------------------------

def ansible_side(root: Path, fleet: TestFleet, artifacts: dict[str, Path]
                 ) -> dict[str, Any]:
    hosts = [AnsibleHost(name=h.name, address=h.address, ssh_port=h.port,
                         user=getpass.getuser(), base_dir=str(h.base_dir / "ansible"),
                         app_port=free_port_on(h.address)) for h in fleet.hosts]
    for host in hosts:
        Path(host.base_dir, "artifacts").mkdir(parents=True, exist_ok=True)
    playbook = write_project(root, hosts, identity_file=fleet.identity_file,
                             known_hosts=fleet.known_hosts, host_python=HOST_PYTHON)
    # untimed, every host at once, as entrega's first delivery (nothing runs there yet)
    run_playbook(playbook, artifact=artifacts["v1"], version="v1", batch="100%")
    load = Load([f"http://{h.address}:{h.app_port}/" for h in hosts])
    try:
        ansible_s = run_playbook(playbook, artifact=artifacts["v2"], version="v2")
    finally:
        traffic = load.stop()
    with httpx.Client(trust_env=False, timeout=5) as client:
        delivered = all(_serves(client, f"http://{h.address}:{h.app_port}/", "v2")
                        for h in hosts)
    return {"ansible_s": ansible_s, "traffic": traffic, "delivered": delivered}


def _serves(client: httpx.Client, url: str, version: str) -> bool:
    try:
        return bool(client.get(url).json().get("version") == version)
    except (httpx.HTTPError, ValueError):
        return False


# -- the run ----------------------------------------------------------------------------

def run(*, hosts: int, artifact_bytes: int, command: str) -> dict[str, Any]:
    if not Path(SSHD).exists() or shutil.which("ssh-keygen") is None:
        raise SystemExit("openssh-server is not installed (bash scripts/install-system-deps.sh)")
    # short: ssh's ControlPath (a unix socket path) must fit in 108 bytes
    with tempfile.TemporaryDirectory(prefix="fleet-", dir="/tmp") as tmp:
        root = Path(tmp)
        (root / "artifacts").mkdir()
        artifacts = {v: make_artifact(root / "artifacts", v, artifact_bytes)
                     for v in ("v1", "v2", "v3")}
        fleet = TestFleet.start(root / "hosts", hosts)
        try:
            entrega = asyncio.run(entrega_side(root / "entrega", fleet, artifacts))
            # entrega's instances and router stopped: Ansible's run has the hosts alone
            asyncio.run(_stop_entrega(root / "entrega" / "entrega.yaml"))
            ansible = ansible_side(root / "ansible", fleet, artifacts)
        finally:
            with contextlib.suppress(Exception):
                asyncio.run(_stop_entrega(root / "entrega" / "entrega.yaml"))
            fleet.stop()
            kill_processes_under(root)
        return summarise(hosts=hosts, artifact_bytes=artifacts["v2"].stat().st_size,
                         entrega=entrega, ansible=ansible, command=command)


async def _stop_entrega(config_path: Path) -> None:
    """Stop entrega's router and instances (idempotent; nothing when it never started)."""
    if config_path.exists():
        await stop_data_plane(load_config(config_path), drain_s=0)


def summarise(*, hosts: int, artifact_bytes: int, entrega: dict[str, Any],
              ansible: dict[str, Any], command: str) -> dict[str, Any]:
    """The promised JSON object from both sides' measurements (pure)."""
    ansible_s = ansible["ansible_s"]
    rolling = entrega["rolling"]
    # the headline traffic is the rolling run's when there is one, else the canary's
    headline = rolling["traffic"] if rolling else entrega["canary_traffic"]
    result: dict[str, Any] = {
        "hosts": hosts,
        "artifact_bytes": artifact_bytes,
        "entrega_s": round(rolling["s"], 2) if rolling else None,
        "ansible_s": round(ansible_s, 2),
        "ratio_to_ansible": round(rolling["s"] / ansible_s, 3) if rolling else None,
        "requests": headline["requests"],
        "failed_requests": headline["failed_requests"],
        "canary_s": round(entrega["canary_s"], 2),
        "canary_ratio_to_ansible": round(entrega["canary_s"] / ansible_s, 3),
        "canary_requests": entrega["canary_traffic"]["requests"],
        "canary_failed_requests": entrega["canary_traffic"]["failed_requests"],
        "ansible_requests": ansible["traffic"]["requests"],
        "ansible_failed_requests": ansible["traffic"]["failed_requests"],
        "delivered": {"entrega_canary": entrega["canary_delivered"],
                      "entrega_rolling": rolling["delivered"] if rolling else None,
                      "ansible": ansible["delivered"]},
        "command": command,
    }
    if rolling is None:
        result["entrega_rolling"] = "not available"
    errors = [*entrega["canary_traffic"]["errors"], *ansible["traffic"]["errors"],
              *(rolling["traffic"]["errors"] if rolling else [])]
    if errors:
        result["first_errors"] = errors[:5]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quick", action="store_true",
                        help="3 hosts, a 64 KiB artifact (the suite's smoke test)")
    parser.add_argument("--hosts", type=int, default=None, help="sshd hosts (default 10)")
    parser.add_argument("--artifact-kib", type=int, default=None,
                        help="random bytes in the artifact, KiB (default 1024)")
    args = parser.parse_args(argv)
    hosts = args.hosts or (3 if args.quick else 10)
    kib = args.artifact_kib or (64 if args.quick else 1024)
    if not 1 <= hosts <= 254:
        parser.error("--hosts is between 1 and 254 (127.0.1.1 to 127.0.1.254)")
    command = "python -m bench.fleet --json" + (" --quick" if args.quick else "")
    if args.hosts or args.artifact_kib:
        command += f" --hosts {hosts} --artifact-kib {kib}"
    result = run(hosts=hosts, artifact_bytes=kib * 1024, command=command)
    if args.json:
        print(json.dumps(result))
        return 0
    ratio = result["ratio_to_ansible"]
    print(f"{result['hosts']} hosts, artifact {result['artifact_bytes'] / 1e6:.2f} MB, "
          f"traffic {LOAD_RPS:.0f} req/s during each delivery")
    print(f"{'':28}{'seconds':>9}{'vs Ansible':>12}{'requests':>10}{'failed':>8}")
    rows = [("entrega canary to 100%", result["canary_s"], result["canary_ratio_to_ansible"],
             result["canary_requests"], result["canary_failed_requests"])]
    if result["entrega_s"] is not None:
        rows.append(("entrega rolling 25%", result["entrega_s"], ratio,
                     result["requests"], result["failed_requests"]))
    rows.append(("Ansible serial 25%", result["ansible_s"], 1.0, result["ansible_requests"],
                 result["ansible_failed_requests"]))
    for name, seconds, against, requests, failed in rows:
        print(f"{name:28}{seconds:>9.2f}{against:>11.2f}x{requests:>10}{failed:>8}")
    if result["entrega_s"] is None:
        print("entrega rolling: not available (strategy: {rolling: ...} is not accepted yet)")
    print("target: rolling <= 0.25x Ansible, 0 failed requests")
    print(f"command: {command}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

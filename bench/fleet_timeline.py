"""Where does a rolling delivery's time go? A timeline of one, remote call by remote call.

The benchmark (bench/fleet.py) gives one number; this gives what it is made of, to decide
what to make faster from timestamps rather than guesses. It delivers v1 (untimed, as the
benchmark does) then rolls v2 out with ``rolling: {batch: "25%"}`` over real sshd test
hosts, and prints, in time order from the v2 deploy, every remote command (its kind, host,
start and duration: an agent operation, a hostside step, the resident agent's requests)
and every event the controller recorded (batches starting, hosts serving, stops).

    python -m bench.fleet_timeline [--hosts 4] [--artifact-kib 1024]

Measurement only: it wraps :class:`~entrega.targets.ssh.connections.Fleet`'s calls to
time them and changes nothing they do.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from tests.fleet.delivery import kill_processes_under
from tests.fleet.hosts import TestFleet

from bench.fleet import CANARY, ROLLING, _stop_entrega, deliver, make_artifact, write_config
from entrega.config import load_config
from entrega.server import build_service
from entrega.targets.ssh import connections, resident

#: (started, ended, host, what) of every remote call, in the order they ended
CALLS: list[tuple[float, float, str, str]] = []


def _kind(command: str) -> str:
    if " -m entrega.dataplane.instances.hostctl " in command:
        return "hostctl " + command.rsplit(" ", 1)[-1]
    if command.startswith("python3 -c "):
        op = command.split('"op": "', 1)[-1].split('"', 1)[0]
        return f"hostside {op}"
    return command[:40]


def _timed(method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def timed(self: connections.Fleet, host: connections.Host, command: str,
                    *args: Any, **kwargs: Any) -> Any:
        began = time.time()
        try:
            return await method(self, host, command, *args, **kwargs)
        finally:
            CALLS.append((began, time.time(), host.name, _kind(command)))
    return timed


def _timed_request(method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def timed(self: Any, operation: str, *args: Any, **kwargs: Any) -> Any:
        began = time.time()
        try:
            return await method(self, operation, *args, **kwargs)
        finally:
            CALLS.append((began, time.time(), self.host.name, f"resident {operation}"))
    return timed


def _instrument() -> None:
    connections.Fleet.run = _timed(connections.Fleet.run)  # type: ignore[method-assign]
    connections.Fleet.run_streaming = _timed(  # type: ignore[method-assign]
        connections.Fleet.run_streaming)
    resident.ResidentAgent.request = _timed_request(  # type: ignore[method-assign]
        resident.ResidentAgent.request)


async def _deliveries(root: Path, fleet: TestFleet, artifacts: dict[str, Path]) -> None:
    path = write_config(root, fleet, CANARY)
    path.write_text(path.read_text().replace(CANARY, ROLLING))
    service, _store = build_service(load_config(path))
    await service.controller.start()
    try:
        await deliver(service, "v1", artifacts["v1"])
        CALLS.clear()
        began = time.time()
        elapsed = await deliver(service, "v2", artifacts["v2"])
        events = [(e.time, e.kind, e.message) for e in service.repo.events(
            service.config.app, limit=500) if e.time >= began]
    finally:
        await service.controller.stop()
    rows = [(c[0], f"{c[1] - c[0]:6.3f}s  {c[2]:8} {c[3]}") for c in CALLS]
    rows += [(t, f"{'':7}  EVENT {kind}: {message}") for t, kind, message in events]
    for at, text in sorted(rows):
        print(f"{at - began:8.3f}  {text}")
    per_kind: dict[str, list[float]] = {}
    for start, end, _host, what in CALLS:
        per_kind.setdefault(what, []).append(end - start)
    print(f"\nrolling v2 took {elapsed:.2f} s; remote calls by kind:")
    for what, durations in sorted(per_kind.items()):
        print(f"  {what:24} n={len(durations):4}  mean {sum(durations) / len(durations):.3f}"
              f" s  max {max(durations):.3f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hosts", type=int, default=4)
    parser.add_argument("--artifact-kib", type=int, default=1024)
    args = parser.parse_args()
    _instrument()
    with tempfile.TemporaryDirectory(prefix="fleet-", dir="/tmp") as tmp:
        root = Path(tmp)
        (root / "artifacts").mkdir()
        artifacts = {v: make_artifact(root / "artifacts", v, args.artifact_kib * 1024)
                     for v in ("v1", "v2")}
        fleet = TestFleet.start(root / "hosts", args.hosts)
        try:
            asyncio.run(_deliveries(root / "entrega", fleet, artifacts))
        finally:
            with contextlib.suppress(Exception):
                asyncio.run(_stop_entrega(root / "entrega" / "entrega.yaml"))
            fleet.stop()
            kill_processes_under(root)


if __name__ == "__main__":
    main()

"""The resident host agent (``hostctl serve`` on one channel of the pooled connection):
many calls answered concurrently and each by its own answer, a killed agent replaced on
the next call, instances that outlive it, an agent of other code never used, a silent
host named within the timeout; and what else keeps a rolling batch from paying a command
per host: the release sent ahead to the later batches' hosts."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from entrega.errors import TargetError, TargetUnreachable
from entrega.releases.artifacts import tree_digest
from entrega.targets.base import HealthCheck, ReleaseRef
from entrega.targets.ssh import Fleet, Host
from entrega.targets.ssh.agent import (
    agent_command,
    call_agent,
    install_agent,
    state_dir,
)
from entrega.targets.ssh.resident import resident_agent, running_agent
from entrega.targets.ssh.target import SshTarget
from entrega.targets.ssh.transfer import release_path, sync_release
from tests.fleet.conftest import fleet_of
from tests.fleet.delivery import kill_processes_under, release
from tests.fleet.hosts import TestFleet

pytestmark = pytest.mark.real

APP = "shop"


def where(host: Host, environment: str = "production") -> dict[str, str]:
    return {"app": APP, "environment": environment, "state_dir": state_dir(host, APP),
            "address": host.address}


def resident_pids(host_root: Path) -> list[int]:
    """The host's resident agents: ``hostctl serve`` run from the agent installed under
    its base directory (on its PYTHONPATH)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"entrega.dataplane.instances.hostctl" in cmdline and b"serve" in cmdline \
                and f"PYTHONPATH={host_root}/".encode() in b"\0".join(environ):
            found.append(int(entry.name))
    return found


class CommandCounter:
    """Counts the commands a fleet runs (the per-operation fallback is one each)."""

    def __init__(self, fleet: Fleet) -> None:
        self.commands: list[str] = []
        run = fleet.run

        async def counted(host: Host, command: str, **kwargs: object) -> object:
            self.commands.append(command)
            return await run(host, command, **kwargs)  # type: ignore[arg-type]

        fleet.run = counted  # type: ignore[method-assign, assignment]


async def started_release(fleet: Fleet, host: Host, tmp_path: Path) -> int:
    """The shop's v1 started on ``host`` by its agent; its port."""
    await install_agent(fleet, host)
    source = release(tmp_path, "v1")
    digest = tree_digest(source)
    await sync_release(fleet, host, app=APP, version="v1", digest=digest, source=source)
    answer = await call_agent(fleet, host, "start", {
        **where(host), "version": "v1", "path": release_path(host, APP, "v1"),
        "command": "python3 app.py", "env": {}, "instances": 1})
    return int(answer["endpoints"][0]["port"])


async def test_many_concurrent_calls_go_over_one_agent_each_answered_by_its_own(
        test_fleet: TestFleet, tmp_path: Path) -> None:
    async with fleet_of(test_fleet, command_timeout_s=30.0) as fleet:
        host = fleet.hosts[0]
        port = await started_release(fleet, host, tmp_path)
        agent = running_agent(fleet, host)
        assert agent is not None
        counter = CommandCounter(fleet)

        # Observes of the environment that runs v1 and of empty ones, and requests the
        # agent refuses (each names its own field's value): all at once, interleaved.
        async def ask(n: int) -> tuple[int, object]:
            if n % 3 == 0:
                answer = await call_agent(fleet, host, "observe", where(host))
                return n, [(i["version"], i["port"]) for i in answer["instances"]]
            if n % 3 == 1:
                answer = await call_agent(fleet, host, "observe", where(host, f"env{n}"))
                return n, answer["instances"]
            try:
                await call_agent(fleet, host, "observe",
                                 {**where(host), "state_dir": f"relative-{n}"})
            except TargetError as exc:
                return n, str(exc)
            return n, "accepted"

        answers = dict(await asyncio.gather(*(ask(n) for n in range(60))))
        for n in range(60):
            if n % 3 == 0:
                assert answers[n] == [("v1", port)], n
            elif n % 3 == 1:
                assert answers[n] == [], n
            else:
                assert answers[n] == (f"{host}: field 'state_dir': expected an absolute "
                                      f"path, got 'relative-{n}'"), n
        assert counter.commands == []  # no call went by command of its own
        assert running_agent(fleet, host) is agent
        assert len(resident_pids(test_fleet.hosts[0].base_dir)) == 1


async def test_a_killed_agent_is_replaced_by_the_next_call_and_instances_outlive_it(
        test_fleet: TestFleet, tmp_path: Path) -> None:
    host_root = test_fleet.hosts[0].base_dir
    try:
        async with fleet_of(test_fleet, command_timeout_s=30.0) as fleet:
            host = fleet.hosts[0]
            port = await started_release(fleet, host, tmp_path)
            [first] = resident_pids(host_root)
            os.kill(first, signal.SIGKILL)

            # Whether or not its end was seen yet, the next call is answered (by command
            # when the agent it was sent to was gone), and the one after by a new agent.
            for _ in range(2):
                answer = await call_agent(fleet, host, "observe", where(host))
                assert [(i["version"], i["port"], i["alive"]) for i in answer["instances"]] \
                    == [("v1", port, True)]
            [second] = resident_pids(host_root)
            assert second != first
            assert running_agent(fleet, host) is not None
        # The controller's side closed (its channel and connection): the agent ends, the
        # instance it started goes on serving.
        deadline = time.monotonic() + 10
        while resident_pids(host_root) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert resident_pids(host_root) == []
        async with httpx.AsyncClient(trust_env=False, timeout=5) as client:
            answer = await client.get(f"http://{test_fleet.hosts[0].address}:{port}/healthz")
        assert answer.status_code == 200
    finally:
        kill_processes_under(host_root)


async def test_an_agent_of_other_code_is_not_used_its_calls_go_by_command(
        test_fleet: TestFleet) -> None:
    async with fleet_of(test_fleet, command_timeout_s=30.0) as fleet:
        host = fleet.hosts[1]
        await install_agent(fleet, host)
        command = agent_command(host, "serve")
        other = await resident_agent(fleet, host, command=command,
                                     version="agent-0000000000000000", timeout_s=30.0)
        assert other is None  # it says it runs this controller's code, not that one
        counter = CommandCounter(fleet)
        answer = await call_agent(fleet, host, "observe", where(host))
        assert answer == {"instances": []}
        assert len(counter.commands) == 1 and counter.commands[0].endswith(" observe")


async def test_a_host_that_stops_answering_mid_call_is_named_within_the_timeout(
        test_fleet: TestFleet) -> None:
    async with fleet_of(test_fleet, connect_timeout_s=1.0, command_timeout_s=2.0) as fleet:
        host = fleet.hosts[2]
        # Installing the agent (a thousand files) may take longer than the short timeout.
        async with fleet_of(test_fleet, command_timeout_s=60.0) as installing:
            await install_agent(installing, installing.hosts[2])
        await call_agent(fleet, host, "observe", where(host), timeout_s=30.0)
        assert running_agent(fleet, host) is not None
        test_fleet.hosts[2].cut_off()
        started = time.monotonic()
        with pytest.raises(TargetUnreachable, match="host3.*did not answer within 2 s"):
            await call_agent(fleet, host, "observe", where(host))
        assert time.monotonic() - started < 3.0
        test_fleet.hosts[2].bring_back()


async def test_a_batchs_start_sends_the_release_ahead_to_the_other_hosts_once(
        test_fleet: TestFleet, tmp_path: Path) -> None:
    """A rolling batch starts the release on its hosts; meanwhile the other hosts are
    sent its bytes (not started), so their batches later only start it, with no sync."""
    source = release(tmp_path, "v1")
    ref = ReleaseRef(app=APP, version="v1", digest=tree_digest(source), path=source)
    fleet = fleet_of(test_fleet, command_timeout_s=30.0)
    target = SshTarget(app=APP, environment="production", fleet=fleet,
                       command="python3 app.py", env={}, instances_per_host=1,
                       health=HealthCheck())
    try:
        [endpoint] = await target.start(release=ref, hosts=("host1",))
        assert endpoint.instance == "host1/0"
        others = [Path(release_path(h, APP, "v1")) for h in fleet.hosts[1:]]
        deadline = time.monotonic() + 60
        while not all((p / ".entrega-release").is_file() for p in others) \
                and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert all((p / ".entrega-release").read_text().strip() == ref.digest
                   for p in others)
        assert [i.instance for i in await target.observe()] == ["host1/0"]

        counter = CommandCounter(fleet)
        streamed: list[str] = []
        streaming = fleet.run_streaming

        async def counted(host: Host, *args: object, **kwargs: object) -> object:
            streamed.append(host.name)
            return await streaming(host, *args, **kwargs)  # type: ignore[arg-type]

        fleet.run_streaming = counted  # type: ignore[method-assign, assignment]
        endpoints = await target.start(release=ref, hosts=("host2", "host3"))
        assert [e.instance for e in endpoints] == ["host2/0", "host3/0"]
        assert (counter.commands, streamed) == ([], [])  # no sync, no agent install
    finally:
        await target.close()
        for host in test_fleet.hosts:
            kill_processes_under(host.base_dir)

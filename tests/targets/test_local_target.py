"""The local target against real processes: the shop example app and tiny apps written here."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import httpx
import pytest

from entrega.errors import TargetError
from entrega.releases.artifacts import tree_digest
from entrega.targets.base import HealthCheck, InstanceState, Readiness, ReleaseRef
from entrega.targets.local import LocalTarget
from entrega.waiting import wait_until

from .conftest import FAST_HEALTH, MakeRelease, MakeTarget

pytestmark = pytest.mark.real

T = TypeVar("T")

# A tiny app that reports its environment, for checking what the target sets.
ENV_APP = """
import json, os
from http.server import BaseHTTPRequestHandler, HTTPServer

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        keys = ["PORT", "ENTREGA_APP", "ENTREGA_VERSION", "ENTREGA_ENVIRONMENT",
                "ENTREGA_INSTANCE", "GREETING"]
        body = json.dumps({k: os.environ.get(k) for k in keys} | {"cwd": os.getcwd()}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"""

# An app that ignores SIGTERM: only SIGKILL stops it.
STUBBORN_APP = """
import os, signal
from http.server import BaseHTTPRequestHandler, HTTPServer

signal.signal(signal.SIGTERM, signal.SIG_IGN)

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass

HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"""


async def eventually(check: Callable[[], Awaitable[T | None]], *, timeout_s: float = 10.0,
                     what: str = "condition") -> T:
    """Poll ``check`` until it returns something truthy; fail after ``timeout_s``."""
    result = await wait_until(check, timeout_s=timeout_s)
    if not result:
        pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
    return result


def pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def until_ready(target: LocalTarget, release: ReleaseRef) -> Readiness:
    async def check() -> Readiness | None:
        readiness = await target.ready(release=release)
        return readiness if readiness.ready else None

    return await eventually(check, what=f"{release.version} to be ready")


async def states(target: LocalTarget, version: str) -> list[InstanceState]:
    return [s for s in await target.observe() if s.version == version]


def events(target: LocalTarget, version: str, instance: int = 0) -> list[dict[str, object]]:
    path = target.instance_dir(version, instance) / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_start_runs_instances_that_serve_their_version(
        make_target: MakeTarget, make_release: MakeRelease) -> None:
    target = make_target(instances=2)
    release = make_release("1.0.0")

    endpoints = await target.start(release=release)

    assert [e.instance for e in endpoints] == ["0", "1"]
    assert endpoints[0].port != endpoints[1].port
    await until_ready(target, release)
    async with httpx.AsyncClient(trust_env=False) as client:
        for endpoint in endpoints:
            response = await client.get(f"http://{endpoint.address}/api/products")
            assert response.status_code == 200
            assert response.json()["version"] == "1.0.0"
    for i in (0, 1):
        directory = target.instance_dir("1.0.0", i)
        assert {"supervisor.json", "events.jsonl", "stdout.log", "stderr.log"} <= {
            p.name for p in directory.iterdir()}
    assert all(s.alive and s.pid and pid_alive(s.pid) for s in await states(target, "1.0.0"))


async def test_app_gets_port_release_and_configured_env(
        make_target: MakeTarget, make_release: MakeRelease) -> None:
    target = make_target(environment="production", env={"GREETING": "hola"}, instances=2)
    release = make_release("2.0.0", source=ENV_APP)

    endpoints = await target.start(release=release)
    await until_ready(target, release)

    async with httpx.AsyncClient(trust_env=False) as client:
        for endpoint in endpoints:
            seen = (await client.get(f"http://{endpoint.address}/")).json()
            assert seen == {
                "PORT": str(endpoint.port), "ENTREGA_APP": "shop", "ENTREGA_VERSION": "2.0.0",
                "ENTREGA_ENVIRONMENT": "production", "ENTREGA_INSTANCE": endpoint.instance,
                "GREETING": "hola",
                "cwd": str(target.instance_dir("2.0.0", int(endpoint.instance)) / "work"),
            }


# An app that writes where it runs, as most do: bytecode of a module it imports, a file.
WRITING_APP = """
import os, pathlib
import greeting  # a module of the release: Python writes its bytecode next to it
from http.server import BaseHTTPRequestHandler, HTTPServer

previous = pathlib.Path("written").read_text() if pathlib.Path("written").exists() else ""
pathlib.Path("written").write_text(previous + "x")

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = pathlib.Path("written").read_text().encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"""


async def test_the_release_directory_stays_as_received_whatever_the_app_writes(
        make_target: MakeTarget, make_release: MakeRelease) -> None:
    target = make_target(instances=2)
    release = make_release("1.0.0", source=WRITING_APP,
                           files={"greeting.py": "HELLO = 'hola'\n"})
    before = tree_digest(release.path)

    endpoints = await target.start(release=release)
    await until_ready(target, release)
    async with httpx.AsyncClient(trust_env=False) as client:
        for endpoint in endpoints:
            assert (await client.get(f"http://{endpoint.address}/")).text == "x"
    work = target.instance_dir("1.0.0", 0) / "work"
    assert (work / "__pycache__").is_dir() and (work / "written").exists()
    assert tree_digest(release.path) == before

    await target.stop(release=release, drain_s=2)
    assert not work.exists(), "a stopped instance keeps its working copy"
    # Started again (a restore): a fresh copy, nothing of the earlier run.
    [first, _] = await target.start(release=release)
    await until_ready(target, release)
    async with httpx.AsyncClient(trust_env=False) as client:
        assert (await client.get(f"http://{first.address}/")).text == "x"
    assert tree_digest(release.path) == before


async def test_version_falls_back_to_entrega_version_env(
        make_target: MakeTarget, make_release: MakeRelease) -> None:
    target = make_target()
    release = make_release("3.1.4", write_version=False)
    [endpoint] = await target.start(release=release)
    await until_ready(target, release)
    async with httpx.AsyncClient(trust_env=False) as client:
        assert (await client.get(f"http://{endpoint.address}/")).json()["version"] == "3.1.4"


async def test_start_is_idempotent(make_target: MakeTarget, make_release: MakeRelease) -> None:
    target = make_target(instances=2)
    release = make_release("1.0.0")
    first = await target.start(release=release)
    pids = [s.pid for s in await states(target, "1.0.0")]

    second = await target.start(release=release)

    assert second == first
    assert [s.pid for s in await states(target, "1.0.0")] == pids
    assert len(await states(target, "1.0.0")) == 2


async def test_ready_needs_consecutive_successes(
        make_target: MakeTarget, make_release: MakeRelease) -> None:
    health = HealthCheck(interval_s=0.05, timeout_s=1.0, healthy_threshold=4,
                         unhealthy_threshold=2)
    target = make_target(instances=2, health=health)
    release = make_release("1.0.0")
    await target.start(release=release)

    snapshots: list[Readiness] = []

    async def check() -> Readiness | None:
        readiness = await target.ready(release=release)
        snapshots.append(readiness)
        return readiness if readiness.ready else None

    await eventually(check, what="readiness")

    for readiness in snapshots:
        for instance in readiness.instances:
            # The app never fails here, so healthy is exactly "4 successes so far".
            assert instance.healthy == (instance.consecutive_successes >= 4), readiness
        assert readiness.ready == all(i.healthy for i in readiness.instances)
    # Readiness was polled far more often than probes ran, so intermediate counts were seen.
    assert any(0 < i.consecutive_successes < 4 for r in snapshots for i in r.instances)


async def test_failing_health_check_keeps_instance_out_then_in_then_out(
        make_target: MakeTarget, make_release: MakeRelease) -> None:
    target = make_target()
    release = make_release("1.0.0", files={"shop.json": '{"fail_health": true}'})
    await target.start(release=release)

    async def failed_twice() -> Readiness | None:
        # Failures from before the app listens (connection refused) count too; wait for
        # the app's own answer, the 503, so the race with its start-up does not matter.
        readiness = await target.ready(release=release)
        instance = readiness.instances[0]
        return readiness if instance.consecutive_failures >= 2 \
            and "HTTP 503" in (instance.last_error or "") else None

    readiness = await eventually(failed_twice, what="two failed probes")
    assert not readiness.ready
    assert readiness.healthy_count == 0
    assert "HTTP 503" in (readiness.instances[0].last_error or "")

    # The instance runs in its own copy of the release: the app reads its settings there.
    (target.instance_dir("1.0.0", 0) / "work" / "shop.json").write_text('{"fail_health": false}')
    await until_ready(target, release)

    (target.instance_dir("1.0.0", 0) / "work" / "shop.json").write_text('{"fail_health": true}')

    async def unhealthy() -> Readiness | None:
        readiness = await target.ready(release=release)
        return readiness if not readiness.ready else None

    readiness = await eventually(unhealthy, what="the instance to become unhealthy")
    assert readiness.instances[0].consecutive_failures >= FAST_HEALTH.unhealthy_threshold


async def test_crashed_app_is_restarted_and_counted(
        make_target: MakeTarget, make_release: MakeRelease) -> None:
    target = make_target()
    release = make_release("1.0.0")
    [endpoint] = await target.start(release=release)
    [before] = await states(target, "1.0.0")
    assert before.pid is not None and before.restarts == 0

    os.kill(before.pid, signal.SIGKILL)

    async def restarted() -> InstanceState | None:
        [state] = await states(target, "1.0.0")
        return state if state.restarts == 1 and state.pid not in (None, before.pid) else None

    after = await eventually(restarted, what="a restart")
    assert after.alive and after.endpoint == endpoint
    assert [e["exit_code"] for e in events(target, "1.0.0") if e["event"] == "restarted"] == [
        -signal.SIGKILL]
    await until_ready(target, release)  # the same port serves again


async def test_stop_lets_requests_in_flight_finish(
        make_target: MakeTarget, make_release: MakeRelease) -> None:
    target = make_target()
    release = make_release("1.0.0")
    [endpoint] = await target.start(release=release)
    await until_ready(target, release)
    [state] = await states(target, "1.0.0")
    assert state.pid is not None

    async with httpx.AsyncClient(trust_env=False) as client:
        url = f"http://{endpoint.address}/slow?ms=1500"
        async with client.stream("GET", url) as response:
            assert response.status_code == 200  # headers are in: the request is in flight
            began = time.monotonic()
            stopping = asyncio.create_task(target.stop(release=release, drain_s=10))
            body = await response.aread()
            assert not stopping.done()
        await stopping

    assert json.loads(body) == {"version": "1.0.0", "slept_ms": 1500}
    assert time.monotonic() - began < 8  # drained, not killed at drain_s
    assert not pid_alive(state.pid)
    [stopped] = await states(target, "1.0.0")
    assert not stopped.alive and stopped.extra["status"] == "stopped"
    last = events(target, "1.0.0")[-1]
    assert last["event"] == "stopped" and last["exit_code"] == 0 and last["killed"] is False


async def test_stop_kills_an_app_that_ignores_sigterm_after_drain(
        make_target: MakeTarget, make_release: MakeRelease) -> None:
    target = make_target()
    release = make_release("1.0.0", source=STUBBORN_APP)
    await target.start(release=release)
    await until_ready(target, release)
    [state] = await states(target, "1.0.0")
    assert state.pid is not None

    began = time.monotonic()
    await target.stop(release=release, drain_s=1.0)
    took = time.monotonic() - began

    assert 1.0 <= took < 4.0
    assert not pid_alive(state.pid)
    assert [e["event"] for e in events(target, "1.0.0")][-3:] == ["stopping", "killed", "stopped"]


async def test_stop_is_idempotent_and_keeps_logs(
        make_target: MakeTarget, make_release: MakeRelease) -> None:
    target = make_target(instances=2)
    release = make_release("1.0.0")
    await target.start(release=release)
    await until_ready(target, release)  # so the app has logged its start line
    pids = [s.pid for s in await states(target, "1.0.0")]

    await target.stop(release=release, drain_s=2)
    await target.stop(release=release, drain_s=2)
    await target.stop(release=make_release("9.9.9"), drain_s=2)  # never started

    assert all(pid is not None and not pid_alive(pid) for pid in pids)
    assert [s.alive for s in await states(target, "1.0.0")] == [False, False]
    assert (target.instance_dir("1.0.0", 0) / "stdout.log").read_text().startswith("shop 1.0.0")
    readiness = await target.ready(release=release)
    assert not readiness.ready and "start it first" in readiness.detail


async def test_start_after_stop_starts_again(
        make_target: MakeTarget, make_release: MakeRelease) -> None:
    target = make_target()
    release = make_release("1.0.0")
    await target.start(release=release)
    await target.stop(release=release, drain_s=2)

    await target.start(release=release)

    await until_ready(target, release)
    [state] = await states(target, "1.0.0")
    assert state.alive and state.restarts == 0


async def test_instances_survive_the_death_of_the_controller(
        make_target: MakeTarget, make_release: MakeRelease, tmp_path: Path) -> None:
    release = make_release("1.0.0")
    controller = textwrap.dedent("""
        import asyncio, json, sys
        from pathlib import Path
        from entrega.targets.base import HealthCheck, ReleaseRef
        from entrega.targets.local import LocalTarget

        async def main(state_dir, release_dir, command):
            target = LocalTarget(app="shop", environment="staging", command=command, env={},
                                 instances=2, health=HealthCheck(), state_dir=Path(state_dir))
            release = ReleaseRef("shop", "1.0.0", "", Path(release_dir))
            endpoints = await target.start(release=release)
            print(json.dumps([e.port for e in endpoints]), flush=True)
            await asyncio.sleep(3600)

        asyncio.run(main(*sys.argv[1:]))
    """)
    command = f"{sys.executable} app.py"
    process = subprocess.Popen(
        [sys.executable, "-c", controller, str(tmp_path / "state"), str(release.path), command],
        stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(process.stdout.readline), 20)
        ports = json.loads(line)
    finally:
        process.kill()  # SIGKILL: no cleanup runs in the controller
        process.wait()
        if process.stdout is not None:
            process.stdout.close()

    target = make_target(instances=2, command=command)
    adopted = await states(target, "1.0.0")
    assert [s.endpoint.port for s in adopted if s.endpoint] == ports
    assert all(s.alive and s.pid and pid_alive(s.pid) for s in adopted)

    endpoints = await target.start(release=release)

    assert [e.port for e in endpoints] == ports
    assert [s.pid for s in await states(target, "1.0.0")] == [s.pid for s in adopted]
    await until_ready(target, release)


async def test_unstartable_command_is_reported_by_ready_with_stderr(
        make_target: MakeTarget, make_release: MakeRelease) -> None:
    target = make_target(command="entrega-no-such-command --port $PORT")
    release = make_release("1.0.0")

    await target.start(release=release)  # the supervisor runs: not a start failure

    async def explained() -> Readiness | None:
        readiness = await target.ready(release=release)
        error = readiness.instances[0].last_error or ""
        return readiness if "restart" in error and "not found" in error else None

    readiness = await eventually(explained, what="an explained readiness failure")
    assert not readiness.ready
    assert "code 127" in (readiness.instances[0].last_error or "")

    async def restarting() -> InstanceState | None:
        [state] = await states(target, "1.0.0")
        return state if state.restarts >= 2 else None

    state = await eventually(restarting, what="restarts")
    assert state.alive and state.extra["last_exit_code"] == 127

    began = time.monotonic()
    await target.stop(release=release, drain_s=5)
    assert time.monotonic() - began < 3  # nothing to drain while in backoff
    [stopped] = await states(target, "1.0.0")
    assert not stopped.alive


async def test_start_without_release_directory_fails_clearly(
        make_target: MakeTarget, tmp_path: Path) -> None:
    target = make_target()
    release = ReleaseRef("shop", "1.0.0", "", tmp_path / "missing")

    with pytest.raises(TargetError, match="release directory .*missing does not exist"):
        await target.start(release=release)


async def test_unsafe_version_is_refused(make_target: MakeTarget, tmp_path: Path) -> None:
    target = make_target()
    with pytest.raises(TargetError, match="version '../x'"):
        await target.start(release=ReleaseRef("shop", "../x", "", tmp_path))


async def test_observe_lists_every_release_of_the_environment(
        make_target: MakeTarget, make_release: MakeRelease) -> None:
    target = make_target()
    other_env = make_target(environment="production")
    old, new = make_release("1.0.0"), make_release("2.0.0")
    await target.start(release=old)
    await target.start(release=new)
    await other_env.start(release=new)
    await target.stop(release=old, drain_s=2)

    observed = {(s.version, s.instance): s.alive for s in await target.observe()}

    assert observed == {("1.0.0", "0"): False, ("2.0.0", "0"): True}


async def test_two_controllers_starting_at_once_share_one_supervisor(
        make_target: MakeTarget, make_release: MakeRelease) -> None:
    release = make_release("1.0.0")
    first, second = make_target(instances=2), make_target(instances=2)

    endpoints = await asyncio.gather(first.start(release=release), second.start(release=release))

    assert endpoints[0] == endpoints[1]

    async def one_supervisor_each() -> bool:
        # The loser's supervisor takes a moment to exit after finding the lock taken.
        dirs = [os.fsencode(first.instance_dir("1.0.0", i)) for i in (0, 1)]
        argvs = [_cmdline(p) for p in Path("/proc").iterdir() if p.name.isdigit()]
        return all(sum(d in argv for argv in argvs) == 1 for d in dirs)

    await eventually(one_supervisor_each, what="one supervisor per instance")
    await until_ready(first, release)


def _cmdline(proc: Path) -> list[bytes]:
    try:
        return (proc / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return []


async def test_killed_supervisor_takes_its_app_down_and_start_replaces_it(
        make_target: MakeTarget, make_release: MakeRelease) -> None:
    target = make_target()
    release = make_release("1.0.0")
    await target.start(release=release)
    [before] = await states(target, "1.0.0")
    assert before.pid is not None

    os.kill(int(str(before.extra["supervisor_pid"])), signal.SIGKILL)

    async def lost() -> InstanceState | None:
        [state] = await states(target, "1.0.0")
        return state if not state.alive and not pid_alive(before.pid or 0) else None

    state = await eventually(lost, what="the supervisor's death to take the app down")
    assert state.extra["status"] == "lost"

    [endpoint] = await target.start(release=release)

    [after] = await states(target, "1.0.0")
    assert after.alive and after.pid not in (None, before.pid)
    assert after.endpoint == endpoint == before.endpoint  # back on its port: routes hold
    await until_ready(target, release)


async def test_close_stops_probing_but_not_instances(
        make_target: MakeTarget, make_release: MakeRelease) -> None:
    target = make_target()
    release = make_release("1.0.0")
    [endpoint] = await target.start(release=release)
    await until_ready(target, release)
    [before] = await states(target, "1.0.0")

    await target.close()

    [after] = await states(target, "1.0.0")
    assert after.alive and after.pid == before.pid
    async with httpx.AsyncClient(trust_env=False) as client:
        assert (await client.get(f"http://{endpoint.address}/healthz")).status_code == 200
    await until_ready(target, release)  # probing starts over on the next ready()

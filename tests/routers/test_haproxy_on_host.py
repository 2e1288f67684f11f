"""A host's HAProxy driven as the controller's own (``routers/haproxy/on_host.py``), with
the host agent (``hostctl haproxy-*``) run as real processes on the standard library
alone, real HAProxy and its log sink, real traffic; the host is this machine, reached
through its unix sockets (the fleet tests reach it over SSH: tests/fleet).

Covers: the agent starts HAProxy and the sink, adopts them on the next start; route
changes (weights, new release, cohort) go through the runtime API without a reload; the
files on the host hold the current table, so an HAProxy killed outright comes back with
it; a listener change is the one reload, done by the agent; metrics from the sink; a
wrong request refused with the field named; stop ends both processes.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import entrega
from entrega.dataplane.instances.hostrouter import HostRouter
from entrega.errors import TargetError
from entrega.net import free_port
from entrega.routers.base import CohortRule
from entrega.routers.every_host import EveryHostRouter, RouterOnHost
from entrega.routers.haproxy.on_host import HostHaproxyRouter
from tests.routers.conftest import Backend, make_routes, wait_for

pytestmark = pytest.mark.real

SRC = Path(entrega.__file__).resolve().parents[1]
#: hostctl with nothing on sys.path but the standard library and SRC, as on a fleet host;
#: it fails when the agent imports anything else
AGENT = f"""\
import runpy, sys
sys.path.append({str(SRC)!r})
sys.argv = ["hostctl", *sys.argv[1:]]
try:
    runpy.run_module("entrega.dataplane.instances.hostctl", run_name="__main__")
finally:
    foreign = sorted(m for m in sys.modules if m.split(".")[0] in
                     ("pydantic", "httpx", "yaml", "asyncssh", "uvloop", "httptools"))
    assert not foreign, foreign
"""


class ThisHost:
    """This machine as a fleet host: its agent a process per operation, like
    ``hostctl OPERATION`` over SSH; its sockets reached directly."""

    name = "here"

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = str(state_dir)
        self.operations: list[str] = []

    async def exchange(self, path: str, request: bytes) -> bytes | None:
        def one() -> bytes | None:
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                    sock.settimeout(10)
                    sock.connect(path)
                    sock.sendall(request)
                    sock.shutdown(socket.SHUT_WR)
                    chunks = []
                    while chunk := sock.recv(65536):
                        chunks.append(chunk)
                    return b"".join(chunks)
            except OSError:
                return None

        return await asyncio.to_thread(one)

    async def agent(self, operation: str, request: dict[str, object]) -> dict[str, Any]:
        self.operations.append(operation)
        done = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-S", "-I", "-c", AGENT, operation],
            input=json.dumps(request), capture_output=True, text=True, timeout=90,
            env={"PATH": "/usr/bin:/bin"})  # no /usr/sbin: the agent looks there itself
        assert "Traceback" not in done.stderr, done.stderr
        answer: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
        if done.returncode != 0:
            raise TargetError(f"host here: {answer['error']}", hint=answer.get("hint"))
        return answer


@pytest.fixture
async def host(tmp_path: Path) -> AsyncIterator[tuple[ThisHost, HostHaproxyRouter]]:
    here = ThisHost(tmp_path / "state")
    haproxy = HostHaproxyRouter(here, app="shop", environment="production",
                                listen=f"127.0.0.1:{free_port()}")
    yield here, haproxy
    await haproxy.shutdown()


async def served(listen: str, n: int) -> dict[str, int]:
    counts: dict[str, int] = {}
    async with httpx.AsyncClient(trust_env=False) as client:
        for _ in range(n):
            answer = await client.get(f"http://{listen}/")
            assert answer.status_code == 200, answer.text
            version = answer.headers["x-entrega-release"]
            counts[version] = counts.get(version, 0) + 1
            client.cookies.clear()
    return counts


async def test_the_agent_keeps_haproxy_and_its_sink_and_routes_change_without_reload(
        host: tuple[ThisHost, HostHaproxyRouter], backends: dict[str, Backend]) -> None:
    here, haproxy = host
    link = RouterOnHost(haproxy, name=here.name, listen=haproxy.listen, health=haproxy.health)
    every = EveryHostRouter(name="shop-production", hosts=[link])
    await every.ensure_running()
    assert haproxy.health()["started"] is True
    master = haproxy.pid()
    assert master is not None
    files = Path(here.state_dir) / "routers" / "shop-production"
    assert int((files / "haproxy.pid").read_text()) == master
    sink = int((files / "logsink.pid").read_text())
    await every.ensure_running()  # adopted: nothing started again
    assert haproxy.health() == {"pid": master, "started": False}
    assert int((files / "logsink.pid").read_text()) == sink

    await every.metrics()  # the summed series starts here

    # weights, a new release and a cohort: the runtime API only, the worker is the same
    worker = (await haproxy.api.info())["Pid"]
    routes = make_routes(backends, {"v1": 100})
    await every.set_routes(routes)
    assert await served(haproxy.listen, 10) == {"v1": 10}
    canary = make_routes(backends, {"v1": 50, "v2": 50},
                         cohort=CohortRule(release="v2", header="X-Beta"))
    await every.set_routes(canary)
    assert (await every.get_routes()).same_table(canary)
    async with httpx.AsyncClient(trust_env=False) as client:
        beta = await client.get(f"http://{haproxy.listen}/", headers={"X-Beta": "1"})
    assert beta.headers["x-entrega-release"] == "v2"
    assert set(await served(haproxy.listen, 40)) == {"v1", "v2"}
    assert (await haproxy.api.info())["Pid"] == worker
    assert "haproxy-reload" not in here.operations
    # the files on the host hold the current table (a restart reads them)
    settings = (files / "settings.map").read_text().splitlines()
    assert {"cohort v2", "weight:v2 50"} <= set(settings), settings

    async def counted() -> bool:
        releases = (await haproxy.metrics()).releases  # the host's own series
        return releases.get("v2") is not None and releases["v2"].requests >= 2

    await wait_for(counted, what="the host's sink to count v2's requests")

    # killed outright (master and workers): started again from the files on the host,
    # with the current table
    for pid in [master, *_children(master)]:
        os.kill(pid, signal.SIGKILL)
    await wait_for(lambda: _gone(haproxy), what="HAProxy gone")
    await every.ensure_running()
    assert haproxy.health()["started"] is True and haproxy.pid() != master
    assert (await every.get_routes()).same_table(canary)
    assert set(await served(haproxy.listen, 40)) == {"v1", "v2"}

    # the sink killed: started again by the next read, and the sum does not go back
    summed = (await every.metrics()).releases["v2"].requests
    assert summed > 0
    os.kill(int((files / "logsink.pid").read_text()), signal.SIGKILL)
    await wait_for(lambda: _sink_gone(haproxy), what="the sink gone")
    after = await every.metrics()
    assert after.releases["v2"].requests == summed
    assert any(r.what.startswith("haproxy log sink") for r in after.restarts), after.restarts
    assert int((files / "logsink.pid").read_text()) != sink

    # another listener: the one change that reloads (asked of the agent), hitless
    moved = HostHaproxyRouter(here, app="shop", environment="production",
                              listen=f"127.0.0.1:{free_port()}")
    await moved.ensure_running()
    assert moved.health()["started"] is False
    await moved.set_routes(canary)
    assert here.operations.count("haproxy-reload") == 1
    assert set(await served(moved.listen, 40)) == {"v1", "v2"}

    # a wrong request is refused naming the field, with no Python class name
    with pytest.raises(TargetError) as refused:
        await here.agent("haproxy-start", {**haproxy._where(), "files": {}, "lisen": "x"})
    assert "'lisen'" in refused.value.message and "Error" not in refused.value.message
    with pytest.raises(TargetError) as refused:
        await here.agent("haproxy-write", {**haproxy._where(), "files": {"../x": "y"}})
    assert "'../x'" in refused.value.message

    await every.shutdown()
    assert await _gone(haproxy)
    assert not (files / "haproxy.pid").exists()
    assert await here.exchange(str(haproxy.sink.control), b"metrics\n") is None


def _children(parent: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
                found.append(int(entry.name))
    return found


async def _sink_gone(haproxy: HostHaproxyRouter) -> bool:
    return await haproxy.access.exchange(str(haproxy.sink.control), b"metrics\n") is None


async def _gone(haproxy: HostHaproxyRouter) -> bool:
    return await haproxy.access.exchange(str(haproxy.files.socket), b"show info\n") is None


@pytest.mark.parametrize(("length", "in_dir"), [(97, True), (98, False), (100, False)],
                         ids=["97-bytes-kept", "98-bytes-moved", "100-bytes-moved"])
def test_the_runtime_socket_moves_to_tmp_past_haproxys_own_limit(length: int,
                                                                  in_dir: bool) -> None:
    from entrega.routers.haproxy.router import runtime_socket_path

    directory = Path("/srv/" + "d" * (length - len("/srv/") - len("/haproxy.sock")))
    assert len(str(directory / "haproxy.sock")) == length
    path = runtime_socket_path(directory)
    assert (path.parent == directory) is in_dir
    assert len(str(path)) <= 97
    assert runtime_socket_path(directory) == path  # stable: a new controller finds it


async def test_a_router_of_the_other_kind_left_on_the_host_is_retired_once_the_new_one_serves(
        host: tuple[ThisHost, HostHaproxyRouter], backends: dict[str, Backend]) -> None:
    """``router.kind`` changed between two controllers: the old kind's router still runs
    in the environment's router directory on the same port, which both kinds bind with
    SO_REUSEPORT. Once the new kind holds its table, the agent drains and stops the old
    one (``router-retire``)."""
    here, haproxy = host
    embedded = HostRouter(app="shop", environment="production",
                          state_dir=Path(here.state_dir), listen=haproxy.listen)
    old = embedded.ensure()
    try:
        await _retire_and_back(here, haproxy, embedded, old, backends)
    finally:  # whatever failed, no embedded router outlives the test
        embedded.stop()


async def _retire_and_back(here: ThisHost, haproxy: HostHaproxyRouter, embedded: HostRouter,
                           old: dict[str, Any], backends: dict[str, Backend]) -> None:
    assert old["started"] is True and isinstance(old["pid"], int)
    files = Path(here.state_dir) / "routers" / "shop-production"

    await haproxy.ensure_running()  # the new kind joins the port
    assert embedded.health() is not None
    await haproxy.set_routes(make_routes(backends, {"v1": 100}))  # ... and the old one goes
    assert "router-retire" in here.operations
    await wait_for(lambda: _exited(old["pid"]), what="the embedded router to exit")
    assert embedded.health() is None and not (files / "router.pid").exists()
    assert await served(haproxy.listen, 10) == {"v1": 10}

    # and back: the embedded router's start retires HAProxy and its log sink
    master, sink = haproxy.pid(), int((files / "logsink.pid").read_text())
    where = {"app": "shop", "environment": "production", "state_dir": here.state_dir}
    await here.agent("router-start", {**where, "listen": haproxy.listen})
    # what the controller asks once the router holds its table (SshHostRouter.control)
    answer = await here.agent("router-retire", {**where, "keep": "embedded"})
    assert answer["retired"] == [f"HAProxy (pid {master})", f"HAProxy's log sink (pid {sink})"]
    await wait_for(lambda: _exited(master), what=f"HAProxy (pid {master}) to exit")
    await wait_for(lambda: _exited(sink), what=f"its log sink (pid {sink}) to exit")
    assert embedded.health() is not None


async def _exited(pid: object) -> bool:
    assert isinstance(pid, int)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # a zombie (its parent has not reaped it yet) is gone for every purpose here
    return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")

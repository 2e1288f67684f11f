"""The host agent's operations by themselves, against real processes: what the local
target does in process and the SSH target will do on each host (start, observe, explain,
stop; adoption by an agent that knew nothing of the running instances)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from entrega.dataplane.instances.host import HostInstances
from entrega.dataplane.instances.lookup import port_is_free
from entrega.dataplane.instances.wire import ReleaseSpec
from entrega.errors import TargetError
from entrega.net import Endpoint
from entrega.waiting import wait_until_sync

from .hostagent import COMMAND, CRASHING_APP, answer_of, get, pid_alive, release_dir

pytestmark = pytest.mark.real


@pytest.fixture
def agent(tmp_path: Path) -> HostInstances:
    return HostInstances(app="tiny", environment="staging", state_dir=tmp_path / "state")


@pytest.fixture(autouse=True)
def stop_everything(tmp_path: Path) -> Iterator[None]:
    """No instance outlives its test, even a failing one."""
    yield
    cleaner = HostInstances(app="tiny", environment="staging", state_dir=tmp_path / "state")
    for version in cleaner.versions():
        cleaner.stop(version, drain_s=0.5)


def spec(path: Path, *, version: str = "1.0.0", instances: int = 2,
         ports: tuple[int, int] | None = None) -> ReleaseSpec:
    return ReleaseSpec(version=version, path=str(path), command=COMMAND, env={},
                       instances=instances, ports=ports)


def test_two_instances_start_serve_are_observed_and_stop(agent: HostInstances,
                                                          tmp_path: Path) -> None:
    endpoints = agent.start(spec(release_dir(tmp_path, "1.0.0")))

    assert [(e.host, e.instance) for e in endpoints] == [("127.0.0.1", "0"), ("127.0.0.1", "1")]
    assert endpoints[0].port != endpoints[1].port
    assert [answer_of(e.port) for e in endpoints] == ["1.0.0 0", "1.0.0 1"]
    observed = agent.observe()
    assert [(o.version, o.instance, o.port, o.alive, o.status) for o in observed] == [
        ("1.0.0", "0", endpoints[0].port, True, "running"),
        ("1.0.0", "1", endpoints[1].port, True, "running")]
    pids = [o.pid for o in observed]
    assert all(pid is not None and pid_alive(pid) for pid in pids)

    assert agent.stop("1.0.0", drain_s=2) == ["0", "1"]

    after = agent.observe("1.0.0")
    assert [(o.alive, o.status, o.pid) for o in after] == [(False, "stopped", None)] * 2
    assert not any(pid_alive(pid) for pid in pids if pid is not None)
    assert all(get(e.port) is None for e in endpoints)
    assert agent.stop("1.0.0", drain_s=2) == []  # idempotent: nothing left to stop


def test_an_agent_that_knew_nothing_adopts_the_running_instances(
        agent: HostInstances, tmp_path: Path) -> None:
    release = spec(release_dir(tmp_path, "1.0.0"))
    endpoints = agent.start(release)
    before = {o.instance: (o.pid, o.supervisor_pid) for o in agent.observe()}

    # The controller died: a new one (a new agent, nothing in memory) starts the release.
    reborn = HostInstances(app="tiny", environment="staging", state_dir=tmp_path / "state")
    assert reborn.start(release) == endpoints

    assert {o.instance: (o.pid, o.supervisor_pid) for o in reborn.observe()} == before
    assert [answer_of(e.port) for e in endpoints] == ["1.0.0 0", "1.0.0 1"]


def test_a_crash_loop_is_explained_with_exit_code_and_stderr(agent: HostInstances,
                                                             tmp_path: Path) -> None:
    agent.start(spec(release_dir(tmp_path, "1.0.0", CRASHING_APP), instances=1))

    def crashed_twice() -> bool:
        return any(r.exits >= 2 for r in agent.explain("1.0.0"))

    assert wait_until_sync(crashed_twice, timeout_s=10), "the app did not crash twice in 10 s"
    [report] = agent.explain("1.0.0")
    assert report.instance == "0" and report.last_exit_code == 3
    assert "code 3" in report.note or "restarted" in report.note
    assert "tiny: DATABASE_URL is not set" in report.stderr
    assert report.stderr.startswith("; stderr.log ends with:")


def test_a_healthy_instance_has_nothing_to_explain(agent: HostInstances,
                                                   tmp_path: Path) -> None:
    [endpoint] = agent.start(spec(release_dir(tmp_path, "1.0.0"), instances=1))
    answer_of(endpoint.port)

    [report] = agent.explain("1.0.0")

    assert (report.exits, report.note, report.last_exit_code) == (0, "", None)


def test_ports_come_from_the_range_and_a_start_of_another_release_avoids_them(
        agent: HostInstances, tmp_path: Path) -> None:
    low = _free_range(4)
    first = agent.start(spec(release_dir(tmp_path, "1.0.0"), ports=(low, low + 3)))
    second = agent.start(spec(release_dir(tmp_path, "2.0.0"), version="2.0.0",
                              ports=(low, low + 3)))

    ports = [e.port for e in first + second]
    assert sorted(ports) == list(range(low, low + 4))
    with pytest.raises(TargetError, match=rf"no free port in staging's range {low}-{low + 3}"):
        agent.start(spec(release_dir(tmp_path, "3.0.0"), version="3.0.0", instances=1,
                         ports=(low, low + 3)))


def test_starts_at_the_same_moment_never_share_a_port(agent: HostInstances,
                                                      tmp_path: Path) -> None:
    """Four releases started at once (threads of a controller, controllers, SSH commands)
    in a range of four ports: the start lock keeps each port to one instance, where
    without it each start would see all four free until an app had bound its own."""
    low = _free_range(4)
    specs = [spec(release_dir(tmp_path, v), version=v, instances=1, ports=(low, low + 3))
             for v in ("1.0.0", "2.0.0", "3.0.0", "4.0.0")]
    together = threading.Barrier(len(specs))

    def start(release: ReleaseSpec) -> list[Endpoint]:
        # Each as its own agent: nothing shared in memory, as between two processes.
        own = HostInstances(app="tiny", environment="staging", state_dir=tmp_path / "state")
        together.wait(timeout=10)
        return own.start(release)

    with ThreadPoolExecutor(len(specs)) as pool:
        endpoints = [e for started in pool.map(start, specs) for e in started]

    assert sorted(e.port for e in endpoints) == list(range(low, low + 4))
    assert sorted(answer_of(e.port) for e in endpoints) == [
        "1.0.0 0", "2.0.0 0", "3.0.0 0", "4.0.0 0"]


def test_a_missing_release_directory_or_unsafe_version_is_refused_clearly(
        agent: HostInstances, tmp_path: Path) -> None:
    with pytest.raises(TargetError, match="release directory .*missing does not exist"):
        agent.start(spec(tmp_path / "missing"))
    with pytest.raises(TargetError, match=r"cannot use version '\.\./x'"):
        agent.start(spec(tmp_path, version="../x"))
    assert agent.observe() == []


def _free_range(size: int) -> int:
    """The low end of ``size`` consecutive ports free on 127.0.0.1 now."""
    for low in range(42000, 43000, size):
        if all(port_is_free("127.0.0.1", p) for p in range(low, low + size)):
            return low
    pytest.fail("no range of free ports in 42000-43000")

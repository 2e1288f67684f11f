"""What an instance inherits (nothing of the controller's secrets) and which ports it gets.

Real supervised processes; what a process carries is read where an attacker would read it,
in ``/proc/<pid>/environ``.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from entrega.dataplane.instances.supervisor import read_state
from entrega.errors import TargetError
from entrega.targets.base import ReleaseRef
from entrega.targets.local import LocalTarget
from entrega.waiting import wait_until

from .conftest import MakeRelease, MakeTarget

pytestmark = [pytest.mark.real,
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc")]

SECRET = "webhook-secret-7d1f0c"
#: What a shell may add on its own when it execs the app (dash and bash differ).
SHELL_VARIABLES = {"PWD", "OLDPWD", "SHLVL", "_"}


def environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)


def pids(target: LocalTarget, release: ReleaseRef, instance: int = 0) -> tuple[int, int]:
    state = read_state(target.instance_dir(release.version, instance))
    assert state is not None and state.child_pid is not None
    return state.supervisor_pid, state.child_pid


@pytest.fixture
def controller_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The controller's environment as a server's would be: a secret and unrelated variables."""
    monkeypatch.setenv("ENTREGA_WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("SHOP_DATABASE_URL", "postgresql://shop@db/shop")
    monkeypatch.setenv("UNRELATED_TOKEN", "not-for-apps")
    monkeypatch.setenv("LANG", "C.UTF-8")


@pytest.mark.usefixtures("controller_env")
async def test_instance_gets_a_clean_documented_environment(
        make_target: MakeTarget, make_release: MakeRelease) -> None:
    target = make_target(env={"GREETING": "hola"}, inherit_env=("SHOP_DATABASE_URL",))
    release = make_release("1.0.0")
    [endpoint] = await target.start(release=release)
    supervisor_pid, app_pid = pids(target, release)

    app = environ(app_pid)
    assert SECRET not in "".join(app.values())
    assert app["GREETING"] == "hola"
    assert app["SHOP_DATABASE_URL"] == "postgresql://shop@db/shop"
    assert app["PORT"] == str(endpoint.port)
    assert app["HOST"] == endpoint.host == "127.0.0.1"
    assert (app["ENTREGA_APP"], app["ENTREGA_VERSION"], app["ENTREGA_ENVIRONMENT"],
            app["ENTREGA_INSTANCE"]) == ("shop", "1.0.0", "staging", "0")
    assert app["LANG"] == "C.UTF-8" and app["PATH"]
    expected = {"GREETING", "SHOP_DATABASE_URL", "PORT", "HOST", "ENTREGA_APP", "ENTREGA_VERSION",
                "ENTREGA_ENVIRONMENT", "ENTREGA_INSTANCE", "PATH", "HOME", "LANG"}
    assert set(app) - SHELL_VARIABLES <= expected, set(app) - SHELL_VARIABLES - expected

    # The supervisor carries neither the controller's secrets nor the app's variables.
    supervisor = environ(supervisor_pid)
    assert SECRET not in "".join(supervisor.values())
    assert not {"ENTREGA_WEBHOOK_SECRET", "UNRELATED_TOKEN", "GREETING",
                "SHOP_DATABASE_URL"} & set(supervisor), supervisor


@pytest.mark.usefixtures("controller_env")
async def test_a_restarted_app_gets_the_same_environment(
        make_target: MakeTarget, make_release: MakeRelease) -> None:
    target = make_target(env={"GREETING": "hola"})
    release = make_release("1.0.0")
    await target.start(release=release)
    _, first = pids(target, release)
    before = environ(first)
    os.kill(first, signal.SIGKILL)

    def restarted() -> int | None:
        state = read_state(target.instance_dir(release.version, 0))
        return state.child_pid if state and state.child_pid not in (None, first) else None

    second = await wait_until(restarted, timeout_s=10)
    assert second is not None, "the app was not restarted"
    after = environ(second)
    assert {k: v for k, v in after.items() if k not in SHELL_VARIABLES} == \
        {k: v for k, v in before.items() if k not in SHELL_VARIABLES}
    assert "ENTREGA_WEBHOOK_SECRET" not in after


# -- ports --------------------------------------------------------------------------------

@pytest.fixture
def port_range() -> Iterator[tuple[int, int]]:
    """Five consecutive ports free now, in a random place of 20000-29999."""
    for _ in range(50):
        low = random.randrange(20000, 29990)
        if all(_free(p) for p in range(low, low + 5)):
            yield low, low + 4
            return
    pytest.fail("no five free consecutive ports found")


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


async def test_ports_come_from_the_range_and_run_out_clearly(
        make_target: MakeTarget, make_release: MakeRelease,
        port_range: tuple[int, int]) -> None:
    low, high = port_range
    target = make_target(instances=2, ports=port_range)
    # Another process holds one port of the range: it is skipped, not fought over.
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", low + 2))
    squatter.listen()
    try:
        first = await target.start(release=make_release("1.0.0"))
        release_two = make_release("2.0.0")
        second = await target.start(release=release_two)
        ports = [e.port for e in first + second]
        assert len(set(ports)) == 4 and all(low <= p <= high for p in ports), ports
        assert low + 2 not in ports
        # Starting again adopts: the same ports, nothing new claimed.
        assert await target.start(release=release_two) == second

        with pytest.raises(TargetError) as caught:
            await target.start(release=make_release("3.0.0"))
    finally:
        squatter.close()
    message = str(caught.value)
    assert f"no free port in staging's range {low}-{high}" in message
    assert "4 of its 5 ports are held by instances of staging" in message
    assert "widen target.ports" in message


async def test_a_stopped_release_gives_its_ports_back(
        make_target: MakeTarget, make_release: MakeRelease,
        port_range: tuple[int, int]) -> None:
    low, high = port_range
    target = make_target(instances=2, ports=(low, low + 3))
    one, two = make_release("1.0.0"), make_release("2.0.0")
    await target.start(release=one)
    await target.start(release=two)
    await target.stop(release=one, drain_s=0.5)
    third = await target.start(release=make_release("3.0.0"))
    assert len(third) == 2 and all(low <= e.port <= low + 3 for e in third)

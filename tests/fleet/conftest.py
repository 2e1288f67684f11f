"""Fixtures for fleet tests: real sshd test hosts on 127.0.1.i (see hosts.py)."""

from __future__ import annotations

import getpass
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from entrega.targets.ssh import Fleet, FleetSettings, Host
from tests.fleet.delivery import kill_processes_under
from tests.fleet.hosts import SSHD, TestFleet, TestHost


@pytest.fixture
def test_fleet(tmp_path: Path) -> Iterator[TestFleet]:
    """Three running test hosts, stopped at the end of the test: every session killed,
    and whatever still runs on them (instances, routers a test did not stop), as when
    the machines go down."""
    if not Path(SSHD).exists() or shutil.which("ssh-keygen") is None:
        pytest.skip("openssh-server is not installed (run scripts/install-system-deps.sh)")
    fleet = TestFleet.start(tmp_path / "fleet", 3)
    try:
        yield fleet
    finally:
        fleet.stop()
        kill_processes_under(tmp_path / "fleet")


def fleet_of(hosts: TestFleet, *, max_parallel: int = 10, connect_timeout_s: float = 2.0,
             command_timeout_s: float = 5.0) -> Fleet:
    """A Fleet reaching the test hosts with the fixture's client key and known_hosts."""
    return Fleet([as_host(h) for h in hosts.hosts], FleetSettings(
        known_hosts=hosts.known_hosts, identity_file=hosts.identity_file,
        connect_timeout_s=connect_timeout_s, command_timeout_s=command_timeout_s,
        max_parallel=max_parallel))


def as_host(host: TestHost) -> Host:
    return Host(name=host.name, address=host.address, port=host.port,
                user=getpass.getuser(), base_dir=str(host.base_dir))

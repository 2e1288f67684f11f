"""The fleet's connections against real sshd hosts: parallel commands, the max_parallel
bound, host keys checked against known_hosts, and hosts that stop answering."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
from pathlib import Path

import pytest

from entrega.errors import HostKeyRefused, TargetError, TargetUnreachable
from entrega.targets.ssh import Fleet, Host
from tests.fleet.conftest import fleet_of
from tests.fleet.hosts import TestFleet, keygen

pytestmark = pytest.mark.real


async def test_commands_run_in_parallel_on_every_host_over_one_connection_each(
        test_fleet: TestFleet) -> None:
    async with fleet_of(test_fleet) as fleet:
        async def where(host: Host) -> str:
            result = await fleet.run(host, "sleep 0.5; echo $SSH_CONNECTION; echo oops >&2")
            assert result.ok and result.stderr == b"oops\n"
            return result.stdout.decode().split()[2]  # the address sshd was reached on

        started = time.monotonic()
        outcomes = await fleet.each(where)
        elapsed = time.monotonic() - started
        assert [o.value for o in outcomes] == [h.address for h in test_fleet.hosts]
        assert elapsed < 1.4, f"three 0.5 s commands took {elapsed:.2f} s: not in parallel"

        first = {h.name: await fleet.connect(h) for h in fleet.hosts}
        failed = await fleet.run(fleet.hosts[0], "exit 3")
        assert failed.exit_status == 3 and not failed.ok
        again = {h.name: await fleet.connect(h) for h in fleet.hosts}
        assert all(again[name] is conn for name, conn in first.items())


async def test_max_parallel_bounds_how_many_hosts_work_at_once(test_fleet: TestFleet) -> None:
    running = peak = 0

    async with fleet_of(test_fleet, max_parallel=2) as fleet:
        for host in fleet.hosts:  # connecting is not what is measured
            await fleet.connect(host)

        async def busy(host: Host) -> None:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            try:
                assert (await fleet.run(host, "sleep 0.4")).ok
            finally:
                running -= 1

        started = time.monotonic()
        await fleet.each(busy)
        elapsed = time.monotonic() - started
    assert peak == 2
    assert elapsed >= 0.8, "the third host's sleep must wait for a free slot"


async def test_a_host_missing_from_known_hosts_is_refused(test_fleet: TestFleet) -> None:
    test_fleet.write_known_hosts(test_fleet.hosts[:2])
    async with fleet_of(test_fleet) as fleet:
        outcomes = await fleet.each(lambda h: fleet.run(h, "true"))
    assert [o.ok for o in outcomes] == [True, True, False]
    error = outcomes[2].error
    assert isinstance(error, HostKeyRefused)
    text = str(error)
    assert "host3" in text and "not listed" in text and str(test_fleet.known_hosts) in text
    assert f"[127.0.1.3]:{test_fleet.hosts[2].port}" in text
    assert "HostKeyNotVerifiable" not in text and "Error" not in text


async def test_a_changed_host_key_is_refused(test_fleet: TestFleet) -> None:
    async with fleet_of(test_fleet) as fleet:
        assert (await fleet.run(fleet.hosts[1], "true")).ok
        test_fleet.hosts[1].change_host_key()  # kills the pooled connection's session too
        with pytest.raises(HostKeyRefused) as refused:
            await fleet.run(fleet.hosts[1], "true")
        assert (await fleet.run(fleet.hosts[0], "true")).ok
    text = str(refused.value)
    assert "host2" in text and "differs" in text and str(test_fleet.known_hosts) in text


async def test_a_host_that_stops_answering_is_named_within_the_timeout(
        test_fleet: TestFleet) -> None:
    async with fleet_of(test_fleet, connect_timeout_s=1.0, command_timeout_s=1.0) as fleet:
        silent = fleet.hosts[1]
        assert (await fleet.run(silent, "true")).ok
        test_fleet.hosts[1].cut_off()

        started = time.monotonic()
        outcomes = await fleet.each(lambda h: fleet.run(h, "echo up"))
        elapsed = time.monotonic() - started
        assert [o.ok for o in outcomes] == [True, False, True]
        assert isinstance(outcomes[1].error, TargetUnreachable)
        assert "host2" in str(outcomes[1].error) and "did not answer within 1 s" \
            in str(outcomes[1].error)
        assert elapsed < 2.5, f"a silent host held the fleet for {elapsed:.1f} s"

        started = time.monotonic()  # a new connection to it: the connect timeout
        with pytest.raises(TargetUnreachable, match="host2"):
            await fleet.run(silent, "true")
        assert time.monotonic() - started < 2.5

        test_fleet.hosts[1].bring_back()
        assert (await fleet.run(silent, "echo back")).stdout == b"back\n"


async def test_a_broken_connection_is_replaced_by_a_new_one(test_fleet: TestFleet) -> None:
    async with fleet_of(test_fleet) as fleet:
        host = fleet.hosts[0]
        first = await fleet.connect(host)
        test_fleet.hosts[0].stop()
        with pytest.raises(TargetUnreachable) as down:
            await fleet.run(host, "true")
        assert "host1" in str(down.value)
        test_fleet.hosts[0].start()
        assert (await fleet.run(host, "echo again")).stdout == b"again\n"
        assert await fleet.connect(host) is not first


async def test_a_missing_known_hosts_file_is_named_not_taken_for_a_dead_host(
        test_fleet: TestFleet) -> None:
    test_fleet.known_hosts.unlink()
    async with fleet_of(test_fleet) as fleet:
        with pytest.raises(HostKeyRefused) as refused:
            await fleet.run(fleet.hosts[0], "true")
    text = str(refused.value)
    assert "host1" in text and f"known_hosts file {test_fleet.known_hosts} does not exist" \
        in text


def test_without_asyncssh_the_ssh_target_says_what_to_install(tmp_path: Path) -> None:
    # A fresh interpreter where importing asyncssh fails, as without the ssh extra.
    code = ("import sys; sys.modules['asyncssh'] = None\n"
            "from entrega.errors import EntregaError\n"
            "try:\n    import entrega.targets.ssh\n"
            "except EntregaError as exc:\n    print(exc)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "needs asyncssh, which is not installed (pip install 'entrega[ssh]')" \
        in result.stdout


async def test_a_client_key_the_host_does_not_authorize_is_a_refused_login(
        test_fleet: TestFleet, tmp_path: Path) -> None:
    keygen(tmp_path / "stranger", "stranger")
    async with fleet_of(test_fleet) as trusted:
        settings = dataclasses.replace(trusted.settings, identity_file=tmp_path / "stranger")
    async with Fleet(trusted.hosts, settings) as fleet:
        with pytest.raises(TargetError) as refused:
            await fleet.run(fleet.hosts[0], "true")
    assert not isinstance(refused.value, TargetUnreachable)
    assert "host1" in str(refused.value) and "refused the login of user" in str(refused.value)

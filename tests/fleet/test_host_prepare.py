"""`entrega host prepare`: this installation's host agent onto every host, by content
(sent once), checked by running it there; a host that cannot take it is named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from entrega.cli.main import app
from entrega.releases.artifacts import tree_digest
from entrega.targets.ssh import hostside
from entrega.targets.ssh.agent import agent_bundle
from tests.fleet.hosts import TestFleet
from tests.fleet.test_host_check import write_config

pytestmark = pytest.mark.real


def prepare(path: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["host", "prepare", "-c", str(path), *args],
                                env={"COLUMNS": "300"})
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout


def test_the_agent_is_sent_once_runs_on_every_host_and_a_lost_host_is_named(
        test_fleet: TestFleet, tmp_path: Path) -> None:
    path = write_config(test_fleet, tmp_path)
    # Sending the agent (a thousand files) takes seconds on a loaded machine; a host that
    # is down refuses the connection at once whatever the timeouts.
    path.write_text(path.read_text().replace("connect_timeout_s: 1", "connect_timeout_s: 10")
                    .replace("command_timeout_s: 2", "command_timeout_s: 60"))
    status, out = prepare(path, "--json")
    assert status == 0, out
    first = json.loads(out)
    assert [(r["host"], r["ok"], r["sent"]) for r in first] == [
        ("host1", True, True), ("host2", True, True), ("host3", True, True)]
    version = agent_bundle()[2]
    assert all(r["agent"] == version for r in first)
    for host, report in zip(test_fleet.hosts, first, strict=True):
        installed = Path(report["agent_path"])
        assert installed.is_relative_to(host.base_dir)
        assert (installed / "entrega" / "dataplane" / "instances" / "hostctl.py").is_file()
        assert not list(installed.rglob("*.so"))  # sources only: the host's Python may differ

    status, out = prepare(path, "--json")
    assert status == 0 and [r["sent"] for r in json.loads(out)] == [False, False, False]

    test_fleet.hosts[1].stop()
    status, out = prepare(path)
    assert status == 1
    assert "already there" in out and "1 of 3 host(s) failed: host2" in out
    assert "Error" not in out and "Traceback" not in out


def test_the_host_checks_the_agent_with_the_controllers_digest() -> None:
    # The host-side helper carries its own copy of the release digest (a host has no
    # entrega): both must agree, or no host would ever accept a release or the agent.
    root, digest, _version = agent_bundle()
    assert hostside.tree_digest(root) == tree_digest(root) == digest

"""`entrega host check` against real sshd hosts: one fine (with a release on it), one cut
off, one whose host key changed; --json and the table, exit status 1 when a host fails."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from entrega.cli.main import app
from entrega.releases.artifacts import tree_digest
from entrega.targets.ssh import sync_release
from tests.fleet.conftest import fleet_of
from tests.fleet.hosts import TestFleet

pytestmark = pytest.mark.real


def write_config(fleet: TestFleet, tmp_path: Path) -> Path:
    hosts = "".join(
        f"        - {{name: {h.name}, address: {h.address}, port: {h.port}, "
        f"base_dir: {h.base_dir}}}\n" for h in fleet.hosts)
    path = tmp_path / "entrega.yaml"
    path.write_text(f"""\
app: shop
run:
  command: "python app.py"
environments:
  - name: production
    target:
      kind: ssh
      hosts:
{hosts}      identity_file: {fleet.identity_file}
      known_hosts: {fleet.known_hosts}
      user: root
      connect_timeout_s: 1
      command_timeout_s: 2
    router: {{kind: embedded, listen: "127.0.0.1:8080"}}
""")
    return path


def check(path: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["host", "check", "-c", str(path), *args],
                                env={"COLUMNS": "300"})
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout


def test_host_check_reports_every_host_and_fails_on_any(test_fleet: TestFleet,
                                                       tmp_path: Path) -> None:
    tree = tmp_path / "v1"
    tree.mkdir()
    (tree / "app.py").write_text("print(1)\n")

    async def deliver() -> None:
        async with fleet_of(test_fleet) as fleet:
            await sync_release(fleet, fleet.hosts[0], app="shop", version="v1",
                               digest=tree_digest(tree), source=tree)

    asyncio.run(deliver())  # the command runs its own event loop, so this test has none
    path = write_config(test_fleet, tmp_path)

    status, out = check(path, "--json")
    assert status == 0
    reports = json.loads(out)
    assert [r["host"] for r in reports] == ["host1", "host2", "host3"]
    assert all(r["ok"] and r["reachable"] and r["host_key_verified"] for r in reports)
    assert reports[0]["releases"] == ["v1"] and reports[0]["releases_dir_exists"]
    assert reports[1]["releases"] == [] and not reports[1]["releases_dir_exists"]
    assert all(r["python"].startswith("3.") and r["free_bytes"] > 0
               and r["base_dir_exists"] for r in reports)

    test_fleet.hosts[1].cut_off()
    test_fleet.hosts[2].change_host_key()
    status, out = check(path, "--json")
    assert status == 1
    one, cut, rekeyed = json.loads(out)
    assert one["ok"] and one["releases"] == ["v1"]
    assert not cut["ok"] and not cut["reachable"] and cut["host_key_verified"] is None
    assert "host2" in cut["error"] and "did not answer within 1 s" in cut["error"]
    assert not rekeyed["ok"] and rekeyed["reachable"] and rekeyed["host_key_verified"] is False
    assert "host3" in rekeyed["error"] and "differs from the one in" in rekeyed["error"]
    assert str(test_fleet.known_hosts) in rekeyed["error"]

    status, out = check(path)
    assert status == 1
    assert "host1" in out and "verified" in out and "v1" in out
    assert "REFUSED" in out and "2 of 3 host(s) failed: host2, host3" in out
    assert "Error" not in out and "Traceback" not in out
    # Why each host failed is a sentence under the table, not squeezed into a column.
    lines = out.splitlines()
    assert any(line.startswith("host2: host host2") for line in lines), out
    assert any(line.startswith("host3: ") for line in lines), out


def test_host_check_needs_an_ssh_environment(tmp_path: Path) -> None:
    path = tmp_path / "entrega.yaml"
    path.write_text("""\
app: shop
run: {command: "python app.py"}
environments:
  - name: staging
    router: {kind: embedded, listen: "127.0.0.1:8080"}
""")
    result = CliRunner().invoke(app, ["host", "check", "-c", str(path)])
    assert result.exit_code == 1
    assert "no environment of this entrega.yaml has target kind: ssh" in str(result.exception)

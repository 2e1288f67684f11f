"""`entrega release create --group` and `entrega group ...` (issue 14), in process (Typer's
CliRunner) against a real HTTP server of three apps (tests/cli/test_team_dora.py's), no
controller running: what the commands send and show, and their errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli.test_team_dora import TeamServer, entrega
from tests.cli.test_team_dora import team as team  # noqa: F401 - the fixture
from tests.insights.team_history import WEB_TEAM

pytestmark = pytest.mark.real  # a real HTTP server on loopback


def build(tmp_path: Path, app: str) -> Path:
    path = tmp_path / "builds" / app
    path.mkdir(parents=True, exist_ok=True)
    (path / "app.py").write_text(f"print({app!r})\n")
    return path


def create(team: TeamServer, tmp_path: Path, name: str = "2026.12.1") -> object:
    return entrega(["release", "create", "--group", name,
                    f"api:v41={build(tmp_path, 'api')}", f"web:v17={build(tmp_path, 'web')}",
                    "-c", str(team.config)])


def test_release_create_group_uploads_each_member_and_creates_the_group(
        team: TeamServer, tmp_path: Path) -> None:
    result = create(team, tmp_path)
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    assert "release group 2026.12.1: api v41, web v17; through staging -> production" \
        in result.output  # type: ignore[attr-defined]
    assert team.plane.service("api").release("v41").version == "v41"
    listed = entrega(["group", "list", "-c", str(team.config)])
    assert listed.exit_code == 0 and "2026.12.1" in listed.output
    shown = entrega(["group", "show", "2026.12.1", "--json", "-c", str(team.config)])
    assert shown.exit_code == 0, shown.output
    view = json.loads(shown.output)
    assert view["phase"] == "pending" and [m["app"] for m in view["members"]] == ["api", "web"]
    table = entrega(["group", "show", "2026.12.1", "-c", str(team.config)])
    assert "api v41" in table.output and "staging" in table.output
    promoted = entrega(["group", "promote", "2026.12.1", "-c", str(team.config)])
    assert promoted.exit_code == 0 and "promote requested" in promoted.output
    aborted = entrega(["group", "abort", "2026.12.1", "-c", str(team.config)])
    assert aborted.exit_code == 0 and "abort requested" in aborted.output
    restored = entrega(["rollback", "--to", "2026.12.1", "-c", str(team.config)])
    assert restored.exit_code == 0, restored.output
    assert "release group 2026.12.1 is being restored in production as group " \
           "2026.12.1-restore-1: api v41, web v17" in restored.output
    unknown = entrega(["rollback", "--to", "2026.12.9", "-c", str(team.config)])
    assert unknown.exit_code == 1 and "no release group named 2026.12.9" in str(
        unknown.exception)


def test_group_commands_say_what_is_wrong(team: TeamServer, tmp_path: Path) -> None:
    bad = entrega(["release", "create", "--group", "2026.12.1", "api-v41",
                   "-c", str(team.config)])
    assert bad.exit_code == 1 and "APP:VERSION=ARTIFACT" in str(bad.exception)
    badname = entrega(["release", "create", "--group", "a/b", "api:v1=x",
                       "-c", str(team.config)])
    assert badname.exit_code == 1 and "invalid version" in str(badname.exception)
    for command in (["group", "show", "nope"], ["group", "promote", "nope"],
                    ["group", "abort", "nope"]):
        result = entrega([*command, "-c", str(team.config)])
        assert result.exit_code == 1
        assert "no release group named nope" in str(result.exception)
    assert create(team, tmp_path).exit_code == 0  # type: ignore[attr-defined]
    refused = entrega(["group", "show", "2026.12.1", "-c", str(team.config)], token=WEB_TEAM)
    assert refused.exit_code == 1 and "not api" in str(refused.exception)
    empty = entrega(["group", "list", "--json", "-c", str(team.config)], token=WEB_TEAM)
    assert empty.exit_code == 0 and json.loads(empty.output) == []

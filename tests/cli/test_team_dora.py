"""`entrega dora` with a file of several apps (issue 14): the team's table and each app's
line, `--json` as the API answers, `--app NAME` one app's figures as before.

The CLI runs in process (Typer's CliRunner) against a real HTTP server of three apps
(uvicorn on a loopback port, one store, rollouts recorded as the controller records
them), found by the file's ``server.listen`` as a user's shell finds it."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from typer.testing import CliRunner

from entrega.api.app import create_app
from entrega.cli.main import app as cli_app
from entrega.config.apps import load_apps
from entrega.net import free_port
from entrega.plane import ControlPlane, build_plane
from entrega.waiting import wait_until_sync
from tests.insights.team_history import ADMIN, WEB_TEAM, apps_file, seed_team

pytestmark = pytest.mark.real  # a real HTTP server on loopback


@dataclass
class TeamServer:
    config: Path
    url: str
    plane: ControlPlane


@pytest.fixture
def team(tmp_path: Path) -> Iterator[TeamServer]:
    port = free_port()
    path = tmp_path / "entrega.yaml"
    path.write_text(apps_file(listen=f"127.0.0.1:{port}",
                              routers=(free_port(), free_port(), free_port(), free_port())))
    plane, store = build_plane(load_apps(path))
    for service in plane:
        service.repo.sync_app(service.app, [e.name for e in service.config.environments])
    seed_team(plane)
    server = uvicorn.Server(uvicorn.Config(create_app(plane), host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()

    def started() -> bool:
        if not thread.is_alive():
            raise AssertionError("the API did not start")
        return server.started

    if not wait_until_sync(started, timeout_s=20):
        raise AssertionError("the API did not start")
    try:
        yield TeamServer(path, f"http://127.0.0.1:{port}", plane)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        store.close()


def entrega(args: list[str], *, token: str = ADMIN, **env: str) -> Any:
    """`entrega ARGS` in process, the server found as a user's shell finds it."""
    return CliRunner().invoke(cli_app, args, env={"ENTREGA_TOKEN": token, "COLUMNS": "200",
                                                  "ENTREGA_SERVER": "", "ENTREGA_APP": "",
                                                  **env})


def rows(output: str) -> list[list[str]]:
    return [line.split() for line in output.splitlines()]


def test_a_file_of_several_apps_shows_the_team_and_each_app(team: TeamServer) -> None:
    result = entrega(["dora", "-c", str(team.config), "--days", "30"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert ("DORA team of 3 apps, last 30 days: 4 deployments (a release group counts "
            "once)") in out
    assert ["deployment", "frequency", "0.10/day", "medium", "3"] in rows(out)
    assert ["change", "failure", "rate", "25.0%", "medium", "4"] in rows(out)
    assert "failed: api a2 (rolled_back)" in out
    lines = {r[0]: r for r in rows(out) if r and r[0] in ("api", "web", "worker")}
    assert lines["api"][1:5] == ["production", "2", "0.03/day", "medium"]
    assert lines["web"][1:5] == ["production", "1", "0.03/day", "medium"]
    assert lines["worker"][1:5] == ["live", "1", "0.03/day", "medium"]
    assert "50.0% low" in " ".join(lines["api"])  # api's own change failure rate


def test_json_is_the_apis_answer(team: TeamServer) -> None:
    result = entrega(["dora", "--json", "-c", str(team.config)])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert list(data["apps"]) == ["api", "web", "worker"]
    assert data["team"]["deployments"] == 4
    assert data["apps"]["worker"]["environment"] == "live"


def test_one_app_named_shows_its_own_figures(team: TeamServer) -> None:
    for args in (["dora", "--app", "web"], ["--app", "web", "dora"]):
        result = entrega([*args, "-c", str(team.config)])
        assert result.exit_code == 0, result.output
        assert "DORA production, last 90 days: 1 deployments" in result.stdout
        assert "team" not in result.stdout
    data = json.loads(entrega(["dora", "--app", "api", "--json", "-c",
                               str(team.config)]).stdout)
    assert data["environment"] == "production" and data["deployments"] == 2


def test_a_token_limited_to_an_app_sees_its_team_of_one(team: TeamServer) -> None:
    result = entrega(["dora", "-c", str(team.config)], token=WEB_TEAM)
    assert result.exit_code == 0, result.output
    assert "team of 1 apps" in result.stdout
    assert [r[0] for r in rows(result.stdout) if r and r[0] in ("api", "web", "worker")] \
        == ["web"]


def test_without_a_file_the_servers_answer_says_it_is_the_teams(team: TeamServer,
                                                                tmp_path: Path) -> None:
    result = entrega(["dora", "-c", str(tmp_path / "nowhere.yaml")],
                     ENTREGA_SERVER=team.url)
    assert result.exit_code == 0, result.output
    assert "DORA team of 3 apps" in result.stdout


def test_an_environment_no_app_has_is_refused(team: TeamServer) -> None:
    result = entrega(["dora", "--env", "nowhere", "-c", str(team.config)])
    assert result.exit_code == 1
    assert str(result.exception) == ("no app has an environment named 'nowhere' "
                                     "(environments: live, production, staging; or leave "
                                     "it out: each app's last environment)")
    assert "Error" not in result.output

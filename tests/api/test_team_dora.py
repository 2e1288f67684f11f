"""The team's DORA at the server's own routes (issue 14): `GET /api/v1/dora` of a server
of several apps over every app the caller may see, each app's own figures beside, and a
single-app server's `/api/v1/dora` unchanged.

In process: the real loader, one store for every app, rollouts recorded in it as the
controller records them, the whole HTTP surface through FastAPI's TestClient."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from entrega.api.app import create_app
from entrega.config.apps import load_apps
from entrega.plane import ControlPlane, build_plane
from entrega.rollouts.model import Phase
from tests.api.conftest import Api
from tests.insights.team_history import ADMIN, WEB_TEAM, apps_file, deliver, seed_team

#: what differs between two reports read a moment apart
MOMENT = ("since", "until")


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[ControlPlane]:
    (tmp_path / "entrega.yaml").write_text(apps_file())
    built, store = build_plane(load_apps(tmp_path / "entrega.yaml"))
    for service in built:
        service.repo.sync_app(service.app, [e.name for e in service.config.environments])
    seed_team(built)
    yield built
    store.close()


@pytest.fixture
def client(plane: ControlPlane) -> Iterator[TestClient]:
    with TestClient(create_app(plane), raise_server_exceptions=False) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def without_moment(report: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in report.items() if k not in MOMENT}


def test_the_teams_four_keys_over_every_app(client: TestClient) -> None:
    answer = client.get("/api/v1/dora?days=30", headers=bearer(ADMIN))
    assert answer.status_code == 200, answer.text
    data = answer.json()
    team = data["team"]
    # a1, a2 (rolled back) of api in production, w1 of web, k1 of worker in live
    assert team["deployments"] == 4
    assert team["deployment_frequency"]["value"] == pytest.approx(3 / 30)
    assert team["deployment_frequency"]["tier"] == "medium"
    assert team["change_failure_rate"]["value"] == pytest.approx(1 / 4)
    assert team["change_failure_rate"]["tier"] == "medium"
    # commits 2 h, 30 min and 10 min before their releases reached 100% (just now)
    assert team["lead_time"]["value"] == pytest.approx(1800, abs=60)
    assert team["lead_time"]["tier"] == "elite"
    assert team["failures"] == [{"releases": {"api": "a2"}, "group": None,
                                 "how": "rolled_back",
                                 "recovery_s": team["failures"][0]["recovery_s"]}]
    assert list(data["apps"]) == ["api", "web", "worker"]
    assert [data["apps"][a]["environment"] for a in data["apps"]] == \
        ["production", "production", "live"]
    # each app's figures are its own report, field for field
    for app in ("api", "web", "worker"):
        own = client.get(f"/api/v1/apps/{app}/dora?days=30", headers=bearer(ADMIN)).json()
        assert without_moment(data["apps"][app]) == without_moment(own)
    assert client.get("/api/v1/team/dora?days=30", headers=bearer(ADMIN)).json()["team"] \
        == team


def test_a_token_limited_to_apps_sees_the_team_of_those_apps(client: TestClient) -> None:
    data = client.get("/api/v1/dora", headers=bearer(WEB_TEAM)).json()
    assert list(data["apps"]) == ["web"]
    assert data["team"]["deployments"] == 1 and data["team"]["failures"] == []


def test_one_environment_for_every_app_that_has_it(client: TestClient,
                                                   plane: ControlPlane) -> None:
    data = client.get("/api/v1/dora?environment=staging", headers=bearer(ADMIN)).json()
    assert list(data["apps"]) == ["api"]
    assert data["team"]["deployments"] == 1
    deliver(plane.service("web"), "w2", "production", Phase.SUCCEEDED, from_version="w1")
    data = client.get("/api/v1/dora?environment=production", headers=bearer(ADMIN)).json()
    assert list(data["apps"]) == ["api", "web"] and data["team"]["deployments"] == 4


@pytest.mark.parametrize(("path", "token", "status", "words"), [
    ("/api/v1/dora?environment=nowhere", ADMIN, 400,
     "no app has an environment named 'nowhere'"),
    # web's token may not learn that api has a staging environment
    ("/api/v1/dora?environment=staging", WEB_TEAM, 400,
     "no app has an environment named 'staging'"),
    ("/api/v1/dora?days=0", ADMIN, 400, "days must be between 0 and 3660"),
    ("/api/v1/team/dora?days=nan", ADMIN, 400, "days must be between 0 and 3660"),
    ("/api/v1/dora", None, 401, "this needs a token"),
    ("/api/v1/team/dora", "ent_nobody", 401, ""),
], ids=["unknown-environment", "environment-of-an-app-not-seen", "days-zero", "days-nan",
        "no-token", "unknown-token"])
def test_bad_requests_say_what_is_wrong(client: TestClient, path: str, token: str | None,
                                        status: int, words: str) -> None:
    answer = client.get(path, headers=bearer(token) if token else {})
    assert answer.status_code == status, answer.text
    assert words in answer.json()["error"]
    assert "Error" not in answer.text and "/src/" not in answer.text
    if token == WEB_TEAM:
        assert "hint" in answer.json() and "staging" not in answer.json()["hint"]


def test_a_single_app_server_keeps_its_dora_and_answers_the_teams(api: Api) -> None:
    deliver(api.service, "v1", "production", Phase.SUCCEEDED)
    own = api.client.get("/api/v1/dora", headers=api.deployer())
    assert own.status_code == 200
    assert own.json()["environment"] == "production" and "team" not in own.json()
    team = api.client.get("/api/v1/team/dora", headers=api.deployer())
    assert team.status_code == 200, team.text
    assert list(team.json()["apps"]) == ["shop"]
    assert team.json()["team"]["deployments"] == own.json()["deployments"] == 1
    assert without_moment(team.json()["apps"]["shop"]) == without_moment(own.json())

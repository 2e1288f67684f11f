"""One server, several apps (issue 14): each app's API under /api/v1/apps/<app>, the
server's own overview, tokens limited to apps, and a single-app server unchanged.

In process: the real loader (config/apps.py), one store for every app, the whole HTTP
surface (api/apps.py's dispatch) through FastAPI's TestClient."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from entrega.api.app import create_app
from entrega.config.apps import load_apps
from entrega.plane import ControlPlane, build_plane
from tests.api.conftest import multipart, tarball

ADMIN, WEB_TEAM = "ent_admin_token", "ent_web_team_token"
SECRET = "many-apps-secret"


def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


FILE = f"""\
server: {{listen: "127.0.0.1:7998"}}
auth:
  webhook_secret_env: ENTREGA_TEST_MANY_SECRET
  tokens:
    admin: {{role: admin, sha256: {sha(ADMIN)}}}
    web-team: {{role: deployer, sha256: {sha(WEB_TEAM)}, apps: [web]}}
apps:
  - app: api
    run: {{command: "python app.py"}}
    environments:
      - name: staging
        router: {{kind: embedded, listen: "127.0.0.1:18101"}}
      - name: production
        router: {{kind: embedded, listen: "127.0.0.1:18102"}}
  - app: web
    depends_on: [api]
    run: {{command: "python app.py"}}
    environments:
      - name: production
        router: {{kind: embedded, listen: "127.0.0.1:18103"}}
apps_dir: more
"""

WORKER = """\
app: worker
run: {command: "python worker.py"}
environments:
  - name: production
    router: {kind: embedded, listen: "127.0.0.1:18104"}
"""


@pytest.fixture
def plane(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ControlPlane]:
    monkeypatch.setenv("ENTREGA_TEST_MANY_SECRET", SECRET)
    (tmp_path / "more").mkdir()
    (tmp_path / "more" / "worker.yaml").write_text(WORKER)
    (tmp_path / "entrega.yaml").write_text(FILE)
    apps = load_apps(tmp_path / "entrega.yaml")
    built, store = build_plane(apps)
    for service in built:
        service.repo.sync_app(service.app, [e.name for e in service.config.environments])
    yield built
    store.close()


@pytest.fixture
def client(plane: ControlPlane) -> Iterator[TestClient]:
    with TestClient(create_app(plane), raise_server_exceptions=False) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_each_app_answers_under_its_own_prefix(client: TestClient) -> None:
    for app, environments in (("api", ["staging", "production"]), ("web", ["production"]),
                              ("worker", ["production"])):
        answer = client.get(f"/api/v1/apps/{app}/status", headers=bearer(ADMIN))
        assert answer.status_code == 200, answer.text
        assert answer.json()["app"] == app
        assert [e["name"] for e in answer.json()["environments"]] == environments
    # the same under /apps/<app>/api/v1 (the prefix the app's pages and routers use)
    assert client.get("/apps/web/api/v1/status", headers=bearer(ADMIN)).json()["app"] == "web"
    health = client.get("/healthz").json()
    assert health["ok"] is True and health["apps"] == ["api", "web", "worker"]


def test_an_api_path_that_names_no_app_says_how_to_name_one(client: TestClient) -> None:
    answer = client.get("/api/v1/status", headers=bearer(ADMIN))
    assert answer.status_code == 404
    assert "api, web, worker" in answer.json()["error"] and "--app" in answer.json()["hint"]
    unknown = client.get("/api/v1/apps/shop/status", headers=bearer(ADMIN))
    assert unknown.status_code == 404 and "api, web, worker" in unknown.text


def test_the_overview_lists_the_apps_a_token_may_see(client: TestClient) -> None:
    every = client.get("/api/v1/apps", headers=bearer(ADMIN))
    assert every.status_code == 200
    assert [a["app"] for a in every.json()["apps"]] == ["api", "web", "worker"]
    limited = client.get("/api/v1/apps", headers=bearer(WEB_TEAM)).json()
    assert [a["app"] for a in limited["apps"]] == ["web"]


def test_a_token_limited_to_apps_is_refused_elsewhere(client: TestClient) -> None:
    assert client.get("/api/v1/apps", headers=bearer("ent_nobody")).status_code == 401
    assert client.get("/api/v1/apps").status_code == 401
    assert client.get("/api/v1/apps/web/status", headers=bearer(WEB_TEAM)).status_code == 200
    refused = client.post("/api/v1/apps/api/environments/production/abort",
                          headers=bearer(WEB_TEAM))
    assert refused.status_code == 403
    assert refused.json()["error"] == ("web-team's token is limited to the apps web, "
                                       "not api")
    assert client.get("/api/v1/apps/api/releases",
                      headers=bearer(WEB_TEAM)).status_code == 403


def test_the_webhook_creates_the_release_of_the_app_it_names(
        client: TestClient, plane: ControlPlane) -> None:
    body, content_type = multipart({"version": "v41"}, tarball({"app.py": b"print(1)\n"}))
    signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    answer = client.post("/api/v1/apps/api/releases", content=body,
                         headers={"Content-Type": content_type,
                                  "X-Entrega-Signature-256": signature})
    assert answer.status_code == 201, answer.text
    assert [r.version for r in plane.service("api").repo.releases("api")] == ["v41"]
    assert plane.service("web").repo.releases("web") == []


def test_metrics_name_each_family_once_with_a_sample_per_app(client: TestClient,
                                                             plane: ControlPlane) -> None:
    for service in plane:
        service.repo.add_event(app=service.app, environment="production",
                               kind="rolled_back", actor="test", message="test")
    text = client.get("/metrics", headers=bearer(ADMIN)).text
    assert text.count("# TYPE entrega_rollbacks") == 1, text
    for app in ("api", "web", "worker"):
        assert f'entrega_rollbacks_total{{app="{app}",environment="production"}} 1.0' in text
    limited = client.get("/metrics", headers=bearer(WEB_TEAM)).text
    assert 'app="web"' in limited and 'app="api"' not in limited


def test_a_single_app_server_answers_both_ways(make_api) -> None:  # type: ignore[no-untyped-def]
    api = make_api()
    headers = api.deployer()
    old = api.client.get("/api/v1/status", headers=headers)
    new = api.client.get("/api/v1/apps/shop/status", headers=headers)
    assert old.status_code == new.status_code == 200 and old.json() == new.json()
    assert api.client.get("/healthz").json()["apps"] == ["shop"]
    overview = api.client.get("/api/v1/apps", headers=headers).json()
    assert [a["app"] for a in overview["apps"]] == ["shop"]


def upload(client: TestClient, app: str, version: str) -> None:
    body, content_type = multipart({"version": version, "deploy": "false"},
                                   tarball({"app.py": f"print('{app}')\n".encode()}))
    answer = client.post(f"/api/v1/apps/{app}/releases", content=body,
                         headers={"Content-Type": content_type, **bearer(ADMIN)})
    assert answer.status_code == 201, answer.text


GROUP = {"name": "2026.12.1", "members": [{"app": "api", "version": "v41"},
                                          {"app": "web", "version": "v17"}]}


def test_a_group_is_created_by_a_deployer_allowed_on_every_member(
        client: TestClient) -> None:
    missing = client.post("/api/v1/groups", json=GROUP, headers=bearer(ADMIN))
    assert missing.status_code == 404 and "no release v41 of api" in missing.json()["error"]
    upload(client, "api", "v41")
    upload(client, "web", "v17")
    refused = client.post("/api/v1/groups", json=GROUP, headers=bearer(WEB_TEAM))
    assert refused.status_code == 403 and "not api" in refused.json()["error"]
    created = client.post("/api/v1/groups", json=GROUP, headers=bearer(ADMIN))
    assert created.status_code == 201, created.text
    view = created.json()
    assert view["phase"] == "pending" and view["environments"] == ["staging", "production"]
    assert [m["app"] for m in view["members"]] == ["api", "web"]
    again = client.post("/api/v1/groups", json=GROUP, headers=bearer(ADMIN))
    assert again.status_code == 409 and "exists already" in again.json()["error"]
    one = client.post("/api/v1/groups", json={"name": "x", "members": GROUP["members"][:1]},
                      headers=bearer(ADMIN))
    assert one.status_code == 422
    nowhere = client.post("/api/v1/groups", headers=bearer(ADMIN), json={
        "name": "2026.12.2", "members": [*GROUP["members"], {"app": "shop", "version": "1"}]})
    assert nowhere.status_code == 404 and "no app named 'shop'" in nowhere.json()["error"]


def test_the_webhook_signs_a_group_as_it_signs_an_upload(client: TestClient) -> None:
    upload(client, "api", "v41")
    upload(client, "web", "v17")
    body = json.dumps(GROUP).encode()
    signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    forged = client.post("/api/v1/groups", content=body, headers={
        "Content-Type": "application/json", "X-Entrega-Signature-256": "sha256=00"})
    assert forged.status_code == 401
    signed = client.post("/api/v1/groups", content=body, headers={
        "Content-Type": "application/json", "X-Entrega-Signature-256": signature})
    assert signed.status_code == 201 and signed.json()["created_by"] == "ci"


def test_groups_are_read_and_driven_by_whoever_may_see_every_member(
        client: TestClient) -> None:
    upload(client, "api", "v41")
    upload(client, "web", "v17")
    assert client.post("/api/v1/groups", json=GROUP, headers=bearer(ADMIN)).status_code == 201
    assert [g["name"] for g in client.get("/api/v1/groups", headers=bearer(ADMIN)).json()] \
        == ["2026.12.1"]
    assert client.get("/api/v1/groups", headers=bearer(WEB_TEAM)).json() == []
    assert client.get("/api/v1/groups/2026.12.1", headers=bearer(WEB_TEAM)).status_code == 403
    shown = client.get("/api/v1/groups/2026.12.1", headers=bearer(ADMIN))
    assert shown.status_code == 200 and shown.json()["name"] == "2026.12.1"
    assert client.get("/api/v1/groups/nope", headers=bearer(ADMIN)).status_code == 404
    promoted = client.post("/api/v1/groups/2026.12.1/promote", headers=bearer(ADMIN))
    assert promoted.status_code == 200
    assert client.post("/api/v1/groups/2026.12.1/abort",
                       headers=bearer(WEB_TEAM)).status_code == 403
    aborted = client.post("/api/v1/groups/2026.12.1/abort", headers=bearer(ADMIN))
    assert aborted.status_code == 200 and aborted.json()["name"] == "2026.12.1"
    assert client.post("/api/v1/groups/nope/promote", headers=bearer(ADMIN)).status_code == 404
    restored = client.post("/api/v1/groups/2026.12.1/restore", json={}, headers=bearer(ADMIN))
    assert restored.status_code == 201, restored.text
    assert restored.json()["name"] == "2026.12.1-restore-1"
    assert restored.json()["environments"] == ["production"]
    # callers go back first: web before the api it calls
    assert [m["depends_on"] for m in restored.json()["members"]] == [["web"], []]
    nowhere = client.post("/api/v1/groups/2026.12.1/restore", json={"environment": "qa"},
                          headers=bearer(ADMIN))
    assert nowhere.status_code == 404 and "never went to qa" in nowhere.json()["error"]
    assert client.post("/api/v1/groups/2026.12.1/restore", json={},
                       headers=bearer(WEB_TEAM)).status_code == 403

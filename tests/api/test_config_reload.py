"""POST /api/v1/config/reload in process: an admin reloads entrega.yaml; live changes
apply at once (a removed token is refused from the next request), a file with a mistake
is refused with its file:line (never the server's path) and changes nothing."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from entrega.api.app import create_app
from entrega.config import load_config
from entrega.server import build_service
from entrega.service import Service

TOKENS = {"admin": "ent_admin_token", "deployer": "ent_deployer_token",
          "viewer": "ent_viewer_token"}

CONFIG = """\
app: shop
server: {{listen: "127.0.0.1:7999"}}
run:
  command: "python app.py"
environments:
  - name: production
    router: {{kind: embedded, listen: "127.0.0.1:18080"}}
    analysis:
      error-rate: {{judge: sequential, max_increase: 0.002}}
auth:
  tokens:
{tokens}
"""


def write(path: Path, *, roles: tuple[str, ...] = ("admin", "deployer", "viewer"),
          max_increase: str = "0.002") -> None:
    tokens = "\n".join(
        f"    {role}: {{role: {role}, sha256: {hashlib.sha256(TOKENS[role].encode()).hexdigest()}}}"
        for role in roles)
    path.write_text(CONFIG.format(tokens=tokens).replace("0.002", max_increase))


def headers(role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[role]}"}


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, Service, TestClient]]:
    path = tmp_path / "entrega.yaml"
    write(path)
    service, store = build_service(load_config(path), config_file=path)
    service.repo.sync_app("shop", ["production"])
    with TestClient(create_app(service), raise_server_exceptions=False) as client:
        yield path, service, client
    store.close()


def test_an_admin_reloads_and_live_changes_apply_at_once(
        served: tuple[Path, Service, TestClient]) -> None:
    path, service, client = served
    write(path, roles=("admin", "deployer"), max_increase="0.05")
    assert client.get("/api/v1/status", headers=headers("viewer")).status_code == 200

    answer = client.post("/api/v1/config/reload", headers=headers("admin"))

    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert [c["path"] for c in body["applied"]] == [
        "auth.tokens.viewer", "environments[production].analysis.error-rate.max_increase"]
    assert body["applied"][1] == {
        "path": "environments[production].analysis.error-rate.max_increase",
        "environment": "production", "before": "0.002", "after": "0.05"}
    assert body["applied"][0]["before"] is None  # a token's digest is never shown
    assert body["waiting"] == [] and body["needs_restart"] == []
    assert body["message"].startswith("applied auth.tokens.viewer, ")
    # one running config: the service and the controller see the same new values
    assert service.config.environment("production").metric("error-rate").max_increase == 0.05
    assert service.controller.runtimes["production"].config.metric(
        "error-rate").max_increase == 0.05
    # the removed token is refused from the next request on
    refused = client.get("/api/v1/status", headers=headers("viewer"))
    assert refused.status_code == 401
    assert refused.json()["error"].startswith("the token is not valid")
    events = client.get("/api/v1/history", headers=headers("admin")).json()
    assert events[0]["kind"] == "config_reloaded" and events[0]["actor"] == "admin"


def test_reloading_needs_an_admin_and_a_bad_file_is_refused_with_its_line(
        served: tuple[Path, Service, TestClient]) -> None:
    path, service, client = served
    denied = client.post("/api/v1/config/reload", headers=headers("deployer"))
    assert denied.status_code == 403
    assert denied.json()["error"] == "deployer is a deployer; this needs admin"

    good = path.read_text()
    path.write_text(good.replace("max_increase: 0.002", "max_increase: -1"))
    refused = client.post("/api/v1/config/reload", headers=headers("admin"))

    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error.startswith("entrega.yaml:9: environments[0].analysis.error-rate."
                            "max_increase: Input should be greater than or equal to 0")
    assert str(path.parent) not in error
    assert service.config.environment("production").metric("error-rate").max_increase == 0.002
    events = client.get("/api/v1/history", headers=headers("admin")).json()
    assert events[0]["kind"] == "config_refused"
    assert "the running configuration stays: entrega.yaml:9:" in events[0]["message"]

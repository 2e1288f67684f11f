"""A two-environment delivery (staging, then production behind a manual gate, with a
canary and an analysis step) served in process by FastAPI's TestClient, for the API's
commands and reads. No controller loop runs: a test records what the controller would
(rollout phases, analysis windows, gate requests) through the repository, so each answer
of the API can be checked on its own."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from entrega.api.app import create_app
from entrega.config import load_config
from entrega.rollouts.model import Phase, initial_state, state_to_dict
from entrega.server import build_service
from entrega.service import Service
from entrega.store.models import Rollout

TOKENS = {"viewer": "ent_viewer_token", "deployer": "ent_deployer_token",
          "admin": "ent_admin_token"}

CONFIG = """\
app: shop
server: {{listen: "127.0.0.1:7999"}}
run:
  command: "python app.py"
environments:
  - name: staging
    router: {{kind: embedded, listen: "127.0.0.1:18081"}}
  - name: production
    router: {{kind: embedded, listen: "127.0.0.1:18080"}}
    gate: manual
    strategy:
      canary:
        steps:
          - weight: 20
          - analysis: {{metrics: [error-rate], duration_s: 30}}
          - weight: 100
auth:
  tokens:
{tokens}
"""


@dataclass
class Delivery:
    service: Service
    client: TestClient

    @property
    def repo(self) -> Any:
        return self.service.repo

    def headers(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {TOKENS[role]}"}

    def get(self, path: str, role: str = "viewer", **params: Any) -> Any:
        return self.client.get(path, params=params, headers=self.headers(role))

    def post(self, path: str, body: Any = None, role: str = "deployer") -> Any:
        return self.client.post(path, json=body, headers=self.headers(role))

    def release(self, version: str) -> None:
        self.repo.add_release(app="shop", version=version,
                              digest="sha256:" + version.encode().hex().ljust(64, "0"),
                              artifact_path="/nonexistent", actor="ci", meta={})

    def active(self, environment: str) -> Rollout:
        row = self.repo.active_rollout("shop", environment)
        assert row is not None, f"no rollout in progress in {environment}"
        return row

    def play(self, environment: str, phase: Phase, message: str = "",
             events: tuple[tuple[str, str], ...] = ()) -> Rollout:
        """Record the active rollout of ``environment`` entering ``phase``, as the
        controller does (a terminal phase makes the new release current)."""
        row = self.active(environment)
        begun = initial_state(stable=row.from_version, canary=row.version, now=time.time())
        weights = {row.version: 100} if phase == Phase.SUCCEEDED else \
            ({row.from_version: 100} if row.from_version else {})
        state = {**state_to_dict(begun), "phase": phase.value, "message": message,
                 "weights": weights}
        self.repo.save_transition(row.id, state=state, phase=phase.value,
                                  events=[(k, m, {}) for k, m in events], actor="controller",
                                  current_version=row.version,
                                  set_current=phase == Phase.SUCCEEDED)
        return row

    def live(self, environment: str, version: str) -> None:
        """``version`` deployed to ``environment`` and promoted."""
        response = self.post(f"/api/v1/environments/{environment}/deploy",
                             {"version": version})
        assert response.status_code == 201, response.text
        self.play(environment, Phase.SUCCEEDED, f"{version} is live",
                  (("promoted", f"{version} promoted"),))


def make_delivery(tmp_path: Path) -> Delivery:
    path = tmp_path / "entrega.yaml"
    tokens = "\n".join(f"    {role}: {{role: {role}, sha256: "
                       f"{hashlib.sha256(token.encode()).hexdigest()}}}"
                       for role, token in TOKENS.items())
    path.write_text(CONFIG.format(tokens=tokens))
    config = load_config(path)
    service, _store = build_service(config)
    service.repo.sync_app(config.app, [e.name for e in config.environments])
    return Delivery(service, TestClient(create_app(service), raise_server_exceptions=False))

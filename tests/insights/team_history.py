"""A server of several apps and a history of their deployments, for the team's DORA
tests of the API (tests/api) and of the CLI (tests/cli).

Rollouts are recorded as the controller records them (release, rollout, first traffic,
the final transition), in the real store; no controller runs."""

from __future__ import annotations

import hashlib
import time

from entrega.plane import ControlPlane
from entrega.rollouts.model import Phase, RolloutSpec, spec_to_dict
from entrega.service import Service
from tests.insights.stack import state

ADMIN, WEB_TEAM = "ent_team_admin_token", "ent_team_web_token"


def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def apps_file(*, listen: str = "127.0.0.1:7997", routers: tuple[int, ...] = (
        18111, 18112, 18113, 18114)) -> str:
    """api (staging, production), web (production) and worker (its last stage named
    ``live``: apps need not name their stages alike); a token limited to web."""
    a, b, c, d = routers
    return f"""\
server: {{listen: "{listen}"}}
auth:
  tokens:
    admin: {{role: admin, sha256: {sha(ADMIN)}}}
    web-team: {{role: viewer, sha256: {sha(WEB_TEAM)}, apps: [web]}}
apps:
  - app: api
    run: {{command: "python app.py"}}
    environments:
      - name: staging
        router: {{kind: embedded, listen: "127.0.0.1:{a}"}}
      - name: production
        router: {{kind: embedded, listen: "127.0.0.1:{b}"}}
  - app: web
    run: {{command: "python app.py"}}
    environments:
      - name: production
        router: {{kind: embedded, listen: "127.0.0.1:{c}"}}
  - app: worker
    run: {{command: "python worker.py"}}
    environments:
      - name: live
        router: {{kind: embedded, listen: "127.0.0.1:{d}"}}
"""


def deliver(service: Service, version: str, environment: str, outcome: Phase, *,
            from_version: str | None = None, commit_age_s: float = 3600.0) -> None:
    """One rollout of a new release of ``service``'s app, from its first traffic to
    ``outcome`` (succeeded: at 100%; rolled_back: back to ``from_version``)."""
    repo, app = service.repo, service.app
    if repo.release(app, version) is None:
        repo.add_release(app=app, version=version, digest="sha256:" + "0" * 64,
                         artifact_path="/nonexistent", actor="ci",
                         meta={"commit_time": time.time() - commit_age_s})
    rollout = repo.create_rollout(app=app, environment=environment, version=version,
                                  from_version=from_version, strategy="direct",
                                  spec=spec_to_dict(RolloutSpec(strategy="direct")),
                                  state=state(from_version, version, Phase.STARTING),
                                  actor="ci", reason="")
    repo.add_event(app=app, environment=environment, version=version, rollout_id=rollout.id,
                   kind="traffic", actor="controller", message=f"router now sends {version}",
                   data={"weights": {version: 100}})
    promoted = outcome == Phase.SUCCEEDED
    weights = {version: 100} if promoted else ({from_version: 100} if from_version else {})
    repo.save_transition(rollout.id, state=state(from_version, version, outcome, "", weights),
                         phase=outcome.value, events=[], actor="controller",
                         current_version=version if promoted else from_version,
                         set_current=True)


def seed_team(plane: ControlPlane) -> None:
    """api: a1 promoted and a2 rolled back in production, a1 in staging; web: w1
    promoted; worker: k1 promoted in ``live``. The team in each app's last environment:
    4 deployments, 3 promoted, 1 failed."""
    api, web, worker = (plane.service(n) for n in ("api", "web", "worker"))
    deliver(api, "a1", "staging", Phase.SUCCEEDED, commit_age_s=7200)
    deliver(api, "a1", "production", Phase.SUCCEEDED)
    deliver(api, "a2", "production", Phase.ROLLED_BACK, from_version="a1")
    deliver(web, "w1", "production", Phase.SUCCEEDED, commit_age_s=1800)
    deliver(worker, "k1", "live", Phase.SUCCEEDED, commit_age_s=600)

"""An in-process entrega (store, service, API with the insights router) and a seeded
history, shared by the feedback, insights and web tests."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from entrega.api.app import create_app
from entrega.api.http import http_server
from entrega.auth import Authenticator
from entrega.config import load_config
from entrega.feedback import FeedbackSettings
from entrega.net import free_port
from entrega.rollouts.model import (
    Phase,
    RolloutSpec,
    initial_state,
    spec_to_dict,
    state_to_dict,
)
from entrega.routers.base import LATENCY_BUCKETS_MS
from entrega.server import build_service
from entrega.service import Service
from entrega.store.insights_repository import InsightsRepository
from entrega.store.models import ReleaseSample
from entrega.waiting import wait_until, wait_until_sync

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
{auth}
"""


def auth_yaml() -> str:
    lines = ["auth:", "  tokens:"]
    for role, token in TOKENS.items():
        lines.append(f"    {role}: {{role: {role}, sha256: "
                     f"{hashlib.sha256(token.encode()).hexdigest()}}}")
    return "\n".join(lines)


@dataclass
class Stack:
    service: Service
    auth: Authenticator
    app: FastAPI
    client: httpx.AsyncClient
    insights: InsightsRepository
    clock: list[float] = field(default_factory=lambda: [time.time()])

    def headers(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {TOKENS[role]}"}


def make_stack(tmp_path: Path, *, tokens: bool = True,
               settings: FeedbackSettings | None = None, store_url: str | None = None) -> Stack:
    """``store_url``: the store's (``store.url``); None, SQLite in the state directory."""
    path = tmp_path / "entrega.yaml"
    store = f"store: {{url: {store_url!r}}}\n" if store_url else ""
    path.write_text(CONFIG.format(auth=auth_yaml() if tokens else "") + store)
    config = load_config(path)
    service, _store = build_service(config)
    service.repo.sync_app(config.app, [e.name for e in config.environments])
    auth = Authenticator(config.auth)
    clock = [time.time()]
    app = create_app(service, auth, feedback=settings, clock=lambda: clock[0])
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                               base_url="http://entrega.test", follow_redirects=False)
    return Stack(service, auth, app, client, InsightsRepository(service.repo.store), clock)


@contextlib.asynccontextmanager
async def served(app: FastAPI, *, header_timeout_s: float = 10.0) -> AsyncIterator[str]:
    """``app`` served on a real loopback port by the server ``entrega server`` runs;
    yields its base URL."""
    port = free_port()
    server = http_server(app, host="127.0.0.1", port=port, header_timeout_s=header_timeout_s)
    task = asyncio.create_task(server.serve())
    if not await wait_until(lambda: server.started or task.done(), timeout_s=10,
                            interval_s=0.01) or not server.started:
        raise AssertionError(f"the API did not start on 127.0.0.1:{port}")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


@contextlib.contextmanager
def served_in_thread(app: FastAPI) -> Iterator[str]:
    """:func:`served`, for sync tests (a browser driven by Playwright's sync API): the
    server runs its own loop in a thread; yields its base URL."""
    port = free_port()
    server = http_server(app, host="127.0.0.1", port=port, header_timeout_s=10)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    if not wait_until_sync(lambda: server.started or not thread.is_alive(), timeout_s=10,
                           interval_s=0.01) or not server.started:
        raise AssertionError(f"the API did not start on 127.0.0.1:{port}")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def buckets_around(ms: float, n: int) -> list[int]:
    """A histogram with ``n`` requests in the bucket holding ``ms``."""
    out = [0] * (len(LATENCY_BUCKETS_MS) + 1)
    index = next((i for i, b in enumerate(LATENCY_BUCKETS_MS) if ms <= b),
                 len(LATENCY_BUCKETS_MS))
    out[index] = n
    return out


def sample(version: str, at: float, requests: int, errors: int, latency_ms: float, *,
           environment: str = "production", router_started_at: float = 0.0,
           weight: int | None = None) -> ReleaseSample:
    return ReleaseSample(time=at, app="shop", environment=environment, version=version,
                         router_started_at=router_started_at, requests=requests,
                         errors_5xx=errors, latency_buckets=buckets_around(latency_ms, requests),
                         latency_sum_ms=latency_ms * requests, inflight=0, weight=weight)


def state(stable: str | None, canary: str, phase: Phase, message: str = "",
          weights: dict[str, int] | None = None) -> dict[str, Any]:
    begun = initial_state(stable=stable, canary=canary, now=time.time())
    return {**state_to_dict(begun), "phase": phase.value, "message": message,
            "weights": weights or {}}


def seed_history(stack: Stack) -> dict[str, Any]:
    """v1 promoted; v2 canary (20% -> 100%) promoted, slower and worse rated than v1;
    traffic samples for both; feedback with a hostile comment."""
    svc, repo = stack.service, stack.service.repo
    now = time.time()
    for version, commit_age_s in (("v1", 7200), ("v2", 3600)):
        repo.add_release(app="shop", version=version, digest="sha256:" + "0" * 64,
                         artifact_path="/nonexistent", actor="ci",
                         meta={"commit_sha": "abc123" + version,
                               "commit_time": now - commit_age_s})
    r1 = repo.create_rollout(app="shop", environment="production", version="v1",
                             from_version=None, strategy="direct",
                             spec=spec_to_dict(RolloutSpec(strategy="direct")),
                             state=state(None, "v1", Phase.STARTING), actor="ci", reason="")
    repo.add_event(app="shop", environment="production", version="v1", rollout_id=r1.id,
                   kind="traffic", actor="controller", message="router now sends v1 100%",
                   data={"weights": {"v1": 100}})
    repo.save_transition(r1.id, state=state(None, "v1", Phase.SUCCEEDED, "v1 is live",
                                            {"v1": 100}),
                         phase="succeeded", events=[("promoted", "v1 promoted", {})],
                         actor="controller", current_version="v1", set_current=True)
    r2 = repo.create_rollout(app="shop", environment="production", version="v2",
                             from_version="v1", strategy="canary",
                             spec=spec_to_dict(RolloutSpec(strategy="canary")),
                             state=state("v1", "v2", Phase.PROGRESSING), actor="ci", reason="")
    for weights in ({"v1": 80, "v2": 20}, {"v2": 100}):
        repo.add_event(app="shop", environment="production", version="v2", rollout_id=r2.id,
                       kind="traffic", actor="controller",
                       message="router now sends " + ", ".join(f"{v} {w}%"
                                                               for v, w in weights.items()),
                       data={"weights": weights})
    repo.save_transition(r2.id, state=state("v1", "v2", Phase.SUCCEEDED, "v2 promoted",
                                            {"v2": 100}),
                         phase="succeeded", events=[("promoted", "v2 promoted", {})],
                         actor="controller", current_version="v2", set_current=True)
    t0 = now - 600
    stack.insights.add_samples(
        [sample("v1", t0 + 10 * i, 200 * (i + 1), 1 * (i + 1), 12, router_started_at=t0 - 5)
         for i in range(30)]
        + [sample("v2", t0 + 300 + 10 * i, 100 * (i + 1), 1 * (i + 1), 40,
                  router_started_at=t0 - 5) for i in range(25)])
    for rating, comment in ((5, "fast!"), (4, None), (5, None), (4, "good"), (5, None),
                            (4, None), (5, None), (5, None), (4, None), (5, None),
                            (5, None), (4, None)):
        stack.insights.add_feedback(app="shop", version="v1", environment="production",
                                    claimed_version=None, rating=rating, comment=comment,
                                    user_id=None, tags=[], client="c1")
    for rating, comment in ((1, "<script>alert('x')</script> so slow"), (2, "slow"),
                            (1, None), (2, None), (1, None), (3, None), (1, None), (2, None),
                            (1, None), (2, None), (1, None), (2, None)):
        stack.insights.add_feedback(app="shop", version="v2", environment="production",
                                    claimed_version=None, rating=rating, comment=comment,
                                    user_id="u-7", tags=["checkout"], client="c2")
    return {"rollouts": (r1.id, r2.id), "now": now, "service": svc}

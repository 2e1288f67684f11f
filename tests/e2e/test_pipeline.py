"""From CI to production through the HTTP API: signed webhooks, staging -> verification ->
production, gates, queueing, rollback to retained releases, notifications. All real: the
server, routers, app processes and a notification receiver are processes and sockets."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import sys
import tarfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from entrega.net import free_port
from tests.e2e.conftest import Deployment, wait_for

pytestmark = [pytest.mark.real, pytest.mark.slow]

SECRET = "s3cret-webhook-key"
TOKENS = {"alice": "ent_alice_token", "root": "ent_root_token", "bob": "ent_bob_token"}

PIPELINE = """\
app: shop
server: {{listen: "127.0.0.1:{server}"}}
auth:
  tokens:
    alice: {{role: deployer, sha256: "{alice}"}}
    root: {{role: admin, sha256: "{root}"}}
    bob: {{role: viewer, sha256: "{bob}"}}
  webhook_secret_env: ENTREGA_TEST_WEBHOOK_SECRET
  max_body_bytes: 1000000
retention: {{keep: {keep}}}
notify:
  - webhook: {{url: "http://127.0.0.1:{hook}/hook", events: [release, verified, promoted,
               rolled_back, failed, approval_needed], max_attempts: 6}}
run:
  command: "{python} app.py"
  health: {{path: /healthz, interval_s: 0.1, healthy_threshold: 2}}
  drain_s: 3
environments:
  - name: staging
    target: {{kind: local, instances: 1}}
    router: {{kind: embedded, listen: "127.0.0.1:{staging}"}}
    strategy: {{canary: {{steps: [{{weight: 100}}]}}}}
    verify:
      - http: {{path: /api/products, expect_status: 200, expect_body: "moka pot"}}
      - command: "{python} -c 'import os, urllib.request; urllib.request.urlopen(os.environ[\\"ENTREGA_URL\\"] + \\"/healthz\\")'"
  - name: production
    gate: {gate}
    target: {{kind: local, instances: 1}}
    router: {{kind: embedded, listen: "127.0.0.1:{production}"}}
    strategy:
{strategy}
"""

FAST_CANARY = """\
      canary:
        steps:
          - weight: 50
          - weight: 100
"""

PAUSED_CANARY = """\
      canary:
        steps:
          - weight: 50
          - pause: {}
          - weight: 100
"""


class Receiver:
    """A notification receiver that fails its first ``fail_first`` calls."""

    def __init__(self, fail_first: int = 2) -> None:
        self.port = free_port()
        self.received: list[dict[str, Any]] = []
        self.calls = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.calls += 1
                status = 500 if receiver.calls <= fail_first else 200
                if status == 200:
                    receiver.received.append(json.loads(body))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def kinds(self, version: str | None = None) -> list[str]:
        return [p["event"] for p in self.received if version in (None, p["version"])]

    def close(self) -> None:
        self.server.shutdown()


class Pipeline(Deployment):
    def __init__(self, root: Path, *, gate: str = "manual", strategy: str = FAST_CANARY,
                 keep: int = 10, receiver: Receiver) -> None:
        super().__init__(root)
        self.staging_port, self.production_port = free_port(), free_port()
        self.router_url = f"http://127.0.0.1:{self.production_port}"
        self.staging_url = f"http://127.0.0.1:{self.staging_port}"
        digests = {n: hashlib.sha256(t.encode()).hexdigest() for n, t in TOKENS.items()}
        self.config.write_text(PIPELINE.format(
            server=self.server_port, staging=self.staging_port,
            production=self.production_port, hook=receiver.port, python=sys.executable,
            gate=gate, strategy=strategy, keep=keep, **digests))
        self.http = httpx.Client(base_url=self.api, timeout=30)

    def call(self, method: str, path: str, token: str | None = "alice",
             **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {TOKENS[token]}"} if token else {}
        return self.http.request(method, path, headers=headers, **kwargs)

    def webhook(self, version: str, *, secret: str | None = SECRET, tamper: bool = False,
                artifact: bytes | None = None, **settings: Any) -> httpx.Response:
        """What a CI job does: multipart upload of a tarball, signed with HMAC-SHA256."""
        data = artifact if artifact is not None else tarball(self.artifact(version, **settings))
        request = self.http.build_request(
            "POST", "/api/v1/releases",
            data={"version": version, "commit_sha": f"sha-{version}",
                  "commit_time": "2026-11-28T12:00:00Z", "ci_url": f"https://ci/{version}"},
            files={"artifact": (f"{version}.tar.gz", data, "application/gzip")})
        body = request.read()
        if secret is not None:
            mac = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
            request.headers["X-Entrega-Signature-256"] = f"sha256={mac}"
        if tamper:
            request = self.http.build_request("POST", "/api/v1/releases",
                                              content=body.replace(b"sha-", b"sha+"),
                                              headers=dict(request.headers))
        return self.http.send(request)

    def upload(self, version: str, token: str = "alice") -> httpx.Response:
        """A deployer's upload (a token, not a signature), without starting the pipeline:
        the bytes go up, as the server reads no path it is handed."""
        return self.call("POST", "/api/v1/releases", token=token,
                         data={"version": version, "deploy": "false"},
                         files={"artifact": (f"{version}.tar.gz",
                                             tarball(self.artifact(version)),
                                             "application/gzip")})

    def stage(self, version: str, env: str) -> str:
        view = self.call("GET", "/api/v1/pipeline").json()
        for release in view["releases"]:
            if release["version"] == version:
                return str(release["environments"][env]["status"])
        return "absent"

    def wait_stage(self, version: str, env: str, stages: set[str], timeout_s: float = 30) -> str:
        return str(wait_for(lambda: (s := self.stage(version, env)) in stages and s,
                            timeout_s, f"{version} in {env} to reach {stages}"))

    def served(self, url: str) -> str:
        return httpx.get(url + "/api/products", timeout=5).headers["x-entrega-release"]


def tarball(directory: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in sorted(directory.iterdir()):
            tar.add(path, arcname=path.name)
    return buffer.getvalue()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver(fail_first=2)
    yield r
    r.close()


@pytest.fixture
def make_pipeline(tmp_path: Path, receiver: Receiver,
                  monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("ENTREGA_TEST_WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("ENTREGA_TOKEN", TOKENS["root"])  # for the CLI
    made: list[Pipeline] = []

    def make(**kwargs: Any) -> Pipeline:
        p = Pipeline(tmp_path / f"p{len(made)}", receiver=receiver, **kwargs)
        made.append(p)
        p.start_server()
        return p

    yield make
    for p in made:
        p.stop()


def test_signed_release_flows_staging_verification_gate_production(
        make_pipeline: Any, receiver: Receiver) -> None:
    p = make_pipeline(gate="manual")
    answer = p.webhook("v1")
    assert answer.status_code == 201, answer.text
    assert answer.json()["created"] and answer.json()["deploy"]["rollout"]["environment"] \
        == "staging"
    p.wait_stage("v1", "staging", {"succeeded"})
    assert p.served(p.staging_url) == "v1"
    # The manual gate holds it before production.
    assert p.wait_stage("v1", "production", {"awaiting_approval"}) == "awaiting_approval"
    assert p.call("POST", "/api/v1/environments/production/approve",
                  token="bob", json={"version": "v1"}).status_code == 403  # a viewer
    cli = p.cli("approve", "shop", "v1", "--env", "production")
    assert "v1 approved for production" in cli.stdout
    p.wait_stage("v1", "production", {"succeeded"})
    assert p.served(p.router_url) == "v1"

    history = p.call("GET", "/api/v1/history", params={"limit": 500}).json()
    by_kind = {e["kind"]: e for e in history}
    assert by_kind["release"]["actor"] == "ci"
    assert by_kind["approved"]["actor"] == "root"
    view = json.loads(p.cli("pipeline", "--json").stdout)
    assert view["releases"][0]["environments"]["production"]["status"] == "succeeded"
    assert "v1" in p.cli("pipeline", "shop").stdout
    release = p.call("GET", "/api/v1/releases").json()[0]
    assert release["meta"]["commit_sha"] == "sha-v1" and release["meta"]["ci_url"]

    # The receiver failed twice (retried with backoff), then got every event, each once;
    # a retried one may arrive after later ones (no ordering promise across retries).
    wanted = ["approval_needed", "promoted", "promoted", "release", "verified"]
    try:
        wait_for(lambda: sorted(receiver.kinds("v1")) == wanted, 30, "notifications")
    except AssertionError:
        raise AssertionError(f"got {sorted(receiver.kinds())}") from None
    assert receiver.calls >= len(receiver.received) + 2
    assert all(isinstance(n["text"], str) and "v1" in n["text"] for n in receiver.received)
    # The secret never leaves the server.
    dump = json.dumps(history) + p.server_log() + json.dumps(receiver.received)
    assert SECRET not in dump


def test_failed_verification_stops_the_flow_there(make_pipeline: Any) -> None:
    p = make_pipeline(gate="automatic")
    assert p.webhook("v1").status_code == 201
    p.wait_stage("v1", "production", {"succeeded"}, timeout_s=40)
    assert p.webhook("v2", error_rate=1.0).status_code == 201
    assert p.wait_stage("v2", "staging", {"rolled_back"}) == "rolled_back"
    rollout = p.call("GET", "/api/v1/status").json()["environments"][0]["last_rollout"]
    assert "verification failed" in rollout["message"]
    assert "status 500" in rollout["message"]
    assert p.served(p.staging_url) == "v1"       # staging back on v1
    assert p.stage("v2", "production") == "-"    # production untouched
    assert p.served(p.router_url) == "v1"


def test_security_of_the_webhook_and_the_api(make_pipeline: Any) -> None:
    p = make_pipeline()
    assert p.webhook("v1", secret=None).status_code == 401           # unsigned
    assert p.webhook("v1", secret="wrong").status_code == 401        # wrongly signed
    assert p.webhook("v1", tamper=True).status_code == 401           # body changed
    assert p.call("GET", "/api/v1/releases").json() == []            # nothing changed
    assert p.call("GET", "/api/v1/status", token=None).status_code == 401
    assert p.call("POST", "/api/v1/environments/staging/abort", token="bob").status_code == 403

    too_big = p.webhook("v1", artifact=b"x" * 1_100_000)
    assert too_big.status_code == 413 and "limit" in too_big.json()["error"]

    evil = io.BytesIO()
    with tarfile.open(fileobj=evil, mode="w:gz") as tar:
        info = tarfile.TarInfo("../../escape.txt")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    refused = p.webhook("v9", artifact=evil.getvalue())
    assert refused.status_code == 400 and "unsafe member" in refused.json()["error"]
    assert not (p.root / ".entrega" / "escape.txt").exists()

    assert p.webhook("v1").status_code == 201
    again = p.webhook("v1")
    assert again.status_code == 200 and again.json()["created"] is False
    other = p.webhook("v1", error_rate=0.5)
    assert other.status_code == 409 and "other bytes" in other.json()["error"]
    assert SECRET not in json.dumps(p.call("GET", "/api/v1/history").json())


def test_order_is_enforced_unless_an_admin_forces_it(make_pipeline: Any) -> None:
    p = make_pipeline(gate="manual")
    assert p.upload("v1").status_code == 201
    skip = p.call("POST", "/api/v1/environments/production/deploy", json={"version": "v1"})
    assert skip.status_code == 409 and "has not passed staging" in skip.json()["error"]
    no_reason = p.call("POST", "/api/v1/environments/production/deploy", token="root",
                       json={"version": "v1", "force": True})
    assert no_reason.status_code == 409 and "--reason" in no_reason.json()["error"]
    not_admin = p.call("POST", "/api/v1/environments/production/deploy",
                       json={"version": "v1", "force": True, "reason": "hotfix"})
    assert not_admin.status_code == 403
    forced = p.call("POST", "/api/v1/environments/production/deploy", token="root",
                    json={"version": "v1", "force": True, "reason": "hotfix for outage"})
    assert forced.status_code == 201
    p.wait_stage("v1", "production", {"succeeded"})
    events = p.call("GET", "/api/v1/history").json()
    assert any(e["kind"] == "forced" and "hotfix for outage" in e["message"]
               and e["actor"] == "root" for e in events)


def test_one_rollout_at_a_time_newest_queued_wins(make_pipeline: Any) -> None:
    p = make_pipeline(gate="automatic", strategy=PAUSED_CANARY)
    for version in ("v1", "v2", "v3", "v4"):
        assert p.upload(version).status_code == 201
        p.call("POST", "/api/v1/environments/staging/deploy", json={"version": version})
        p.wait_stage(version, "staging", {"succeeded"})
    p.wait_stage("v1", "production", {"succeeded"}, timeout_s=40)
    # v2 reached production's canary pause; v3 and v4 queue behind it: v4 supersedes v3.
    p.wait_stage("v2", "production", {"paused"}, timeout_s=40)
    p.wait_stage("v4", "production", {"queued"})
    assert p.stage("v3", "production") == "superseded"
    busy = p.call("POST", "/api/v1/environments/production/deploy",
                  json={"version": "v3", "queue": False})
    assert busy.status_code == 409 and "busy with rollout" in busy.json()["error"]
    p.cli("promote", "--env", "production")
    p.wait_stage("v2", "production", {"succeeded"})
    p.wait_stage("v4", "production", {"paused"}, timeout_s=40)   # started by itself
    assert p.stage("v3", "production") == "superseded"
    active = [e for e in p.call("GET", "/api/v1/status").json()["environments"]
              if e["rollout"]]
    assert len(active) == 1  # never two rollouts on one environment


def test_rollback_to_an_older_retained_release(make_pipeline: Any) -> None:
    p = make_pipeline(gate="automatic", keep=3)
    for version in ("v1", "v2", "v3", "v4"):
        assert p.webhook(version).status_code == 201
        p.wait_stage(version, "production", {"succeeded"}, timeout_s=40)
    def retained() -> dict[str, bool]:
        view = p.call("GET", "/api/v1/pipeline").json()
        return {r["version"]: r["retained"] for r in view["releases"]}

    # Retention runs right after the success that made v1 too old.
    wait_for(lambda: retained() == {"v1": False, "v2": True, "v3": True, "v4": True}, 10,
             "v1 to be pruned")
    out = p.cli("rollback", "shop", "--env", "production", "--to", "v2")
    assert "back to v2" in out.stdout
    wait_for(lambda: p.served(p.router_url) == "v2", 30, "v2 to be back in production")
    assert p.served(p.staging_url) == "v4"  # only production was rolled back
    pruned = p.cli("rollback", "--env", "production", "--to", "v1", check=False)
    assert pruned.returncode == 1 and "no longer retained" in pruned.stderr

"""The server's secrets stay in the server: a real `entrega server` started with its webhook
secret in its environment delivers a release, and neither the app instances, nor their
supervisors, nor the router carry it in ``/proc/<pid>/environ``. The instances carry what
entrega.yaml gives them (``run.env``, ``run.inherit_env``) and listen within
``target.ports``."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import Deployment, serving, wait_for

pytestmark = [pytest.mark.real,
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc")]

SECRET = "e2e-webhook-secret-5b2a"
FIRST_RELEASE = """\
      canary:
        steps:
          - weight: 100
"""


def environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)


@pytest.fixture
def deployment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Deployment]:
    # The server's environment (inherited from this test process): a secret, a variable
    # the app is allowed to inherit, and one it is not.
    monkeypatch.setenv("ENTREGA_WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("SHOP_DATABASE_URL", "postgresql://shop@db/shop")
    monkeypatch.setenv("UNRELATED_TOKEN", "not-for-apps")
    dep = Deployment(tmp_path, FIRST_RELEASE)
    text = dep.config.read_text()
    text = text.replace("run:\n", "auth: {webhook_secret_env: ENTREGA_WEBHOOK_SECRET}\nrun:\n"
                        "  env: {GREETING: hola}\n  inherit_env: [SHOP_DATABASE_URL]\n", 1)
    text = text.replace("target: {kind: local, instances: 2}",
                        f'target: {{kind: local, instances: 2, ports: "{PORTS}"}}', 1)
    dep.config.write_text(text)
    yield from serving(dep)


#: A range of 40 ports; free ones are taken from it, whatever else runs on this machine.
PORTS = "23400-23439"


def test_no_secret_reaches_instances_supervisors_or_router(deployment: Deployment) -> None:
    dep = deployment
    assert dep.server is not None and SECRET in environ(dep.server.pid).values()
    result = dep.deploy("v1")
    dep.wait_phase(result["id"], {"succeeded"}, timeout_s=60)

    states = [json.loads(p.read_text()) for p in
              (dep.root / ".entrega" / "run" / "production").glob("v1/*/supervisor.json")]
    assert len(states) == 2
    router_pid = int(wait_for(lambda: (dep.root / ".entrega" / "routers" / "shop-production"
                                       / "router.pid").read_text().strip(), 10, "router.pid"))
    for state in states:
        app = environ(state["child_pid"])
        assert SECRET not in app.values() and "UNRELATED_TOKEN" not in app
        assert app["GREETING"] == "hola"
        assert app["SHOP_DATABASE_URL"] == "postgresql://shop@db/shop"
        assert app["PORT"] == str(state["port"]) and 23400 <= state["port"] <= 23439
        assert app["ENTREGA_VERSION"] == "v1" and app["ENTREGA_ENVIRONMENT"] == "production"

        supervisor = environ(state["supervisor_pid"])
        assert SECRET not in supervisor.values()
        assert not {"UNRELATED_TOKEN", "SHOP_DATABASE_URL", "GREETING"} & set(supervisor)

    router = environ(router_pid)
    assert SECRET not in router.values()
    assert not {"ENTREGA_WEBHOOK_SECRET", "UNRELATED_TOKEN", "SHOP_DATABASE_URL"} & set(router)
    # ...and the release is served through that router, on the bounded ports.
    assert dep.served_by(n=5) == {"v1": 5}

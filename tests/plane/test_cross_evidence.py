"""An API release that breaks its callers is caught where the damage shows (issue 14,
cross-service evidence).

In process, as `entrega server` runs them: one store, a controller per app (plane.py),
real embedded routers and the example services (examples/services) as real processes.
``web`` calls ``api`` through api's router, and simulated users call web's router the
whole time. api v2 answers 200 in a shape web cannot read (``breaks_contract``): api's
own error rate stays 0 while web answers 502. api's canary analysis names web's error
rate (``app: web``), so v2 is rolled back on web's evidence; a good v3 then passes.
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from entrega.config.apps import load_apps
from entrega.controller.teardown import stop_data_plane
from entrega.net import free_port
from entrega.plane import ControlPlane, build_plane
from tests.controller.conftest import wait_until
from tests.plane.delivery import deploy as deploy_release
from tests.plane.delivery import phase

pytestmark = [pytest.mark.real, pytest.mark.slow]

SERVICES = Path(__file__).resolve().parents[2] / "examples" / "services"
#: How long api's analysis step lasts, and so web's "before" stretch.
ANALYSIS_S = 8

CONFIG = """\
server: {listen: "127.0.0.1:SERVER_PORT"}
apps:
  - app: api
    run:
      command: "PYTHON app.py"
      health: {path: /healthz, interval_s: 0.1, healthy_threshold: 1}
      drain_s: 0.2
    environments:
      - name: production
        target: {kind: local, instances: 1}
        router: {kind: embedded, listen: "127.0.0.1:API_PORT"}
        strategy:
          canary:
            steps:
              - weight: 50
              - analysis: {duration_s: ANALYSIS_S, check_every_s: 1, metrics: [web-errors]}
              - weight: 100
        analysis:
          web-errors: {app: web, measure: error-rate, judge: sequential,
                       max_increase: 0.02}
  - app: web
    run:
      command: "PYTHON app.py"
      env: {API_URL: "http://127.0.0.1:API_PORT", API_TIMEOUT_MS: "2000"}
      health: {path: /healthz, interval_s: 0.1, healthy_threshold: 1}
      drain_s: 0.2
    environments:
      - name: production
        target: {kind: local, instances: 1}
        router: {kind: embedded, listen: "127.0.0.1:WEB_PORT"}
"""


def load(path: Path, name: str) -> ModuleType:
    """A module of examples/services, which is a folder of scripts, not a package."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve their annotations through it
    spec.loader.exec_module(module)
    return module


traffic = load(SERVICES / "traffic.py", "services_traffic_cross")


@pytest.fixture
async def plane(tmp_path: Path) -> AsyncIterator[tuple[ControlPlane, int]]:
    web_port = free_port()
    text = (CONFIG.replace("SERVER_PORT", str(free_port())).replace("API_PORT", str(free_port()))
            .replace("WEB_PORT", str(web_port)).replace("PYTHON", sys.executable)
            .replace("ANALYSIS_S", str(ANALYSIS_S)))
    (tmp_path / "server").mkdir()
    (tmp_path / "server" / "entrega.yaml").write_text(text)
    apps = load_apps(tmp_path / "server" / "entrega.yaml")
    built, store = build_plane(apps)
    await built.start()
    try:
        yield built, web_port
    finally:
        await built.stop()
        await asyncio.gather(*(stop_data_plane(c, drain_s=0.2) for c in apps))
        store.close()


async def deploy(plane: ControlPlane, app: str, version: str,
                 behaviour: dict[str, Any] | None = None) -> int:
    return await deploy_release(plane, app, version, source=SERVICES / app / "app.py",
                                behaviour=behaviour)


def web_verdicts(plane: ControlPlane, rid: int) -> list[dict[str, Any]]:
    """What each of the rollout's analysis windows last said of web's error rate."""
    runs = plane.service("api").repo.analysis_runs(rid)
    return [m for run in runs for m in (run.result or {}).get("metrics", [])
            if m["metric"] == "web-errors"]


async def test_an_api_release_that_breaks_the_web_front_is_rolled_back(
        plane: tuple[ControlPlane, int]) -> None:
    built, web_port = plane
    rids = [await deploy(built, "api", "v1"), await deploy(built, "web", "w1")]
    await wait_until(lambda: [phase(built, a, r) for a, r in zip(("api", "web"), rids,
                                                                 strict=True)]
                     == ["succeeded", "succeeded"], timeout_s=60, what="api v1 and web w1")
    users = traffic.Traffic([f"http://127.0.0.1:{web_port}/?format=json"], users=4, rps=60,
                            max_duration_s=300).start()
    try:
        # api's controller needs a stretch of web's traffic before a window to compare with
        await asyncio.sleep(ANALYSIS_S + 1)
        assert users.counts().statuses.get((f"http://127.0.0.1:{web_port}/?format=json",
                                            200), 0) > 100

        broken = await deploy(built, "api", "v2", {"breaks_contract": True})
        await wait_until(lambda: phase(built, "api", broken) in ("rolled_back", "succeeded"),
                         timeout_s=90, what="api v2's canary to end")
        assert phase(built, "api", broken) == "rolled_back"
        failed = [m for m in web_verdicts(built, broken) if m["verdict"] == "fail"]
        assert failed, web_verdicts(built, broken)
        assert "web/production during the window" in failed[0]["reason"]
        assert failed[0]["details"]["app"] == "web/production"
        # web answered 502 while v2 had traffic: the damage showed there, not in api
        assert users.counts().statuses.get((f"http://127.0.0.1:{web_port}/?format=json",
                                            502), 0) > 0

        # A stretch of web answering well again before the next window begins.
        await asyncio.sleep(ANALYSIS_S + 1)
        started = time.monotonic()
        good = await deploy(built, "api", "v3")
        await wait_until(lambda: phase(built, "api", good) in ("rolled_back", "succeeded"),
                         timeout_s=90, what="api v3's canary to end")
        assert phase(built, "api", good) == "succeeded", web_verdicts(built, good)
        passed = web_verdicts(built, good)
        assert passed and passed[-1]["verdict"] == "pass", passed
        assert passed[-1]["details"]["before_s"] >= ANALYSIS_S - 2
        assert time.monotonic() - started < 60
    finally:
        counts = users.stop()
    print(f"web's users: {counts.statuses}, no answer: {counts.failures}")

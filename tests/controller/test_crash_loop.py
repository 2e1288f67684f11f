"""A release whose app crashes at every start fails at once (``max_start_exits``), saying
why in the app's own words, instead of waiting out the progress deadline (300 s by
default); an app that crashes a few times while it warms up still gets its chance."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from entrega.service import Service
from entrega.views import DeployStarted
from tests.controller.conftest import artifact, wait_until

pytestmark = [pytest.mark.real, pytest.mark.slow]

DIRECT = """\
      canary:
        steps:
          - weight: 100
"""

CRASHES = """\
import sys
sys.stderr.write("shop: DATABASE_URL is not set\\n")
sys.exit(3)
"""

# Crashes on its first two starts (counted in a file of its own), then serves.
CRASHES_TWICE = """\
import pathlib, runpy, sys
count = pathlib.Path("starts")
n = int(count.read_text()) if count.exists() else 0
count.write_text(str(n + 1))
if n < 2:
    sys.exit(1)
runpy.run_path("shop.py", run_name="__main__")
"""


def release_with(root: Path, version: str, app: str) -> Path:
    path = artifact(root, version)
    (path / "app.py").rename(path / "shop.py")
    (path / "app.py").write_text(app)
    return path


async def deploy(service: Service, version: str, path: Path) -> int:
    await service.create_release(version=version, artifact=path, meta={}, actor="ci")
    started = await service.deploy(environment="production", version=version, actor="ci")
    assert isinstance(started, DeployStarted)
    return started.rollout.id


async def test_a_crash_looping_release_fails_at_once_quoting_its_stderr(
        services: Callable[[str], Service]) -> None:
    service = services(DIRECT)
    await service.controller.start()
    try:
        root = service.config.base_dir
        rid = await deploy(service, "v1", artifact(root, "v1"))
        await wait_until(lambda: service.repo.rollout(rid).phase == "succeeded",  # type: ignore[union-attr]
                         what="v1 to be released")
        rid = await deploy(service, "v2", release_with(root, "v2", CRASHES))
        # Far less than the 300 s progress deadline: 5 exits with the supervisor's back-off.
        failed = await wait_until(lambda: service.repo.rollout(rid).phase == "failed",  # type: ignore[union-attr]
                                  timeout_s=30, what="v2 to fail")
        assert failed
        message = service.repo.rollout(rid).state["message"]  # type: ignore[union-attr]
        assert "v2 cannot run: instance 0 exited 5 times without ever passing its health " \
               "check (last exit code 3; max_start_exits: 5)" in message
        assert "shop: DATABASE_URL is not set" in message
        assert service.repo.active_rollout("shop", "production") is None
    finally:
        await service.controller.stop()


async def test_an_app_that_crashes_while_it_warms_up_is_released(
        services: Callable[[str], Service]) -> None:
    service = services(DIRECT)
    await service.controller.start()
    try:
        rid = await deploy(service, "v1", release_with(service.config.base_dir, "v1",
                                                       CRASHES_TWICE))
        await wait_until(lambda: service.repo.rollout(rid).phase == "succeeded",  # type: ignore[union-attr]
                         what="v1 to be released after two crashes")
    finally:
        await service.controller.stop()

"""Release groups on a real control plane (issue 14): three apps, ``web`` depends on
``api`` and ``worker`` on ``web``, each through staging then production, each by its own
canary, with real routers and app processes, in process as `entrega server` runs them.

Covers: members start in dependency order and the group enters production only when every
member passed staging; a member that fails sends the members already moved back in
reverse order and the group stops (production untouched); the control plane stopped in
the middle of a group and a new one started on the same store finishes it, each member
deployed once per environment.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from entrega.config.apps import load_apps
from entrega.controller.teardown import stop_data_plane
from entrega.insights.team import compute_team_dora
from entrega.net import free_port
from entrega.plane import ControlPlane, build_plane
from entrega.store.models import Rollout
from tests.controller.conftest import SHOP, wait_until

pytestmark = [pytest.mark.real, pytest.mark.slow]

APPS = {"api": [], "web": ["api"], "worker": ["web"]}
APP = """\
  - app: NAME
    depends_on: DEPENDS
    run:
      command: "PYTHON app.py"
      health: {path: /healthz, interval_s: 0.1, healthy_threshold: 1}
      drain_s: 0.2
    environments:
ENVIRONMENTS"""
ENVIRONMENT = """\
      - name: ENV
        target: {kind: local, instances: 1}
        router: {kind: embedded, listen: "127.0.0.1:PORT"}
        strategy:
          canary:
            steps:
              - weight: 50
              - pause: {duration_s: 0.5}
              - weight: 100
"""


def write(root: Path) -> Path:
    entries = []
    for app, depends in APPS.items():
        envs = "".join(ENVIRONMENT.replace("ENV", env).replace("PORT", str(free_port()))
                       for env in ("staging", "production"))
        entries.append(APP.replace("NAME", app).replace("DEPENDS", str(depends))
                       .replace("PYTHON", sys.executable).replace("ENVIRONMENTS", envs))
    root.mkdir(parents=True, exist_ok=True)
    text = f'server: {{listen: "127.0.0.1:{free_port()}"}}\napps:\n' + "".join(entries)
    (root / "entrega.yaml").write_text(text)
    return root / "entrega.yaml"


@pytest.fixture
async def planes(tmp_path: Path) -> AsyncIterator[Callable[[], ControlPlane]]:
    """Control planes on one file and one store (a second one: a restarted server)."""
    path = write(tmp_path / "server")
    made: list[tuple[ControlPlane, object]] = []

    def make() -> ControlPlane:
        plane, store = build_plane(load_apps(path))
        made.append((plane, store))
        return plane

    yield make
    for plane, store in made:
        await plane.stop()
        store.close()  # type: ignore[attr-defined]
    for config in load_apps(path):
        await stop_data_plane(config, drain_s=0.2)


async def release(plane: ControlPlane, version: str, *, broken: tuple[str, ...] = ()
                  ) -> None:
    """``version`` of every app (an app in ``broken`` exits at once: it cannot run)."""
    for app in APPS:
        service = plane.service(app)
        path = service.config.base_dir / "artifacts" / app / version
        path.mkdir(parents=True, exist_ok=True)
        if app in broken:
            (path / "app.py").write_text("raise SystemExit('this build is broken')\n")
        else:
            shutil.copy(SHOP, path / "app.py")
        (path / "VERSION").write_text(version)
        await service.create_release(version=version, artifact=path, meta={}, actor="ci")


def group_rollouts(plane: ControlPlane, name: str) -> list[Rollout]:
    row = plane.groups.group(name)
    return plane.groups.repo.rollouts(row.id)


async def deliver(plane: ControlPlane, name: str, version: str) -> str:
    plane.groups.create(name=name, actor="ci", members=[(a, version) for a in APPS])
    await wait_until(lambda: plane.groups.group(name).finished_at, timeout_s=240,
                     what=f"group {name} to end")
    return plane.groups.group(name).phase


def current(plane: ControlPlane, app: str, env: str) -> str | None:
    row = plane.service(app).repo.environment(app, env)
    return row.current_version if row else None


async def test_members_move_in_dependency_order_and_environments_whole(
        planes: Callable[[], ControlPlane]) -> None:
    plane = planes()
    await plane.start()
    await release(plane, "v1")
    assert await deliver(plane, "2026.12.1", "v1") == "succeeded"
    rollouts = group_rollouts(plane, "2026.12.1")
    assert [(r.environment, r.app) for r in rollouts] == [
        ("staging", "api"), ("staging", "web"), ("staging", "worker"),
        ("production", "api"), ("production", "web"), ("production", "worker")]
    for before, after in zip(rollouts, rollouts[1:], strict=False):
        assert before.finished_at is not None and before.finished_at <= after.created_at
    assert all(r.phase == "succeeded" and r.purpose == "deploy" for r in rollouts)
    for app in APPS:
        assert current(plane, app, "production") == "v1"
        history = [e.message for e in plane.service(app).repo.events(app)]
        assert any("release group 2026.12.1 created by ci" in m for m in history)
    # DORA: the team made one deployment to production (three apps' releases, one group)
    now = time.time()
    team = compute_team_dora([plane.service(a).dora_history(now=now) for a in APPS], now=now)
    assert team.team.deployments == 1
    assert all(team.apps[a].deployments == 1 for a in APPS)


async def test_a_failing_member_sends_the_moved_ones_back_in_reverse_order(
        planes: Callable[[], ControlPlane]) -> None:
    plane = planes()
    await plane.start()
    await release(plane, "v1")
    assert await deliver(plane, "2026.12.1", "v1") == "succeeded"
    await release(plane, "v2", broken=("worker",))
    assert await deliver(plane, "2026.12.2", "v2") == "rolled_back"
    rollouts = group_rollouts(plane, "2026.12.2")
    assert [(r.environment, r.app, r.purpose, r.phase) for r in rollouts] == [
        ("staging", "api", "deploy", "succeeded"), ("staging", "web", "deploy", "succeeded"),
        ("staging", "worker", "deploy", "failed"),
        ("staging", "web", "rollback", "succeeded"), ("staging", "api", "rollback", "succeeded")]
    web_back, api_back = rollouts[3], rollouts[4]
    assert web_back.finished_at is not None and web_back.finished_at <= api_back.created_at
    for app in APPS:
        assert current(plane, app, "staging") == "v1"
        assert current(plane, app, "production") == "v1"  # never touched


async def test_a_group_survives_its_control_plane_and_is_finished_by_the_next(
        planes: Callable[[], ControlPlane]) -> None:
    plane = planes()
    await plane.start()
    await release(plane, "v1")
    assert await deliver(plane, "2026.12.1", "v1") == "succeeded"
    await release(plane, "v3")
    plane.groups.create(name="2026.12.3", actor="ci", members=[(a, "v3") for a in APPS])
    await wait_until(lambda: any(r.app == "web" for r in group_rollouts(plane, "2026.12.3")),
                     timeout_s=120, what="the group's second member to start")
    await plane.stop()  # the server is gone; its data plane and its store are not

    restarted = planes()
    await restarted.start()
    await wait_until(lambda: restarted.groups.group("2026.12.3").finished_at, timeout_s=240,
                     what="the group finished by the restarted control plane")
    assert restarted.groups.group("2026.12.3").phase == "succeeded"
    rollouts = group_rollouts(restarted, "2026.12.3")
    # each member deployed once per environment: nothing done twice
    assert sorted((r.environment, r.app) for r in rollouts) == sorted(
        (env, app) for env in ("staging", "production") for app in APPS)
    assert all(current(restarted, app, "production") == "v3" for app in APPS)


async def test_rollback_to_a_group_puts_its_releases_back_callers_first(
        planes: Callable[[], ControlPlane]) -> None:
    plane = planes()
    await plane.start()
    await release(plane, "v1")
    assert await deliver(plane, "2026.12.1", "v1") == "succeeded"
    await release(plane, "v2")
    assert await deliver(plane, "2026.12.2", "v2") == "succeeded"
    restore = plane.groups.restore("2026.12.1", environment=None, actor="test")
    assert restore.name == "2026.12.1-restore-1"
    await wait_until(lambda: plane.groups.group(restore.name).finished_at, timeout_s=120,
                     what="the restore to end")
    assert plane.groups.group(restore.name).phase == "succeeded"
    rollouts = group_rollouts(plane, restore.name)
    # the callers go back first: worker, then web, then api; each at once (a rollback)
    assert [(r.app, r.version, r.purpose, r.strategy) for r in rollouts] == [
        ("worker", "v1", "rollback", "direct"), ("web", "v1", "rollback", "direct"),
        ("api", "v1", "rollback", "direct")]
    for app in APPS:
        assert current(plane, app, "production") == "v1"
        assert current(plane, app, "staging") == "v2"  # only where it was asked

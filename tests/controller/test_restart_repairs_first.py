"""A controller that restarts between committing a transition and applying its action
repairs the data plane to the store before anything observes it (item 10 of issue 10).

The crash is made deterministic: the first controller freezes inside the action that
follows the commit (as a process killed there would), is stopped, and a second one
starts on the same store and the same, still running, data plane. Its router answers
route changes slowly (2 s, longer than the verification's 1 s timeout), so an
observation that ran before the repair would see the stale data plane and act on it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from entrega.controller.loop import Controller
from entrega.rollouts.model import Action, SetRoutes
from entrega.routers.base import Router, RouterMetrics, Routes
from entrega.service import Service
from entrega.store.models import Rollout
from entrega.views import DeployStarted
from tests.controller.conftest import artifact, wait_until

pytestmark = [pytest.mark.real, pytest.mark.slow]

BLUE_GREEN = """\
      blue_green: {auto_promote: true, scale_down_delay_s: 0}
"""

CANARY = """\
      canary:
        steps:
          - weight: 50
          - analysis: {duration_s: 60, check_every_s: 1, metrics: [error-rate]}
          - weight: 100
"""


class SlowRouteChanges(Router):
    """A real router whose route changes take ``delay_s`` (a busy or swapping router)."""

    def __init__(self, router: Router, delay_s: float) -> None:
        self.router = router
        self.delay_s = delay_s
        #: monotonic time each route change was applied
        self.applied_at: list[float] = []

    async def ensure_running(self) -> None:
        await self.router.ensure_running()

    async def set_routes(self, routes: Routes) -> None:
        await asyncio.sleep(self.delay_s)
        await self.router.set_routes(routes)
        self.applied_at.append(time.time())

    async def get_routes(self) -> Routes:
        return await self.router.get_routes()

    async def metrics(self) -> RouterMetrics:
        return await self.router.metrics()

    async def shutdown(self) -> None:
        await self.router.shutdown()

    async def close(self) -> None:
        await self.router.close()


def freeze_before(controller: Controller,
                  action_matches: Callable[[Action], bool]) -> asyncio.Event:
    """Make the controller hang in the first action that matches, before applying it (the
    moment a kill -9 would land); returns an event set when it got there."""
    frozen = asyncio.Event()
    apply = controller.actions.apply

    async def hanging_apply(rt: Any, row: Rollout, action: Action) -> None:
        if action_matches(action):
            frozen.set()
            await asyncio.Event().wait()  # never returns: the action is never applied
        await apply(rt, row, action)

    controller.actions.apply = hanging_apply  # type: ignore[method-assign]
    return frozen


async def first_release(service: Service) -> None:
    root = service.config.base_dir
    await service.controller.start()
    for version in ("v1", "v2"):
        await service.create_release(version=version, artifact=artifact(root, version),
                                     meta={}, actor="ci")
    started = await service.deploy(environment="production", version="v1", actor="ci")
    assert isinstance(started, DeployStarted)
    rid = started.rollout.id
    await wait_until(lambda: service.repo.rollout(rid).phase == "succeeded",  # type: ignore[union-attr]
                     what="v1 to be released")


async def crash_and_restart(service: Service, phase: str,
                            matches: Callable[[Action], bool]) -> tuple[Controller,
                                                                        SlowRouteChanges, int]:
    frozen = freeze_before(service.controller, matches)
    started = await service.deploy(environment="production", version="v2", actor="ci")
    assert isinstance(started, DeployStarted)
    rid = started.rollout.id
    await asyncio.wait_for(frozen.wait(), 30)
    await service.controller.stop()  # the process is gone; its data plane is not
    assert service.repo.rollout(rid).phase == phase  # type: ignore[union-attr]
    await asyncio.sleep(1.5)  # a restart takes a moment: what was due is overdue now

    restarted = Controller(service.config, service.repo, service.artifacts)
    rt = restarted.runtimes["production"]
    slow = SlowRouteChanges(rt.router, delay_s=2.0)
    rt.router = slow
    await restarted.start()
    return restarted, slow, rid


async def test_blue_green_verifying_when_killed_is_promoted_after_restart(
        services: Callable[[str], Service]) -> None:
    service = services(BLUE_GREEN)
    await first_release(service)
    restarted, slow, rid = await crash_and_restart(
        service, "verifying", lambda a: isinstance(a, SetRoutes) and a.preview is not None)
    try:
        # The crash left the preview listener empty: nothing was routed there.
        assert (await slow.get_routes()).preview is None
        done = await wait_until(
            lambda: (row := service.repo.rollout(rid)) and row.finished_at and row, 40,
            "the rollout to finish")
        events = service.repo.events("shop", rollout_id=rid)
        assert done.phase == "succeeded", [e.message for e in events]
        verified = [e for e in events if e.kind == "verified"]
        assert len(verified) == 1 and not [e for e in events
                                           if e.kind == "verification_failed"]
        # The verification ran only once the preview route was there.
        assert verified[0].time - verified[0].data["duration_s"] >= slow.applied_at[0]
        assert service.repo.environment("shop", "production").current_version == "v2"  # type: ignore[union-attr]
    finally:
        await restarted.stop()


async def test_canary_analysis_baseline_is_taken_after_routes_are_repaired(
        services: Callable[[str], Service]) -> None:
    service = services(CANARY)
    await first_release(service)
    restarted, slow, rid = await crash_and_restart(
        service, "progressing",
        lambda a: isinstance(a, SetRoutes) and a.weights.get("v2", 0) > 0)
    try:
        assert (await slow.get_routes()).weights == {"v1": 100}
        run = await wait_until(lambda: service.repo.analysis_run(rid, 1), 30,
                               "the analysis window to begin")
        # The window's baseline was taken once the router sent the canary its weight.
        assert slow.applied_at and run.started_at >= slow.applied_at[0]
        assert (await slow.get_routes()).weights == {"v1": 50, "v2": 50}
    finally:
        await restarted.stop()

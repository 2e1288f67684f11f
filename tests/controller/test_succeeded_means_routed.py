"""A rollout reads ``succeeded`` only once the router holds the new release's table.

``deploy --wait`` and a pipeline's next stage read "succeeded" as "the new release has
all the traffic". Without a verification, the transition to succeeded is the one that
carries the last route change (a first release, a blue-green switch): it used to be
committed before that change was applied, so for the time a route change takes (an SSH
round trip per host of a fleet) the store said succeeded while the routers still sent
nothing, or the old release, and a request right after got a 503 (seen in CI on the
every-host routers). The route change now goes first; a router that refuses it keeps the
rollout where it was, and a crash before the change is applied leaves the last step
committed, repaired and succeeded again by the next controller.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from entrega.config import load_config
from entrega.controller.loop import Controller
from entrega.errors import RouterError
from entrega.rollouts.model import SetRoutes
from entrega.routers.base import Routes
from entrega.server import build_service
from entrega.service import Service
from entrega.views import DeployStarted
from tests.controller.conftest import artifact, wait_until
from tests.controller.test_restart_repairs_first import SlowRouteChanges, freeze_before

pytestmark = [pytest.mark.real, pytest.mark.slow]

BLUE_GREEN = """\
      blue_green: {auto_promote: true, scale_down_delay_s: 0}
"""


class RefusesOnce(SlowRouteChanges):
    """A router whose first route change with all traffic on ``version`` is refused."""

    def __init__(self, router: SlowRouteChanges, version: str) -> None:
        super().__init__(router.router, router.delay_s)
        self.version = version
        self.refused = 0

    async def set_routes(self, routes: Routes) -> None:
        if routes.weights == {self.version: 100} and not self.refused:
            self.refused += 1
            raise RouterError("the router refused the table (a test's refusal)")
        await super().set_routes(routes)


@pytest.fixture
def unverified(services: Callable[[str], Service]) -> Callable[[], Service]:
    """A blue-green service with no verification: its switch is the succeeding step."""

    def make() -> Service:
        config_path = services(BLUE_GREEN).config.base_dir / "entrega.yaml"
        text = config_path.read_text()
        config_path.write_text(text[:text.index("    verify:")])
        service, _store = build_service(load_config(Path(config_path)))
        return service

    return make


async def deploy(service: Service, version: str) -> int:
    await service.create_release(version=version, artifact=artifact(
        service.config.base_dir, version), meta={}, actor="ci")
    started = await service.deploy(environment="production", version=version, actor="ci")
    assert isinstance(started, DeployStarted)
    return started.rollout.id


async def phase_seen_with_routes(service: Service, rid: int) -> list[tuple[str, Routes]]:
    """Poll the rollout's phase until it ends; each change of phase with the router's
    table read right after it."""
    seen: list[tuple[str, Routes]] = []
    router = service.controller.runtimes["production"].router
    for _ in range(1200):
        row = service.repo.rollout(rid)
        assert row is not None
        if not seen or seen[-1][0] != row.phase:
            seen.append((row.phase, await router.get_routes()))
        if row.finished_at:
            return seen
        await asyncio.sleep(0.02)
    raise AssertionError(f"rollout {rid} did not end: {[p for p, _ in seen]}")


async def test_succeeded_is_committed_after_the_router_holds_the_release(
        unverified: Callable[[], Service]) -> None:
    service = unverified()
    rt = service.controller.runtimes["production"]
    rt.router = SlowRouteChanges(rt.router, delay_s=1.0)  # a route change takes a while
    await service.controller.start()
    try:
        for version in ("v1", "v2"):
            seen = await phase_seen_with_routes(service, await deploy(service, version))
            assert seen[-1][0] == "succeeded", seen
            assert seen[-1][1].weights == {version: 100}, seen
    finally:
        await service.controller.stop()


async def test_a_refused_route_change_keeps_the_rollout_from_succeeding(
        unverified: Callable[[], Service]) -> None:
    service = unverified()
    rt = service.controller.runtimes["production"]
    refusing = RefusesOnce(SlowRouteChanges(rt.router, delay_s=0), "v1")
    rt.router = refusing
    await service.controller.start()
    try:
        rid = await deploy(service, "v1")
        seen = await phase_seen_with_routes(service, rid)
        assert refusing.refused == 1
        assert seen[-1][0] == "succeeded" and seen[-1][1].weights == {"v1": 100}, seen
        errors = [e.message for e in service.repo.events("shop", rollout_id=rid)
                  if e.kind == "error"]
        assert any("a test's refusal" in m for m in errors), errors
    finally:
        await service.controller.stop()


async def test_a_crash_before_the_switch_is_applied_leaves_the_rollout_to_finish_again(
        unverified: Callable[[], Service]) -> None:
    service = unverified()
    await service.controller.start()
    rid = await deploy(service, "v1")
    await wait_until(lambda: service.repo.rollout(rid).phase == "succeeded",  # type: ignore[union-attr]
                     what="v1 released")
    frozen = freeze_before(service.controller,
                           lambda a: isinstance(a, SetRoutes) and a.weights == {"v2": 100})
    rid = await deploy(service, "v2")
    await asyncio.wait_for(frozen.wait(), 30)
    await service.controller.stop()  # killed while switching: the store is not succeeded
    row = service.repo.rollout(rid)
    assert row is not None and row.phase != "succeeded" and not row.finished_at, row.phase
    assert service.repo.environment("shop", "production").current_version == "v1"  # type: ignore[union-attr]

    restarted = Controller(service.config, service.repo, service.artifacts)
    await restarted.start()
    try:
        await wait_until(lambda: service.repo.rollout(rid).phase == "succeeded",  # type: ignore[union-attr]
                         what="v2 switched by the next controller")
        routes = await restarted.runtimes["production"].router.get_routes()
        assert routes.weights == {"v2": 100}
        promoted = [e for e in service.repo.events("shop", rollout_id=rid)
                    if e.kind == "promoted"]
        assert len(promoted) == 1, promoted
    finally:
        await restarted.stop()

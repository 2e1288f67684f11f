"""Restarts leave a trace (item 16 of issue 10): a controller start that adopts a running
data plane, an instance its supervisor restarted, and a router process the router
restarted by itself are events in the history, which webhooks can select by kind."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import httpx
import pytest

from entrega.config import NotifyConfig, WebhookNotify
from entrega.controller.loop import Controller
from entrega.controller.notify import Notifier
from entrega.errors import TargetUnreachable
from entrega.routers.base import DataPlaneRestart, Router, RouterMetrics, Routes
from entrega.service import Service
from entrega.store.models import Event
from entrega.views import DeployStarted
from tests.controller.conftest import artifact, wait_until

pytestmark = [pytest.mark.real, pytest.mark.slow]

DIRECT = """\
      canary:
        steps:
          - weight: 100
"""


def events(service: Service, kind: str) -> list[Event]:
    return [e for e in service.repo.events("shop", limit=1000) if e.kind == kind]


async def released(service: Service, *versions: str) -> None:
    root = service.config.base_dir
    for version in versions:
        await service.create_release(version=version, artifact=artifact(root, version),
                                     meta={}, actor="ci")
        started = await service.deploy(environment="production", version=version,
                                       actor="ci")
        assert isinstance(started, DeployStarted)
        rid = started.rollout.id
        await wait_until(lambda: service.repo.rollout(rid).phase == "succeeded",  # noqa: B023  # type: ignore[union-attr]
                         what=f"{version} to be released")


async def test_a_start_that_adopts_the_data_plane_is_an_event(
        services: Callable[[str], Service]) -> None:
    service = services(DIRECT)
    await service.controller.start()
    # Nothing was running: starting a data plane is not adopting one.
    assert events(service, "adopted") == []
    await released(service, "v1")
    await service.controller.stop()

    restarted = Controller(service.config, service.repo, service.artifacts)
    await restarted.start()
    try:
        rt = restarted.runtimes["production"]
        observed = [i for i in await rt.target.observe() if i.alive]
        assert len(observed) == 1
        [event] = events(service, "adopted")
        router_pid = rt.router.pid()  # type: ignore[attr-defined]
        assert event.environment == "production"
        assert event.data["router"] == {"pid": router_pid,
                                        "listen": rt.config.router.listen,
                                        "preview_listen": rt.config.router.preview_listen}
        assert event.data["instances"] == {"v1": [{
            "instance": observed[0].instance, "pid": observed[0].pid,
            "address": observed[0].endpoint.address,  # type: ignore[union-attr]
            "restarts": 0}]}
        assert f"router pid {router_pid} on {rt.config.router.listen}" in event.message
        assert f"v1: {observed[0].instance} pid {observed[0].pid}" in event.message
    finally:
        await restarted.stop()


async def test_an_instance_killed_and_restarted_by_its_supervisor_is_an_event(
        services: Callable[[str], Service]) -> None:
    service = services(DIRECT)
    await service.controller.start()
    try:
        await released(service, "v1")
        rt = service.controller.runtimes["production"]
        [instance] = [i for i in await rt.target.observe() if i.alive]
        assert instance.pid is not None
        os.kill(instance.pid, signal.SIGKILL)  # the app process, not its supervisor
        [event] = await wait_until(lambda: events(service, "instance_restarted"), 20,
                                   "the restart to be recorded")
        assert event.version == "v1" and event.data["instance"] == instance.instance
        assert event.data["restarts"] == 1
        assert f"instance {instance.instance} of v1 crashed and was restarted" in event.message
        after = [i for i in await rt.target.observe() if i.alive]
        assert after[0].pid not in (None, instance.pid)
    finally:
        await service.controller.stop()


async def test_an_instance_lost_with_its_supervisor_is_started_again(
        services: Callable[[str], Service]) -> None:
    # A supervisor killed with its app (a machine that rebooted, an operator's kill -9):
    # nothing on the host restarts it, so the controller does, on the same port.
    service = services(DIRECT)
    await service.controller.start()
    try:
        await released(service, "v1")
        rt = service.controller.runtimes["production"]
        [instance] = [i for i in await rt.target.observe() if i.alive]
        supervisor = instance.extra["supervisor_pid"]
        assert isinstance(supervisor, int) and instance.pid is not None
        os.kill(supervisor, signal.SIGKILL)
        os.kill(instance.pid, signal.SIGKILL)
        [event] = await wait_until(
            lambda: [e for e in events(service, "instance_restarted")
                     if "were gone with their supervisor" in e.message], 30,
            "the lost instance to be started again")
        assert event.version == "v1" and event.data == {"restarted": 1}
        [again] = [i for i in await rt.target.observe() if i.alive]
        assert again.extra["supervisor_pid"] != supervisor
        assert again.endpoint == instance.endpoint  # the routes stayed valid
        # Its app was started again, not yet necessarily listening: served once it is.
        async def served() -> str | None:
            async with httpx.AsyncClient(trust_env=False) as client:
                answer = await client.get(f"http://{rt.config.router.listen}/api/products")
            return answer.json()["version"] if answer.status_code == 200 else None

        assert await wait_until(served, 30, "v1 to answer again") == "v1"
    finally:
        await service.controller.stop()


async def test_a_restart_that_fails_for_a_while_is_still_reported_as_a_restart(
        services: Callable[..., Service]) -> None:
    # A fleet host that comes back empty while the others serve: the first attempt finds
    # it unreachable, a later one brings its instances back. That later start is the
    # restart, and says so.
    service = services(DIRECT, instances=2)
    await service.controller.start()
    try:
        await released(service, "v1")
        rt = service.controller.runtimes["production"]
        start = rt.target.start
        refused: list[str] = []

        async def unreachable_once(**kwargs: Any) -> Any:
            if not refused:
                refused.append(kwargs["release"].version)
                raise TargetUnreachable("cannot reach host host2 (127.0.1.2:22)")
            return await start(**kwargs)

        rt.target.start = unreachable_once  # type: ignore[method-assign]
        lost, kept = [i for i in await rt.target.observe() if i.alive]
        assert lost.pid is not None
        os.kill(lost.extra["supervisor_pid"], signal.SIGKILL)  # type: ignore[arg-type]
        os.kill(lost.pid, signal.SIGKILL)
        [event] = await wait_until(
            lambda: [e for e in events(service, "instance_restarted")
                     if "were gone with their supervisor" in e.message], 30,
            "the lost instance to be started again")
        assert refused == ["v1"] and event.data == {"restarted": 1}
        assert [i.alive for i in await rt.target.observe()] == [True, True]
    finally:
        await service.controller.stop()


async def test_a_fault_in_one_environment_does_not_stop_the_others_pass(
        services: Callable[..., Service], caplog: pytest.LogCaptureFixture) -> None:
    # An environment whose pass raises (a bug, a store hiccup) comes first in every pass:
    # the next environment is still reconciled, and the fault is logged with its name.
    service = services(DIRECT)
    controller = service.controller
    await controller.start()
    production = controller.runtimes["production"]
    real = controller._reconcile_environment

    async def faulty(name: str, rt: Any) -> None:
        if name == "broken":
            raise RuntimeError("a bug in one environment's pass")
        await real(name, rt)

    controller._reconcile_environment = faulty  # type: ignore[method-assign]
    controller.runtimes = {"broken": production, "production": production}
    try:
        await released(service, "v1")
        assert "reconcile pass of broken failed" in caplog.text
    finally:
        controller.runtimes = {"production": production}
        await controller.stop()


class ReportsRestarts(Router):
    """A real router whose metrics also carry the restarts listed in ``restarts`` (the
    field the router process fills; here the test decides what it reports)."""

    def __init__(self, router: Router) -> None:
        self.router = router
        self.restarts: tuple[DataPlaneRestart, ...] = ()

    async def ensure_running(self) -> None:
        await self.router.ensure_running()

    async def set_routes(self, routes: Routes) -> None:
        await self.router.set_routes(routes)

    async def get_routes(self) -> Routes:
        return await self.router.get_routes()

    async def metrics(self) -> RouterMetrics:
        return replace(await self.router.metrics(), restarts=self.restarts)

    async def shutdown(self) -> None:
        await self.router.shutdown()

    async def close(self) -> None:
        await self.router.close()


def reporting(controller: Controller) -> ReportsRestarts:
    rt = controller.runtimes["production"]
    router = ReportsRestarts(rt.router)
    rt.router = router
    return router


async def test_router_restarts_are_recorded_once_across_controller_restarts(
        services: Callable[[str], Service]) -> None:
    service = services(DIRECT)
    router = reporting(service.controller)
    now = time.time()
    first = DataPlaneRestart("router worker 0", now - 5, "exited with signal 9")
    second = DataPlaneRestart("router worker 1", now - 1, "exited with code 1")
    router.restarts = (first, second)
    await service.controller.start()
    try:
        recorded = await wait_until(lambda: len(events(service, "router_restarted")) == 2
                                    and events(service, "router_restarted"), 10,
                                    "the router's restarts to be recorded")
    finally:
        await service.controller.stop()
    assert [e.data for e in recorded] == [
        {"what": "router worker 0", "at": first.at, "reason": "exited with signal 9"},
        {"what": "router worker 1", "at": second.at, "reason": "exited with code 1"}]
    assert recorded[0].actor == "router" and recorded[0].environment == "production"
    assert "restarted router worker 0 by itself: exited with signal 9" in recorded[0].message

    # A new controller sees the same (bounded) list again, plus one newer restart.
    restarted = Controller(service.config, service.repo, service.artifacts)
    router = reporting(restarted)
    third = DataPlaneRestart("router worker 0", time.time(), "exited with signal 11")
    router.restarts = (first, second, third)
    await restarted.start()
    try:
        await wait_until(lambda: len(events(service, "router_restarted")) >= 3, 10,
                         "the newer restart to be recorded")
        await restarted.reconcile_once()
    finally:
        await restarted.stop()
    assert [e.data["at"] for e in events(service, "router_restarted")] == [
        first.at, second.at, third.at]

    # Webhooks can select these events by kind.
    kinds = ["adopted", "router_restarted", "instance_restarted"]
    config = service.config.model_copy(update={"notify": [NotifyConfig(
        webhook=WebhookNotify(url="http://127.0.0.1:9/hook", events=kinds))]})
    notifier = Notifier(config, service.repo)
    service.repo.set_cursor("notify", 0)
    notifier.scan()
    sent = [n.payload["event"] for n in service.repo.notifications(limit=1000)]
    assert sorted(sent) == sorted(e.kind for e in service.repo.events("shop", limit=1000)
                                  if e.kind in kinds)
    assert sent.count("router_restarted") == 3 and "adopted" in sent

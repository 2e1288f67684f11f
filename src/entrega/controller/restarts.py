"""Restarts leave a trace: what a starting controller adopted, and what the data plane
restarted by itself, are events in ``history`` (and can be sent to webhooks by kind).

- ``adopted``: at start, one event per environment whose router answered on its control
  socket or whose instances kept running, naming the router (pid, addresses) and the
  instances by release (pid, address, restarts so far). A start that found nothing
  running records nothing: starting a data plane is not adopting one.
- ``instance_restarted``: an instance's supervisor restarted its crashed app
  (``ActionRunner.observe_instances``, as ``InstanceState.restarts`` grows).
- ``router_restarted``: the router restarted one of its own processes (a worker that
  died), from ``RouterMetrics.restarts`` (actor ``router``). The router keeps a bounded
  list of its latest restarts; the time of the newest one recorded is read back from the
  event log, so a restarted controller records none of them twice. A router that was
  gone altogether and that the controller started again is the same kind, with actor
  ``controller``.
"""

from __future__ import annotations

import logging
from typing import Protocol, runtime_checkable

from entrega.controller.runtime import EnvironmentRuntime
from entrega.errors import EntregaError
from entrega.routers.base import Router
from entrega.store.repository import Repository
from entrega.targets.base import InstanceState
from entrega.vocabulary import EventKind

log = logging.getLogger("entrega.controller")


@runtime_checkable
class _HasPid(Protocol):
    def pid(self) -> int | None: ...


@runtime_checkable
class _OnEveryHost(Protocol):
    """A router on every host of a fleet: the hosts whose router its last
    ``ensure_running`` started (the others were running and were adopted)."""

    started_on: tuple[str, ...]


async def router_answers(router: Router) -> bool:
    """True when a router is running already (before ``ensure_running`` adopts it)."""
    try:
        await router.get_routes()
    except (EntregaError, OSError):
        return False
    return True


async def restart_router(repo: Repository, app: str, rt: EnvironmentRuntime) -> None:
    """Start the router again after it stopped answering (it reloads its last routes);
    an event when a new process was started, not when the router merely answered late."""
    if await router_answers(rt.router):
        return
    await rt.router.ensure_running()
    pid = rt.router.pid() if isinstance(rt.router, _HasPid) else None
    hosts = rt.router.started_on if isinstance(rt.router, _OnEveryHost) else ()
    where = f" on {', '.join(hosts)}" if hosts else ""
    repo.add_event(app=app, environment=rt.name, kind=EventKind.ROUTER_RESTARTED,
                   actor="controller",
                   message=f"the router of {rt.name}{where} did not answer on its control "
                           f"socket; the controller started it again"
                           + (f" (pid {pid})" if pid else "") + " on its last routes",
                   data={"what": "router", "pid": pid,
                         "reason": "did not answer on its control socket"})


def record_adoption(repo: Repository, app: str, rt: EnvironmentRuntime, *,
                    router_adopted: bool, instances: list[InstanceState]) -> None:
    """One ``adopted`` event for the environment, if anything was running."""
    if not router_adopted and not instances:
        return
    parts = []
    router_data: dict[str, object] | None = None
    if router_adopted:
        pid = rt.router.pid() if isinstance(rt.router, _HasPid) else None
        preview = rt.config.router.preview_listen
        router_data = {"pid": pid, "listen": rt.config.router.listen,
                       "preview_listen": preview}
        parts.append(f"router{f' pid {pid}' if pid else ''} on {rt.config.router.listen}"
                     + (f" (preview {preview})" if preview else ""))
    else:
        parts.append("the router was not running and was started")
    by_release: dict[str, list[dict[str, object]]] = {}
    for instance in sorted(instances, key=lambda i: (i.version, i.instance)):
        by_release.setdefault(instance.version, []).append({
            "instance": instance.instance, "pid": instance.pid,
            "address": instance.endpoint.address if instance.endpoint else None,
            "restarts": instance.restarts})
    for version, running in by_release.items():
        shown = ", ".join(
            f"{i['instance']}" + (f" pid {i['pid']}" if i["pid"] else "")
            + (f" ({i['restarts']} restart(s) so far)" if i["restarts"] else "")
            for i in running)
        parts.append(f"{version}: {shown}")
    if not instances:
        parts.append("no instance was running")
    repo.add_event(app=app, environment=rt.name, kind=EventKind.ADOPTED, actor="controller",
                   message=f"controller started and adopted the running data plane of "
                           f"{rt.name}: " + "; ".join(parts),
                   data={"router": router_data, "instances": by_release})


class RouterRestartLog:
    """Records each restart the router did by itself, once, across controller restarts."""

    def __init__(self, repo: Repository, app: str) -> None:
        self.repo = repo
        self.app = app
        #: environment -> time of the newest router restart recorded
        self._last_at: dict[str, float] = {}

    def _recorded_until(self, environment: str) -> float:
        if environment not in self._last_at:
            last = self.repo.last_event(self.app, environment=environment,
                                        kind=EventKind.ROUTER_RESTARTED, actor="router")
            at = last.data.get("at") if last is not None else None
            self._last_at[environment] = float(at) if isinstance(at, int | float) else 0.0
        return self._last_at[environment]

    async def record_new(self, rt: EnvironmentRuntime) -> int:
        """Record the router's restarts newer than the last recorded; how many."""
        try:
            restarts = (await rt.router.metrics()).restarts
        except EntregaError as exc:  # a router down now is repaired by the next pass
            log.warning("reading the restarts of the router of %s: %s", rt.name, exc)
            return 0
        since = self._recorded_until(rt.name)
        new = sorted((r for r in restarts if r.at > since), key=lambda r: r.at)
        for restart in new:
            self.repo.add_event(
                app=self.app, environment=rt.name, kind=EventKind.ROUTER_RESTARTED, actor="router",
                message=f"the router of {rt.name} restarted {restart.what} by itself: "
                        f"{restart.reason}",
                data={"what": restart.what, "at": restart.at, "reason": restart.reason})
            self._last_at[rt.name] = restart.at
        return len(new)

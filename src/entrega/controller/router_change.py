"""An environment's router changed in the configuration: the change waits for the
environment to be idle, then the new router takes over from the old one.

Two things ask for a change. A reload (controller/reload.py) whose file gives an
environment other router settings. And a start that finds the router running on other
settings than the file's (changed while no server ran, or a reload's change still
waiting when it stopped): that router is adopted as it runs, and the file's settings
wait like a reload's.

The reconcile loop calls :meth:`RouterChanges.maybe_apply` on each pass over an idle
environment, under the environment's lock, so no rollout starts meanwhile. The router
change itself (old and new router side by side, no request refused) is
:func:`~entrega.controller.reload.replace_router`; a new router that fails to start is
tried again every ``ROUTER_RETRY_S`` while the old one serves on. The controller keeps
the running configuration; :class:`ConfigHolder` is the one attribute read here, read
again after each await (a reload may swap it while routers are being replaced).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

from entrega.config import Config, RouterConfig
from entrega.configdiff import diff_configs, pending_routers, with_router
from entrega.controller.reload import replace_router
from entrega.controller.runtime import ROUTERS, EnvironmentRuntime
from entrega.errors import EntregaError
from entrega.routers.base import Router
from entrega.store.repository import Repository
from entrega.vocabulary import EventKind

log = logging.getLogger("entrega.controller")

#: A router change whose new router failed to start is tried again after this long.
ROUTER_RETRY_S = 10.0
#: How long a stopping server waits for old routers still draining after a router change.
RETIRING_WAIT_S = 5.0


class ConfigHolder(Protocol):
    """Whoever holds the running configuration (the controller)."""

    config: Config


class RouterChanges:
    """The router changes waiting for their environment to be idle, and the old routers
    still draining after one was applied."""

    def __init__(self, holder: ConfigHolder, repo: Repository,
                 clock: Callable[[], float]) -> None:
        self.holder = holder
        self.repo = repo
        self.clock = clock
        #: environment -> the router the last reload asks for, until it is applied (an
        #: environment with a rollout in progress keeps its router until the rollout ends)
        self.pending: dict[str, RouterConfig] = {}
        #: environment -> the router the last reloaded file asks for (empty: the file the
        #: server started from, which it runs or has pending)
        self._file_routers: dict[str, RouterConfig] = {}
        #: environment -> when a router change that failed to start is tried again
        self._retry_at: dict[str, float] = {}
        #: old routers draining after a router change (awaited on stop)
        self._retiring: set[asyncio.Task[None]] = set()

    def asked(self, running: Config, new: Config) -> list[str]:
        """A reload to ``new`` now runs as ``running``: the environments whose router
        change now waits (tried at the next idle pass, whatever failed before)."""
        self.pending = pending_routers(running, new)
        self._file_routers = {e.name: e.router for e in new.environments}
        for name in self.pending:
            self._retry_at.pop(name, None)
        return list(self.pending)

    async def maybe_apply(self, rt: EnvironmentRuntime) -> None:
        """An idle environment takes the router a reload asked for (or tries again); the
        caller holds the environment's lock."""
        if rt.name in self.pending and self.clock() >= self._retry_at.get(rt.name, 0.0):
            await self._apply(rt)

    async def adopt_as_it_runs(self, rt: EnvironmentRuntime) -> None:
        """A router running on other settings than the file's is adopted as it runs; the
        file's settings wait for an idle environment, as after a reload."""
        settings = await rt.router.running_settings()
        wanted = rt.config.router
        if settings is None:
            return
        try:
            running = type(wanted).model_validate({**wanted.model_dump(), **settings})
        except ValueError as exc:
            log.warning("the router of %s reports settings that do not read (%s): "
                        "restarting it on the file's", rt.name, exc)
            return
        if running == wanted:
            return
        env = rt.config.model_copy(update={"router": running})
        config = self.holder.config = with_router(self.holder.config, rt.name, running)
        await rt.router.close()
        rt.router, rt.config = ROUTERS[running.kind](config, env), env
        self.pending[rt.name] = wanted
        config = self.holder.config
        changes = diff_configs(config, with_router(config, rt.name, wanted))
        self.repo.add_event(
            app=config.app, environment=rt.name, kind=EventKind.CONFIG_RELOADED,
            actor="controller", message=f"the router of {rt.name} runs on other settings "
            f"than entrega.yaml ({', '.join(c.describe() for c in changes)}): adopted as it "
            "runs; the file's settings apply once no rollout is in progress",
            data={"applied": [], "needs_restart": [], "waiting": [
                {"path": c.path, "environment": c.environment, "before": c.before,
                 "after": c.after} for c in changes],
                "waiting_for": {rt.name: "no rollout in progress"}})

    async def _apply(self, rt: EnvironmentRuntime) -> None:
        """Replace the router of an idle environment with the one the config asks for."""
        wanted = self.pending[rt.name]
        before = rt.config.router
        current = self.holder.config
        config = with_router(current, rt.name, wanted)
        router = ROUTERS[wanted.kind](config, config.environment(rt.name))
        changes = [c for c in diff_configs(current, config) if c.environment == rt.name]
        try:
            retiring = await replace_router(rt.router, router, old_config=before,
                                            new_config=wanted)
        except EntregaError as exc:
            self._retry_at[rt.name] = self.clock() + ROUTER_RETRY_S
            log.warning("router change of %s: %s", rt.name, exc)
            self.repo.add_event(
                app=current.app, environment=rt.name, kind=EventKind.ERROR,
                actor="controller", message=f"the router of {rt.name} could not start on its "
                f"new settings ({exc}); the router on the running settings serves on (started "
                f"again if it had stopped); tried again in {ROUTER_RETRY_S:g} s",
                data={"changes": [c.path for c in changes]})
            await router.close()
            return
        # From the values now current: a reload may have swapped the config while the
        # routers were being replaced (its live changes stay, and its router wins).
        old = rt.router
        now_running = self.holder.config = with_router(self.holder.config, rt.name, wanted)
        rt.router, rt.config = router, now_running.environment(rt.name)
        desired = self._file_routers.get(rt.name, wanted)
        if desired == wanted:
            self.pending.pop(rt.name, None)
        else:
            self.pending[rt.name] = desired
        shown = ", ".join(c.describe() for c in changes)
        self.repo.add_event(
            app=now_running.app, environment=rt.name, kind=EventKind.CONFIG_APPLIED,
            actor="controller", message=f"the router of {rt.name} was restarted on its new "
            f"settings ({shown}); the old one "
            + ("drains its requests in flight" if retiring else "was drained and stopped"),
            data={"changes": [{"path": c.path, "before": c.before, "after": c.after}
                              for c in changes]})
        task = asyncio.create_task(_drain(old, retiring, rt.name))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def wait_for_retiring(self) -> None:
        """A stopping server waits a little for the old routers still draining (each
        drains on its own; the wait only spares their requests in flight)."""
        if self._retiring:
            await asyncio.wait(self._retiring, timeout=RETIRING_WAIT_S)


async def _drain(old: Router, retiring: Router | None, environment: str) -> None:
    """Drain and stop a replaced router (``retiring``: None when stopped already)."""
    await old.close()  # its connections to the control socket, before the router exits
    if retiring is None:
        return
    try:
        await retiring.shutdown()
    except EntregaError as exc:
        log.warning("stopping the old router of %s: %s", environment, exc)
    finally:
        await retiring.close()

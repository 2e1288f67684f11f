"""Reloading entrega.yaml in a running server (SIGHUP, ``entrega config reload``).

The controller holds the running configuration in one attribute (``Controller.config``),
which the service, the API and the notifier read through, so a reload is one assignment
between two awaits: no reconcile step sees half of it. What a change is, and when it
applies, is decided by the pure ``entrega.configdiff``; this module applies it.

A data-plane change (an environment's router) waits in ``pending`` until the environment
has no rollout in progress, checked at each reconcile pass under the environment's lock
(so no rollout starts meanwhile). Then :func:`replace_router` starts the new router beside
the old one and drains the old one:

- new addresses: the new router serves (with the live table) before the old one stops
  taking connections; the old one finishes its requests in flight, then exits. No request
  is refused or cut.
- shared addresses (the same listener with other workers, an unchanged preview
  listener): a new embedded router joins the old one's listeners (SO_REUSEPORT), so the
  kernel spreads connections over both until the old one, drained once the new one
  answers, closes its own (``Router.take_over``). A metrics listener or another kind's
  address is taken the moment the old router lets it go.
- HAProxy after HAProxy: the configuration is rewritten and the master reloads it
  (``HaproxyRouter.take_over``); only a new binary or runtime socket stops the old one
  (drained) before the new one starts, which refuses connections meanwhile.

Each reload is an event (``config_reloaded``: what applied, what waits, what needs a
restart; ``config_refused``: why a file was refused) and so is each applied data-plane
change (``config_applied``).
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field, replace

from entrega.config import RouterConfig
from entrega.configdiff import ChangeKind, ConfigChange
from entrega.errors import EntregaError
from entrega.routers.base import Router

log = logging.getLogger("entrega.controller")


@dataclass(frozen=True)
class Reload:
    """What one reload did: every change, and per environment what its data-plane change
    waits for (``"applying now"`` when the environment is idle)."""

    changes: tuple[ConfigChange, ...]
    waiting_for: dict[str, str] = field(default_factory=dict)

    def of(self, kind: ChangeKind) -> list[ConfigChange]:
        return [c for c in self.changes if c.kind == kind]

    def summary(self) -> str:
        if not self.changes:
            return "nothing changed"
        parts = []
        if live := self.of(ChangeKind.LIVE):
            parts.append(f"applied {_paths(live)}")
        if waiting := self.of(ChangeKind.DATA_PLANE):
            parts.append(f"router changes waiting ({_waits(self.waiting_for)}): "
                         f"{_paths(waiting)}")
        if restart := self.of(ChangeKind.SERVER):
            parts.append(f"restart the server to apply {_paths(restart)}")
        return "; ".join(parts)

    def to_data(self) -> dict[str, object]:
        def listed(kind: ChangeKind) -> list[dict[str, object]]:
            return [{"path": c.path, "environment": c.environment, "before": c.before,
                     "after": c.after} for c in self.of(kind)]

        return {"applied": listed(ChangeKind.LIVE), "waiting": listed(ChangeKind.DATA_PLANE),
                "needs_restart": listed(ChangeKind.SERVER),
                "waiting_for": dict(self.waiting_for)}


def _paths(changes: list[ConfigChange]) -> str:
    return ", ".join(c.path for c in changes)


def _waits(waiting_for: dict[str, str]) -> str:
    return "; ".join(f"{env}: {why}" for env, why in sorted(waiting_for.items()))


def addresses(router: RouterConfig) -> set[str]:
    """Every address a router of this config listens on."""
    found = {router.listen, router.preview_listen}
    found.add(getattr(router, "metrics_listen", None) or getattr(router, "stats_listen", None))
    return {a for a in found if a}


async def replace_router(old: Router, new: Router, *, old_config: RouterConfig,
                         new_config: RouterConfig) -> Router | None:
    """Start ``new`` in place of ``old`` with the live route table (module docstring).

    Returns the handle of the old router still to be drained and stopped (the caller does
    it in the background), or None when it is stopped already. Raises the new router's
    error when it cannot start; the old one then keeps (or takes back) its place, except
    on the same address, where it has stopped and the caller's repair starts one again.
    """
    routes = replace(await old.get_routes(), draining={})
    same_kind = old_config.kind == new_config.kind
    retiring = old.step_aside() if same_kind else old
    if retiring is None or addresses(old_config) & addresses(new_config):
        # The old router holds addresses the new one needs (or files of the same name):
        # the new one takes them over as the old one lets them go.
        await new.take_over(retiring or old)
        await new.set_routes(routes)
        return None
    try:
        await new.ensure_running()
        await new.set_routes(routes)
    except BaseException:
        with contextlib.suppress(EntregaError):
            await new.shutdown()
        retiring.step_back()
        raise
    return retiring

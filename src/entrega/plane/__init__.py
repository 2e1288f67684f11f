"""The control plane: every app one server delivers, over one store.

Each app is a :class:`~entrega.service.Service` with its own controller, exactly as a
single-app server runs it; they share the store (every row is keyed by app), the artifact
directory (content-addressed: the same bytes are kept once) and the API's authenticator.
Apps are independent by construction: each controller is its own asyncio task with its
own locks, so one app's slow host, hanging metrics provider or failed rollout never holds
up another app's reconcile pass. Beside them runs the release-group coordinator
(``groups.py``), which moves releases of several apps as one through those same services.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from entrega.config.apps import AppsConfig
from entrega.controller.batched import PLANE_INTERVAL_S, BatchedWrites
from entrega.controller.loop import Controller
from entrega.errors import NotFound
from entrega.plane.groups import GroupCoordinator
from entrega.releases.artifacts import artifact_store_for
from entrega.routers.base import Router
from entrega.service import Service
from entrega.store.database import Store
from entrega.store.groups_repository import GroupRepository
from entrega.store.repository import Repository

if TYPE_CHECKING:
    from entrega.plane.leader import LeaderRole

log = logging.getLogger("entrega.plane")


class ControlPlane:
    """The apps of one server, by name, in the order the configuration declares them."""

    def __init__(self, services: Sequence[Service], *, many: bool = False,
                 store: Store | None = None) -> None:
        self.services = {s.app: s for s in services}
        #: declared as several apps: their API lives under /api/v1/apps/<app> only
        self.many = many
        #: leader or standby among servers sharing a PostgreSQL store (plane/leader.py);
        #: None: this server alone owns its store (SQLite)
        self.role: LeaderRole | None = None
        #: release groups across these apps (plane/groups.py)
        self.groups = GroupCoordinator(
            self, GroupRepository(store or next(iter(self.services.values())).repo.store))

    def __iter__(self) -> Iterator[Service]:
        return iter(self.services.values())

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.services)

    @property
    def only(self) -> Service | None:
        """The app of a single-app server (today's paths answer for it)."""
        return None if self.many else next(iter(self.services.values()))

    def service(self, app: str) -> Service:
        found = self.services.get(app)
        if found is None:
            raise NotFound(f"this server delivers no app named {app!r}",
                           hint=f"apps: {', '.join(self.services)}")
        return found

    def router_of(self, app: str, environment: str) -> Router | None:
        """Another app's router in one environment, for metrics that name it."""
        service = self.services.get(app)
        runtime = service.controller.runtimes.get(environment) if service else None
        return runtime.router if runtime else None

    def may_act(self, leads: Callable[[], bool]) -> None:
        """Every controller asks ``leads`` before it acts on the data plane (a server
        that shares its store with others: plane/leader.py)."""
        for service in self:
            service.controller.may_act = leads

    async def start(self) -> None:
        """Every app's controller adopts its data plane at once: one app's slow hosts do
        not hold the others back."""
        await asyncio.gather(*(s.controller.start() for s in self))
        await self.groups.start()

    async def stop(self) -> None:
        await self.groups.stop()
        await asyncio.gather(*(s.controller.stop() for s in self))


def build_plane(apps: AppsConfig, *, config_file: Path | None = None
                ) -> tuple[ControlPlane, Store]:
    """One store for every app (the first app's settings: server, store and auth are the
    same in all of them), one controller per app."""
    shared = apps.first
    store = Store(shared.store_url)
    store.migrate()
    repo = Repository(store)
    # the apps' bookkeeping and samples, a transaction for all every quarter second
    batch = BatchedWrites(repo, interval_s=PLANE_INTERVAL_S)
    services = []
    for config in apps:
        artifacts = artifact_store_for(config)
        controller = Controller(config, repo, artifacts, batch=batch)
        services.append(Service(config, repo, artifacts, controller, config_file=config_file))
    plane = ControlPlane(services, many=apps.many, store=store)
    for service in services:  # metrics naming another app (app: web) read its router
        service.controller.peers = plane.router_of
    return plane, store

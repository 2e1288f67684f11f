"""The one interface every router implements, and the route table it applies.

A router owns a listening address and splits its traffic between releases by weight
(percent) and cohort rules. ``set_routes`` replaces the whole table at once, so a weight
change is atomic; a release dropped from ``backends`` keeps serving its in-flight
requests and is removed once they finish (``get_routes().draining`` shows them).
The router is a data plane of its own: it keeps its last routes while the controller is
down and after a restart of its own.

The table (``Routes``, ``CohortRule``) and what a router reports (``RouterMetrics``...)
cross into the data plane's processes, so they are defined there, in
``entrega.dataplane.routes`` and ``entrega.dataplane.reports``, which import nothing of
the controller; they are re-exported here because they are this interface's vocabulary.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

from entrega.dataplane.reports import (
    LATENCY_BUCKETS_MS,
    DataPlaneRestart,
    ReleaseMetrics,
    RouterMetrics,
)
from entrega.dataplane.routes import CohortRule, Routes, pin_tag, weight_slots

__all__ = ["LATENCY_BUCKETS_MS", "CohortRule", "DataPlaneRestart", "HostRouterState",
           "ReleaseMetrics", "Router",
           "RouterMetrics", "Routes", "pin_tag", "weight_slots"]


@dataclass(frozen=True)
class HostRouterState:
    """One host's own router, for a router that runs on every host of a fleet, as the
    adapter last saw it (status reads it; no host is asked)."""

    host: str
    listen: str
    #: False: the host itself could not be reached
    reachable: bool = True
    #: False: the host answered but its router did not
    answering: bool = True
    #: the generation of the table the host holds (0: none this controller set)
    generation: int = 0
    #: True when it holds the current table
    in_step: bool = False
    pid: int | None = None
    error: str | None = None



class Router(abc.ABC):
    """Splits one environment's traffic between releases."""

    @abc.abstractmethod
    async def ensure_running(self) -> None:
        """Start the data plane, or adopt the one already running. Idempotent."""

    @abc.abstractmethod
    async def set_routes(self, routes: Routes) -> None:
        """Replace the route table atomically. Idempotent; drops no in-flight request.
        A table that ``routes.validate()`` refuses (or this router cannot express) raises
        ``RouterError`` naming the problem, and nothing is applied."""

    @abc.abstractmethod
    async def get_routes(self) -> Routes:
        """What is live now (used to repair after a crash)."""

    @abc.abstractmethod
    async def metrics(self) -> RouterMetrics:
        """Cumulative per-release counters since the router started."""

    @abc.abstractmethod
    async def shutdown(self) -> None:
        """Stop the data plane gracefully (in-flight requests finish). Idempotent."""

    def host_states(self) -> dict[str, HostRouterState]:
        """For a router on every host of a fleet: each host's router, by host name, as
        last seen (no host is asked). Empty for a router that runs in one place."""
        return {}

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release controller-side resources; the data plane keeps running."""

    async def running_settings(self) -> dict[str, object] | None:
        """The settings the running router was started with, by their config names
        (``listen``, ``workers``...), or None when none runs or this kind cannot say:
        a restarted controller adopts it as it runs and changes it like a reload does."""
        return None

    async def take_over(self, retiring: Router) -> None:
        """Start this router in place of ``retiring``, which may hold some of its addresses
        (a changed configuration). By default ``retiring`` is stopped (drained) first."""
        await retiring.shutdown()
        await self.ensure_running()

    def step_aside(self) -> Router | None:
        """Make room for a successor of the same name and kind to start beside this running
        router (a changed configuration), and return a handle that still reaches this one
        (to drain and stop it). None: this kind cannot run beside a successor, which then
        starts only once this one has stopped."""
        return None

    def step_back(self) -> None:  # noqa: B027 - optional hook
        """On the handle ``step_aside`` returned: take the router's place again (its
        successor did not start)."""

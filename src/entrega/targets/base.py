"""The one interface every target implements.

A target runs the instances of releases for one environment. Every method is idempotent
and keyed by the release version: starting a release that runs already returns its
endpoints, stopping a stopped release does nothing. Instances outlive the controller
(they are processes of their own), so after a restart the controller adopts them through
:meth:`Target.observe` and :meth:`Target.start` instead of starting them again.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path

from entrega.net import Endpoint


@dataclass(frozen=True)
class ReleaseRef:
    """What a target needs to run one release: its identity and its unpacked bytes."""

    app: str
    version: str
    digest: str
    #: Directory holding the unpacked artifact (read-only for instances).
    path: Path


@dataclass(frozen=True)
class HealthCheck:
    """How readiness is probed: HTTP GET ``path`` on every instance, repeatedly.

    An instance is ready after ``healthy_threshold`` consecutive successes (one success
    proves little: apps often answer once and then fall over while warming up) and stops
    being ready after ``unhealthy_threshold`` consecutive failures.
    """

    path: str = "/healthz"
    interval_s: float = 0.5
    timeout_s: float = 2.0
    healthy_threshold: int = 3
    unhealthy_threshold: int = 3
    #: An instance whose app exits this many times before it was first healthy cannot
    #: become ready (a crash loop): its release fails at once instead of after the
    #: progress deadline. 0: never judged so.
    max_start_exits: int = 5


@dataclass(frozen=True)
class InstanceHealth:
    endpoint: Endpoint
    healthy: bool
    consecutive_successes: int
    consecutive_failures: int
    last_error: str | None = None


@dataclass(frozen=True)
class Readiness:
    """A snapshot of continuous health probing of one release's instances."""

    ready: bool
    instances: tuple[InstanceHealth, ...] = ()
    detail: str = ""
    #: Why the release cannot become ready however long it is given (a crash loop, with
    #: the exit code and the app's last words); None while it still may.
    failure: str | None = None

    @property
    def healthy_count(self) -> int:
        return sum(1 for i in self.instances if i.healthy)


@dataclass(frozen=True)
class InstanceState:
    """What a target observes of one instance (for crash recovery and restart counting)."""

    version: str
    instance: str
    endpoint: Endpoint | None
    alive: bool
    pid: int | None = None
    restarts: int = 0
    started_at: float | None = None
    extra: dict[str, object] = field(default_factory=dict)


def host_of(instance: str) -> str:
    """The host an instance runs on, from its name (``web1/0`` -> ``web1``; a local
    instance, named without a host, is on ``""``)."""
    return instance.rpartition("/")[0]


class Target(abc.ABC):
    """Runs releases' instances for one environment.

    ``hosts`` (start, ready, stop) narrows the work to some hosts of a fleet, by name
    (rolling moves a release a batch of hosts at a time); None means every host. A target
    of one machine has no hosts to choose from and refuses a narrowing.
    """

    @abc.abstractmethod
    async def start(self, *, release: ReleaseRef,
                    hosts: tuple[str, ...] | None = None) -> list[Endpoint]:
        """Start the release's instances (or adopt running ones); return their endpoints
        (those of ``hosts`` only, when given).

        Idempotent: a release already running keeps its instances and endpoints.
        """

    @abc.abstractmethod
    async def ready(self, *, release: ReleaseRef,
                    hosts: tuple[str, ...] | None = None) -> Readiness:
        """Current readiness from continuous probing (starts probing on first call)."""

    @abc.abstractmethod
    async def stop(self, *, release: ReleaseRef, drain_s: float,
                   hosts: tuple[str, ...] | None = None) -> None:
        """Stop the release: SIGTERM (or equivalent), up to ``drain_s`` seconds, then kill.

        Idempotent; returns once every instance (of ``hosts``, when given) has exited.
        """

    @abc.abstractmethod
    async def observe(self) -> list[InstanceState]:
        """Every instance this target knows of in its environment, running or not."""

    def hosts(self) -> list[tuple[str, str]]:
        """(name, address) of each host of a fleet; empty for a single machine."""
        return []

    def host_errors(self) -> dict[str, str]:
        """Why each host that did not answer the last :meth:`observe` did not."""
        return {}

    def hosts_down_for(self) -> dict[str, float]:
        """Seconds since each host of :meth:`host_errors` first failed an observation,
        with no answer since."""
        return {}

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release the controller-side resources (probers, clients); instances keep running."""

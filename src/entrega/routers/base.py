"""The one interface every router implements, and the route table it applies.

A router owns a listening address and splits its traffic between releases by weight
(percent) and cohort rules. ``set_routes`` replaces the whole table at once, so a weight
change is atomic; a release dropped from ``backends`` keeps serving its in-flight
requests and is removed once they finish (``get_routes().draining`` shows them).
The router is a data plane of its own: it keeps its last routes while the controller is
down and after a restart of its own.
"""

from __future__ import annotations

import abc
import hashlib
from dataclasses import dataclass, field

from entrega.net import Endpoint

#: Upper bounds (ms) of the fixed latency histogram buckets; the last bucket is +inf.
LATENCY_BUCKETS_MS: tuple[float, ...] = (
    1, 2, 3, 5, 7.5, 10, 15, 20, 30, 50, 75, 100, 150, 200, 300, 500, 750,
    1000, 1500, 2000, 3000, 5000, 10000,
)


@dataclass(frozen=True)
class CohortRule:
    """Requests that go to ``release`` whatever the weights (selected users first).

    A request matches if it carries ``header`` (with ``header_value`` when set), or its
    user id (from ``user_header`` or ``user_cookie``) is in ``users``, or that user id's
    stable hash bucket (murmur3 of ``"<app>:<user id>"`` mapped to 1..100) is
    ``<= percent``.
    """

    release: str
    header: str | None = None
    header_value: str | None = None
    user_header: str | None = None
    user_cookie: str | None = None
    users: frozenset[str] = frozenset()
    percent: int = 0
    app: str = ""

    def to_dict(self) -> dict[str, object]:
        return {
            "release": self.release, "header": self.header, "header_value": self.header_value,
            "user_header": self.user_header, "user_cookie": self.user_cookie,
            "users": sorted(self.users), "percent": self.percent, "app": self.app,
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> CohortRule:
        users = data.get("users") or []
        assert isinstance(users, list)
        return cls(
            release=str(data["release"]),
            header=_opt_str(data.get("header")),
            header_value=_opt_str(data.get("header_value")),
            user_header=_opt_str(data.get("user_header")),
            user_cookie=_opt_str(data.get("user_cookie")),
            users=frozenset(str(u) for u in users),
            percent=int(str(data.get("percent") or 0)),
            app=str(data.get("app") or ""),
        )


def _opt_str(value: object) -> str | None:
    return None if value is None else str(value)


@dataclass(frozen=True)
class Routes:
    """The whole route table of one router."""

    #: release version -> its instances' endpoints
    backends: dict[str, tuple[Endpoint, ...]] = field(default_factory=dict)
    #: release version -> percent of traffic (sums to 100 when not empty)
    weights: dict[str, int] = field(default_factory=dict)
    cohort: CohortRule | None = None
    #: release served alone on the preview listener (blue-green), if any
    preview: str | None = None
    #: get_routes only: releases removed from backends that still have requests in flight
    draining: dict[str, int] = field(default_factory=dict)
    #: Salt of the sticky-pin draw (the rollout's id): a pin cookie drawn under another
    #: salt (an earlier rollout) is redrawn, so old pins cannot starve a new canary.
    pin_salt: str = ""

    def to_dict(self) -> dict[str, object]:
        return {
            "backends": {r: [e.to_dict() for e in eps] for r, eps in self.backends.items()},
            "weights": dict(self.weights),
            "cohort": self.cohort.to_dict() if self.cohort else None,
            "preview": self.preview,
            "draining": dict(self.draining),
            "pin_salt": self.pin_salt,
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Routes:
        backends = data.get("backends") or {}
        weights = data.get("weights") or {}
        cohort = data.get("cohort")
        draining = data.get("draining") or {}
        assert isinstance(backends, dict) and isinstance(weights, dict)
        assert isinstance(draining, dict)
        return cls(
            backends={str(r): tuple(Endpoint.from_dict(e) for e in eps)
                      for r, eps in backends.items()},
            weights={str(r): int(w) for r, w in weights.items()},
            cohort=CohortRule.from_dict(cohort) if isinstance(cohort, dict) else None,
            preview=_opt_str(data.get("preview")),
            draining={str(r): int(n) for r, n in draining.items()},
            pin_salt=str(data.get("pin_salt") or ""),
        )

    def same_table(self, other: Routes) -> bool:
        """True when both route the same way (ignores ``draining``)."""
        return (self.backends == other.backends and self.weights == other.weights
                and self.cohort == other.cohort and self.preview == other.preview
                and self.pin_salt == other.pin_salt)


def pin_tag(pin_salt: str) -> str:
    """The short, cookie-safe name of a pin salt that a router writes into each visitor's
    draw cookie: a draw carrying another tag was made in another rollout and is redrawn.
    (8 hex digits of sha256: a collision between two rollouts' tags, about one in four
    billion, only means their visitors keep their draw.)"""
    return hashlib.sha256(pin_salt.encode()).hexdigest()[:8]


@dataclass(frozen=True)
class ReleaseMetrics:
    """Cumulative counters of one release since the router started (``started_at``).

    Consumers take differences between two snapshots; a counter that went down means
    the router restarted, and the later snapshot is then the whole difference.
    """

    requests: int = 0
    #: responses with status >= 500, including the router's own 502/503/504
    errors_5xx: int = 0
    #: counts per bucket of LATENCY_BUCKETS_MS, plus one last +inf bucket
    latency_buckets: tuple[int, ...] = ()
    latency_sum_ms: float = 0.0
    inflight: int = 0
    #: most recent request latencies (ms), a bounded ring, newest last
    samples_ms: tuple[float, ...] = ()
    #: total number of samples ever recorded (so a consumer can take just the new ones)
    samples_total: int = 0


@dataclass(frozen=True)
class DataPlaneRestart:
    """A process the data plane restarted by itself, without the controller (a router
    worker that died). The controller records each one as an event (``history``)."""

    #: what was restarted, e.g. ``"router worker 0"``
    what: str
    #: unix time of the restart
    at: float
    #: why, e.g. ``"exited with signal 9"``
    reason: str


@dataclass(frozen=True)
class RouterMetrics:
    started_at: float
    releases: dict[str, ReleaseMetrics]
    #: the most recent restarts the router did by itself (bounded, oldest first); a
    #: consumer records the ones newer than the last it saw
    restarts: tuple[DataPlaneRestart, ...] = ()


class Router(abc.ABC):
    """Splits one environment's traffic between releases."""

    @abc.abstractmethod
    async def ensure_running(self) -> None:
        """Start the data plane, or adopt the one already running. Idempotent."""

    @abc.abstractmethod
    async def set_routes(self, routes: Routes) -> None:
        """Replace the route table atomically. Idempotent; drops no in-flight request."""

    @abc.abstractmethod
    async def get_routes(self) -> Routes:
        """What is live now (used to repair after a crash)."""

    @abc.abstractmethod
    async def metrics(self) -> RouterMetrics:
        """Cumulative per-release counters since the router started."""

    @abc.abstractmethod
    async def shutdown(self) -> None:
        """Stop the data plane gracefully (in-flight requests finish). Idempotent."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release controller-side resources; the data plane keeps running."""

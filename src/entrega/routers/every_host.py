"""``EveryHostRouter``: a router on every host of a fleet, set in lockstep.

Topology (a) of a fleet: each host runs its own router (the embedded router or HAProxy,
the same data plane as on one machine), all behind the user's own load balancer, which may send a
request to any host. So every host's router must route the same way: one table (weights,
cohort, preview, pin salt) naming every instance of the fleet, set on all hosts at once.
The controller sees them as one router:

- ``set_routes`` puts the table on every host concurrently. It returns once every host
  that can be reached has it (lockstep): a reachable host whose router refuses it or does
  not answer fails the call, so the controller's pass is not done and is retried. A host
  that cannot be reached is left behind; ``generation`` counts the tables set, and each
  host's state says which one it holds.
- ``get_routes`` answers the table when every reachable host holds the same one. When they
  differ (a host that was down came back with an older table, a restarted router read its
  last saved one), it answers an empty table carrying only what drains, which no wanted
  table equals, so the controller's next pass sets the current table on every host again.
  A reachable host whose router does not answer makes it raise RouterUnreachable: the
  controller then starts that router again (``ensure_running``) and sets the table.
- ``metrics`` sums every host's counters and latency sketches per release. Windows stay
  differences of snapshots of one monotonic series: this adapter counts from when it first
  read each host's series (``started_at`` is its own start, ``series`` its own token), and
  when a host's router restarts (its ``started_at``/``series`` change), what that host had
  counted so far is carried over, so the sum never goes back. A host that cannot be read
  keeps its last counts in the sum. A new adapter (a restarted controller) is a new series:
  its first window is then its own snapshot alone, which counts from zero, as it should.

How a host is reached is not this module's business: a :class:`HostRouterLink` per host
(for an ``ssh`` target, ``targets/ssh/hostrouter.py``: the host agent and the SSH
connection). Host-down is ``TargetUnreachable``; a host whose router does not answer is
``RouterUnreachable``. A router driven from the controller through adapters of its own
(HAProxy on a host: ``routers/haproxy/on_host.py``) is a link through
:class:`RouterOnHost`, which answers the same control calls from its ``Router`` methods.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol, TypeVar

from entrega.codec import Codec
from entrega.dataplane.sketch import LatencySketch
from entrega.errors import (
    EntregaError,
    InvalidRecord,
    RouterError,
    RouterUnreachable,
    TargetUnreachable,
)
from entrega.routers.base import (
    DataPlaneRestart,
    HostRouterState,
    ReleaseMetrics,
    Router,
    RouterMetrics,
    Routes,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

_METRICS: Codec[RouterMetrics] = Codec(RouterMetrics, what="a host router's metrics")
#: Latencies kept per release across hosts (newest last), like one router's ring.
SAMPLES_KEPT = 4096
#: Restarts kept for ``metrics().restarts`` (oldest first), like one router keeps.
RESTARTS_KEPT = 64


class HostRouterLink(Protocol):
    """How the controller reaches one host's router."""

    #: the host's name (as status shows it)
    name: str
    #: where the router serves traffic on that host (``HOST:PORT``)
    listen: str

    async def ensure(self) -> dict[str, object]:
        """Start the host's router or adopt the running one; its health. Idempotent."""
        ...

    async def stop(self) -> None:
        """Drain and stop the host's router. Idempotent."""
        ...

    async def control(self, method: str, path: str, body: object | None = None
                      ) -> dict[str, object]:
        """One call of the router's control API (``GET /routes``...); its JSON answer."""
        ...


class RouterOnHost:
    """A ``Router`` the controller drives on one host (HAProxy: ``routers/haproxy/
    on_host.py``) as a :class:`HostRouterLink`: the control calls answered by its methods,
    with the JSON of the embedded router's control API."""

    def __init__(self, router: Router, *, name: str, listen: str,
                 health: Callable[[], dict[str, object]] | None = None) -> None:
        self.router = router
        self.name = name
        self.listen = listen
        #: after ``ensure_running``: its ``pid`` and whether it was ``started`` (not adopted)
        self._health = health or dict

    async def ensure(self) -> dict[str, object]:
        await self.router.ensure_running()
        return self._health()

    async def stop(self) -> None:
        await self.router.shutdown()

    async def control(self, method: str, path: str, body: object | None = None
                      ) -> dict[str, object]:
        if (method, path) == ("GET", "/routes"):
            return (await self.router.get_routes()).to_dict()
        if (method, path) == ("PUT", "/routes"):
            try:
                table = Routes.from_dict(body)
            except ValueError as exc:
                raise RouterError(f"the router on host {self.name}: the route table does "
                                  f"not read: {exc}") from None
            await self.router.set_routes(table)
            return {}
        if (method, path) == ("GET", "/metrics"):
            answer = _METRICS.dump(await self.router.metrics())
            assert isinstance(answer, dict)
            return answer
        raise RouterError(f"the router on host {self.name} has no {method} {path}")


@dataclass
class _HostCounters:
    """One host's counters as summed: ``carried`` (earlier series of its router) plus
    ``last - first`` (the current series since this adapter first read it)."""

    key: tuple[float, str]
    first: dict[str, ReleaseMetrics]
    last: dict[str, ReleaseMetrics]
    carried: dict[str, ReleaseMetrics] = field(default_factory=dict)
    restarts: tuple[DataPlaneRestart, ...] = ()


class EveryHostRouter(Router):
    """The routers of every host of a fleet as one ``Router``. Every method is idempotent."""

    def __init__(self, *, name: str, hosts: Sequence[HostRouterLink],
                 close: Callable[[], Awaitable[None]] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        if not hosts:
            raise RouterError(f"router {name!r} runs on every host, but the target has none")
        self.name = name
        self.hosts = tuple(hosts)
        #: how many tables this adapter has set; each host's state says which it holds
        self.generation = 0
        self._table: Routes | None = None
        self._states = {h.name: HostRouterState(host=h.name, listen=h.listen)
                        for h in self.hosts}
        self._counters: dict[str, _HostCounters] = {}
        self._samples: dict[str, deque[float]] = {}
        self._samples_total: dict[str, int] = {}
        self._own_restarts: list[DataPlaneRestart] = []
        self._started_at = clock()
        self._series = "every-host-" + secrets.token_hex(6)
        #: the hosts whose router the last ``ensure_running`` started (not adopted)
        self.started_on: tuple[str, ...] = ()
        #: releases what the links hold (their connections); the routers keep running
        self._close = close

    # -- Router ------------------------------------------------------------------------

    async def ensure_running(self) -> None:
        async def ensure(link: HostRouterLink) -> dict[str, object]:
            return await link.ensure()

        started = []
        for link, health in await self._on_every_host(ensure, "starting its router"):
            pid = health.get("pid")
            self._note(link, answering=True, pid=pid if isinstance(pid, int) else None)
            if health.get("started") is True:
                started.append(link.name)
        self.started_on = tuple(started)

    async def set_routes(self, routes: Routes) -> None:
        try:
            routes.validate()
        except ValueError as exc:
            raise RouterError(f"router {self.name!r}: the route table is refused: {exc}"
                              ) from None
        self.generation += 1
        self._table = routes
        generation, table = self.generation, routes.to_dict()

        async def put(link: HostRouterLink) -> int:
            await link.control("PUT", "/routes", table)
            return generation

        for link, done in await self._on_every_host(put, "setting its routes"):
            self._note(link, answering=True, generation=done, in_step=True)

    async def get_routes(self) -> Routes:
        async def read(link: HostRouterLink) -> Routes:
            answer = await link.control("GET", "/routes")
            try:
                return Routes.from_dict(answer)
            except ValueError as exc:
                raise RouterError(f"the router on host {link.name}: GET /routes answered "
                                  f"a table that does not read: {exc}") from None

        tables = await self._on_every_host(read, "reading its routes")
        draining: dict[str, int] = {}
        for _link, table in tables:
            for version, count in table.draining.items():
                draining[version] = draining.get(version, 0) + count
        first = tables[0][1]
        agree = all(table.same_table(first) for _link, table in tables)
        if self._table is None and agree:
            # a restarted controller adopts the table every host holds as the current one
            self._table = replace(first, draining={})
        for link, table in tables:
            in_step = self._table is not None and table.same_table(self._table)
            self._note(link, answering=True, in_step=in_step,
                       generation=self.generation if in_step else 0)
        if agree:
            return replace(first, draining=draining)
        behind = [link.name for link, table in tables if not table.same_table(first)]
        log.info("router %s: hosts %s hold another table than host %s; setting it again",
                 self.name, ", ".join(behind), tables[0][0].name)
        return Routes(draining=draining)

    async def metrics(self) -> RouterMetrics:
        async def read(link: HostRouterLink) -> RouterMetrics:
            answer = await link.control("GET", "/metrics")
            try:
                return _METRICS.load(answer)
            except (ValueError, InvalidRecord) as exc:
                raise RouterError(f"the router on host {link.name}: GET /metrics answered "
                                  f"counters that do not read: {exc}") from None

        async def one(link: HostRouterLink) -> tuple[HostRouterLink, RouterMetrics | None]:
            try:
                return link, await read(link)
            except TargetUnreachable as exc:
                self._note(link, reachable=False, error=str(exc))
            except RouterUnreachable as exc:
                self._note(link, answering=False, error=str(exc))
            return link, None  # its last counts stay in the sum

        read_any = False
        for link, found in await asyncio.gather(*(one(h) for h in self.hosts)):
            if found is not None:
                read_any = True
                self._count(link.name, found)
        if not read_any and not self._counters:
            raise RouterUnreachable(f"router {self.name!r}: no host's router answered",
                                    hint="see status for each host")
        return self._sum()

    async def shutdown(self) -> None:
        async def stop(link: HostRouterLink) -> None:
            await link.stop()

        await self._on_every_host(stop, "stopping its router", all_down_ok=True)

    async def close(self) -> None:
        if self._close is not None:
            await self._close()

    def host_states(self) -> dict[str, HostRouterState]:
        return dict(self._states)

    # -- helpers -------------------------------------------------------------------------

    async def _on_every_host(self, work: Callable[[HostRouterLink], Awaitable[T]],
                             doing: str, *, all_down_ok: bool = False
                             ) -> list[tuple[HostRouterLink, T]]:
        """``work`` on every host at once; the results of the hosts that could be reached.
        Raises the first failure of a reachable host (naming it), or RouterUnreachable
        when no host could be reached."""

        async def one(link: HostRouterLink) -> tuple[HostRouterLink, T | None,
                                                     EntregaError | None]:
            try:
                return link, await work(link), None
            except EntregaError as exc:
                return link, None, exc

        outcomes = await asyncio.gather(*(one(h) for h in self.hosts))
        done: list[tuple[HostRouterLink, T]] = []
        failed: EntregaError | None = None
        for link, value, error in outcomes:
            if isinstance(error, TargetUnreachable):
                self._note(link, reachable=False, error=str(error))
                log.warning("router %s: host %s is left behind while %s: %s", self.name,
                            link.name, doing, error)
            elif error is not None:
                self._note(link, answering=not isinstance(error, RouterUnreachable),
                           error=str(error))
                failed = failed or error
            else:
                done.append((link, value))  # type: ignore[arg-type]
        if failed is not None:
            raise failed
        if not done and not all_down_ok:
            raise RouterUnreachable(f"router {self.name!r}: no host could be reached while "
                                    f"{doing}", hint="see status for each host")
        return done

    def _note(self, link: HostRouterLink, *, reachable: bool = True, answering: bool = True,
              generation: int | None = None, in_step: bool | None = None,
              pid: int | None = None, error: str | None = None) -> None:
        before = self._states[link.name]
        self._states[link.name] = replace(
            before, reachable=reachable, answering=reachable and answering,
            generation=before.generation if generation is None else generation,
            in_step=(before.in_step if in_step is None else in_step) and error is None,
            pid=pid if pid is not None else before.pid, error=error)

    def _count(self, host: str, found: RouterMetrics) -> None:
        key = (found.started_at, found.series)
        counters = self._counters.get(host)
        if counters is None:
            # what the host counted before this adapter began is not this series' to sum
            counters = self._counters[host] = _HostCounters(
                key=key, first=dict(found.releases), last=dict(found.releases),
                restarts=found.restarts)
            previous: dict[str, ReleaseMetrics] = dict(found.releases)
        elif counters.key != key:
            for version, last in counters.last.items():
                gained = _minus(last, counters.first.get(version))
                counters.carried[version] = _plus(counters.carried.get(version), gained)
            self._own_restarts.append(DataPlaneRestart(
                what=f"router on host {host}", at=found.started_at,
                reason="its counters started again (those it had are kept in the sums)"))
            counters.key, counters.first, counters.last = key, {}, dict(found.releases)
            previous = {}
        else:
            previous, counters.last = counters.last, dict(found.releases)
        counters.restarts = tuple(replace(r, what=f"{r.what} on host {host}")
                                  for r in found.restarts)
        for version, now in found.releases.items():
            before = previous.get(version)
            new = now.samples_total - (before.samples_total if before else 0)
            if new > 0:
                ring = self._samples.setdefault(version, deque(maxlen=SAMPLES_KEPT))
                ring.extend(now.samples_ms[-new:])
                self._samples_total[version] = self._samples_total.get(version, 0) + new

    def _sum(self) -> RouterMetrics:
        releases: dict[str, ReleaseMetrics] = {}
        for counters in self._counters.values():
            for version in set(counters.last) | set(counters.carried):
                last = counters.last.get(version)
                share = _plus(counters.carried.get(version),
                              _minus(last, counters.first.get(version)) if last else None)
                share = replace(share, inflight=last.inflight if last else 0)
                releases[version] = _plus(releases.get(version), share)
        releases = {v: replace(m, samples_ms=tuple(self._samples.get(v, ())),
                               samples_total=self._samples_total.get(v, 0))
                    for v, m in releases.items()}
        restarts = sorted([*self._own_restarts,
                           *(r for c in self._counters.values() for r in c.restarts)],
                          key=lambda r: r.at)[-RESTARTS_KEPT:]
        return RouterMetrics(started_at=self._started_at, releases=releases,
                             restarts=tuple(restarts), series=self._series)


def _buckets(a: tuple[int, ...], b: tuple[int, ...], sign: int) -> tuple[int, ...]:
    size = max(len(a), len(b))
    a, b = a + (0,) * (size - len(a)), b + (0,) * (size - len(b))
    return tuple(max(0, x + sign * y) for x, y in zip(a, b, strict=True))


def _plus(a: ReleaseMetrics | None, b: ReleaseMetrics | None) -> ReleaseMetrics:
    """The counts of ``a`` and ``b`` together (``inflight``: both now)."""
    a, b = a or ReleaseMetrics(), b or ReleaseMetrics()
    if a.latency_sketch is None or b.latency_sketch is None:
        sketch = a.latency_sketch or b.latency_sketch
    else:
        sketch = a.latency_sketch.merge(b.latency_sketch)
    return ReleaseMetrics(requests=a.requests + b.requests,
                          errors_5xx=a.errors_5xx + b.errors_5xx,
                          latency_buckets=_buckets(a.latency_buckets, b.latency_buckets, 1),
                          latency_sum_ms=a.latency_sum_ms + b.latency_sum_ms,
                          inflight=a.inflight + b.inflight, latency_sketch=sketch)


def _minus(later: ReleaseMetrics | None, earlier: ReleaseMetrics | None) -> ReleaseMetrics:
    """What one series counted from ``earlier`` to ``later`` (no samples, no inflight)."""
    later = later or ReleaseMetrics()
    if earlier is None:
        return replace(later, inflight=0, samples_ms=(), samples_total=0)
    sketch: LatencySketch | None = later.latency_sketch
    if sketch is not None and earlier.latency_sketch is not None:
        sketch = sketch.minus(earlier.latency_sketch) or LatencySketch()
    return ReleaseMetrics(requests=max(0, later.requests - earlier.requests),
                          errors_5xx=max(0, later.errors_5xx - earlier.errors_5xx),
                          latency_buckets=_buckets(later.latency_buckets,
                                                   earlier.latency_buckets, -1),
                          latency_sum_ms=max(0.0, later.latency_sum_ms - earlier.latency_sum_ms),
                          latency_sketch=sketch)

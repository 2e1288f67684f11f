"""The stand-in data plane of ``bench.scale``: a target and a router that answer at once.

A thousand rollouts in flight need two thousand instances and a thousand routers, which
two cores cannot run; what the benchmark measures is the controller, so each
environment's target and router are replaced by these (``"data_plane": "stand-in"`` in
its output). They keep the providers' contracts (``targets/base.py``, ``routers/base.py``):
idempotent, keyed by release, a route table replaced whole, cumulative counters.

The counters are synthetic and healthy: every release the table routes to serves
``RATE_RPS`` x its weight, with the same error rate and the same latencies for every
release, so the canaries' analyses see no difference and pass (or wait for evidence):
no rollout is rolled back by the stand-in itself. Both grow with the wall clock, so
each check judges a real window of counts, as from a router.
"""

from __future__ import annotations

import time

from entrega.dataplane.sketch import LatencySketch, bucket_index
from entrega.errors import RouterError
from entrega.net import Endpoint
from entrega.routers.base import (
    LATENCY_BUCKETS_MS,
    ReleaseMetrics,
    Router,
    RouterMetrics,
    Routes,
)
from entrega.targets.base import InstanceState, Readiness, ReleaseRef, Target

#: requests per second a stand-in router serves in all (split by the table's weights)
RATE_RPS = 200.0
#: every release's error share (0.1%: the judges see the same rate on both sides)
ERROR_SHARE = 0.001
#: every release's latencies (ms) and their shares: one histogram for every release
LATENCIES_MS = ((8.0, 0.5), (15.0, 0.3), (30.0, 0.15), (80.0, 0.05))


class StandInTarget(Target):
    """Instances that are ready the moment they are asked for (no process runs)."""

    def __init__(self, *, environment: str, port: int) -> None:
        self.environment = environment
        self.port = port
        self.running: dict[str, float] = {}  # version -> started at

    async def start(self, *, release: ReleaseRef,
                    hosts: tuple[str, ...] | None = None) -> list[Endpoint]:
        self.running.setdefault(release.version, time.time())
        return [Endpoint("127.0.0.1", self.port)]

    async def ready(self, *, release: ReleaseRef,
                    hosts: tuple[str, ...] | None = None) -> Readiness:
        return Readiness(ready=release.version in self.running)

    async def stop(self, *, release: ReleaseRef, drain_s: float,
                   hosts: tuple[str, ...] | None = None) -> None:
        self.running.pop(release.version, None)

    async def observe(self) -> list[InstanceState]:
        return [InstanceState(version=v, instance="0", endpoint=Endpoint("127.0.0.1", self.port),
                              alive=True, started_at=at) for v, at in self.running.items()]


class StandInRouter(Router):
    """A route table kept in memory and counters that grow with the clock."""

    def __init__(self) -> None:
        self.started_at = time.time()
        self.routes = Routes()
        #: version -> (requests counted until ``since``, weight share since then, since)
        self._served: dict[str, tuple[float, float, float]] = {}

    async def ensure_running(self) -> None:
        return None

    async def set_routes(self, routes: Routes) -> None:
        try:
            routes.validate()
        except ValueError as exc:
            raise RouterError(f"stand-in router: {exc}") from None
        now = time.time()
        for version in set(self._served) | set(routes.weights):
            total = self._requests(version, now)
            self._served[version] = (total, routes.weights.get(version, 0) / 100, now)
        self.routes = routes

    async def get_routes(self) -> Routes:
        return self.routes

    def _requests(self, version: str, now: float) -> float:
        counted, share, since = self._served.get(version, (0.0, 0.0, now))
        return counted + share * RATE_RPS * (now - since)

    async def metrics(self) -> RouterMetrics:
        now = time.time()
        return RouterMetrics(started_at=self.started_at, releases={
            version: _counters(int(self._requests(version, now))) for version in self._served})

    async def shutdown(self) -> None:
        return None


#: each latency's sketch bucket and histogram bucket, found once (the stand-in answers
#: a thousand checks a second: its own cost must stay small beside the controller's)
_PLACES = tuple((ms, share, bucket_index(ms),
                 next(i for i, upper in enumerate(LATENCY_BUCKETS_MS) if ms <= upper))
                for ms, share in LATENCIES_MS)


def _counters(requests: int) -> ReleaseMetrics:
    sketch: dict[int, int] = {}
    buckets = [0] * (len(LATENCY_BUCKETS_MS) + 1)
    total_ms = 0.0
    for ms, share, in_sketch, in_histogram in _PLACES:
        count = round(requests * share)
        if count:
            sketch[in_sketch] = sketch.get(in_sketch, 0) + count
            buckets[in_histogram] += count
            total_ms += ms * count
    return ReleaseMetrics(requests=requests, errors_5xx=int(requests * ERROR_SHARE),
                          latency_buckets=tuple(buckets), latency_sum_ms=total_ms,
                          latency_sketch=LatencySketch(sketch))

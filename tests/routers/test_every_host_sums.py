"""EveryHostRouter's sums and lockstep, over hosts whose routers are scripted here.

The transport to a host (SSH, the host agent) is tested on real sshd hosts in
tests/fleet/test_routers_on_every_host.py; here, what the adapter makes of what the hosts
answer: per-release sums that stay one monotonic series when a host's router restarts or
cannot be read, a table set on every reachable host, and a host left behind set again.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from entrega.analysis.evaluate import compute_windows
from entrega.analysis.providers.builtin import snapshot
from entrega.dataplane.sketch import LatencySketch
from entrega.errors import RouterError, RouterUnreachable, TargetUnreachable
from entrega.net import Endpoint
from entrega.routers.base import Routes
from entrega.routers.every_host import EveryHostRouter


@dataclass
class ScriptedHost:
    """One host's router: its counters (requests, errors, latencies in ms) per release and
    its table; ``down``: the host does not answer, ``dead``: its router does not."""

    name: str
    started_at: float = 1000.0
    counts: dict[str, tuple[int, int, list[float]]] = field(default_factory=dict)
    table: dict[str, object] = field(default_factory=lambda: Routes().to_dict())
    down: bool = False
    dead: bool = False
    starts: int = 0

    @property
    def listen(self) -> str:
        return f"{self.name}:8080"

    def serve(self, version: str, requests: int, errors: int, latency_ms: float) -> None:
        n, e, lat = self.counts.get(version, (0, 0, []))
        self.counts[version] = (n + requests, e + errors, lat + [latency_ms] * requests)

    def restart(self, at: float) -> None:
        self.started_at, self.counts = at, {}

    async def ensure(self) -> dict[str, object]:
        self._reach()
        started, self.dead = self.dead, False
        self.starts += started
        return {"pid": 4242, "listen": self.listen, "started": started}

    async def stop(self) -> None:
        self._reach()

    async def control(self, method: str, path: str, body: object | None = None
                      ) -> dict[str, object]:
        self._reach()
        if self.dead:
            raise RouterUnreachable(f"the router on {self.name} does not answer")
        if (method, path) == ("PUT", "/routes"):
            assert isinstance(body, dict)
            self.table = body
            return {"ok": True}
        if path == "/routes":
            return self.table
        releases = {}
        for version, (n, e, lat) in self.counts.items():
            sketch = LatencySketch()
            for ms in lat:
                sketch.add(ms)
            releases[version] = {"requests": n, "errors_5xx": e, "latency_buckets": [],
                                 "latency_sum_ms": sum(lat), "inflight": 0,
                                 "samples_ms": lat[-100:], "samples_total": len(lat),
                                 "latency_sketch": sketch.to_wire()}
        return {"started_at": self.started_at, "releases": releases, "restarts": []}

    def _reach(self) -> None:
        if self.down:
            raise TargetUnreachable(f"host {self.name} did not answer")


def routes(weights: dict[str, int]) -> Routes:
    return Routes(backends={v: (Endpoint("127.0.1.1", 9000 + i, f"h1/{v}"),)
                            for i, v in enumerate(weights)}, weights=weights)


async def window(router: EveryHostRouter, before: dict[str, object], version: str
                 ) -> tuple[int, int, int | None]:
    """requests, errors and the sketch's count of ``version`` since ``before``."""
    latest = await snapshot(router)
    counts, _ = compute_windows(before, latest, canary=version, stable=None)
    return counts.requests, counts.errors, None if counts.sketch is None else counts.sketch.total


async def test_metrics_sum_every_host_per_release_from_the_adapters_start() -> None:
    h1, h2 = ScriptedHost("h1"), ScriptedHost("h2")
    h1.serve("v1", 500, 0, 10.0)  # before the adapter: not in its series
    router = EveryHostRouter(name="shop-production", hosts=[h1, h2], clock=lambda: 50.0)
    before = await snapshot(router)
    h1.serve("v1", 30, 1, 12.0)
    h2.serve("v1", 20, 2, 14.0)
    h2.serve("v2", 10, 5, 40.0)
    assert await window(router, before, "v1") == (50, 3, 50)
    assert await window(router, before, "v2") == (10, 5, 10)
    summed = (await router.metrics()).releases["v1"]
    assert (summed.requests, summed.errors_5xx) == (50, 3)
    assert summed.samples_total == 50 and len(summed.samples_ms) == 50


@pytest.mark.parametrize("change", ["host router restarts", "host unreachable",
                                    "host router dead"])
async def test_a_host_that_restarts_or_cannot_be_read_never_makes_the_sum_go_back(
        change: str) -> None:
    h1, h2 = ScriptedHost("h1"), ScriptedHost("h2")
    router = EveryHostRouter(name="shop-production", hosts=[h1, h2])
    before = await snapshot(router)
    h1.serve("v2", 40, 4, 20.0)
    h2.serve("v2", 60, 6, 20.0)
    await router.metrics()
    if change == "host router restarts":
        h2.restart(at=2000.0)
        h2.serve("v2", 7, 1, 20.0)  # after its restart
        expected = (107, 11)
    elif change == "host unreachable":
        h2.down = True
        expected = (100, 10)  # its last counts stay in the sum
    else:
        h2.dead = True
        expected = (100, 10)
    h1.serve("v2", 5, 0, 20.0)
    expected = (expected[0] + 5, expected[1])
    latest = await snapshot(router)
    assert latest["series"] == before["series"]  # one series: the window is a difference
    requests, errors, sketched = await window(router, before, "v2")
    assert (requests, errors) == expected
    assert sketched == requests
    if change == "host router restarts":
        assert any("h2" in r.what for r in (await router.metrics()).restarts)


async def test_set_routes_reaches_every_reachable_host_and_a_host_left_behind_is_set_later(
        ) -> None:
    h1, h2, h3 = ScriptedHost("h1"), ScriptedHost("h2"), ScriptedHost("h3")
    router = EveryHostRouter(name="shop-production", hosts=[h1, h2, h3])
    first = routes({"v1": 100})
    await router.set_routes(first)
    h3.down = True
    second = routes({"v1": 50, "v2": 50})
    await router.set_routes(second)  # h3 cannot be reached: lockstep goes on without it
    assert [Routes.from_dict(h.table).weights for h in (h1, h2)] == [second.weights] * 2
    assert router.host_states()["h3"].reachable is False
    assert (await router.get_routes()).same_table(second)
    h3.down = False  # back, with the older table: the adapter answers no table
    assert not (await router.get_routes()).same_table(second)
    assert router.host_states()["h3"].in_step is False
    await router.set_routes(second)
    assert Routes.from_dict(h3.table).same_table(second)
    states = router.host_states()
    assert all(s.in_step and s.generation == router.generation for s in states.values())


async def test_a_host_whose_router_refuses_or_is_dead_fails_the_pass() -> None:
    h1, h2 = ScriptedHost("h1"), ScriptedHost("h2")
    router = EveryHostRouter(name="shop-production", hosts=[h1, h2])
    h2.dead = True
    with pytest.raises(RouterUnreachable, match="h2"):
        await router.set_routes(routes({"v1": 100}))
    with pytest.raises(RouterUnreachable, match="h2"):
        await router.get_routes()
    await router.ensure_running()
    assert (h1.starts, h2.starts, router.started_on) == (0, 1, ("h2",))
    await router.set_routes(routes({"v1": 100}))
    with pytest.raises(RouterError, match="sum to 100"):
        await router.set_routes(Routes(backends=routes({"v1": 100}).backends,
                                       weights={"v1": 60}))
    h1.down = h2.down = True
    with pytest.raises(RouterUnreachable, match="no host"):
        await router.get_routes()


async def test_a_new_adapter_adopts_the_table_every_host_holds_as_in_step() -> None:
    hosts = [ScriptedHost("h1"), ScriptedHost("h2")]
    for host in hosts:
        host.table = routes({"v1": 100}).to_dict()
    router = EveryHostRouter(name="shop-production", hosts=hosts)  # a restarted controller
    assert (await router.get_routes()).same_table(routes({"v1": 100}))
    assert all(s.in_step for s in router.host_states().values())
    hosts[1].table = routes({"v1": 50, "v2": 50}).to_dict()
    assert (await router.get_routes()).backends == {}  # they differ: set it again
    assert [s.in_step for s in router.host_states().values()] == [True, False]

"""Route table compilation, weighted picking, validation, and per-release counters."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from entrega.dataplane.http.metrics import SAMPLES_RING_SIZE, MetricsRegistry, ReleaseStats
from entrega.dataplane.http.pool import PoolRegistry
from entrega.dataplane.http.table import RouteTable, draw_value
from entrega.dataplane.reports import LATENCY_BUCKETS_MS
from entrega.dataplane.routes import CohortRule, Routes, pin_tag, weight_slots
from entrega.net import Endpoint

A = Endpoint("127.0.0.1", 9001, "0")
B = Endpoint("127.0.0.1", 9002, "1")
C = Endpoint("127.0.0.1", 9003, "0")


def _table(routes: Routes) -> RouteTable:
    return RouteTable(routes, pool_for=PoolRegistry().get,
                      stats_for=MetricsRegistry().for_release, app="shop")


def test_pick_follows_weights_exactly_in_slots() -> None:
    table = _table(Routes(backends={"v1": (A, B), "v2": (C,)}, weights={"v1": 90, "v2": 10}))
    random.seed(7)
    counts = Counter(table.pick().version for _ in range(20_000))  # type: ignore[union-attr]
    # binomial sd = sqrt(20000 * .1 * .9) ~ 42; allow 5 sd
    assert abs(counts["v2"] - 2000) < 5 * 42


# -- visitor pins: a slot drawn per rollout (table.py: Pins) ----------------------------------

@pytest.mark.parametrize(("stable", "canary", "cohort"), [
    ("v1", "v2", None),     # the canary sorts after stable: it grows from the last slot
    ("v9", "v10", None),    # ...before it: it grows from the first
    ("v1", "v2", "v2"),     # the cohort's release takes the first slots
    ("v2", "v1", "v1"),
], ids=["canary-last", "canary-first", "cohort-canary", "cohort-canary-first-name"])
def test_a_slot_only_ever_moves_to_the_canary_as_its_weight_grows(
        stable: str, canary: str, cohort: str | None) -> None:
    previous: set[int] = set()
    for weight in (0, 1, 5, 10, 25, 50, 75, 99, 100):
        slots = weight_slots({stable: 100 - weight, canary: weight}, cohort)
        on_canary = {i for i, version in enumerate(slots) if version == canary}
        assert len(slots) == 100 and len(on_canary) == weight
        assert previous <= on_canary, f"a visitor left the canary at {weight}%"
        previous = on_canary


def test_fresh_draws_are_uniform_over_slots() -> None:
    table = _table(Routes(backends={"v1": (A,), "v2": (C,)}, weights={"v1": 90, "v2": 10},
                          pin_salt="rollout-7"))
    random.seed(11)
    counts = Counter(table.draw() for _ in range(100_000))
    assert set(counts) == set(range(100))
    # each slot: binomial(100000, 1/100), sd ~ 31.5; allow 5 sd
    assert all(abs(n - 1000) < 5 * 31.5 for n in counts.values()), counts
    canary = sum(n for slot, n in counts.items() if table.slots[slot].version == "v2")
    assert abs(canary - 10_000) < 5 * 95
    assert _table(Routes(backends={"v1": (A,)})).draw() == -1


@pytest.mark.parametrize(("cookie", "slot"), [
    (b"TAG.0", 0), (b"TAG.37", 37), (b"TAG.99", 99),
    (b"TAG.100", -1), (b"TAG.-1", -1), (b"TAG.07", -1), (b"TAG.", -1), (b"TAG", -1),
    (b"OLD.37", -1),    # drawn in an earlier rollout
    (b"v1", -1),        # an entrega-release pin of the old format
    (b"", -1),
], ids=lambda v: v.decode() if isinstance(v, bytes) else str(v))
def test_a_pin_counts_only_in_the_rollout_it_was_drawn_in(cookie: bytes, slot: int) -> None:
    tag, old = pin_tag("rollout-8").encode(), pin_tag("rollout-7").encode()
    table = _table(Routes(backends={"v1": (A,), "v2": (C,)}, weights={"v1": 90, "v2": 10},
                          pin_salt="rollout-8"))
    value = cookie.replace(b"TAG", tag).replace(b"OLD", old)
    assert table.draws.get(value, -1) == slot
    if slot >= 0:
        assert value == draw_value(tag, slot)


def test_pins_survive_weight_changes_not_salt_changes() -> None:
    def table(weight: int, salt: str) -> RouteTable:
        return _table(Routes(backends={"v1": (A,), "v2": (C,)},
                             weights={"v1": 100 - weight, "v2": weight}, pin_salt=salt))
    assert table(10, "rollout-8").draws == table(50, "rollout-8").draws
    assert not set(table(10, "rollout-8").draws) & set(table(10, "rollout-9").draws)
    # every rollout's tag differs from the others' (so every rollout draws afresh)
    assert len({pin_tag(f"rollout-{i}") for i in range(10_000)}) == 10_000


def test_a_fresh_draw_sets_the_release_and_the_pin_cookies() -> None:
    table = _table(Routes(backends={"v1": (A,), "v2": (C,)}, weights={"v1": 90, "v2": 10},
                          pin_salt="rollout-8"))
    tag = pin_tag("rollout-8")
    assert table.draw_headers[95] == (
        b"X-Entrega-Release: v2\r\n"
        b"Set-Cookie: entrega-release=v2; Path=/; HttpOnly; SameSite=Lax\r\n"
        b"Set-Cookie: entrega-pin=" + tag.encode() + b".95; Path=/; HttpOnly; SameSite=Lax\r\n")


def test_zero_weight_release_gets_nothing_and_empty_weights_give_none() -> None:
    table = _table(Routes(backends={"v1": (A,), "v2": (C,)}, weights={"v1": 100, "v2": 0}))
    assert {table.pick().version for _ in range(1000)} == {"v1"}  # type: ignore[union-attr]
    assert _table(Routes(backends={"v1": (A,)})).pick() is None
    assert _table(Routes()).pick() is None


def test_round_robin_over_endpoints() -> None:
    table = _table(Routes(backends={"v1": (A, B)}, weights={"v1": 100}))
    route = table.releases["v1"]
    ports = [route.next_pool().port for _ in range(4)]
    assert ports == [9001, 9002, 9001, 9002]


@pytest.mark.parametrize(("routes", "message"), [
    (Routes(backends={"v1": (A,)}, weights={"v1": 60}), "sum to 100"),
    (Routes(backends={"v1": (A,)}, weights={"v2": 100}), "not in backends"),
    (Routes(backends={"v1": ()}, weights={"v1": 100}), "no endpoints"),
    (Routes(backends={"v1": (A,)}, weights={"v1": 101}), "expected 0..100"),
    (Routes(backends={"v1": (A,)}, weights={"v1": 100},
            cohort=CohortRule(release="v9")), "cohort release"),
    (Routes(backends={"v1": (A,)}, weights={"v1": 100}, preview="v9"), "preview release"),
    (Routes(backends={"bad\nname": (A,)}), "printable"),
], ids=["sum", "unknown-release", "no-endpoints", "over-100", "cohort", "preview", "name"])
def test_invalid_routes_are_refused_with_a_reason(routes: Routes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _table(routes)


def test_release_stats_buckets_sum_and_ring() -> None:
    stats = ReleaseStats()
    stats.record(200, 0.5)
    stats.record(200, 1.0)   # equal to a bound: that bucket ("le")
    stats.record(503, 20_000.0)  # beyond the last bound: +inf bucket
    assert stats.requests == 3 and stats.errors_5xx == 1
    assert len(stats.buckets) == len(LATENCY_BUCKETS_MS) + 1
    assert stats.buckets[0] == 2 and stats.buckets[-1] == 1
    assert stats.latency_sum_ms == pytest.approx(20_001.5)
    assert stats.samples_ms() == [0.5, 1.0, 20_000.0]
    for i in range(SAMPLES_RING_SIZE + 10):
        stats.record(200, float(i))
    samples = stats.samples_ms()
    assert len(samples) == SAMPLES_RING_SIZE
    assert samples[-1] == float(SAMPLES_RING_SIZE + 9)  # newest last
    assert samples[0] == 10.0  # 2061 recorded, the last 2048 kept: i = 10 onwards
    assert stats.samples_total == SAMPLES_RING_SIZE + 13


def test_metrics_registry_forgets_only_old_unrouted_idle_releases() -> None:
    registry = MetricsRegistry()
    for i in range(70):
        registry.for_release(f"r{i}")
    registry.for_release("r1").inflight = 1
    registry.forget_old({"r0"})
    assert len(registry.releases) == 64
    assert "r0" in registry.releases and "r1" in registry.releases
    assert "r2" not in registry.releases

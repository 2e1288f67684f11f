"""The latency sketch by tables: quantiles within 1% of the exact sample quantiles on known
distributions, merge is the sketch of the union, a window is the difference of two
cumulative snapshots, and the wire form round-trips and refuses what is not one."""

from __future__ import annotations

import json
import math
import random
import re
from collections.abc import Callable

import pytest

from entrega.dataplane.http.metrics import ReleaseStats
from entrega.dataplane.sketch import (
    GAMMA,
    MAX_INDEX,
    MIN_INDEX,
    MIN_MS,
    RELATIVE_ACCURACY,
    LatencySketch,
    bucket_index,
    bucket_upper,
    bucket_value,
)

Draw = Callable[[random.Random], float]

#: name -> one latency (ms) drawn from it
DISTRIBUTIONS: dict[str, Draw] = {
    "uniform-1-100ms": lambda r: r.uniform(1, 100),
    "lognormal-median-20ms": lambda r: r.lognormvariate(math.log(20), 1.0),
    "exponential-mean-5ms": lambda r: r.expovariate(1 / 5),
    "sub-millisecond": lambda r: r.uniform(0.05, 0.9),
    "tail-2pct-10x": lambda r: r.gauss(30, 3) * (10 if r.random() < 0.02 else 1),
    "seconds-to-minutes": lambda r: r.uniform(1_000, 600_000),
    "one-value": lambda r: 42.0,
}
QUANTILES = (0.0, 0.01, 0.1, 0.25, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0)


def sample(name: str, n: int, seed: int = 7) -> list[float]:
    rng = random.Random(seed)
    return [DISTRIBUTIONS[name](rng) for _ in range(n)]


def sketch_of(values: list[float]) -> LatencySketch:
    sketch = LatencySketch()
    for v in values:
        sketch.add(v)
    return sketch


def nearest_rank(ordered: list[float], q: float) -> float:
    """The exact sample quantile by the sketch's definition (rank ``ceil(q * n)``)."""
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


@pytest.mark.parametrize("name", DISTRIBUTIONS)
def test_quantiles_are_within_one_percent_of_the_sample(name: str) -> None:
    values = sample(name, 20_000)
    sketch = sketch_of(values)
    ordered = sorted(values)
    assert sketch.total == len(values)
    for q in QUANTILES:
        exact = nearest_rank(ordered, q)
        estimate = sketch.quantile(q)
        assert estimate is not None
        if exact <= MIN_MS:  # below 10 us every latency is one bucket: "at most MIN_MS"
            assert estimate <= MIN_MS
            continue
        assert abs(estimate - exact) <= RELATIVE_ACCURACY * exact, (q, exact, estimate)
    # a sketch stays small however much traffic it counts
    assert len(sketch.counts) < 1_000


@pytest.mark.parametrize(("rank", "expected"), [
    (1, 1.0), (2, 2.0), (5, 5.0), (0, 1.0), (99, 5.0),
], ids=["first", "second", "last", "below-clamps", "above-clamps"])
def test_rank_value(rank: int, expected: float) -> None:
    value = sketch_of([5.0, 1.0, 3.0, 2.0, 4.0]).rank_value(rank)
    assert value == pytest.approx(expected, rel=RELATIVE_ACCURACY)


def test_an_empty_sketch_has_no_values() -> None:
    empty = LatencySketch()
    assert (empty.quantile(0.5), empty.rank_value(1), empty.mean(), empty.total) == (
        None, None, None, 0)
    assert empty.to_wire() == []


@pytest.mark.parametrize("ms", [0.0, 0.001, MIN_MS, MIN_MS * 1.0001, 0.5, 1.0, 1.02, 7.5,
                                GAMMA ** 50, GAMMA ** 50 * (1 + 1e-12), 1e3, 3.6e6],
                         ids=lambda ms: f"{ms:g}ms")
def test_a_bucket_holds_its_value_within_one_percent(ms: float) -> None:
    i = bucket_index(ms)
    if ms <= MIN_MS:
        assert i == MIN_INDEX and bucket_value(i) <= MIN_MS
        return
    # a value on a bucket's edge may land on either side of it (floating point): the
    # bounds hold up to that rounding, and the 1% holds on both sides of an edge
    edge = 1e-9
    assert bucket_upper(i - 1) * (1 - edge) <= ms <= bucket_upper(i) * (1 + edge)
    assert abs(bucket_value(i) - ms) <= RELATIVE_ACCURACY * ms * (1 + edge)


@pytest.mark.parametrize("ms", [0.0, 0.004, MIN_MS, 0.0101, 0.25, 0.999, 1.0, 1.0001, 2.5,
                                GAMMA ** 10, GAMMA ** 200, 123.456, 9_999.9, 86_400_000.0],
                         ids=lambda ms: f"{ms:g}ms")
def test_the_routers_inlined_formula_is_bucket_index(ms: float) -> None:
    """The hot path writes ``bucket_index`` out for speed; both must agree everywhere."""
    stats = ReleaseStats()
    stats.record(200, ms)
    assert stats.sketch == {bucket_index(ms): 1}


@pytest.mark.parametrize("name", ["lognormal-median-20ms", "tail-2pct-10x"])
@pytest.mark.parametrize("parts", [2, 3, 8])
def test_merge_is_the_sketch_of_the_union(name: str, parts: int) -> None:
    values = sample(name, 3_000)
    pieces = [values[i::parts] for i in range(parts)]
    merged = LatencySketch()
    for piece in pieces:
        merged = merged.merge(sketch_of(piece))
    assert merged == sketch_of(values) and merged.total == len(values)
    # in any order
    reverse = LatencySketch()
    for piece in reversed(pieces):
        reverse = sketch_of(piece).merge(reverse)
    assert reverse == merged


@pytest.mark.parametrize(("before", "after"), [
    (0, 2_000), (500, 2_000), (1_999, 2_000), (2_000, 2_000),
], ids=["from-the-start", "a-window", "one-request", "no-traffic"])
def test_minus_of_cumulative_snapshots_is_the_windows_sketch(before: int, after: int) -> None:
    values = sample("exponential-mean-5ms", after)
    baseline, latest = sketch_of(values[:before]), sketch_of(values[:after])
    window = latest.minus(baseline)
    assert window == sketch_of(values[before:after])
    assert window is not None and window.total == after - before
    assert all(n > 0 for n in window.counts.values())  # emptied buckets are dropped


def test_minus_is_none_when_a_bucket_went_down() -> None:
    """A router that restarted between the two snapshots: no window can be computed."""
    baseline = sketch_of([5.0] * 10 + [50.0])
    restarted = sketch_of([5.0] * 3 + [50.0] * 4)
    assert restarted.minus(baseline) is None


@pytest.mark.parametrize(("ms", "surely", "possibly"), [
    (10.0, 2, 3), (100.0, 1, 1), (1.0, 5, 5), (1_000.0, 0, 0),
], ids=["threshold-in-a-bucket", "between-buckets", "below-all", "above-all"])
def test_count_above(ms: float, surely: int, possibly: int) -> None:
    sketch = sketch_of([2.0, 5.0, 10.0, 20.0, 200.0])
    assert (sketch.count_above(ms), sketch.count_above(ms, inclusive=True)) == (
        surely, possibly)


@pytest.mark.parametrize("name", ["uniform-1-100ms", "sub-millisecond", "one-value"])
def test_the_wire_form_round_trips_through_json(name: str) -> None:
    sketch = sketch_of(sample(name, 500))
    wire = sketch.to_wire()
    assert [i for i, _ in wire] == sorted(i for i, _ in wire) and all(n > 0 for _, n in wire)
    back = LatencySketch.from_wire(json.loads(json.dumps(wire)))
    assert back == sketch and back.total == sketch.total


def test_the_wire_form_of_nothing_is_an_empty_sketch() -> None:
    assert LatencySketch.from_wire(None) == LatencySketch() == LatencySketch.from_wire([])


@pytest.mark.parametrize(("wire", "message"), [
    (5, "a latency sketch is a list of [index, count] pairs, not 5"),
    ("[[1, 2]]", "a latency sketch is a list of [index, count] pairs, not '[[1, 2]]'"),
    ({"12": 3}, "a latency sketch is a list of [index, count] pairs"),
    ([[1]], "sketch bucket [1]: expected an [index, count] pair"),
    ([[1, 2, 3]], "sketch bucket [1, 2, 3]: expected an [index, count] pair"),
    ([7], "sketch bucket 7: expected an [index, count] pair"),
    ([[1, 2], "ab"], "sketch bucket 'ab': expected an [index, count] pair"),
    ([[1, -1]], "sketch bucket [1, -1]: expected [index, count] integers, the count "
                "not negative"),
    ([[1.5, 1]], "sketch bucket [1.5, 1]: expected [index, count] integers"),
    ([[1, "2"]], "sketch bucket [1, '2']: expected [index, count] integers"),
    ([[True, 1]], "sketch bucket [True, 1]: expected [index, count] integers"),
    ([[MAX_INDEX + 1, 1]], f"the index is outside {MIN_INDEX}..{MAX_INDEX}"),
    ([[MIN_INDEX - 1, 1]], f"the index is outside {MIN_INDEX}..{MAX_INDEX}"),
], ids=["a-number", "a-string", "an-object", "short-pair", "long-pair", "not-a-pair",
        "a-string-pair", "negative-count", "float-index", "string-count", "boolean-index",
        "index-too-high", "index-too-low"])
def test_bad_wire_input_is_refused_with_what_was_wrong(wire: object, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        LatencySketch.from_wire(wire)  # type: ignore[arg-type]


def test_a_long_bad_value_is_quoted_short() -> None:
    with pytest.raises(ValueError) as caught:
        LatencySketch.from_wire([[1, 2, *range(100)]])
    assert len(str(caught.value)) < 100 and "..." in str(caught.value)

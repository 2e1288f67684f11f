"""A latency sketch crosses a process in a router's counters (``codec.Codec`` over
``RouterMetrics``): its wire form in, its wire form out, anything else refused by name."""

from __future__ import annotations

import pytest

from entrega.codec import Codec
from entrega.dataplane.sketch import LatencySketch
from entrega.errors import InvalidRecord
from entrega.routers.base import RouterMetrics

METRICS: Codec[RouterMetrics] = Codec(RouterMetrics, what="the router's metrics")


def _load(sketch: object) -> RouterMetrics:
    return METRICS.load({"started_at": 1.0, "releases": {"v1": {"latency_sketch": sketch}}})


@pytest.mark.parametrize(("wire", "total"), [
    ([[3, 2], [5, 1]], 3),
    ([], 0),
    (None, None),
], ids=["pairs", "empty", "absent"])
def test_wire_form_round_trips(wire: object, total: int | None) -> None:
    loaded = _load(wire).releases["v1"].latency_sketch
    assert (None if loaded is None else loaded.total) == total
    assert METRICS.dump(_load(wire))["releases"]["v1"]["latency_sketch"] == wire


@pytest.mark.parametrize(("wire", "problem"), [
    ("fast", "a latency sketch is a list of \\[index, count\\] pairs, not 'fast'"),
    ([[1, 2, 3]], "sketch bucket \\[1, 2, 3\\]: expected an \\[index, count\\] pair"),
    ([5], "sketch bucket 5: expected an \\[index, count\\] pair"),
    ([[1, -2]], "sketch bucket \\[1, -2\\]"),
    ([[1.5, 2]], "sketch bucket"),
], ids=["text", "triple", "number", "negative", "float-index"])
def test_anything_else_is_refused_by_field(wire: object, problem: str) -> None:
    with pytest.raises(InvalidRecord, match="releases.v1.latency_sketch: " + problem):
        _load(wire)


def test_a_sketch_value_is_kept() -> None:
    sketch = LatencySketch({4: 2})
    assert METRICS.load(METRICS.dump(_load(sketch.to_wire()))) == _load([[4, 2]])

"""The controller reads the router's GET /metrics answer through one validating codec: it
crosses a process, so a wrong field is an error that names it, never an assert."""

from __future__ import annotations

import pytest

from entrega.dataplane.sketch import LatencySketch
from entrega.errors import InvalidRecord
from entrega.routers.base import DataPlaneRestart, ReleaseMetrics
from entrega.routers.embedded import _METRICS

GOOD = {"started_at": 1.5, "workers": {"count": 1},
        "releases": {"v1": {"requests": 3, "errors_5xx": 1, "latency_buckets": [2, 1],
                            "latency_sum_ms": 4.5, "inflight": 0, "samples_ms": [1.0, 3.5],
                            "samples_total": 2}},
        "restarts": [{"what": "router worker 0", "at": 3.0, "reason": "exited with signal 9"}]}


def test_an_answer_reads_into_router_metrics() -> None:
    metrics = _METRICS.load(GOOD)
    assert metrics.started_at == 1.5
    assert metrics.releases["v1"] == ReleaseMetrics(
        requests=3, errors_5xx=1, latency_buckets=(2, 1), latency_sum_ms=4.5, inflight=0,
        samples_ms=(1.0, 3.5), samples_total=2)
    assert metrics.restarts == (DataPlaneRestart("router worker 0", 3.0,
                                                 "exited with signal 9"),)


@pytest.mark.parametrize(("answer", "names"), [
    ({**GOOD, "started_at": "soon"}, "started_at"),
    ({**GOOD, "releases": {"v1": {"requests": "many"}}}, "releases.v1.requests"),
    ({**GOOD, "restarts": [{"what": "w"}]}, "restarts[0].at"),
    ([], "RouterMetrics"),
    ({**GOOD, "releases": {"v1": {"latency_sketch": [[3, -2]]}}},
     "releases.v1.latency_sketch: sketch bucket [3, -2]: expected [index, count] integers"),
    ({**GOOD, "releases": {"v1": {"latency_sketch": {"3": 2}}}},
     "releases.v1.latency_sketch: a latency sketch is a list of [index, count] pairs"),
], ids=["bad-time", "bad-counter", "short-restart", "not-an-object", "bad-sketch-bucket",
        "sketch-not-a-list"])
def test_a_wrong_field_is_named(answer: object, names: str) -> None:
    with pytest.raises(InvalidRecord) as caught:
        _METRICS.load(answer)
    assert "the router's metrics is invalid" in str(caught.value)
    if names != "RouterMetrics":
        assert names in str(caught.value)


def test_a_latency_sketch_reads_from_its_wire_form_and_back() -> None:
    wire = [[-3, 1], [40, 5], [350, 2]]
    answer = {**GOOD, "releases": {"v1": {**GOOD["releases"]["v1"], "latency_sketch": wire}}}
    metrics = _METRICS.load(answer)
    sketch = metrics.releases["v1"].latency_sketch
    assert sketch == LatencySketch({-3: 1, 40: 5, 350: 2}) and sketch.total == 8
    assert _METRICS.dump(metrics)["releases"]["v1"]["latency_sketch"] == wire
    # an answer without the field (HAProxy's adapter, an older router) reads as no sketch
    assert _METRICS.load(GOOD).releases["v1"].latency_sketch is None

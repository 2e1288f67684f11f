"""evaluate_window: the controller's entry point, with the default judges and snapshots."""

from __future__ import annotations

import json

import numpy as np
import pytest

from entrega.analysis.evaluate import evaluate_window, router_restarted
from entrega.analysis.providers.base import Measurement
from entrega.analysis.providers.builtin import release_metrics, snapshot
from entrega.analysis.window import compute_window
from entrega.config import DEFAULT_METRICS, MetricConfig
from entrega.dataplane.sketch import LatencySketch
from entrega.errors import InvalidRecord
from entrega.routers.base import ReleaseMetrics, RouterMetrics

from .conftest import hist


def release(requests: int, errors: int, samples: np.ndarray | None = None,
            *, ring: bool = True) -> dict:
    samples = np.asarray([] if samples is None else samples, float)
    data = {"requests": requests, "errors_5xx": errors,
            "latency_buckets": list(hist((75, requests))), "samples_total": len(samples)}
    if ring:
        data["samples_ms"] = samples.tolist()
    return data


def snap(**releases: dict) -> dict:
    return {"started_at": 1.0, "releases": releases}


#: The built-in metrics of the router's requests (``feedback`` judges ratings, opt-in).
REQUEST_METRICS = {name: DEFAULT_METRICS[name] for name in ("error-rate", "latency-p95")}
BASELINE = snap(v1=release(0, 0, ring=False), v2=release(0, 0, ring=False))
rng = np.random.default_rng(0)


def test_defaults_are_the_statistical_judges():
    assert DEFAULT_METRICS["error-rate"].judge == "sequential"
    assert DEFAULT_METRICS["latency-p95"].judge == "quantile"
    assert DEFAULT_METRICS["latency-p95"].max_ratio == 1.2
    assert DEFAULT_METRICS["latency-p99"].judge == "quantile"
    assert DEFAULT_METRICS["latency-p99"].max_ratio == 1.5


def test_a_bad_canary_fails_on_errors_alone():
    latest = snap(v1=release(9000, 45, rng.lognormal(3.7, 0.6, 2048)),
                  v2=release(1000, 50, rng.lognormal(3.7, 0.6, 1000)))
    verdict, reason, metrics = evaluate_window(REQUEST_METRICS, baseline=BASELINE,
                                               latest=latest, canary="v2", stable="v1")
    assert verdict == "fail" and reason.startswith("error-rate:")
    assert {m.metric: m.verdict for m in metrics} == {"error-rate": "fail",
                                                      "latency-p95": "pass"}


def test_a_good_canary_passes():
    # Pass needs evidence: 3,000 canary requests with stable's error rate is evidence that
    # the canary's is below 4x stable's, and that its p95 is within 1.2x.
    latest = snap(v1=release(27000, 135, rng.lognormal(3.7, 0.6, 2048)),
                  v2=release(3000, 15, rng.lognormal(3.7, 0.6, 2048)))
    verdict, _, _ = evaluate_window(REQUEST_METRICS, baseline=BASELINE, latest=latest,
                                    canary="v2", stable="v1")
    assert verdict == "pass"


def test_a_slow_canary_fails_on_latency():
    latest = snap(v1=release(9000, 45, rng.lognormal(3.7, 0.6, 2048)),
                  v2=release(1000, 5, rng.lognormal(3.7 + 0.5, 0.6, 1000)))
    verdict, reason, _ = evaluate_window(REQUEST_METRICS, baseline=BASELINE, latest=latest,
                                         canary="v2", stable="v1")
    assert verdict == "fail" and reason.startswith("latency-p95:")


def test_latest_without_rings_is_no_data_for_latency():
    latest = snap(v1=release(9000, 45, rng.lognormal(3.7, 0.6, 2048), ring=False),
                  v2=release(1000, 5, rng.lognormal(3.7, 0.6, 1000), ring=False))
    _, _, metrics = evaluate_window(REQUEST_METRICS, baseline=BASELINE, latest=latest,
                                    canary="v2", stable="v1")
    assert metrics[1].verdict == "no-data" and "no canary latency data" in metrics[1].reason


EXTERNAL = MetricConfig.model_validate(
    {"prometheus": {"url": "http://prom:9090", "query": "x{release='{release}'}"},
     "max_ratio": 1.5})


@pytest.mark.parametrize(("measured", "verdict"), [
    pytest.param({"canary": Measurement(1.0), "stable": Measurement(1.0)}, "pass", id="pass"),
    pytest.param({"canary": Measurement(2.0), "stable": Measurement(1.0)}, "fail", id="fail"),
    pytest.param({"canary": Measurement(None, error="down"), "stable": Measurement(1.0)},
                 "no-data", id="no-canary-value"),
    pytest.param({}, "no-data", id="not-measured"),
    pytest.param({"canary": Measurement(1.0)}, "inconclusive", id="no-stable-value"),
])
def test_external_metrics_are_judged_by_threshold(measured, verdict):
    _, _, metrics = evaluate_window({"custom": EXTERNAL}, baseline=BASELINE, latest=BASELINE,
                                    canary="v2", stable="v1",
                                    measurements={"custom": measured} if measured else None)
    assert metrics[0].verdict == verdict


class FakeRouter:
    async def metrics(self) -> RouterMetrics:
        return RouterMetrics(started_at=5.0, releases={"v1": ReleaseMetrics(
            requests=3, errors_5xx=1, latency_buckets=(1, 2), samples_ms=(1.5, 2.5, 3.5),
            samples_total=3)})


async def test_only_the_latest_snapshot_carries_the_ring():
    baseline = await snapshot(FakeRouter())  # type: ignore[arg-type]
    latest = await snapshot(FakeRouter(), samples=True)  # type: ignore[arg-type]
    assert "samples_ms" not in baseline["releases"]["v1"]
    assert baseline["releases"]["v1"]["samples_total"] == 3
    back = release_metrics(latest, "v1")
    assert back is not None and back.samples_ms == (1.5, 2.5, 3.5) and back.samples_total == 3
    old = release_metrics({"releases": {"v1": {"requests": 1, "errors_5xx": 0,
                                               "latency_buckets": []}}}, "v1")
    assert old is not None and old.samples_total == 0  # baselines stored before this change


WORKER_A = {"started_at": 100.0, "series": "haproxy worker 7"}
RESTARTS = [
    pytest.param(WORKER_A, WORKER_A, False, id="one-series"),
    pytest.param(WORKER_A, {**WORKER_A, "started_at": 101.0}, True, id="started-again"),
    pytest.param(WORKER_A, {**WORKER_A, "series": "haproxy worker 8"}, True,
                 id="new-worker-in-the-same-second"),
    pytest.param({"started_at": 100.0}, WORKER_A, False, id="baseline-from-before-series"),
    pytest.param({"started_at": 99.5}, WORKER_A, True, id="old-baseline-other-start"),
    pytest.param({"started_at": 1.0, "series": ""}, {"started_at": 1.0, "series": ""}, False,
                 id="embedded-no-series"),
]


@pytest.mark.parametrize(("baseline", "latest", "restarted"), RESTARTS)
def test_router_restarted(baseline, latest, restarted):
    assert router_restarted(baseline, latest) is restarted


class CountingRouter:
    """A router whose cumulative sketch grows by ``add`` between snapshots."""

    def __init__(self) -> None:
        self.sketch = LatencySketch()

    def add(self, *latencies_ms: float) -> None:
        for ms in latencies_ms:
            self.sketch.add(ms)

    async def metrics(self) -> RouterMetrics:
        n = self.sketch.total
        return RouterMetrics(started_at=5.0, releases={"v2": ReleaseMetrics(
            requests=n, latency_buckets=(n,), samples_total=n,
            latency_sketch=LatencySketch(self.sketch.counts))})


async def test_both_snapshots_carry_the_sketch_and_the_window_is_their_difference():
    router = CountingRouter()
    router.add(*[3.0] * 50, 700.0)
    # the baseline is stored as JSON (analysis_runs.baseline) and read back later
    baseline = json.loads(json.dumps(await snapshot(router)))  # type: ignore[arg-type]
    assert baseline["releases"]["v2"]["latency_sketch"] == router.sketch.to_wire()
    router.add(*[20.0] * 30, 90.0)
    latest = await snapshot(router, samples=True)  # type: ignore[arg-type]
    window = compute_window(release_metrics(baseline, "v2"), release_metrics(latest, "v2"))
    expected = LatencySketch()
    for ms in [20.0] * 30 + [90.0]:
        expected.add(ms)
    assert window.sketch == expected and window.requests == 31


async def test_a_router_without_sketch_leaves_it_out_of_the_snapshot():
    data = await snapshot(FakeRouter())  # type: ignore[arg-type]
    assert "latency_sketch" not in data["releases"]["v1"]
    back = release_metrics(data, "v1")
    assert back is not None and back.latency_sketch is None


def test_a_damaged_stored_sketch_is_an_error_naming_the_release():
    stored = snap(v2={**release(3, 0), "latency_sketch": [[12, "three"]]})
    with pytest.raises(InvalidRecord, match=r"the snapshot of release 'v2': latency_sketch: "
                       r"sketch bucket \[12, 'three'\]: expected \[index, count\] integers"):
        release_metrics(stored, "v2")

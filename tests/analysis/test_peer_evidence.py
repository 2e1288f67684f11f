"""Another app's evidence (``app: web``), pure: the other app's counts during the window
judged as the canary side against its counts before the window as the stable side, with
the metric's own judge and settings (analysis/peers.py, evaluate.judge_peer)."""

from __future__ import annotations

from typing import Any

import pytest

from entrega.analysis.evaluate import evaluate_window
from entrega.analysis.peers import compute_app_window, compute_peer_windows
from entrega.config import MetricConfig
from entrega.dataplane.sketch import LatencySketch

ERRORS = MetricConfig(app="web", measure="error-rate", judge="sequential", max_increase=0.01)
LATENCY = MetricConfig(app="web", measure="latency-p95", judge="quantile", max_ratio=1.2,
                       min_requests=50)


def counts(requests: int, errors: int, latency_ms: float = 10.0) -> dict[str, Any]:
    """One release's cumulative counters: every request took ``latency_ms``."""
    sketch = LatencySketch()
    if requests:
        sketch.add(latency_ms, requests)
    return {"requests": requests, "errors_5xx": errors, "latency_buckets": [],
            "samples_total": 0, "latency_sketch": sketch.to_wire()}


def grown(base: dict[str, Any], requests: int, errors: int,
          latency_ms: float) -> dict[str, Any]:
    """``base`` plus ``requests`` more, ``errors`` of them 5xx, each ``latency_ms``."""
    sketch = LatencySketch.from_wire(base["latency_sketch"])
    if requests:
        sketch.add(latency_ms, requests)
    return {**base, "requests": base["requests"] + requests,
            "errors_5xx": base["errors_5xx"] + errors, "latency_sketch": sketch.to_wire()}


def snap(started_at: float = 1.0, **releases: dict[str, Any]) -> dict[str, Any]:
    return {"started_at": started_at, "series": "s", "releases": releases}


#: web's router: 2000 requests, 2 errors, at 10 ms, in the 30 s before the window
BEFORE_V1 = counts(5000, 5)
START_V1 = grown(BEFORE_V1, 2000, 2, 10.0)
RECORD = {"before": snap(v1=BEFORE_V1), "start": snap(v1=START_V1), "before_s": 30.0}


def judge(metric: MetricConfig, latest: dict[str, Any] | None,
          record: dict[str, Any] | None = RECORD) -> tuple[str, dict[str, Any]]:
    """api's analysis (canary v2 against stable v1, its own traffic all fine) with one
    metric naming web's production: that metric's verdict and what it says."""
    own = snap(v1=counts(100, 0), v2=counts(100, 0))
    baseline: dict[str, Any] = {**snap(v1=counts(0, 0), v2=counts(0, 0))}
    if record is not None:
        baseline["peers"] = {"web/production": record}
    _, _, verdicts = evaluate_window(
        {"web-errors": metric}, baseline=baseline, latest=own, canary="v2", stable="v1",
        duration_s=30.0, environment="production",
        peers={"web/production": latest} if latest is not None else {})
    return verdicts[0].verdict, verdicts[0].to_dict()


@pytest.mark.parametrize(("metric", "latest", "record", "expected", "says"), [
    pytest.param(ERRORS, snap(v1=grown(START_V1, 2000, 600, 10.0)), RECORD, "fail",
                 "web/production during the window against the 30 s before it",
                 id="callers-answer-502-fails"),
    pytest.param(ERRORS, snap(v1=grown(START_V1, 2000, 2, 10.0)), RECORD, "pass",
                 "canary 0.10% (2/2000), stable 0.10% (2/2000)", id="callers-as-before-pass"),
    pytest.param(ERRORS, snap(v1=START_V1), RECORD, "no-data", "no canary requests yet",
                 id="no-traffic-during-no-data"),
    pytest.param(ERRORS, snap(v1=grown(START_V1, 1000, 0, 10.0),
                              v2=counts(1000, 300)), RECORD, "fail", "(300/2000)",
                 id="every-release-of-web-summed"),
    pytest.param(ERRORS, snap(started_at=2.0, v1=counts(2000, 600)), RECORD, "fail",
                 "(600/2000)", id="web-router-restarted-latest-whole"),
    pytest.param(ERRORS, None, RECORD, "no-data", "web/production: its router does not answer",
                 id="web-router-down-no-data"),
    pytest.param(ERRORS, snap(v1=grown(START_V1, 2000, 600, 10.0)),
                 {**RECORD, "before": None, "before_s": 0.0}, "no-data",
                 "no snapshot of it before the window", id="no-history-no-data"),
    pytest.param(ERRORS, snap(v1=grown(BEFORE_V1, 2000, 600, 10.0)),
                 {**RECORD, "start": snap(v1=BEFORE_V1)}, "no-data",
                 "no request to it in the 30 s before the window", id="quiet-before-no-data"),
    pytest.param(ERRORS, snap(v1=grown(START_V1, 2000, 600, 10.0)), None, "no-data",
                 "did not answer when the window began", id="no-record-no-data"),
    pytest.param(LATENCY, snap(v1=grown(START_V1, 2000, 0, 80.0)), RECORD, "fail",
                 "web/production during", id="callers-slower-fail"),
    pytest.param(LATENCY, snap(v1=grown(START_V1, 2000, 0, 10.0)), RECORD, "pass",
                 "web/production during", id="callers-as-fast-pass"),
])
def test_judged_against_itself_before(metric: MetricConfig, latest: dict[str, Any] | None,
                                      record: dict[str, Any] | None, expected: str,
                                      says: str) -> None:
    verdict, shown = judge(metric, latest, record)
    assert verdict == expected, shown
    assert says in shown["reason"], shown
    assert shown["details"]["app"] == "web/production"


def test_the_settings_are_the_metrics_own() -> None:
    """3% errors against 1% before: a rise of 2 points fails under max_increase 0.01 and
    is tolerated under max_increase 0.05 (the judge's own setting, not a fixed one)."""
    record = {**RECORD, "start": snap(v1=grown(BEFORE_V1, 4000, 40, 10.0))}
    latest = snap(v1=grown(record["start"]["releases"]["v1"], 4000, 120, 10.0))
    assert judge(ERRORS, latest, record)[0] == "fail"
    tolerant = ERRORS.model_copy(update={"max_increase": 0.05})
    assert judge(tolerant, latest, record)[0] != "fail"


def test_before_and_during_windows() -> None:
    during, before = compute_peer_windows(  # type: ignore[misc]
        RECORD, snap(v1=grown(START_V1, 300, 3, 10.0), v2=counts(100, 1)), duration_s=12.0)
    assert (during.requests, during.errors, during.duration_s) == (400, 4, 12.0)
    assert (before.requests, before.errors, before.duration_s) == (2000, 2, 30.0)
    assert during.sketch is not None and during.sketch.total == 400


def test_a_release_the_router_dropped_is_not_a_restart() -> None:
    """v1 left web's table during the window: the remaining release's window counts,
    nothing goes negative, and v1's history is not counted again as new."""
    window = compute_app_window(snap(v1=counts(900, 9), v2=counts(100, 0)),
                                snap(v2=counts(350, 7)))
    assert (window.requests, window.errors) == (250, 7)

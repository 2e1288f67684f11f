"""`GET /rollouts/{id}` and `GET /rollouts/{id}/analysis` in process: a rollout with its
events, and its analysis windows as `entrega analysis explain` shows them."""

from __future__ import annotations

import dataclasses

from entrega.rollouts.model import AnalysisProgress, Phase, state_from_dict, state_to_dict
from tests.api.delivery import Delivery

JUDGED = {"verdict": "fail", "metrics": [
    {"metric": "error-rate", "verdict": "fail", "reason": "canary 5% vs stable 0%",
     "canary": 0.05, "stable": 0.0, "critical": True,
     "details": {"test": "mixture SPRT on pooled error counts (conditional binomial)"}}]}


def canary_in_analysis(delivery: Delivery) -> int:
    """v2 in production, at its analysis step (step 2), with one judged window."""
    for version in ("v1", "v2"):
        delivery.release(version)
        delivery.live("staging", version)
    delivery.live("production", "v1")
    rollout = delivery.post("/api/v1/environments/production/deploy", {"version": "v2"})
    row = delivery.active("production")
    run = delivery.repo.begin_analysis_run(rollout_id=row.id, window=1,
                                           metrics=["error-rate"], baseline={})
    delivery.repo.record_analysis(run.id, verdict="fail", result=JUDGED)
    state = dataclasses.replace(
        state_from_dict(row.state), phase=Phase.PROGRESSING, step_index=1,
        analysis=AnalysisProgress(window=1, started_at=row.created_at,
                                  next_check_at=row.created_at + 1, checks=3, failures=1,
                                  last_verdict="fail", last_reason="error-rate: worse"))
    delivery.repo.save_transition(row.id, state=state_to_dict(state), phase="progressing",
                                  events=[("analysis", "window 1: fail", {})],
                                  actor="controller")
    return int(rollout.json()["id"])


def test_a_rollout_with_its_events_and_live_analysis(delivery: Delivery) -> None:
    rollout = canary_in_analysis(delivery)
    view = delivery.get(f"/api/v1/rollouts/{rollout}").json()
    assert list(view)[-1] == "events"
    assert [e["kind"] for e in view["events"]] == ["rollout", "analysis"]
    assert view["analysis"] == {"window": 1, "checks": 3, "failures": 1, "verdict": "fail",
                                "reason": "error-rate: worse",
                                "metrics": JUDGED["metrics"]}


def test_an_unknown_rollout_is_not_found(delivery: Delivery) -> None:
    response = delivery.get("/api/v1/rollouts/99")
    assert response.status_code == 404 and response.json()["error"] == "no rollout 99"


def test_analysis_lists_each_window_with_the_judges_settings(delivery: Delivery) -> None:
    rollout = canary_in_analysis(delivery)
    view = delivery.get(f"/api/v1/rollouts/{rollout}/analysis").json()
    assert list(view) == ["rollout", "steps", "environment_metrics", "windows"]
    assert view["rollout"]["id"] == rollout and view["steps"] == 3
    assert view["environment_metrics"]["error-rate"]["judge"] == "sequential"
    (window,) = view["windows"]
    assert list(window) == ["window", "metrics_asked", "started_at", "updated_at", "step",
                            "verdict", "result", "final"]
    assert (window["verdict"], window["result"], window["final"]) == ("fail", JUDGED, False)


def test_the_analysis_of_an_unknown_rollout_is_not_found(delivery: Delivery) -> None:
    response = delivery.get("/api/v1/rollouts/99/analysis")
    assert response.status_code == 404 and response.json()["error"] == "no rollout 99"

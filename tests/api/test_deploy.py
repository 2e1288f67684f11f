"""`POST /environments/{env}/deploy` in process: start, queue behind the rollout in
progress (newest wins), refuse when asked not to queue, the pipeline's order, and forcing
it (admins only, with a reason)."""

from __future__ import annotations

import pytest

from tests.api.delivery import Delivery

ROLLOUT_FIELDS = ["id", "environment", "version", "from_version", "strategy", "phase",
                  "weights", "preview", "step_index", "steps", "message", "cohort",
                  "analysis", "analysis_history", "created_at", "updated_at", "finished_at",
                  "created_by", "reason", "hosts", "hosts_left_out"]


def test_a_first_release_starts_straight_to_100(delivery: Delivery) -> None:
    delivery.release("v1")
    response = delivery.post("/api/v1/environments/staging/deploy", {"version": "v1"})
    assert response.status_code == 201, response.text
    rollout = response.json()
    assert list(rollout) == ROLLOUT_FIELDS
    assert (rollout["environment"], rollout["version"], rollout["strategy"]) == (
        "staging", "v1", "direct")
    assert rollout["from_version"] is None and rollout["steps"] == []
    assert rollout["created_by"] == "deployer"


def test_a_canary_shows_its_steps_in_words(delivery: Delivery) -> None:
    delivery.release("v1")
    delivery.release("v2")
    delivery.live("staging", "v1")
    delivery.live("staging", "v2")  # staging has the default one-step canary
    delivery.live("production", "v1")
    response = delivery.post("/api/v1/environments/production/deploy", {"version": "v2"})
    assert response.status_code == 201, response.text
    rollout = response.json()
    assert (rollout["strategy"], rollout["from_version"]) == ("canary", "v1")
    assert rollout["steps"] == ["weight 20%", "analysis error-rate 30s", "weight 100%"]


def test_a_deploy_behind_a_rollout_in_progress_is_queued(delivery: Delivery) -> None:
    delivery.release("v1")
    delivery.release("v2")
    delivery.post("/api/v1/environments/staging/deploy", {"version": "v1"})
    response = delivery.post("/api/v1/environments/staging/deploy",
                             {"version": "v2", "reason": "hotfix"})
    assert response.status_code == 202, response.text
    queued = response.json()["queued"]
    assert list(queued) == ["id", "environment", "version", "status", "actor", "reason",
                            "forced", "rollout_id", "created_at"]
    assert (queued["version"], queued["status"], queued["reason"]) == ("v2", "queued",
                                                                       "hotfix")
    kinds = [e["kind"] for e in delivery.get("/api/v1/history").json()]
    assert kinds[-1] == "queued"


def test_no_queue_refuses_while_a_rollout_runs(delivery: Delivery) -> None:
    delivery.release("v1")
    delivery.release("v2")
    delivery.post("/api/v1/environments/staging/deploy", {"version": "v1"})
    response = delivery.post("/api/v1/environments/staging/deploy",
                             {"version": "v2", "queue": False})
    assert response.status_code == 409
    assert response.json()["error"].startswith("staging is busy with rollout 1 of v1")


def test_an_unknown_release_is_not_found(delivery: Delivery) -> None:
    response = delivery.post("/api/v1/environments/staging/deploy", {"version": "v9"})
    assert response.status_code == 404
    assert response.json()["error"] == "no release v9 of shop"


def test_an_unknown_environment_is_refused(delivery: Delivery) -> None:
    delivery.release("v1")
    response = delivery.post("/api/v1/environments/qa/deploy", {"version": "v1"})
    assert response.status_code == 400
    assert "no environment named 'qa'" in response.json()["error"]


def test_production_before_staging_breaks_the_order(delivery: Delivery) -> None:
    delivery.release("v1")
    response = delivery.post("/api/v1/environments/production/deploy", {"version": "v1"})
    assert response.status_code == 409
    assert "v1 has not passed staging" in response.json()["error"]
    assert "--force" in response.json()["hint"]


@pytest.mark.parametrize(("role", "reason", "status", "says"), [
    ("deployer", "incident 42", 403, "needs an admin"),
    ("admin", "", 409, "--force needs a --reason"),
    ("viewer", "incident 42", 403, "viewer is a viewer; this needs deployer"),
], ids=["deployer-may-not", "admin-needs-a-reason", "viewer-may-not-deploy"])
def test_forcing_the_order_is_refused(delivery: Delivery, role: str, reason: str,
                                      status: int, says: str) -> None:
    delivery.release("v1")
    response = delivery.post("/api/v1/environments/production/deploy",
                             {"version": "v1", "force": True, "reason": reason}, role=role)
    assert response.status_code == status, response.text
    assert says in response.json()["error"]


def test_an_admin_forces_with_a_reason_and_it_is_recorded(delivery: Delivery) -> None:
    delivery.release("v1")
    response = delivery.post("/api/v1/environments/production/deploy",
                             {"version": "v1", "force": True, "reason": "incident 42"},
                             role="admin")
    assert response.status_code == 201, response.text
    forced = [e for e in delivery.get("/api/v1/history").json() if e["kind"] == "forced"]
    assert forced and forced[0]["message"] == "admin forced v1 into production: incident 42"

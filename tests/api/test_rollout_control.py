"""Promote, abort and roll back in process: each asks the rollout in progress (the
controller carries it out on its next pass), or restores an earlier release at once."""

from __future__ import annotations

from entrega.rollouts.model import Phase, state_from_dict
from tests.api.delivery import Delivery


def canary_in_staging(delivery: Delivery) -> int:
    delivery.release("v1")
    delivery.release("v2")
    delivery.live("staging", "v1")
    response = delivery.post("/api/v1/environments/staging/deploy", {"version": "v2"})
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def test_promote_asks_the_rollout_to_move_on(delivery: Delivery) -> None:
    rollout = canary_in_staging(delivery)
    response = delivery.post("/api/v1/environments/staging/promote", {"full": True})
    assert response.status_code == 200, response.text
    assert response.json() == {"rollout": rollout}
    state = state_from_dict(delivery.active("staging").state)
    assert state.promote_requested and state.promote_full
    command = delivery.get(f"/api/v1/rollouts/{rollout}").json()["events"][-1]
    assert command["message"] == "v2 fully promoted by deployer"


def test_promote_without_a_rollout_is_not_found(delivery: Delivery) -> None:
    response = delivery.post("/api/v1/environments/staging/promote", {})
    assert response.status_code == 404
    assert response.json()["error"] == "no rollout in progress in staging"


def test_abort_asks_the_rollout_to_roll_back(delivery: Delivery) -> None:
    rollout = canary_in_staging(delivery)
    response = delivery.post("/api/v1/environments/staging/abort")
    assert response.status_code == 200, response.text
    assert response.json() == {"rollout": rollout}
    assert state_from_dict(delivery.active("staging").state).abort_requested


def test_abort_without_a_rollout_is_not_found(delivery: Delivery) -> None:
    response = delivery.post("/api/v1/environments/production/abort")
    assert response.status_code == 404
    assert response.json()["error"] == "no rollout in progress in production"


def test_rollback_during_a_rollout_aborts_it(delivery: Delivery) -> None:
    rollout = canary_in_staging(delivery)
    response = delivery.post("/api/v1/environments/staging/rollback", {})
    assert response.status_code == 200, response.text
    assert response.json() == {"rollout": rollout, "version": "v2"}
    assert state_from_dict(delivery.active("staging").state).abort_requested


def test_rollback_restores_the_release_the_current_one_replaced(delivery: Delivery) -> None:
    canary_in_staging(delivery)
    delivery.play("staging", Phase.SUCCEEDED, "v2 promoted")
    response = delivery.post("/api/v1/environments/staging/rollback", {})
    assert response.status_code == 200, response.text
    restore = delivery.active("staging")
    assert response.json() == {"rollout": restore.id, "version": "v1"}
    assert (restore.strategy, restore.reason) == ("direct", "rollback from v2")


def test_rollback_with_nothing_earlier_is_not_found(delivery: Delivery) -> None:
    delivery.release("v1")
    delivery.live("staging", "v1")
    response = delivery.post("/api/v1/environments/staging/rollback", {})
    assert response.status_code == 404
    assert response.json()["error"] == "staging has no earlier release to roll back to"
    assert "--to VERSION" in response.json()["hint"]


def test_rollback_to_another_release_waits_for_the_rollout(delivery: Delivery) -> None:
    canary_in_staging(delivery)
    delivery.release("v3")
    response = delivery.post("/api/v1/environments/staging/rollback", {"to": "v3"})
    assert response.status_code == 409
    assert response.json()["error"] == "staging has rollout 2 in progress"

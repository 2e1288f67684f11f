"""`POST /environments/{env}/approve` in process: a release waiting at a manual gate is
let through (queued for the controller), and nothing else can be approved."""

from __future__ import annotations

from tests.api.delivery import Delivery


def wait_at_the_gate(delivery: Delivery, version: str) -> None:
    # What the controller records when a release has passed staging (controller/pipeline)
    delivery.repo.add_request(app="shop", environment="production", version=version,
                              status="awaiting_approval", actor="controller", reason="")


def test_approve_queues_the_waiting_release(delivery: Delivery) -> None:
    delivery.release("v1")
    delivery.live("staging", "v1")
    wait_at_the_gate(delivery, "v1")

    response = delivery.post("/api/v1/environments/production/approve", {"version": "v1"})

    assert response.status_code == 200, response.text
    assert response.json() == {"approved": "v1", "environment": "production"}
    stage = delivery.get("/api/v1/pipeline").json()["releases"][0]["environments"]
    assert stage["production"]["status"] == "queued"
    approved = delivery.get("/api/v1/history").json()[-1]
    assert (approved["kind"], approved["actor"]) == ("approved", "deployer")


def test_a_release_not_waiting_cannot_be_approved(delivery: Delivery) -> None:
    delivery.release("v1")
    response = delivery.post("/api/v1/environments/production/approve", {"version": "v1"})
    assert response.status_code == 404
    assert response.json()["error"] == "v1 is not waiting for approval in production"
    assert "entrega pipeline" in response.json()["hint"]


def test_a_viewer_cannot_approve(delivery: Delivery) -> None:
    delivery.release("v1")
    wait_at_the_gate(delivery, "v1")
    response = delivery.post("/api/v1/environments/production/approve", {"version": "v1"},
                             role="viewer")
    assert response.status_code == 403
    pipeline = delivery.get("/api/v1/pipeline").json()["releases"][0]["environments"]
    assert pipeline["production"]["status"] == "awaiting_approval"

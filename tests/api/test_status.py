"""The API's reads in process: health, status, pipeline, releases and history, each with
what a caller without the viewer role or with bad input gets."""

from __future__ import annotations

import pytest

from entrega.rollouts.model import Phase
from tests.api.delivery import Delivery


def test_healthz_is_public_and_says_which_app(delivery: Delivery) -> None:
    response = delivery.client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"ok": True, "app": "shop", "passes": 0, "apps": ["shop"]}


def test_healthz_takes_no_changes(delivery: Delivery) -> None:
    assert delivery.client.post("/healthz").status_code == 405


def test_status_shows_what_runs_and_the_rollout_in_progress(delivery: Delivery) -> None:
    delivery.release("v1")
    delivery.live("staging", "v1")
    delivery.release("v2")
    assert delivery.post("/api/v1/environments/staging/deploy",
                         {"version": "v2"}).status_code == 201

    status = delivery.get("/api/v1/status").json()

    assert status["app"] == "shop"
    staging, production = status["environments"]
    assert (staging["name"], staging["current"]) == ("staging", "v1")
    assert staging["rollout"]["version"] == "v2" and staging["last_rollout"] is None
    # hosts: a fleet's, per host (empty for the local target)
    assert production == {"name": "production", "current": None, "rollout": None,
                          "last_rollout": None, "hosts": []}


def test_status_shows_the_last_rollout_when_none_runs(delivery: Delivery) -> None:
    delivery.release("v1")
    delivery.live("staging", "v1")
    staging = delivery.get("/api/v1/status").json()["environments"][0]
    assert staging["rollout"] is None
    assert (staging["last_rollout"]["phase"], staging["last_rollout"]["message"]) == (
        "succeeded", "v1 is live")


@pytest.mark.parametrize("path", ["/api/v1/status", "/api/v1/pipeline", "/api/v1/releases",
                                  "/api/v1/history"])
def test_reads_need_a_token(delivery: Delivery, path: str) -> None:
    response = delivery.client.get(path)
    assert response.status_code == 401
    assert response.json()["error"] == "this needs a token"


def test_pipeline_shows_each_release_in_each_environment(delivery: Delivery) -> None:
    delivery.release("v1")
    delivery.live("staging", "v1")
    delivery.release("v2")
    delivery.repo.add_request(app="shop", environment="production", version="v1",
                              status="awaiting_approval", actor="controller", reason="")

    view = delivery.get("/api/v1/pipeline").json()

    assert view["app"] == "shop" and view["environments"] == ["staging", "production"]
    v2, v1 = view["releases"]
    assert v2["version"] == "v2" and v2["retained"] is True
    # A stage carries only the fields that apply to it (never nulls for the others).
    assert v2["environments"]["staging"] == {"status": "-", "running": False}
    staging = v1["environments"]["staging"]
    assert list(staging) == ["status", "rollout_id", "since", "running", "message"]
    assert (staging["status"], staging["running"], staging["message"]) == (
        "succeeded", True, "v1 is live")
    waiting = v1["environments"]["production"]
    assert list(waiting) == ["status", "since", "running"]
    assert (waiting["status"], waiting["running"]) == ("awaiting_approval", False)


def test_pipeline_refuses_a_limit_below_one(delivery: Delivery) -> None:
    response = delivery.get("/api/v1/pipeline", limit=0)
    assert response.status_code == 422 and "limit" in response.text


def test_releases_newest_first(delivery: Delivery) -> None:
    delivery.release("v1")
    delivery.release("v2")
    rows = delivery.get("/api/v1/releases").json()
    assert [r["version"] for r in rows] == ["v2", "v1"]
    assert list(rows[0]) == ["version", "digest", "meta", "created_at", "created_by"]
    assert rows[0]["created_by"] == "ci"


def test_history_lists_events_and_pages_after_an_id(delivery: Delivery) -> None:
    delivery.release("v1")
    delivery.live("staging", "v1")
    events = delivery.get("/api/v1/history").json()
    assert [e["kind"] for e in events] == ["release", "rollout", "promoted"]
    assert list(events[0]) == ["id", "time", "environment", "version", "rollout_id", "kind",
                               "actor", "message", "data", "epoch"]
    after = delivery.get("/api/v1/history", after_id=events[1]["id"]).json()
    assert [e["kind"] for e in after] == ["promoted"]
    assert delivery.get("/api/v1/history", environment="production").json() == []


def test_history_of_an_unknown_environment_is_refused(delivery: Delivery) -> None:
    response = delivery.get("/api/v1/history", environment="qa")
    assert response.status_code == 400, response.text
    assert "no environment named 'qa'" in response.json()["error"]


def test_a_rollout_phase_is_one_of_the_documented_phases(delivery: Delivery) -> None:
    delivery.release("v1")
    delivery.post("/api/v1/environments/staging/deploy", {"version": "v1"})
    phase = delivery.get("/api/v1/status").json()["environments"][0]["rollout"]["phase"]
    assert phase in {p.value for p in Phase}

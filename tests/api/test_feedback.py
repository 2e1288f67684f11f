"""Feedback through the API in process: the public intake on both paths (and its CORS
preflight), and the viewer's list with its per-release summary."""

from __future__ import annotations

from pathlib import Path

import pytest

from entrega.feedback import FeedbackSettings
from tests.insights.stack import Stack, make_stack


@pytest.mark.parametrize("path", ["/api/v1/feedback", "/.entrega/feedback"])
async def test_feedback_is_taken_and_listed(stack: Stack, path: str) -> None:
    response = await stack.client.post(path, json={"rating": 4, "comment": "nice"},
                                       headers={"X-Entrega-Release": "v1"})
    assert response.status_code == 201, response.text
    taken = response.json()
    assert list(taken) == ["id", "version", "environment"]
    listed = (await stack.client.get("/api/v1/feedback", headers=stack.headers("viewer"))
              ).json()
    assert listed["app"] == "shop" and [f["comment"] for f in listed["feedback"]] == ["nice"]
    assert list(listed["feedback"][0]) == ["id", "time", "environment", "version",
                                           "claimed_version", "rating", "comment", "user_id",
                                           "tags"]
    assert listed["summary"] == {taken["version"]: {"count": 1, "rated": 1,
                                                   "mean_rating": 4.0, "low_ratings": 0}}


async def test_the_list_refuses_a_bad_limit(stack: Stack) -> None:
    response = await stack.client.get("/api/v1/feedback?limit=0",
                                      headers=stack.headers("viewer"))
    assert response.status_code == 422 and "limit" in response.json()["error"]


@pytest.mark.parametrize(("origin", "allowed"), [
    ("https://shop.example", "https://shop.example"), ("https://evil.example", None),
], ids=["listed-origin", "other-origin"])
async def test_the_widgets_preflight(tmp_path: Path, origin: str, allowed: str | None) -> None:
    stack = make_stack(tmp_path, settings=FeedbackSettings(
        cors_origins=("https://shop.example",)))
    response = await stack.client.options("/.entrega/feedback", headers={
        "Origin": origin, "Access-Control-Request-Method": "POST"})
    assert response.status_code == 204
    assert response.headers.get("access-control-allow-origin") == allowed
    assert ("access-control-allow-methods" in response.headers) is (allowed is not None)

"""The public feedback endpoint: validation, attribution, limits, CORS, storage as given."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from entrega.dataplane import proof
from entrega.feedback import FeedbackIntake, FeedbackSettings
from tests.insights.stack import Stack, make_stack


@pytest.fixture
def released(stack: Stack) -> Stack:
    repo = stack.service.repo
    for version in ("v1", "v2"):
        repo.add_release(app="shop", version=version, digest="sha256:" + "0" * 64,
                         artifact_path="/x", meta={}, actor="ci")
    repo.set_current("shop", "staging", "v2")
    repo.set_current("shop", "production", "v1")
    return stack


@pytest.mark.parametrize(("body", "status"), [
    ({"rating": 5}, 201), ({"comment": "nice"}, 201), ({"rating": 1, "comment": "bad"}, 201),
    ({"rating": 0}, 422), ({"rating": 6}, 422), ({"rating": "five"}, 422), ({}, 422),
    ({"comment": "   "}, 422), ({"comment": "x" * 2001}, 422),
    ({"rating": 3, "tags": ["a"] * 11}, 422), ({"rating": 3, "tags": ["x" * 33]}, 422),
    ([1, 2], 422),
], ids=["rating", "comment", "both", "zero", "six", "string", "empty", "blank-comment",
        "long-comment", "many-tags", "long-tag", "not-an-object"])
async def test_validation(released: Stack, body: Any, status: int) -> None:
    response = await released.client.post("/api/v1/feedback", json=body)
    assert response.status_code == status, response.text
    if status == 422:
        assert response.json()["error"]


@pytest.mark.parametrize(("kwargs", "version", "environment", "claimed"), [
    ({"json": {"rating": 4, "version": "v2"}}, "v2", "staging", None),
    ({"json": {"rating": 4}, "headers": {"X-Entrega-Release": "v1"}}, "v1", "production", None),
    ({"json": {"rating": 4}, "cookies": {"entrega-release": "v1"}}, "v1", "production", None),
    ({"json": {"rating": 4, "version": "v2", "environment": "production"}}, "v2",
     "production", None),
    ({"json": {"rating": 4}, "headers": {"X-Entrega-Environment": "staging",
                                         "X-Entrega-Release": "v2"}}, "v2", "staging", None),
    ({"json": {"rating": 4}}, "unknown", None, None),
    ({"json": {"rating": 4}, "headers": {"X-Entrega-Release": "v9"}}, "unknown", None, "v9"),
    ({"json": {"rating": 4}, "cookies": {"entrega-release": "<b>"}}, "unknown", None, "<b>"),
], ids=["explicit", "router-header", "cookie", "explicit-environment", "header-environment",
        "nothing", "unknown-release", "forged-cookie"])
async def test_release_is_resolved_or_kept_as_unknown(
        released: Stack, kwargs: dict[str, Any], version: str, environment: str | None,
        claimed: str | None) -> None:
    cookies = kwargs.pop("cookies", None)
    if cookies:
        released.client.cookies.update(cookies)
    response = await released.client.post("/.entrega/feedback", **kwargs)
    assert response.status_code == 201, response.text
    assert response.json()["version"] == version
    row = released.insights.feedback("shop")[0]
    assert (row.version, row.environment, row.claimed_version) == (version, environment, claimed)


async def test_comment_is_stored_as_given_and_listed_raw(released: Stack) -> None:
    comment = "<script>alert('x')</script> & \"quotes\" — ünïcode"
    await released.client.post("/api/v1/feedback", json={"rating": 2, "comment": comment,
                                                         "user_id": "u1", "tags": ["a", " "],
                                                         "version": "v1"})
    listed = (await released.client.get("/api/v1/feedback?version=v1",
                                        headers=released.headers("viewer"))).json()
    assert listed["feedback"][0]["comment"] == comment
    assert listed["feedback"][0]["tags"] == ["a"]
    assert listed["summary"] == {"v1": {"count": 1, "rated": 1, "mean_rating": 2.0,
                                        "low_ratings": 1}}


async def test_form_posts_and_text_plain_json_are_accepted(released: Stack) -> None:
    form = await released.client.post("/.entrega/feedback",
                                      data={"rating": "5", "comment": "from a form",
                                            "tags": "a,b"})
    assert form.status_code == 201
    beacon = await released.client.post("/.entrega/feedback", content=json.dumps({"rating": 3}),
                                        headers={"Content-Type": "text/plain"})
    assert beacon.status_code == 201
    assert [r.rating for r in released.insights.feedback("shop")] == [3, 5]


async def test_body_size_limit(tmp_path: Path) -> None:
    stack = make_stack(tmp_path, settings=FeedbackSettings(max_body_bytes=1024))
    big = {"rating": 3, "comment": "x" * 1500}
    declared = await stack.client.post("/api/v1/feedback", json=big)
    assert declared.status_code == 413
    assert stack.insights.feedback("shop") == []


async def test_rate_limit_per_client_with_retry_after(tmp_path: Path) -> None:
    stack = make_stack(tmp_path, settings=FeedbackSettings(burst=3, rate_per_minute=6))
    statuses = [(await stack.client.post("/api/v1/feedback", json={"rating": 4})).status_code
                for _ in range(4)]
    assert statuses == [201, 201, 201, 429]
    limited = await stack.client.post("/api/v1/feedback", json={"rating": 4})
    assert limited.headers["retry-after"] == "10"  # 6 a minute: one every 10 s
    # A new X-Forwarded-For does not make a new client: the peer is not a trusted proxy.
    forged = await stack.client.post("/api/v1/feedback", json={"rating": 4},
                                     headers={"X-Forwarded-For": "127.0.113.9"})
    assert forged.status_code == 429
    # Another visitor behind the embedded router (which sends its key) is not limited.
    other = await stack.client.post("/api/v1/feedback", json={"rating": 4},
                                    headers={"X-Forwarded-For": "127.0.113.9",
                                             proof.HEADER: router_key(stack)})
    assert other.status_code == 201
    stack.clock[0] += 10
    assert (await stack.client.post("/api/v1/feedback", json={"rating": 4})).status_code == 201
    clients = {r.client for r in stack.insights.feedback("shop")}
    assert len(clients) == 2 and not any("127.0.113.9" in c or "127.0.0.1" in c
                                         for c in clients)


def router_key(stack: Stack) -> str:
    return proof.key_path(stack.service.config.state_path).read_text().strip()


async def test_a_direct_client_is_one_client_whatever_its_forwarded_for(
        tmp_path: Path) -> None:
    stack = make_stack(tmp_path, settings=FeedbackSettings(burst=3, rate_per_minute=6))
    statuses = [(await stack.client.post("/.entrega/feedback", json={"rating": 4}, headers={
        "X-Forwarded-For": f"198.51.100.{n}, 127.0.113.{n}",
        proof.HEADER: "0" * 64}  # a wrong key proves nothing
    )).status_code for n in range(5)]
    assert statuses == [201, 201, 201, 429, 429]
    assert len({r.client for r in stack.insights.feedback("shop")}) == 1


KEY = b"k" * 64


@pytest.mark.parametrize(("peer", "forwarded", "proofs", "trusted", "seen_as"), [
    ("127.0.0.1", None, [], (), "127.0.0.1"),
    ("127.0.0.1", "127.0.113.9", [], (), "127.0.0.1"),
    ("127.0.0.1", "127.0.113.9", ["wrong"], (), "127.0.0.1"),
    ("127.0.0.1", "127.0.113.9", [KEY.decode()], (), "127.0.113.9"),
    ("127.0.0.1", "127.0.113.9", ["forged by the visitor", KEY.decode()], (), "127.0.113.9"),
    ("127.0.0.1", "127.1.1.1, 127.0.113.9", [KEY.decode()], (), "127.0.113.9"),
    ("127.0.10.5", "127.0.113.9", [], ("127.0.10.0/24",), "127.0.113.9"),
    ("127.0.11.5", "127.0.113.9", [], ("127.0.10.0/24",), "127.0.11.5"),
    ("127.0.0.1", "127.1.1.1, 127.0.113.9, 127.0.10.7", [KEY.decode()], ("127.0.10.7",),
     "127.0.113.9"),
    ("127.0.10.5", "127.0.10.6", [], ("127.0.10.0/24",), "127.0.10.6"),
    ("127.0.10.5", "not-an-ip", [], ("127.0.10.0/24",), "not-an-ip"),
], ids=["peer", "xff-from-anyone", "wrong-key", "router", "visitor-header-beside-router",
        "router-ignores-client-hops", "trusted-proxy", "untrusted-network",
        "proxy-in-front-of-router", "only-proxies", "garbage-hop"])
def test_which_address_a_client_is(
        released: Stack, peer: str, forwarded: str | None, proofs: list[str],
        trusted: tuple[str, ...], seen_as: str) -> None:
    intake = FeedbackIntake(app="shop", repo=released.service.repo, insights=released.insights,
                            key=b"x", settings=FeedbackSettings(trusted_proxies=trusted),
                            router_key=KEY)
    assert intake.client_of(peer, forwarded, proofs) == intake.client_of(seen_as, None)


@pytest.mark.parametrize(("origins", "origin", "allowed"), [
    (("*",), "https://shop.example", "*"),
    (("https://shop.example",), "https://shop.example", "https://shop.example"),
    (("https://shop.example",), "https://evil.example", None),
], ids=["any", "listed", "not-listed"])
async def test_cors(tmp_path: Path, origins: tuple[str, ...], origin: str,
                    allowed: str | None) -> None:
    stack = make_stack(tmp_path, settings=FeedbackSettings(cors_origins=origins))
    preflight = await stack.client.options("/api/v1/feedback", headers={
        "Origin": origin, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type"})
    assert preflight.status_code == 204
    assert preflight.headers.get("access-control-allow-origin") == allowed
    post = await stack.client.post("/api/v1/feedback", json={"rating": 5},
                                   headers={"Origin": origin})
    assert post.headers.get("access-control-allow-origin") == allowed


async def test_widget_script_is_served(stack: Stack) -> None:
    response = await stack.client.get("/.entrega/feedback.js")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/javascript")
    assert "/.entrega/feedback" in response.text and "attachShadow" in response.text

"""The dashboard in process: login with a token, role-aware state, escaping, static files."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.insights.stack import TOKENS, Stack, make_stack, seed_history

OURS = {"X-Entrega-Actor": "dashboard"}  # what static/forms.js adds


async def login(stack: Stack, role: str) -> None:
    response = await stack.client.post("/login", data={"token": TOKENS[role], "next": "/"},
                                       headers=OURS)
    assert response.status_code == 303, response.text


async def test_pages_need_a_login(stack: Stack) -> None:
    response = await stack.client.get("/")
    assert response.status_code == 303 and response.headers["location"] == "/login?next=/"
    assert (await stack.client.get("/ui/state.json")).status_code == 401
    assert (await stack.client.get("/releases/v1")).status_code == 303


async def test_token_login_sets_an_httponly_strict_cookie(stack: Stack) -> None:
    refused = await stack.client.post("/login", data={"token": "ent_wrong"}, headers=OURS)
    assert refused.status_code == 401 and "not valid" in refused.text
    response = await stack.client.post("/login", data={"token": TOKENS["viewer"],
                                                       "next": "//evil.example/"},
                                       headers=OURS)
    assert response.status_code == 303 and response.headers["location"] == "/"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"entrega_token={TOKENS['viewer']};")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    page = await stack.client.get("/")
    assert page.status_code == 200 and "viewer" in page.text
    logout = await stack.client.post("/logout", headers=OURS)
    assert logout.status_code == 303 and 'entrega_token=""' in logout.headers["set-cookie"]


async def test_login_and_logout_refuse_another_sites_form(stack: Stack) -> None:
    # What a browser sends for a form on https://evil.example posting here: the cookie
    # (if it were sent at all), an Origin, and no X-Entrega-Actor.
    evil = {"Origin": "https://evil.example", "Referer": "https://evil.example/x"}
    forced = await stack.client.post("/login", data={"token": TOKENS["admin"]}, headers=evil)
    assert forced.status_code == 403 and "set-cookie" not in forced.headers
    assert "Refused" in forced.text and (await stack.client.get("/")).status_code == 303
    await login(stack, "viewer")
    kicked = await stack.client.post("/logout", headers=evil)
    assert kicked.status_code == 403 and "set-cookie" not in kicked.headers
    assert (await stack.client.get("/")).status_code == 200  # still logged in


@pytest.mark.parametrize(("role", "can_deploy"), [("viewer", False), ("deployer", True),
                                                  ("admin", True)])
async def test_state_says_what_the_caller_may_do(stack: Stack, role: str,
                                                 can_deploy: bool) -> None:
    await login(stack, role)
    state = (await stack.client.get("/ui/state.json")).json()
    assert state["caller"] == {"name": role, "role": role, "can_deploy": can_deploy,
                               "open": False}
    assert [e["name"] for e in state["environments"]] == ["staging", "production"]


async def test_a_stale_cookie_sends_back_to_login(stack: Stack) -> None:
    stack.client.cookies.set("entrega_token", "ent_revoked")
    response = await stack.client.get("/")
    assert response.status_code == 303 and "entrega_token" in response.headers["set-cookie"]


async def test_dashboard_shows_history_feedback_dora_and_escapes_comments(stack: Stack) -> None:
    seed_history(stack)
    await login(stack, "viewer")
    html = (await stack.client.get("/")).text
    assert "<script>alert" not in html
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; so slow" in html
    # the JSON the page starts from is escaped for a script element too
    assert "\\u003cscript\\u003e" in html or "<script>alert" not in html.split("initial-state")[1]
    for text in ("rollout of v2 to production requested", 'href="/releases/v2"', "DORA",
                 "lead time for changes", "tier-elite", "/ui/static/dashboard.js"):
        assert text in html
    state = (await stack.client.get("/ui/state.json")).json()
    assert state["feedback"]["v2"]["count"] == 12 and state["feedback"]["v2"]["low"] == 11
    report = await stack.client.get("/releases/v2")
    assert report.status_code == 200 and 'href="/"' in report.text and "Scorecard" in report.text


async def test_open_server_needs_no_login(tmp_path: Path) -> None:
    stack = make_stack(tmp_path, tokens=False)
    page = await stack.client.get("/")
    assert page.status_code == 200
    state = (await stack.client.get("/ui/state.json")).json()
    assert state["caller"]["role"] == "admin" and state["caller"]["open"] is True


@pytest.mark.parametrize(("name", "status"), [
    ("dashboard.js", 200), ("dashboard.css", 200), ("feedback.js", 200),
    ("..%2Fdashboard.py", 404), ("dashboard.py", 404), ("missing.js", 404),
])
async def test_static_files(stack: Stack, name: str, status: int) -> None:
    assert (await stack.client.get(f"/ui/static/{name}")).status_code == status


async def test_state_lists_releases_awaiting_approval(stack: Stack) -> None:
    from entrega.store.models import DeployRequest

    with stack.service.repo.store.session() as s:
        s.add(DeployRequest(app="shop", environment="production", version="v2",
                            status="awaiting_approval", strategy=None, actor="ci", reason="",
                            forced=False, rollout_id=None, created_at=1.0, updated_at=1.0))
    await login(stack, "deployer")
    state = (await stack.client.get("/ui/state.json")).json()
    waiting = {e["name"]: e["awaiting_approval"] for e in state["environments"]}
    assert waiting == {"staging": [], "production": ["v2"]}

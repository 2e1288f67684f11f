"""The dashboard's login form and release page in process."""

from __future__ import annotations

from tests.insights.stack import Stack, seed_history
from tests.web.test_pages import login


async def test_the_login_form_keeps_a_local_next(stack: Stack) -> None:
    page = await stack.client.get("/login?next=/releases/v2")
    assert page.status_code == 200
    assert 'name="token"' in page.text and 'value="/releases/v2"' in page.text


async def test_the_login_form_drops_a_foreign_next(stack: Stack) -> None:
    page = await stack.client.get("/login?next=//evil.example/")
    assert page.status_code == 200
    assert "evil.example" not in page.text and 'value="/"' in page.text


async def test_a_release_page_is_its_report(stack: Stack) -> None:
    seed_history(stack)
    await login(stack, "viewer")
    page = await stack.client.get("/releases/v2?environment=production")
    assert page.status_code == 200, page.text
    assert "Scorecard" in page.text and "v2" in page.text and 'href="/"' in page.text


async def test_a_page_for_an_unknown_release_says_so(stack: Stack) -> None:
    await login(stack, "viewer")
    page = await stack.client.get("/releases/v9")
    assert page.status_code == 404
    assert page.json()["error"] == "no release v9 of shop"

"""Logging in and out in a real browser (Debian's chromium, Playwright): the forms go
through static/forms.js with the header that another site's form cannot send; and an
app's pages under /apps/<app>/ in a server of several apps."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from entrega.api.app import create_app
from entrega.config.apps import load_apps
from entrega.plane import build_plane
from tests.insights.stack import TOKENS, make_stack, served_in_thread
from tests.web.deployment import CHROMIUM_ARGS, chromium_path
from tests.web.test_many_apps_pages import FILE as MANY_APPS
from tests.web.test_many_apps_pages import WEB_TEAM, seed_canary

pytestmark = pytest.mark.real


@pytest.fixture
def page() -> Iterator[Page]:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            yield browser.new_context().new_page()
        finally:
            browser.close()


def test_login_and_logout_from_our_pages(tmp_path: Path, page: Page) -> None:
    stack = make_stack(tmp_path)
    with served_in_thread(stack.app) as api:
        page.goto(api + "/")
        expect(page).to_have_url(api + "/login?next=/")
        page.fill("#token", "ent_wrong")
        page.click("button[type=submit]")
        expect(page.locator(".form-error")).to_have_text("That token is not valid.")

        page.fill("#token", TOKENS["deployer"])
        page.click("button[type=submit]")
        expect(page).to_have_url(api + "/")
        expect(page.locator("#who")).to_contain_text("deployer")

        # Another site's form, posted by this browser: refused, still logged in.
        page.set_content(f'<form method="post" action="{api}/logout"></form>')
        with page.expect_navigation():
            page.evaluate("document.forms[0].submit()")
        assert "Refused" in page.content()
        page.goto(api + "/")
        expect(page.locator("#who")).to_contain_text("deployer")

        page.click("text=log out")
        expect(page).to_have_url(api + "/login")
        page.goto(api + "/")
        expect(page).to_have_url(api + "/login?next=/")


def test_an_apps_dashboard_under_its_base_path(tmp_path: Path, page: Page) -> None:
    """A server of several apps: log in on one app's page under /apps/<app>/, watch its
    script poll and press a button there, then the overview at the root."""
    (tmp_path / "entrega.yaml").write_text(MANY_APPS)
    plane, store = build_plane(load_apps(tmp_path / "entrega.yaml"))
    try:
        for service in plane:
            service.repo.sync_app(service.app, [e.name for e in service.config.environments])
        rollout = seed_canary(plane)
        with served_in_thread(create_app(plane)) as api:
            page.goto(api + "/apps/web/")
            expect(page).to_have_url(api + "/apps/web/login?next=/apps/web/")
            page.fill("#token", WEB_TEAM)
            page.click("button[type=submit]")
            expect(page).to_have_url(api + "/apps/web/")
            expect(page.locator("#who")).to_contain_text("web-team")
            card = page.locator('.env[data-env="production"]')
            expect(card.locator(".weights")).to_have_attribute("data-weights", "v1=80,v2=20")
            # the page polls its own state.json (at the root it would be a 404)
            drawn = page.evaluate("document.body.dataset.updated")
            page.wait_for_function("v => document.body.dataset.updated !== v", arg=drawn,
                                   timeout=10_000)
            card.locator('button[data-action="promote"]').click()
            expect(page.locator("#toast")).to_have_text(
                f"promote requested in production (rollout {rollout})")
            expect(page.locator("#history")).to_contain_text("promoted")

            page.click("a.brand")
            expect(page).to_have_url(api + "/")
            expect(page.locator(".app-card")).to_have_count(1)
            page.wait_for_function("document.body.dataset.updated !== undefined",
                                   timeout=10_000)  # overview.js polled /api/v1/apps
            expect(page.locator('.app-card[data-app="web"] .weights-text')).to_have_text(
                "v1 80%, v2 20%")
            page.click('.app-card a[href="/apps/web/"]')
            expect(page).to_have_url(api + "/apps/web/")

            page.goto(api + "/apps/api/")
            expect(page).to_have_url(api + "/apps/api/login?next=/apps/api/")
            expect(page.locator("#login-error")).to_contain_text(
                "limited to the apps web, not api")
    finally:
        store.close()

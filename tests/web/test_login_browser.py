"""Logging in and out in a real browser (Debian's chromium, Playwright): the forms go
through static/forms.js with the header that another site's form cannot send."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from tests.insights.stack import TOKENS, make_stack, served_in_thread
from tests.web.deployment import CHROMIUM_ARGS, chromium_path

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

"""The dashboard end to end: a real server, router and app instances, a real canary paused
at 20% with users sending traffic, and Debian's chromium driven by Playwright."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from tests.e2e.conftest import Users, serving
from tests.web.deployment import CHROMIUM_ARGS, ROOT, InsightsDeployment, chromium_path

pytestmark = [pytest.mark.real, pytest.mark.slow]
ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[InsightsDeployment]:
    yield from serving(InsightsDeployment(tmp_path))


@pytest.fixture
def page() -> Iterator[Page]:
    executable = chromium_path()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1360, "height": 1000})
        try:
            yield context.new_page()
        finally:
            browser.close()


def test_live_canary_and_abort_from_the_dashboard(deployment: InsightsDeployment,
                                                  page: Page) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    first = deployment.deploy("v1")
    deployment.wait_phase(first["id"], {"succeeded"})
    with Users(deployment.router_url, rps=40) as users:
        canary = deployment.deploy("v2")
        deployment.wait_phase(canary["id"], {"paused"})

        page.goto(deployment.api + "/")
        card = page.locator('.env[data-env="production"]')
        expect(card.locator(".rollout")).to_have_attribute("data-phase", "paused")
        expect(card.locator(".weights")).to_have_attribute("data-weights", "v1=80,v2=20")
        expect(card.locator(".seg.canary")).to_have_text("v2 20%")
        expect(card.locator(".steps li.current")).to_have_text("pause")
        expect(page.locator("#who")).to_contain_text("admin")
        page.screenshot(path=str(ARTIFACTS / "dashboard-canary-20.png"), full_page=True)

        abort = card.locator('button[data-action="abort"]')
        expect(abort).to_be_enabled()
        abort.click()
        expect(abort).to_have_text("confirm abort")
        abort.click()

        final = deployment.wait_phase(canary["id"], {"rolled_back"})
        assert final["weights"] == {"v1": 100}
        expect(card.locator('.last[data-phase="rolled_back"]')).to_be_visible(timeout=10_000)
        expect(card.locator(".runs b")).to_have_text("v1")
        expect(page.locator("#history")).to_contain_text("rolled_back")
        expect(page.locator("#toast")).to_contain_text("abort requested")
        page.screenshot(path=str(ARTIFACTS / "dashboard-after-abort.png"), full_page=True)
    assert users.failures == []
    events = deployment.cli_json("history")
    assert any(e["kind"] == "command" and "aborted by" in e["message"] for e in events)

    page.goto(deployment.api + "/releases/v2")
    expect(page.locator("#scorecard")).to_contain_text("requests served")
    expect(page.locator(".badge").first).to_have_text("rolled back")
    page.screenshot(path=str(ARTIFACTS / "report-v2.png"), full_page=True)

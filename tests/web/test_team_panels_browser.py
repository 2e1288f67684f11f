"""The overview's release groups panel live in a real browser (Debian's chromium,
Playwright) against a real server on loopback: its poll of ``GET /api/v1/groups`` redraws
a group that moved on and draws one created after the page loaded, a name with markup
staying text, and a limited token's poll shows none of the groups it may not see."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from entrega.api.app import create_app
from entrega.config.apps import load_apps
from entrega.groups.model import GroupPhase, MemberPhase, MemberState
from entrega.plane import ControlPlane, build_plane
from tests.insights.stack import served_in_thread
from tests.insights.team_history import ADMIN, seed_team
from tests.web.deployment import CHROMIUM_ARGS, chromium_path
from tests.web.test_team_panels import (
    FRONT,
    HIDDEN,
    HOSTILE,
    SHIPPED,
    make_releases,
    members_file,
    seed_groups,
    set_state,
)

pytestmark = pytest.mark.real


@pytest.fixture
def page() -> Iterator[Page]:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            yield browser.new_context().new_page()
        finally:
            browser.close()


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[ControlPlane]:
    (tmp_path / "entrega.yaml").write_text(members_file())
    built, store = build_plane(load_apps(tmp_path / "entrega.yaml"))
    for service in built:
        service.repo.sync_app(service.app, [e.name for e in service.config.environments])
    seed_team(built)
    seed_groups(built)
    yield built
    store.close()


def releases(plane: ControlPlane, made: list[tuple[str, str]]) -> None:
    """``make_releases`` off Playwright's thread (its sync API runs a loop there)."""
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, make_releases(plane, made)).result()


def log_in(page: Page, api: str, token: str) -> None:
    page.goto(api + "/")
    page.fill("#token", token)
    page.click("button[type=submit]")
    expect(page).to_have_url(api + "/")


def test_the_groups_panel_follows_the_groups(plane: ControlPlane, page: Page) -> None:
    alerts: list[str] = []
    page.on("dialog", lambda dialog: (alerts.append(dialog.message), dialog.dismiss()))
    with served_in_thread(create_app(plane)) as api:
        log_in(page, api, ADMIN)
        shipped = page.locator(f'.group-card[data-group="{SHIPPED}"]')
        expect(shipped.locator("h3 .phase")).to_have_text("progressing")
        expect(shipped.locator('tr[data-member="web"] .phase')).to_have_text("deploying")

        # web passed production, the group succeeded; and a new group was created
        set_state(plane, SHIPPED, GroupPhase.SUCCEEDED, "production", {
            "api": MemberState(phase=MemberPhase.SUCCEEDED, rollout_id=11),
            "web": MemberState(phase=MemberPhase.SUCCEEDED, rollout_id=12)})
        releases(plane, [("api", "a4"), ("worker", "k3")])
        newest = f"2026.12.3{HOSTILE}"
        plane.groups.create(name=newest, actor="ci", members=[("api", "a4"), ("worker", "k3")])

        expect(shipped.locator("h3 .phase")).to_have_text("succeeded")
        expect(shipped.locator("h3 .phase")).to_have_class("phase phase-succeeded")
        expect(shipped.locator('tr[data-member="web"] .phase')).to_have_text("succeeded")
        cards = page.locator(".group-card")
        expect(cards).to_have_count(3)
        assert cards.first.get_attribute("data-group") == newest  # newest first
        expect(cards.first.locator("h3")).to_contain_text(newest)
        expect(cards.first.locator("h3 .phase")).to_have_text("pending")
        expect(cards.first.locator('tr[data-member="worker"] td').nth(1)).to_have_text("k3")
        # markup in a name or a message is text: nothing ran, no element was made of it
        expect(cards.nth(1).locator("p.message")).to_have_text(
            f"web failed in production {HOSTILE}")
        assert page.locator("#groups script").count() == 0
        assert alerts == []


def test_a_limited_tokens_poll_shows_only_its_groups(plane: ControlPlane, page: Page) -> None:
    with served_in_thread(create_app(plane)) as api:
        log_in(page, api, FRONT)
        expect(page.locator(".group-card")).to_have_count(1)
        # a new group with worker (which FRONT may not see): the poll leaves it out
        releases(plane, [("api", "a4"), ("worker", "k3")])
        plane.groups.create(name="2026.12.3", actor="ci",
                            members=[("api", "a4"), ("worker", "k3")])
        set_state(plane, SHIPPED, GroupPhase.ROLLING_BACK, "production", {
            "api": MemberState(phase=MemberPhase.REVERTING, rollout_id=11),
            "web": MemberState(phase=MemberPhase.FAILED, rollout_id=12)})
        shipped = page.locator(f'.group-card[data-group="{SHIPPED}"]')
        expect(shipped.locator("h3 .phase")).to_have_text("rolling_back")
        expect(page.locator(".group-card")).to_have_count(1)
        assert page.locator(f'[data-group^="{HIDDEN}"]').count() == 0
        assert page.locator('[data-group="2026.12.3"]').count() == 0

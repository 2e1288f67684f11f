"""The team's panels on the overview of a server of several apps (issue 14): the team's
DORA (the four keys with their tiers, the deployments, each app's keys) and the recent
release groups (phase, members with versions, where each stands in the group's
environment), each over what the caller's token may see, every string escaped.

In process: the real loader, one store for every app, a history recorded in it as the
controller records it (tests/insights/team_history.py), releases made by
``Service.create_release`` from real directories and groups by ``plane.groups.create``,
the whole HTTP surface through FastAPI's TestClient. No coordinator runs: each group's
state is written as the coordinator would have written it."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from dataclasses import replace
from html import unescape
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from entrega.api.app import create_app
from entrega.config.apps import load_apps
from entrega.groups.model import (
    GroupPhase,
    MemberPhase,
    MemberState,
    spec_from_dict,
    state_from_dict,
    state_to_dict,
)
from entrega.plane import ControlPlane, build_plane
from tests.insights.team_history import ADMIN, WEB_TEAM, apps_file, seed_team, sha

FRONT = "ent_team_front_token"  # a viewer limited to api and web (not worker)
HOSTILE = "<script>alert('x')</script>"
SHIPPED, HIDDEN = "2026.12.1", "2026.12.2"


def members_file() -> str:
    """team_history's apps, and a token that sees api and web only."""
    text = apps_file()
    front = f"    front: {{role: viewer, sha256: {sha(FRONT)}, apps: [api, web]}}\n"
    return text.replace("    web-team:", front + "    web-team:", 1)


async def make_releases(plane: ControlPlane, releases: list[tuple[str, str]]) -> None:
    for app, version in releases:
        service = plane.service(app)
        path = service.config.base_dir / "artifacts" / app / version
        path.mkdir(parents=True)
        (path / "app.py").write_text("print('hello')\n")
        await service.create_release(version=version, artifact=path, meta={}, actor="ci")


def set_state(plane: ControlPlane, name: str, phase: GroupPhase, environment: str,
              members: dict[str, MemberState], message: str = "") -> None:
    """The group's state as the coordinator would have saved it, in ``environment``."""
    row = plane.groups.group(name)
    spec, state = spec_from_dict(row.spec), state_from_dict(row.state)
    state = replace(state, phase=phase, message=message,
                    environment_index=spec.environments.index(environment),
                    members={environment: members})
    plane.groups.repo.save(row.id, phase=phase.value, state=state_to_dict(state),
                           finished=phase.terminal)


def seed_groups(plane: ControlPlane) -> None:
    """api a3 + web w2 (2026.12.1): under way in production, api there, web deploying;
    web w3 + worker k2 (named with markup): rolled back."""
    asyncio.run(make_releases(plane, [("api", "a3"), ("web", "w2"), ("web", "w3"),
                                      ("worker", "k2")]))
    plane.groups.create(name=SHIPPED, actor="ci", members=[("api", "a3"), ("web", "w2")])
    set_state(plane, SHIPPED, GroupPhase.PROGRESSING, "production", {
        "api": MemberState(phase=MemberPhase.SUCCEEDED, rollout_id=11),
        "web": MemberState(phase=MemberPhase.DEPLOYING, rollout_id=12,
                           message=f"canary at 20% {HOSTILE}")})
    plane.groups.create(name=HIDDEN + HOSTILE, actor="ci",
                        members=[("web", "w3"), ("worker", "k2")])
    set_state(plane, HIDDEN + HOSTILE, GroupPhase.ROLLED_BACK, "production", {
        "web": MemberState(phase=MemberPhase.REVERTED, replaced="w1",
                           message=f"analysis failed {HOSTILE}")},
              message=f"web failed in production {HOSTILE}")


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


@pytest.fixture
def client(plane: ControlPlane) -> Iterator[TestClient]:
    with TestClient(create_app(plane), raise_server_exceptions=False) as client:
        yield client


def overview(client: TestClient, token: str) -> str:
    client.cookies.clear()
    page = client.get("/", headers={"Authorization": f"Bearer {token}"})
    assert page.status_code == 200, page.text
    return page.text


def section(html: str, ident: str) -> str:
    found = re.search(rf'<section id="{ident}">(.*?)</section>', html, re.S)
    assert found, f"no section {ident}"
    return found.group(1)


def text(html: str) -> str:
    """What a reader sees of ``html``: the tags gone, the spaces collapsed."""
    inline = re.sub(r"</?(?:span|b|a)\b[^>]*>", "", html)
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", inline))).strip()


def tile(html: str, key: str) -> str:
    found = re.search(rf'<div class="tile" data-key="{key}">(.*?)</div>\s*</div>', html, re.S)
    assert found, f"no tile {key}"
    return text(found.group(1))


def app_row(html: str, app: str) -> str:
    found = re.search(rf'<tr data-team-app="{app}">(.*?)</tr>', section(html, "team-dora"), re.S)
    assert found, f"no row for {app}"
    return text(found.group(1))


def test_the_team_dora_panel_shows_the_four_keys_and_each_apps(client: TestClient) -> None:
    html = overview(client, ADMIN)
    panel = section(html, "team-dora")
    api = client.get("/api/v1/dora", headers={"Authorization": f"Bearer {ADMIN}"}).json()
    team = api["team"]
    # a1, a2 (rolled back) of api in production, w1 of web, k1 of worker in live
    assert "4 deployments (a release group counts once)" in text(panel)
    assert tile(panel, "deployment_frequency") == \
        f"deployment frequency 0.03/day {team['deployment_frequency']['tier']} 3 deployments"
    # commits 2 h, 30 min and 10 min before their releases reached 100%: median 30 min
    assert tile(panel, "lead_time") == "lead time for changes 30.0 min elite 3 deployments"
    assert tile(panel, "change_failure_rate") == \
        f"change failure rate 25.00% {team['change_failure_rate']['tier']} 4 deployments"
    assert team["change_failure_rate"]["tier"] == "medium"
    assert tile(panel, "recovery_time").startswith("failed deployment recovery ")
    assert f"tier-{team['recovery_time']['tier']}" in panel
    assert "last 90 days" in text(panel) and "3 apps" in text(panel)
    # api: a1 (commit 2 h before) promoted, a2 rolled back; web's w1 and worker's k1
    # promoted, commits 30 and 10 min before; one promotion in 90 days is 0.01/day
    assert app_row(html, "api") == "api production 2 0.01/day low 2.0 h elite 50.00% low " \
                                   "0.0 s elite"
    assert app_row(html, "web") == "web production 1 0.01/day low 30.0 min elite 0.00% " \
                                   "elite – no data"
    assert app_row(html, "worker") == "worker live 1 0.01/day low 10.0 min elite 0.00% " \
                                      "elite – no data"
    for app, report in api["apps"].items():  # each app's tiers are its own report's
        row = re.search(rf'<tr data-team-app="{app}">(.*?)</tr>', panel, re.S)
        assert row is not None
        tiers = re.findall(r'<span class="tier[^"]*">([^<]+)</span>', row.group(1))
        assert tiers == [report[k]["tier"] or "no data" for k in (
            "deployment_frequency", "lead_time", "change_failure_rate", "recovery_time")]


def test_the_release_groups_panel_shows_phase_members_and_where_they_stand(
        client: TestClient) -> None:
    panel = section(overview(client, ADMIN), "release-groups")
    cards = re.findall(r'<div class="card group-card" data-group="([^"]*)">', panel)
    assert [unescape(c) for c in cards] == [HIDDEN + HOSTILE, SHIPPED]  # newest first
    shipped = panel[panel.index(f'data-group="{SHIPPED}"'):]
    assert re.search(r'<span class="phase phase-progressing">progressing</span>', shipped)
    assert "in production" in text(shipped)
    assert "api a3 succeeded" in text(shipped)
    assert f"web w2 deploying canary at 20% {HOSTILE}" in text(shipped)
    assert '<span class="phase phase-deploying">deploying</span>' in shipped
    hidden = panel[:panel.index(f'data-group="{SHIPPED}"')]
    assert '<span class="phase phase-rolled_back">rolled_back</span>' in hidden
    assert "web w3 reverted" in text(hidden)
    assert "worker k2 –" in text(hidden)  # worker has no production
    assert f"web failed in production {HOSTILE}" in text(hidden)


def test_a_limited_token_sees_only_its_apps_figures_and_groups(client: TestClient) -> None:
    html = overview(client, FRONT)
    panel = section(html, "team-dora")
    # api's a1 and a2, web's w1: worker's k1 is not the front team's
    assert "3 deployments (a release group counts once)" in text(panel)
    assert tile(panel, "change_failure_rate") == "change failure rate 33.33% medium 3 deployments"
    # a1's commit 2 h before, w1's 30 min before: the median is 75 min
    assert tile(panel, "lead_time") == "lead time for changes 75.0 min elite 2 deployments"
    assert re.findall(r'<tr data-team-app="([^"]+)">', panel) == ["api", "web"]
    assert "worker" not in text(panel)
    groups = section(html, "release-groups")
    assert re.findall(r'data-group="([^"]*)"', groups) == [SHIPPED]
    assert "k2" not in groups and "reverted" not in groups
    # the poll's answer agrees with the page
    polled = client.get("/api/v1/groups?limit=10", headers={"Authorization": f"Bearer {FRONT}"})
    assert [g["name"] for g in polled.json()] == [SHIPPED]


def test_a_token_that_sees_no_group_is_told_so(client: TestClient) -> None:
    html = overview(client, WEB_TEAM)
    assert "1 deployment (a release group counts once)" in text(section(html, "team-dora"))
    assert re.findall(r'<tr data-team-app="([^"]+)">', section(html, "team-dora")) == ["web"]
    groups = section(html, "release-groups")
    assert 'id="no-groups"' in groups and "data-group" not in groups


def test_every_string_in_the_panels_is_escaped(client: TestClient) -> None:
    html = overview(client, ADMIN)
    assert HOSTILE not in html
    assert "&lt;script&gt;" in section(html, "release-groups")
    # the poll script puts values in with textContent, never as markup
    script = client.get("/ui/static/overview.js").text
    assert "groups?limit=" in script
    assert re.search(r"\.(?:inner|outer)HTML|insertAdjacentHTML", script) is None

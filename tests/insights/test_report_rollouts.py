"""A release deployed three times (rolled back, redeployed, restored later) gives three
reports, one per rollout, each against the release that rollout replaced; never one mix."""

from __future__ import annotations

import time
from typing import Any

import pytest

from entrega.rollouts.model import Phase, RolloutSpec, spec_to_dict
from entrega.service import Service
from entrega.store.insights_repository import InsightsRepository
from entrega.store.models import Rollout
from tests.insights.stack import Stack, sample, state

T = time.time() - 10_000
ROUTER_STARTED = T - 5

# version, replaced, final phase, created, finished (seconds after T)
HISTORY = [("v1", None, Phase.SUCCEEDED, 0, 10),
           ("v2", "v1", Phase.ROLLED_BACK, 1000, 1100),
           ("v2", "v1", Phase.SUCCEEDED, 2000, 2100),
           ("v3", "v2", Phase.SUCCEEDED, 3000, 3100),
           ("v2", "v3", Phase.SUCCEEDED, 4000, 4100)]
# cumulative router counters per version: (seconds after T, requests, 5xx)
SAMPLES = {"v1": [(500, 1000, 1), (1050, 1900, 2), (2050, 3000, 3), (2110, 3000, 3)],
           "v2": [(1050, 100, 20), (1105, 200, 40),                  # rollout 2: 200, 40
                  (2050, 300, 41), (2900, 1200, 50),                 # rollout 3: 1000, 10
                  (4050, 1700, 55), (4500, 3200, 58)],               # rollout 5: 2000, 8
           "v3": [(3050, 500, 0), (4050, 1500, 1)]}


def seed_redeployments(service: Service) -> None:
    repo = service.repo
    insights = InsightsRepository(repo.store)
    for version in SAMPLES:
        repo.add_release(app="shop", version=version, digest="sha256:" + "0" * 64,
                         artifact_path="/nonexistent", actor="ci", meta={})
    for version, replaced, phase, created, finished in HISTORY:
        row = repo.create_rollout(app="shop", environment="production", version=version,
                                  from_version=replaced,
                                  strategy="canary" if replaced else "direct",
                                  spec=spec_to_dict(RolloutSpec(strategy="canary")),
                                  state=state(replaced, version, Phase.PROGRESSING),
                                  actor="ci", reason="")
        repo.add_event(app="shop", environment="production", version=version,
                       rollout_id=row.id, kind="traffic", actor="controller",
                       message=f"rollout {row.id} starts", data={"weights": {version: 10}})
        promoted = phase == Phase.SUCCEEDED
        repo.save_transition(row.id, state=state(replaced, version, phase,
                                                 f"rollout {row.id} {phase.value}"),
                             phase=phase.value, events=[(phase.value, f"rollout {row.id}", {})],
                             actor="controller", current_version=version,
                             set_current=promoted)
        with repo.store.session() as s:  # the history happened over hours, not now
            stored = s.get(Rollout, row.id)
            assert stored is not None
            stored.created_at, stored.finished_at = T + created, T + finished
    insights.add_samples([
        sample(version, T + at, requests, errors, 20, router_started_at=ROUTER_STARTED)
        for version, points in SAMPLES.items() for at, requests, errors in points])
    for at, rating, comment in ((1060, 1, "broken checkout"), (2500, 4, "fine again"),
                                (4200, 5, "great")):
        insights.add_feedback(app="shop", version="v2", environment="production",
                                    claimed_version=None, rating=rating, comment=comment,
                                    user_id=None, tags=[], client="c", at=T + at)


async def report(stack: Stack, query: str = "") -> Any:
    response = await stack.client.get(f"/api/v1/releases/v2/report{query}",
                                      headers=stack.headers("viewer"))
    assert response.status_code == 200, response.text
    return response.json()


def figure(report: dict[str, Any], name: str) -> tuple[Any, Any]:
    f = next(f for f in report["figures"] if f["name"] == name)
    return f["current"], f["previous"]


@pytest.mark.parametrize(("query", "rollout", "replaced", "outcome", "requests", "comments"), [
    ("", 5, "v3", "promoted", (2000, 1500), ["great"]),
    ("?rollout=5", 5, "v3", "promoted", (2000, 1500), ["great"]),
    ("?rollout=3", 3, "v1", "promoted", (1000, 3000), ["fine again"]),
    ("?rollout=2", 2, "v1", "rolled back", (200, 1900), ["broken checkout"]),
], ids=["latest-by-default", "latest", "redeployed", "rolled-back"])
async def test_one_rollout_against_the_release_it_replaced(
        stack: Stack, query: str, rollout: int, replaced: str, outcome: str,
        requests: tuple[int, int], comments: list[str]) -> None:
    seed_redeployments(stack.service)
    data = await report(stack, query)
    assert data["rollout"]["id"] == rollout and data["previous_version"] == replaced
    assert data["verdict"]["outcome"] == outcome
    assert figure(data, "requests") == requests
    assert [c["comment"] for c in data["comments"]] == comments
    messages = {e["message"] for e in data["timeline"]}
    assert {m for m in messages if m.endswith(" starts")} == {f"rollout {rollout} starts"}
    assert [r["id"] for r in data["rollouts"]] == [2, 3, 5]  # the others, to pick from


async def test_each_rollout_keeps_its_own_error_rate(stack: Stack) -> None:
    seed_redeployments(stack.service)
    rates = [figure(await report(stack, f"?rollout={n}"), "error_rate")[0] for n in (2, 3, 5)]
    assert rates == pytest.approx([40 / 200, 10 / 1000, 8 / 2000])


@pytest.mark.parametrize(("query", "status", "words"), [
    ("?rollout=4", 404, "rollout 4 is not a rollout of v2 (its rollouts: 2, 3, 5)"),
    ("?rollout=99", 404, "rollout 99 is not a rollout of v2"),
    ("?rollout=2&environment=staging", 409, "rollout 2 was in production, not staging"),
    ("?rollout=two", 422, ""),
], ids=["another-release", "unknown", "other-environment", "not-a-number"])
async def test_a_wrong_rollout_says_which_exist(stack: Stack, query: str, status: int,
                                                words: str) -> None:
    seed_redeployments(stack.service)
    response = await stack.client.get(f"/api/v1/releases/v2/report{query}",
                                      headers=stack.headers("viewer"))
    assert response.status_code == status, response.text
    assert words in response.text

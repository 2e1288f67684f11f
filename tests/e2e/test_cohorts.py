"""Selected users first, through the real router: a cohort header, an allowlist, then a
growing share of users by a stable hash of their id, then weights."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from tests.e2e.conftest import Deployment

pytestmark = [pytest.mark.real, pytest.mark.slow]

COHORTS = """\
      canary:
        cohort: {header: X-Entrega-Cohort, value: beta, user_header: X-User-Id,
                 users: [alice, bob]}
        steps:
          - cohort: beta
          - pause: {}
          - users: 20%
          - pause: {}
          - users: 50%
          - pause: {}
          - weight: 100
"""

USERS = [f"user-{i}" for i in range(300)]


def release_for(dep: Deployment, client: httpx.Client, **headers: str) -> str:
    client.cookies.clear()
    response = client.get(dep.router_url + "/api/products", headers=headers)
    return response.headers["x-entrega-release"]


def on_canary(dep: Deployment, client: httpx.Client) -> set[str]:
    return {u for u in USERS if release_for(dep, client, **{"X-User-Id": u}) == "v2"}


def test_cohort_then_a_growing_share_of_users(
        make_deployment: Callable[[str], Deployment]) -> None:
    dep = make_deployment(COHORTS)
    v1 = dep.deploy("v1")
    dep.wait_phase(v1["id"], {"succeeded"})
    rollout = dep.deploy("v2")
    paused = dep.wait_phase(rollout["id"], {"paused"})
    assert paused["cohort"] == {"name": "beta", "selected": True, "users_percent": 0}
    assert "cohort beta" in dep.cli("status").stdout
    with httpx.Client(timeout=5) as client:
        assert release_for(dep, client, **{"X-Entrega-Cohort": "beta"}) == "v2"
        assert release_for(dep, client, **{"X-Entrega-Cohort": "other"}) == "v1"
        assert release_for(dep, client, **{"X-User-Id": "alice"}) == "v2"   # allowlist
        assert {release_for(dep, client) for _ in range(30)} == {"v1"}      # weight 0
        assert on_canary(dep, client) == set()

        dep.cli("promote")
        dep.wait_phase(rollout["id"], {"paused"})
        wait_step = dep.rollout_by_id(rollout["id"])
        assert wait_step["cohort"]["users_percent"] == 20
        at_20 = on_canary(dep, client)
        assert 0.12 * len(USERS) < len(at_20) < 0.28 * len(USERS)
        assert at_20 == on_canary(dep, client)  # the same users, request after request

        dep.cli("promote")
        wait = dep.wait_phase(rollout["id"], {"paused"})
        assert wait["cohort"]["users_percent"] == 50
        at_50 = on_canary(dep, client)
        assert 0.40 * len(USERS) < len(at_50) < 0.60 * len(USERS)
        assert at_20 <= at_50  # a user on the canary stays there as the share grows

        dep.cli("abort")
        dep.wait_phase(rollout["id"], {"rolled_back"})
        assert release_for(dep, client, **{"X-Entrega-Cohort": "beta"}) == "v1"
        assert on_canary(dep, client) == set()

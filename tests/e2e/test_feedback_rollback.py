"""A canary its users rate clearly worse is rolled back by the ``feedback`` metric.

Real server, real embedded router, real app processes. Each visitor comes from a loopback
address of its own (127.0.0.2, 127.0.0.3...; the intake limits submissions per address),
is served a page through the router (which pins it to a release with its cookie), then
rates what it got through the router's ``/.entrega/feedback``, as the widget on a page
does: the intake attributes the rating by that cookie, with no version in the body.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from tests.e2e.conftest import Deployment, wait_for

pytestmark = [pytest.mark.real, pytest.mark.slow]

#: Only ratings are judged: the canary's requests all succeed, as fast as stable's.
FEEDBACK_ANALYSIS = """\
      canary:
        steps:
          - weight: 50
          - analysis: {duration_s: 300, metrics: [feedback]}
          - weight: 100
"""


def visit_and_rate(dep: Deployment, address: str, rating_of: Callable[[str], int]) -> str:
    """One visitor: a page through the router, then a rating of what it was served."""
    transport = httpx.HTTPTransport(local_address=address)
    with httpx.Client(transport=transport, timeout=10) as client:
        page = client.get(dep.router_url + "/api/products")
        assert page.status_code == 200, page.text
        release = page.headers["x-entrega-release"]
        assert client.cookies.get("entrega-release") == release
        rated = client.post(dep.router_url + "/.entrega/feedback",
                            json={"rating": rating_of(release), "comment": "checkout"})
        assert rated.status_code == 201, rated.text
        return release


def test_a_canary_users_rate_low_is_rolled_back(
        make_deployment: Callable[[str], Deployment]) -> None:
    dep = make_deployment(FEEDBACK_ANALYSIS)
    first = dep.deploy("v1")
    dep.wait_phase(first["id"], {"succeeded"})
    rollout = dep.deploy("v2")
    wait_for(lambda: (r := dep.rollout_by_id(rollout["id"]))["analysis"]
             and r["analysis"]["checks"] >= 1, 30, "the analysis step's first check")
    # Before any rating the step cannot pass: no ratings are no evidence.
    step = dep.rollout_by_id(rollout["id"])["analysis"]
    assert step["verdict"] != "pass" and "no canary ratings yet" in step["reason"], step

    # The canary's users mostly rate it 1 or 2, stable's mostly 4 or 5.
    served: dict[str, int] = {"v1": 0, "v2": 0}

    def rating_of(release: str) -> int:
        n = served[release]
        served[release] += 1
        if release == "v2":
            return 4 if n % 5 == 4 else 1 + n % 2
        return 2 if n % 10 == 9 else 4 + n % 2

    final = None
    for host in range(2, 200):
        visit_and_rate(dep, f"127.0.0.{host}", rating_of)
        if host % 5 == 0:
            final = dep.rollout_by_id(rollout["id"])
            if final["phase"] != "progressing":
                break
    final = dep.wait_phase(rollout["id"], {"rolled_back", "succeeded", "paused"}, 30)
    assert final["phase"] == "rolled_back", final
    assert final["weights"] == {"v1": 100}
    assert "analysis failed: feedback: canary's share of low ratings" in final["message"]
    assert served["v2"] >= 5 and served["v1"] >= 5, served
    wait_for(lambda: "v2" not in dep.instance_pids(), what="v2 to be stopped")
    assert dep.served_by() == {"v1": 20}

    # The history and the explanation name the metric, in the words of ratings.
    history = dep.cli_json("history")
    why = [e for e in history if e["message"].startswith("rolling back to v1: ")]
    assert why and why[0]["message"].startswith(
        "rolling back to v1: analysis failed: feedback: canary's share of low ratings "
        "is more than 5 points above stable's (max_increase: 0.05)"), history
    assert "rolling back to v1: analysis failed: feedback" in dep.cli("history").stdout
    explained = " ".join(dep.cli("analysis", "explain", str(rollout["id"])).stdout.split())
    assert "feedback fail" in explained and "low ratings" in explained, explained
    assert "a low rating (1-2) would be the canary's" in explained
    data = dep.cli_json("analysis", "explain", str(rollout["id"]))
    failed = [w for w in data["windows"] if w["verdict"] == "fail"]
    (metric,) = failed[0]["result"]["metrics"]
    details = metric["details"]
    assert metric["metric"] == "feedback" and metric["verdict"] == "fail"
    # Every rating counted was given during the window, through the router, for v1 or v2.
    assert 0 < details["canary_low"] <= details["canary_ratings"] <= served["v2"]
    assert 0 < details["stable_ratings"] <= served["v1"]
    assert details["log_evidence"] >= details["fail_at"]

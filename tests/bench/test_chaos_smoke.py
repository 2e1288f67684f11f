"""The fault campaign (bench/chaos.py): its pure parts by tables, and a short real run.

The short run (3 rollouts, a server kill in each, one router kill, one instance kill)
checks that the campaign ran and prints the promised JSON shape, not that the issue's
targets hold: the faults it injects are what other items of issue 10 fix, and the
figures quoted are those of the default run (``python -m bench.chaos --json``).
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
from bench.chaos import Fault, attribute, plan
from bench.chaos_traffic import COOKIE_CLIENTS, VISITORS, Request, classify

ROOT = Path(__file__).resolve().parents[2]

FAULTS = [Fault("server_kill", at=10.0, recovered_at=12.0, in_flight=0, phase="verifying",
                target="server"),
          Fault("router_kill", at=20.0, recovered_at=20.5, in_flight=3, phase="progressing",
                target="router")]


@pytest.mark.parametrize(("start", "end", "fault"), [
    (1.0, 1.1, "none"),                 # long before any kill
    (9.0, 10.5, "server_kill"),         # in flight at the kill
    (13.9, 14.0, "server_kill"),        # within the grace after the recovery
    (14.1, 14.2, "none"),               # after it
    (19.9, 20.0, "router_kill"),        # ended at the kill itself
    (11.0, 21.0, "router_kill"),        # overlaps both: the latest kill
    (22.6, 30.0, "none"),
], ids=["before", "in-flight", "grace", "after-grace", "at-kill", "both-latest", "after"])
def test_a_failure_is_attributed_to_the_window_it_overlaps(start: float, end: float,
                                                           fault: str) -> None:
    request = Request(start, end, VISITORS, None, None, error="ConnectError")
    assert attribute(request, FAULTS, grace_s=2.0) == fault


@pytest.mark.parametrize(("status", "body", "expected"), [
    (200, b'{"version": "v1"}', (False, "")),
    (500, b'{"error": "injected failure"}', (True, "")),
    (500, b"boom", (False, "status 500")),
    (502, b"release v2: no endpoint accepted a connection", (False, "status 502")),
    (503, b"", (False, "status 503")),
    (404, b'{"error": "not found"}', (False, "status 404")),
], ids=["ok", "injected", "other-500", "502", "503", "404"])
def test_only_the_shops_injected_500_is_not_a_failure(
        status: int, body: bytes, expected: tuple[bool, str]) -> None:
    assert classify(status, body) == expected


def test_the_plan_has_every_kind_of_rollout_in_a_seeded_order() -> None:
    order = plan(20, random.Random(1))
    assert sorted(set(order)) == [("blue-green", False), ("blue-green", True),
                                  ("canary", False), ("canary", True)]
    assert all(order.count(kind) == 5 for kind in set(order))
    assert plan(20, random.Random(1)) == order


@pytest.mark.real
def test_a_short_campaign_runs_and_prints_the_json_object() -> None:
    done = subprocess.run([sys.executable, "-m", "bench.chaos", "--rollouts", "3",
                           "--router-kills", "1", "--instance-kills", "1", "--seed", "3",
                           "--json"], cwd=ROOT, capture_output=True, text=True, timeout=500)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result["rollouts"] == 3
    assert result["server_kills"] == 3  # one in each rollout
    assert result["router_kills"] == 1 and result["instance_kills"] == 1
    for key in ("wrong_outcomes", "lost_or_stuck", "requests", "failed_requests",
                "router_kill_inflight", "server_kills_mid_rollout"):
        assert isinstance(result[key], int) and result[key] >= 0, key
    by_fault = result["failed_requests_by_fault"]
    assert set(by_fault) == {"server_kill", "router_kill", "instance_kill", "none"}
    assert sum(by_fault.values()) == result["failed_requests"] <= result["requests"]
    assert result["requests"] > 100  # traffic ran all along
    served = result["requests_by_release"]
    assert set(served) == {VISITORS, COOKIE_CLIENTS}
    assert served[VISITORS].get("v0", 0) > 0 and served[COOKIE_CLIENTS].get("v0", 0) > 0
    assert [o["version"] for o in result["outcomes"]] == ["v1", "v2", "v3"]
    for outcome in result["outcomes"]:
        assert outcome["expected"] in ("promoted", "rolled_back")
        assert outcome["faults"][0] == "server_kill"
        assert set(outcome["served"]) == {VISITORS, COOKIE_CLIENTS}
    assert result["wrong_outcomes"] == sum(
        o["outcome"] in ("promoted", "rolled_back", "failed") and o["outcome"] != o["expected"]
        for o in result["outcomes"])
    assert [f["kind"] for f in result["faults"]].count("server_kill") == 3
    assert set(result["targets"]) == {"wrong_outcomes", "lost_or_stuck",
                                      "server_kill_failed_requests",
                                      "instance_kill_failed_requests",
                                      "router_kill_failed_within_inflight"}
    assert result["targets_met"] == all(result["targets"].values())

"""Whole deliveries through the CLI: real server, router, app processes and traffic.

The scenarios whose behaviour is the router's (weights, preview, rollback of traffic,
analysis windows) run on both router kinds, ``embedded`` and ``haproxy``."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable

import pytest

from tests.e2e.conftest import ROUTER_KINDS, Deployment, Users, wait_for

pytestmark = [pytest.mark.real, pytest.mark.slow]

BLUE_GREEN_MANUAL = """\
      blue-green: {auto_promote: false, scale_down_delay_s: 30}
"""

FAST_ANALYSIS = """\
      canary:
        steps:
          - weight: 25
          - analysis: {duration_s: 3, metrics: [error-rate]}
          - weight: 100
"""


def first_release(dep: Deployment) -> None:
    rollout = dep.deploy("v1")
    assert rollout["strategy"] == "direct"
    dep.wait_phase(rollout["id"], {"succeeded"})
    wait_for(lambda: dep.served_by() == {"v1": 20}, what="v1 to serve everything")


@ROUTER_KINDS
def test_canary_pauses_then_promote_moves_all_traffic(
        make_routed_deployment: Callable[..., Deployment]) -> None:
    dep = make_routed_deployment()
    first_release(dep)
    with Users(dep.router_url) as users:
        rollout = dep.deploy("v2")
        paused = dep.wait_phase(rollout["id"], {"paused"})
        assert paused["weights"] == {"v1": 80, "v2": 20}
        seen = dep.served_by(n=200)
        assert set(seen) == {"v1", "v2"} and 15 <= seen["v2"] <= 65  # 20% of 200, loosely
        status = dep.cli("status").stdout
        assert "paused until promoted" in status and "v2 20%" in status

        dep.cli("promote")
        done = dep.wait_phase(rollout["id"], {"succeeded"})
        assert done["weights"] == {"v2": 100}
        wait_for(lambda: "v1" not in dep.instance_pids(), what="v1 to be stopped")
        wait_for(lambda: users.by_release["v2"] > 50, what="users to reach v2")
    assert users.failures == []
    assert dep.status()["current"] == "v2"
    kinds = [e["kind"] for e in dep.cli_json("history")]
    assert "promoted" in kinds and "stopped" in kinds


@ROUTER_KINDS
def test_failed_analysis_rolls_back_by_itself(
        make_routed_deployment: Callable[..., Deployment]) -> None:
    dep = make_routed_deployment(FAST_ANALYSIS)
    first_release(dep)
    with Users(dep.router_url) as users:
        rollout = dep.deploy("v2", error_rate=0.5)
        final = dep.wait_phase(rollout["id"], {"rolled_back", "succeeded"}, timeout_s=40)
        assert final["phase"] == "rolled_back", final
        assert final["weights"] == {"v1": 100}
        assert "analysis failed" in final["message"] and "error-rate" in final["message"]
        wait_for(lambda: "v2" not in dep.instance_pids(), what="v2 to be stopped")
        assert dep.served_by() == {"v1": 20}
    # Everything that failed was v2's own injected errors, none of them the rollback's.
    assert users.failures == []
    assert users.injected > 0
    history = dep.cli_json("history")
    kinds = [e["kind"] for e in history]
    # Order: decision, traffic back on stable, then the canary stopped.
    decided = kinds.index("rolled_back")
    restored = next(i for i, e in enumerate(history)
                    if i > decided and e["kind"] == "traffic")
    stopped = next(i for i, e in enumerate(history) if e["kind"] == "stopped"
                   and e["version"] == "v2")
    assert decided < restored < stopped
    assert dep.status()["current"] == "v1"
    text = dep.cli("history").stdout
    assert "rolling back to v1" in text
    # Nobody has to guess why: the test, the numbers and the decision.
    explained = dep.cli("analysis", "explain", str(rollout["id"])).stdout
    assert "error-rate" in explained and "fail" in explained
    assert "evidence that it is worse" in explained and "fails at 100:1" in explained
    data = dep.cli_json("analysis", "explain", str(rollout["id"]))
    failed = [w for w in data["windows"] if w["verdict"] == "fail"]
    assert failed and failed[0]["result"]["metrics"][0]["details"]["canary_errors"] > 0
    # The window's baseline, as stored, carries each release's cumulative latency sketch:
    # the window's latencies are the latest sketch minus it.
    with sqlite3.connect(dep.root / ".entrega" / "state.db") as db:
        baselines = [json.loads(row[0]) for row in db.execute("SELECT baseline FROM "
                                                              "analysis_runs")]
    stable = [b["releases"]["v1"] for b in baselines]
    assert stable and all(sum(n for _, n in r["latency_sketch"]) == r["requests"] > 0
                          for r in stable)


@ROUTER_KINDS
def test_blue_green_preview_switch_and_abort_after_switch(
        make_routed_deployment: Callable[..., Deployment]) -> None:
    dep = make_routed_deployment(BLUE_GREEN_MANUAL)
    first_release(dep)
    with Users(dep.router_url) as users:
        rollout = dep.deploy("v2")
        paused = dep.wait_phase(rollout["id"], {"paused"})
        assert paused["preview"] == "v2" and paused["weights"] == {"v1": 100}
        assert dep.served_by(dep.preview_url) == {"v2": 20}  # preview: the new release alone
        assert dep.served_by() == {"v1": 20}                 # users: still the old one
        dep.cli("promote")
        switched = dep.wait_phase(rollout["id"], {"scaling_down"})
        assert switched["weights"] == {"v2": 100}
        assert dep.served_by() == {"v2": 20}
        assert "v1" in dep.instance_pids()  # kept warm
        dep.cli("abort")
        back = dep.wait_phase(rollout["id"], {"rolled_back"})
        assert back["weights"] == {"v1": 100}
        assert dep.served_by() == {"v1": 20}
        wait_for(lambda: "v2" not in dep.instance_pids(), what="v2 to be stopped")
    assert users.failures == []


@ROUTER_KINDS
def test_rollback_to_an_earlier_release(
        make_routed_deployment: Callable[..., Deployment]) -> None:
    dep = make_routed_deployment()
    first_release(dep)
    rollout = dep.deploy("v2")
    dep.wait_phase(rollout["id"], {"paused"})
    dep.cli("promote", "--full")
    dep.wait_phase(rollout["id"], {"succeeded"})
    with Users(dep.router_url) as users:
        out = dep.cli("rollback", "--to", "v1").stdout
        assert "back to v1" in out
        wait_for(lambda: dep.status()["current"] == "v1", what="v1 to be current again")
        wait_for(lambda: dep.served_by() == {"v1": 20}, what="v1 to serve everything")
    assert users.failures == []


def test_cli_errors_are_one_clear_sentence(deployment: Deployment) -> None:
    dep = deployment
    missing = dep.cli("deploy", "v9", check=False)
    assert missing.returncode == 1
    assert "error: no release v9 of shop" in missing.stderr
    assert "Traceback" not in missing.stderr

    first_release(dep)
    rollout = dep.deploy("v2")
    dep.wait_phase(rollout["id"], {"paused"})
    busy = dep.cli("deploy", "v3", "--artifact", str(dep.artifact("v3")), "--no-queue",
                   check=False)
    assert busy.returncode == 1 and "production is busy with rollout" in busy.stderr
    queued = dep.cli("deploy", "v3")
    assert "v3 queued for production" in queued.stdout

    nothing = dep.cli("deploy", "v1", "--artifact", str(dep.artifact("v1", error_rate=1)),
                      check=False)
    assert nothing.returncode == 1 and "exists with other bytes" in nothing.stderr

    bad_env = dep.cli("promote", "--env", "nowhere", check=False)
    assert bad_env.returncode == 1 and "no environment named 'nowhere'" in bad_env.stderr


def test_a_crashed_instance_is_restarted_and_recorded(deployment: Deployment) -> None:
    import os
    import signal

    dep = deployment
    first_release(dep)
    with Users(dep.router_url) as users:
        victim = dep.instance_pids()["v1"][0]
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: len(dep.instance_pids().get("v1", [])) == 2
                 and victim not in dep.instance_pids()["v1"], what="the instance to be back")
        events = wait_for(lambda: [e for e in dep.cli_json("history")
                                   if e["kind"] == "instance_restarted"], what="the event")
        assert "crashed and was restarted" in events[0]["message"]
        wait_for(lambda: users.total > 30, what="traffic")
    # The router's retry on a fresh connection and the other instance cover the crash.
    assert len(users.failures) <= 2, users.failures

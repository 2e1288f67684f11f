"""The failover campaign (bench/failover.py): its judging by tables, and a short real run.

The short run (two servers on a throwaway PostgreSQL, 2 leader kills and 1 pause, each
mid-canary under traffic) checks that every figure of the promised JSON object comes
from what happened: as many takeovers as faults, each measured, rollouts that ended, the
webhook receiver and the instances' supervisors read. The figures quoted in the README
are those of the default run (``python -m bench.failover --json``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from bench.failover import judge_double_starts, judge_duplicate_deliveries, judge_stale_writes

ROOT = Path(__file__).resolve().parents[2]


def started(*kinds: str) -> list[dict[str, Any]]:
    return [{"time": float(i), "event": kind} for i, kind in enumerate(kinds)]


@pytest.mark.parametrize(("events", "doubles"), [
    (started("started"), 0),
    (started("started", "exited", "restarted", "exited", "restarted"), 0),
    (started("started", "stopping", "stopped", "started"), 0),
    (started("started", "started"), 1),
    (started("started", "exited", "restarted", "started", "started"), 2),
    (started("started", "stopping", "killed", "stopped", "started", "started"), 1),
], ids=["one-start", "crash-restarts", "stopped-then-started", "started-twice",
        "two-extra-starts", "killed-stopped-then-twice"])
def test_an_instance_started_while_its_supervisor_ran_it_is_a_double_start(
        events: list[dict[str, Any]], doubles: int) -> None:
    assert judge_double_starts(events) == doubles


@pytest.mark.parametrize(("ids", "duplicates"), [
    ([], 0), (["1", "2", "3"], 0), (["1", "2", "1"], 1), (["4", "4", "4", "5", "5"], 3),
], ids=["none", "each-once", "one-again", "several"])
def test_a_delivery_received_again_is_a_duplicate(ids: list[str], duplicates: int) -> None:
    assert judge_duplicate_deliveries(ids) == duplicates


EPOCHS = {1: 100.0, 2: 200.0, 3: 300.0}


@pytest.mark.parametrize(("epoch", "at", "woken", "stale"), [
    (1, 150.0, [], False),          # epoch 1 while it led
    (1, 199.9, [], False),          # just before epoch 2 led
    (1, 200.0, [], True),           # when epoch 2 led
    (1, 350.0, [], True),           # two epochs later
    (2, 250.0, [], False),
    (3, 900.0, [], False),          # the last epoch leads still
    (3, 900.0, [(3, 800.0)], True),  # a woken paused leader wrote
    (3, 700.0, [(3, 800.0)], False),  # before it was paused and woken
    (None, 900.0, [], False),       # a server without election
], ids=["own-time", "just-before", "at-takeover", "two-later", "second-own", "last-leads",
        "woken-wrote", "before-pause", "no-epoch"])
def test_an_event_of_an_epoch_after_a_newer_one_led_is_a_stale_write(
        epoch: int | None, at: float, woken: list[tuple[int, float]], stale: bool) -> None:
    event = {"id": 1, "time": at, "epoch": epoch}
    assert judge_stale_writes([event], EPOCHS, woken) == ([event] if stale else [])


@pytest.mark.real
def test_a_short_campaign_fails_the_leader_over_and_prints_the_json_object() -> None:
    done = subprocess.run([sys.executable, "-m", "bench.failover", "--kills", "2",
                           "--pauses", "1", "--seed", "3", "--json"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    # what happened, for a failed assertion to show (pytest prints a message variable)
    story = json.dumps({k: result.get(k) for k in ("notes", "faults", "outcomes",
                                                    "failure_samples", "stale_samples")})
    for key in ("failovers", "rollouts", "wrong_outcomes", "double_actions",
                "failed_requests", "stale_leader_writes"):
        assert isinstance(result[key], int) and result[key] >= 0, key
    assert result["kills"] == 2 and result["pauses"] == 1, story
    assert result["store"] == "postgresql" and result["servers"] == 2
    # every fault was followed by a measured takeover, and the figures are theirs
    takeovers = result["takeovers_s"]
    assert len(takeovers) == 3 and all(isinstance(t, float) and t > 0 for t in takeovers), \
        story
    assert result["failovers"] == 3
    assert result["max_takeover_s"] == max(takeovers)
    assert min(takeovers) <= result["median_takeover_s"] <= max(takeovers)
    assert {f["kind"] for f in result["faults"]} == {"kill", "pause"}
    # each takeover is by the other server, and a new epoch each time
    epochs = [f["epoch"] for f in result["faults"]]
    assert epochs == sorted(set(epochs)), story
    assert all(f["new_leader"] != f["server"] for f in result["faults"]), story
    # the paused leader woke up, stepped down and exited (non-zero)
    pause = next(f for f in result["faults"] if f["kind"] == "pause")
    assert pause["stepped_down"] is True and pause["exit_code"] not in (None, 0), story
    assert result["paused_leaders_stepped_down"] == 1
    assert result["rollouts"] == 3 == len(result["outcomes"]), story
    assert result["wrong_outcomes"] == sum(o["outcome"] != o["expected"]
                                           for o in result["outcomes"])
    # real traffic, real instances, real deliveries and a real event log were read
    assert result["requests"] > 100
    assert result["failed_requests"] <= result["requests"]
    assert result["instance_starts"] >= 2 * (1 + result["rollouts"])  # v0 + each, x2
    assert result["deliveries"] > 0 and result["events"] > result["rollouts"]
    assert result["epochs"] >= 4  # the first leader's and one per takeover
    assert result["double_actions"] == (sum(result["double_instance_starts"].values())
                                        + result["duplicate_deliveries"])

"""The scale benchmark runs end to end at a small size and prints the promised JSON shape.

No timing assertions: a few seconds of 40 rollouts on a shared machine say nothing about
the README's figures (``python -m bench.scale --json``: 1,000 rollouts). What must hold
whatever the machine: every canary stays in flight (the stand-in data plane is healthy),
the controller reported a lag for the checks that came due, the lags are ordered and
non-negative, and the CPU figure is a share of the machine.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.real

ROOT = Path(__file__).resolve().parents[2]
FIELDS = {"rollouts", "apps", "environments", "data_plane", "store", "duration_s",
          "lag_p50_s", "lag_p99_s", "lag_max_s", "controller_cpu", "passes", "warmup_s",
          "elected", "store_statements_per_s", "store_write_transactions_per_s"}


def bench_json(*args: str) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-m", "bench.scale", *args, "--json"], cwd=ROOT,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def check_figures(result: dict[str, Any], *, duration_s: float, store: str = "sqlite") -> None:
    assert FIELDS <= set(result)
    assert result["rollouts"] == result["apps"] * result["environments"]
    assert result["store"] == store
    assert result["elected"] is (store == "postgresql")  # as `entrega server` runs there
    assert 0 < result["store_write_transactions_per_s"] < result["store_statements_per_s"]
    assert result["duration_s"] >= duration_s
    assert result["rolled_back"] == 0
    assert result["in_flight"] == result["rollouts"]
    # every rollout is checked every second: most of those checks must have been seen
    assert result["checks"] >= result["rollouts"] * (duration_s - 2)
    assert 0 <= result["lag_p50_s"] <= result["lag_p99_s"] <= result["lag_max_s"]
    assert result["lag_max_s"] < result["duration_s"]
    assert 0 < result["controller_cpu"] <= 2.0  # CPU s per wall s, two cores at most
    assert result["passes"] >= result["apps"] * (duration_s - 1)


def test_stand_in_run_of_twenty_apps_by_two_environments() -> None:
    result = bench_json("--apps", "20", "--environments", "2", "--duration", "5",
                        "--warmup", "1")
    assert (result["apps"], result["environments"], result["rollouts"]) == (20, 2, 40)
    assert result["data_plane"] == "stand-in"
    check_figures(result, duration_s=5)


def test_real_routers_run_reports_the_same_figures() -> None:
    result = bench_json("--real-routers", "2", "--duration", "4", "--warmup", "1")
    assert (result["apps"], result["environments"], result["rollouts"]) == (2, 1, 2)
    assert result["data_plane"] == "embedded"
    check_figures(result, duration_s=4)


def test_postgresql_run_is_elected_and_fenced_and_reports_the_same_figures(
        postgres_url: str) -> None:
    result = bench_json("--apps", "10", "--environments", "2", "--duration", "5",
                        "--warmup", "1", "--store-url", postgres_url)
    assert (result["apps"], result["environments"], result["rollouts"]) == (10, 2, 20)
    check_figures(result, duration_s=5, store="postgresql")

"""The analysis benchmark runs end to end (quick mode) and prints the promised JSON shape.

No timing or quality assertions: the numbers of a quick run mean nothing; the default run
(``python -m bench.analysis``) is the one the README quotes.
"""

from __future__ import annotations

import json
import math

import pytest
from bench.analysis import (
    HEALTHY,
    JUDGES,
    SCENARIOS,
    STEP_SCENARIOS,
    main,
    replay_step,
    wald_floor_s,
)


def test_quick_run_prints_the_json_object(capsys):
    assert main(["--quick", "--json", "--runs", "8", "--duration-s", "200"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result["step"]) == set(STEP_SCENARIOS)
    for outcome in result["step"].values():
        assert set(outcome) == {"passed", "paused", "rolled_back"}
        assert sum(outcome.values()) == pytest.approx(1.0)
    assert all(isinstance(v, bool) for v in result["targets"].values())
    assert set(result["judges"]) == set(JUDGES) == {"entrega", "flagger_60s", "flagger_10s",
                                                     "kayenta"}
    keys = {f"{name}@{rps}rps" for name in SCENARIOS if name not in HEALTHY
            for rps in (1, 10, 100)}
    floors = {k for k in keys if k.startswith("errors_")}
    for judge in result["judges"].values():
        assert 0.0 <= judge["false_rollback_rate"] <= 1.0
        assert set(judge["false_rollback_rate_by_rps"]) == {"1rps", "10rps", "100rps"}
        assert 0.0 <= judge["false_rollback_rate_drift"] <= 1.0
        assert set(judge["detection_rate"]) == set(judge["median_detect_s"]) == keys
        assert set(judge["floor_s"]) == set(judge["ratio_to_floor"]) == floors
        assert all(0.0 <= v <= 1.0 for v in judge["detection_rate"].values())
        assert all(v is None or 0 < v <= 200 for v in judge["median_detect_s"].values())
    assert result["settings"]["runs_per_scenario"] == 8
    assert result["settings"]["duration_s"] == 200


def test_table_names_every_judge_and_scenario(capsys):
    assert main(["--quick", "--runs", "4", "--duration-s", "60"]) == 0
    table = capsys.readouterr().out
    assert all(j in table for j in JUDGES)
    assert "errors_x5@10rps" in table and "healthy: false rollbacks" in table


def test_wald_floor_matches_the_issue():
    assert wald_floor_s(5, 10) == pytest.approx(22.5, rel=0.01)
    assert wald_floor_s(10, 10) == pytest.approx(6.5, rel=0.01)
    assert wald_floor_s(5, 100) == pytest.approx(2.25, rel=0.01)


def test_floor_is_finite_for_all_error_scenarios():
    assert all(math.isfinite(wald_floor_s(m, r)) for m in (2, 5, 10) for r in (1, 10, 100))


def test_the_step_replay_latches_each_metrics_pass_and_fails_at_once():
    """The step is replayed as rollouts/canary.py decides it (0 inconclusive, 1 pass,
    2 fail; two metrics, three runs, 90 checks)."""
    import numpy as np

    codes = np.zeros((2, 3, 90), dtype=np.int8)
    codes[0, 0, 10] = 1  # run 0: metric 0 passes at 10 s, metric 1 at 50 s: passes at 60
    codes[1, 0, 50] = 1
    codes[0, 1, :] = 1  # run 1: metric 1 fails at 70 s, after metric 0 passed: rolled back
    codes[1, 1, 69] = 2
    # run 2: nothing ever passes: paused
    assert replay_step(codes) == pytest.approx(
        {"passed": 1 / 3, "paused": 1 / 3, "rolled_back": 1 / 3})

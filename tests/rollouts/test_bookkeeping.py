"""Which analysis checks moved only their bookkeeping (rollouts/analysing.py): those the
controller may write late (controller/writeback.py). Everything else is written at once."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from entrega.rollouts.analysing import only_bookkeeping
from entrega.rollouts.model import AnalysisProgress, Phase, RolloutState

BEFORE = RolloutState(phase=Phase.PROGRESSING, stable="v1", canary="v2",
                      weights={"v1": 80, "v2": 20}, step_index=1,
                      analysis=AnalysisProgress(window=1, started_at=10.0, next_check_at=12.0,
                                                checks=2, last_verdict="inconclusive"))


def moved(**analysis: Any) -> RolloutState:
    assert BEFORE.analysis is not None
    return replace(BEFORE, analysis=replace(BEFORE.analysis, **analysis))


@pytest.mark.parametrize(("after", "only"), [
    (BEFORE, True),
    (moved(checks=3, next_check_at=13.0, last_verdict="pass", last_reason="fine"), True),
    (moved(checks=3, passed_metrics=("error-rate",)), False),  # evidence reached
    (moved(checks=3, failures=1), False),
    (moved(checks=3, window=2, started_at=13.0), False),  # a fresh window
    (moved(checks=3, extensions=1), False),
    (replace(BEFORE, step_index=2, analysis=None), False),  # the step passed
    (replace(moved(checks=3), weights={"v1": 100}), False),
    (replace(moved(checks=3), phase=Phase.PAUSED), False),
])
def test_only_a_check_s_own_bookkeeping_may_wait(after: RolloutState, only: bool) -> None:
    assert only_bookkeeping(BEFORE, after) is only


def test_a_state_without_analysis_moved_only_if_it_did_not_move() -> None:
    plain = replace(BEFORE, analysis=None)
    assert only_bookkeeping(plain, plain)
    assert not only_bookkeeping(plain, replace(plain, step_index=2))

"""Canary state machine: (spec, state, observed, now) -> (phase, weights, actions, requeue_at)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from entrega.rollouts.canary import passed_on_evidence
from entrega.rollouts.model import (
    AnalysisProgress,
    AnalysisVerdict,
    BeginAnalysis,
    Observed,
    Phase,
    RolloutState,
    SetRoutes,
    StopInstances,
)

from .conftest import (
    CANARY,
    POLL_S,
    STABLE,
    T0,
    analysis,
    canary,
    go,
    observed,
    pause,
    progress,
    state,
    summary,
    verdict,
    weight,
)

P = Phase
ON_STABLE = {STABLE: 100}
AT_10 = {CANARY: 10, STABLE: 90}
AT_20 = {CANARY: 20, STABLE: 80}
AT_50 = {CANARY: 50, STABLE: 50}
AT_60 = {CANARY: 60, STABLE: 40}
PROMOTED = {CANARY: 100}
ROLLBACK = ["SetRoutes", "StopInstances"]

#: 10% -> analysis -> 50% -> analysis -> 100%, checks every 5s over 60s windows
WALK = canary(weight(10), analysis(60), weight(50), analysis(60), weight(100))
LIMIT_1 = canary(weight(10), analysis(60, failure_limit=1), weight(50))
TIMED = canary(weight(20), pause(30), weight(60))
UNTIL_PROMOTED = canary(weight(20), pause(), weight(60), pause(30))


def analysing(*, window: int = 1, phase: Phase = P.PROGRESSING, **kw: Any) -> RolloutState:
    """WALK at its first analysis step (10%), ``window`` begun at T0, next check at T0+5.

    Keywords of AnalysisProgress go to the progress, the others to the state."""
    fields = {f.name for f in dataclasses.fields(AnalysisProgress)}
    prog = progress(window, **{k: v for k, v in kw.items() if k in fields})
    rest = {k: v for k, v in kw.items() if k not in fields}
    return state(phase, step_index=1, weights=AT_10, analysis=prog, analysis_windows=window,
                 **rest)


CASES = [
    # -- starting ------------------------------------------------------------------------
    pytest.param(WALK, state(P.PENDING), Observed(), T0,
                 (P.STARTING, ON_STABLE, ["StartInstances"], T0 + POLL_S),
                 id="pending-starts-instances"),
    pytest.param(WALK, state(P.STARTING), observed(ready=False), T0 + 10,
                 (P.STARTING, ON_STABLE, [], T0 + 10 + POLL_S),
                 id="starting-not-ready-polls"),
    pytest.param(WALK, state(P.STARTING), observed(ready=False), T0 + 300,
                 (P.STARTING, ON_STABLE, [], T0 + 300 + POLL_S),
                 id="starting-at-deadline-still-waits"),
    pytest.param(WALK, state(P.STARTING), observed(ready=False), T0 + 300.5,
                 (P.FAILED, ON_STABLE, ROLLBACK, None),
                 id="starting-past-deadline-fails"),
    pytest.param(WALK, state(P.STARTING), observed(ready=False, canary_error="exited 1"), T0 + 1,
                 (P.FAILED, ON_STABLE, ROLLBACK, None),
                 id="starting-canary-error-fails"),
    pytest.param(WALK, state(P.STARTING), observed(ready=True, canary_error="exited 1"), T0 + 1,
                 (P.FAILED, ON_STABLE, ROLLBACK, None),
                 id="starting-canary-error-wins-over-ready"),
    pytest.param(WALK, state(P.STARTING), observed(), T0 + 10,
                 (P.PROGRESSING, AT_10, ["SetRoutes", "BeginAnalysis"], T0 + 15),
                 id="ready-runs-weight-then-begins-analysis"),
    pytest.param(canary(), state(P.STARTING), observed(), T0 + 10,
                 (P.SUCCEEDED, PROMOTED, ["SetRoutes", "StopInstances"], None),
                 id="ready-without-steps-promotes"),
    pytest.param(canary(weight(0), pause()), state(P.STARTING), observed(), T0,
                 (P.PAUSED, {CANARY: 0, STABLE: 100}, ["SetRoutes"], None),
                 id="weight-0-keeps-canary-in-table"),
    # -- analysis ------------------------------------------------------------------------
    pytest.param(WALK, analysing(), Observed(), T0 + 5,
                 (P.PROGRESSING, AT_10, [], T0 + 5 + POLL_S),
                 id="analysis-no-verdict-yet-requeues"),
    pytest.param(WALK, analysing(), Observed(analysis=verdict("pass")), T0 + 2,
                 (P.PROGRESSING, AT_10, [], T0 + 5),
                 id="analysis-verdict-before-next-check-waits"),
    pytest.param(WALK, analysing(window=2),
                 Observed(analysis=verdict("fail", window=1)), T0 + 5,
                 (P.PROGRESSING, AT_10, [], T0 + 5 + POLL_S),
                 id="analysis-verdict-for-old-window-ignored"),
    pytest.param(WALK, analysing(), Observed(analysis=verdict("pass")), T0 + 5,
                 (P.PROGRESSING, AT_10, [], T0 + 10),
                 id="analysis-pass-before-duration-holds"),
    pytest.param(WALK, analysing(next_check_at=T0 + 58), Observed(analysis=verdict("pass")),
                 T0 + 58, (P.PROGRESSING, AT_10, [], T0 + 60),
                 id="analysis-requeues-at-duration-end-if-sooner"),
    pytest.param(WALK, analysing(next_check_at=T0 + 60), Observed(analysis=verdict("pass")),
                 T0 + 60, (P.PROGRESSING, AT_50, ["SetRoutes", "BeginAnalysis"], T0 + 65),
                 id="analysis-pass-at-duration-advances"),
    pytest.param(WALK, analysing(), Observed(analysis=verdict("fail")), T0 + 5,
                 (P.ROLLED_BACK, ON_STABLE, ROLLBACK, None),
                 id="analysis-fail-limit-0-rolls-back"),
    pytest.param(LIMIT_1, analysing(), Observed(analysis=verdict("fail")), T0 + 5,
                 (P.PROGRESSING, AT_10, ["BeginAnalysis"], T0 + 10),
                 id="analysis-fail-within-limit-begins-new-window"),
    pytest.param(LIMIT_1, analysing(failures=1), Observed(analysis=verdict("fail")), T0 + 5,
                 (P.ROLLED_BACK, ON_STABLE, ROLLBACK, None),
                 id="analysis-fail-over-limit-rolls-back"),
    pytest.param(WALK, analysing(), Observed(analysis=verdict("inconclusive")), T0 + 5,
                 (P.PROGRESSING, AT_10, [], T0 + 10),
                 id="analysis-inconclusive-before-end-holds"),
    pytest.param(WALK, analysing(next_check_at=T0 + 60),
                 Observed(analysis=verdict("inconclusive")), T0 + 60,
                 (P.PROGRESSING, AT_10, [], T0 + 65),
                 id="analysis-inconclusive-at-end-extends"),
    pytest.param(WALK, analysing(extensions=1, next_check_at=T0 + 60),
                 Observed(analysis=verdict("pass")), T0 + 60,
                 (P.PROGRESSING, AT_10, [], T0 + 65),
                 id="analysis-extended-window-not-over-at-first-end"),
    pytest.param(WALK, analysing(extensions=2, next_check_at=T0 + 180),
                 Observed(analysis=verdict("inconclusive")), T0 + 180,
                 (P.PAUSED, AT_10, [], None),
                 id="analysis-inconclusive-past-limit-pauses"),
    pytest.param(WALK, analysing(phase=P.PAUSED, extensions=2),
                 Observed(analysis=verdict("fail")), T0 + 200,
                 (P.PAUSED, AT_10, [], None),
                 id="analysis-paused-waits-for-a-human"),
    pytest.param(WALK, analysing(phase=P.PAUSED, extensions=2, promote_requested=True),
                 Observed(), T0 + 200,
                 (P.PROGRESSING, AT_50, ["SetRoutes", "BeginAnalysis"], T0 + 205),
                 id="analysis-paused-promote-skips-to-next-step"),
    # -- pauses --------------------------------------------------------------------------
    pytest.param(TIMED, state(P.PROGRESSING, step_index=1, weights=AT_20), Observed(), T0 + 10,
                 (P.PROGRESSING, AT_20, [], T0 + 30),
                 id="timed-pause-requeues-at-its-end"),
    pytest.param(TIMED, state(P.PROGRESSING, step_index=1, weights=AT_20), Observed(), T0 + 30,
                 (P.SUCCEEDED, PROMOTED, ["SetRoutes", "SetRoutes", "StopInstances"], None),
                 id="timed-pause-over-runs-remaining-steps"),
    pytest.param(TIMED, state(P.PROGRESSING, step_index=1, weights=AT_20,
                              promote_requested=True), Observed(), T0 + 1,
                 (P.SUCCEEDED, PROMOTED, ["SetRoutes", "SetRoutes", "StopInstances"], None),
                 id="timed-pause-ended-by-promote"),
    pytest.param(UNTIL_PROMOTED, state(P.PROGRESSING, step_index=1, weights=AT_20),
                 Observed(), T0 + 1, (P.PAUSED, AT_20, [], None),
                 id="pause-until-promoted-enters-paused"),
    pytest.param(UNTIL_PROMOTED, state(P.PAUSED, step_index=1, weights=AT_20),
                 Observed(), T0 + 9_999, (P.PAUSED, AT_20, [], None),
                 id="paused-without-promote-stays"),
    pytest.param(UNTIL_PROMOTED, state(P.PAUSED, step_index=1, weights=AT_20,
                                       promote_requested=True),
                 Observed(), T0 + 100, (P.PROGRESSING, AT_60, ["SetRoutes"], T0 + 130),
                 id="promote-resumes-paused"),
    # -- promote --full ------------------------------------------------------------------
    pytest.param(WALK, analysing(promote_full=True), Observed(), T0 + 1,
                 (P.SUCCEEDED, PROMOTED, ["SetRoutes", "StopInstances"], None),
                 id="promote-full-during-analysis-skips-remaining-steps"),
    pytest.param(UNTIL_PROMOTED, state(P.PAUSED, step_index=1, weights=AT_20, promote_full=True),
                 Observed(), T0 + 1,
                 (P.SUCCEEDED, PROMOTED, ["SetRoutes", "StopInstances"], None),
                 id="promote-full-while-paused"),
    pytest.param(WALK, state(P.STARTING, promote_full=True), observed(), T0 + 1,
                 (P.SUCCEEDED, PROMOTED, ["SetRoutes", "StopInstances"], None),
                 id="promote-full-before-ready-applies-once-ready"),
    # -- abort at every non-terminal phase -----------------------------------------------
    pytest.param(WALK, state(P.PENDING, abort_requested=True), Observed(), T0,
                 (P.ROLLED_BACK, ON_STABLE, ROLLBACK, None), id="abort-pending"),
    pytest.param(WALK, state(P.STARTING, abort_requested=True), observed(), T0,
                 (P.ROLLED_BACK, ON_STABLE, ROLLBACK, None), id="abort-starting"),
    pytest.param(WALK, analysing(abort_requested=True), Observed(analysis=verdict("pass")),
                 T0 + 60, (P.ROLLED_BACK, ON_STABLE, ROLLBACK, None), id="abort-progressing"),
    pytest.param(UNTIL_PROMOTED, state(P.PAUSED, step_index=1, weights=AT_20,
                                       abort_requested=True, promote_requested=True),
                 Observed(), T0, (P.ROLLED_BACK, ON_STABLE, ROLLBACK, None),
                 id="abort-paused-wins-over-promote"),
    # -- terminal phases are fixed points ------------------------------------------------
    *(pytest.param(WALK, state(phase, weights=w, abort_requested=True, promote_full=True),
                   observed(canary_error="x", analysis=verdict("fail")), T0 + 10_000,
                   (phase, w, [], None), id=f"terminal-{phase.value}-is-fixed")
      for phase, w in ((P.SUCCEEDED, PROMOTED), (P.ROLLED_BACK, ON_STABLE),
                       (P.FAILED, ON_STABLE))),
]


@pytest.mark.parametrize(("spec", "st", "obs", "now", "expected"), CASES)
def test_canary_transition(spec, st, obs, now, expected):
    t = go(spec, st, obs, now=now)
    assert summary(t) == expected
    if t.state.phase.terminal and t.state is not st:
        assert t.requeue_at is None
        assert t.events, "every terminal transition says why"


def test_rollback_routes_all_to_stable_before_stopping_the_canary():
    t = go(WALK, analysing(), Observed(analysis=verdict("fail", reason="5xx 40%")), now=T0 + 5)
    assert t.actions == (SetRoutes({STABLE: 100}), StopInstances(CANARY))
    assert t.state.analysis is None
    assert "5xx 40%" in t.state.message
    assert t.state.analysis_history[-1]["verdict"] == "fail"


def test_failed_start_never_stops_stable():
    t = go(WALK, state(P.STARTING), observed(ready=False, canary_error="exit 1"), now=T0)
    assert t.actions == (SetRoutes({STABLE: 100}), StopInstances(CANARY))
    assert "exit 1" in t.state.message


def test_fail_within_limit_counts_and_opens_a_fresh_window():
    t = go(LIMIT_1, analysing(), Observed(analysis=verdict("fail", reason="slow")), now=T0 + 5)
    assert t.actions == (BeginAnalysis(2, ("error-rate",)),)
    assert t.state.analysis is not None
    assert (t.state.analysis.window, t.state.analysis.failures) == (2, 1)
    assert t.state.analysis.started_at == T0 + 5
    # The verdict for window 1 arriving again must not count a second time.
    again = go(LIMIT_1, t.state, Observed(analysis=verdict("fail", window=1)), now=T0 + 10)
    assert again.state.phase == P.PROGRESSING
    assert again.state.analysis == t.state.analysis


def test_each_analysis_step_gets_a_window_number_of_its_own():
    """A late verdict for the first analysis step's window must not judge the second."""
    t = go(WALK, analysing(next_check_at=T0 + 60), Observed(analysis=verdict("pass")),
           now=T0 + 60)
    (begin,) = [a for a in t.actions if isinstance(a, BeginAnalysis)]
    assert begin.window != 1
    stale = go(WALK, t.state, Observed(analysis=verdict("fail", window=1)), now=T0 + 65)
    assert stale.state.phase == P.PROGRESSING
    assert stale.state.weights == AT_50


def test_final_verdicts_are_recorded_in_history():
    t = go(WALK, analysing(next_check_at=T0 + 60),
           Observed(analysis=verdict("pass", reason="0.1% errors")), now=T0 + 60)
    (record,) = t.state.analysis_history
    assert record["verdict"] == "pass" and record["window"] == 1 and record["step"] == 1
    assert record["at"] == T0 + 60


# -- the whole walk, pass by pass -----------------------------------------------------------

#: (now, observed, (phase, weights, action kinds, requeue_at)) for consecutive passes
WALK_PASSES = [
    (T0, Observed(), (P.STARTING, ON_STABLE, ["StartInstances"], T0 + POLL_S)),
    (T0 + 1, observed(ready=False), (P.STARTING, ON_STABLE, [], T0 + 1 + POLL_S)),
    (T0 + 2, observed(), (P.PROGRESSING, AT_10, ["SetRoutes", "BeginAnalysis"], T0 + 7)),
    (T0 + 7, observed(analysis=verdict("pass", 1)), (P.PROGRESSING, AT_10, [], T0 + 12)),
    (T0 + 9, observed(analysis=verdict("pass", 1)), (P.PROGRESSING, AT_10, [], T0 + 12)),
    (T0 + 57, observed(analysis=verdict("pass", 1)), (P.PROGRESSING, AT_10, [], T0 + 62)),
    (T0 + 62, observed(analysis=verdict("pass", 1)),
     (P.PROGRESSING, AT_50, ["SetRoutes", "BeginAnalysis"], T0 + 67)),
    (T0 + 67, observed(analysis=verdict("pass", 1)), (P.PROGRESSING, AT_50, [], T0 + 67 + POLL_S)),
    (T0 + 68, observed(analysis=verdict("pass", 2)), (P.PROGRESSING, AT_50, [], T0 + 73)),
    (T0 + 122, observed(analysis=verdict("pass", 2)),
     (P.SUCCEEDED, PROMOTED, ["SetRoutes", "StopInstances"], None)),
    (T0 + 500, observed(analysis=verdict("fail", 2)), (P.SUCCEEDED, PROMOTED, [], None)),
]


def test_canary_walk_pass_by_pass():
    st = state(P.PENDING)
    for i, (now, obs, expected) in enumerate(WALK_PASSES):
        t = go(WALK, st, obs, now=now)
        assert summary(t) == expected, f"pass {i} at T0+{now - T0:g}"
        st = t.state
    assert [r["window"] for r in st.analysis_history] == [1, 2]
    assert st.message == f"{CANARY} is stable"


def metric_verdicts(result: str, **metrics: str) -> AnalysisVerdict:
    """A verdict with per-metric verdicts (``critical`` unless named ``*_informs``)."""
    return AnalysisVerdict(window=1, verdict=result, reason=result,  # type: ignore[arg-type]
                           metrics={name: {"verdict": v, "critical": not name.endswith(
                               "_informs")} for name, v in metrics.items()})


def test_evidence_reached_earlier_in_the_window_passes_the_step():
    """The judges' pass side holds however often it is checked, so a metric that reached
    its pass evidence at one check stays passed for the window: at the step's end the step
    passes when every metric has passed at some check, even if one dips back below."""
    s = analysing(next_check_at=T0 + 5)
    t = go(WALK, s, Observed(analysis=metric_verdicts("inconclusive", errors="pass",
                                                      latency="inconclusive")), now=T0 + 5)
    assert t.state.analysis is not None and t.state.analysis.passed_metrics == ("errors",)
    t = go(WALK, t.state, Observed(analysis=metric_verdicts("inconclusive", errors="pass",
                                                            latency="pass")), now=T0 + 10)
    assert t.state.analysis is not None
    assert t.state.analysis.passed_metrics == ("errors", "latency")
    late = dataclasses.replace(t.state.analysis, next_check_at=T0 + 60)
    end = go(WALK, dataclasses.replace(t.state, analysis=late),
             Observed(analysis=metric_verdicts("inconclusive", errors="inconclusive",
                                               latency="pass")), now=T0 + 60)
    assert end.state.weights == AT_50
    assert any("every metric reached its pass evidence" in e for e in end.events)


@pytest.mark.parametrize(("earlier", "now_verdicts", "passes"), [
    pytest.param(("errors",), {"errors": "inconclusive", "latency": "inconclusive"}, False,
                 id="one-metric-never-passed"),
    pytest.param(("errors", "latency"), {"errors": "inconclusive", "latency": "no-data"}, True,
                 id="both-passed-earlier"),
    pytest.param((), {"errors": "pass", "latency_informs": "inconclusive"}, True,
                 id="a-non-critical-metric-never-blocks"),
    pytest.param(("errors",), {"errors": "inconclusive", "latency_informs": "fail"}, True,
                 id="a-non-critical-failure-never-blocks"),
])
def test_passed_on_evidence(earlier, now_verdicts, passes):
    v = metric_verdicts("inconclusive", **now_verdicts)
    assert passed_on_evidence(v, earlier) is passes


def test_a_fresh_window_forgets_earlier_evidence():
    s = analysing(next_check_at=T0 + 5, passed_metrics=("errors",))
    t = go(LIMIT_1, s, Observed(analysis=verdict("fail", reason="slow")), now=T0 + 5)
    assert t.state.analysis is not None and t.state.analysis.passed_metrics == ()

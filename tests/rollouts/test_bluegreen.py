"""Blue-green state machine: preview, verification, switch, old release kept warm."""

from __future__ import annotations

from typing import Any

import pytest

from entrega.rollouts.model import (
    Observed,
    Phase,
    RolloutState,
    RunVerification,
    SetRoutes,
    StopInstances,
)

from .conftest import CANARY, POLL_S, STABLE, T0, bluegreen, go, observed, state, summary

P = Phase
ON_STABLE = {STABLE: 100}
SWITCHED = {CANARY: 100}
ROLLBACK = ["SetRoutes", "StopInstances"]

AUTO = bluegreen(scale_down_delay_s=30)
MANUAL = bluegreen(auto_promote=False, scale_down_delay_s=30)
NO_VERIFY = bluegreen(verify=False, scale_down_delay_s=30)
NO_DELAY = bluegreen(scale_down_delay_s=0)


def verifying(**kw: Any) -> RolloutState:
    kw.setdefault("verification", "running")
    return state(P.VERIFYING, preview=CANARY, **kw)


def scaling_down(**kw: Any) -> RolloutState:
    return state(P.SCALING_DOWN, weights=SWITCHED, scale_down_at=T0 + 30,
                 verification="passed", **kw)


CASES = [
    pytest.param(AUTO, state(P.PENDING), Observed(), T0,
                 (P.STARTING, ON_STABLE, ["StartInstances"], T0 + POLL_S),
                 id="pending-starts-instances"),
    pytest.param(AUTO, state(P.STARTING), observed(ready=False), T0 + 5,
                 (P.STARTING, ON_STABLE, [], T0 + 5 + POLL_S), id="starting-not-ready-polls"),
    pytest.param(AUTO, state(P.STARTING), observed(ready=False, canary_error="exit 3"), T0 + 5,
                 (P.FAILED, ON_STABLE, ROLLBACK, None), id="starting-canary-error-fails"),
    pytest.param(AUTO, state(P.STARTING), observed(ready=False), T0 + 301,
                 (P.FAILED, ON_STABLE, ROLLBACK, None), id="starting-past-deadline-fails"),
    pytest.param(AUTO, state(P.STARTING), observed(), T0 + 5,
                 (P.VERIFYING, ON_STABLE, ["SetRoutes", "RunVerification"], T0 + 5 + POLL_S),
                 id="ready-goes-on-preview-and-verifies"),
    pytest.param(NO_VERIFY, state(P.STARTING), observed(), T0 + 5,
                 (P.VERIFYING, ON_STABLE, ["SetRoutes"], T0 + 5 + POLL_S),
                 id="ready-without-verification-only-previews"),
    pytest.param(NO_VERIFY, verifying(verification="passed"), Observed(), T0 + 6,
                 (P.SCALING_DOWN, SWITCHED, ["SetRoutes"], T0 + 36),
                 id="without-verification-switches-next-pass"),
    pytest.param(AUTO, verifying(), Observed(), T0 + 6,
                 (P.VERIFYING, ON_STABLE, [], T0 + 6 + POLL_S),
                 id="verification-running-polls"),
    pytest.param(AUTO, verifying(), Observed(verification="failed"), T0 + 6,
                 (P.ROLLED_BACK, ON_STABLE, ROLLBACK, None),
                 id="verification-failed-rolls-back"),
    pytest.param(AUTO, verifying(), Observed(verification="passed"), T0 + 6,
                 (P.SCALING_DOWN, SWITCHED, ["SetRoutes"], T0 + 36),
                 id="verification-passed-auto-promote-switches"),
    pytest.param(NO_DELAY, verifying(), Observed(verification="passed"), T0 + 6,
                 (P.SUCCEEDED, SWITCHED, ["SetRoutes", "StopInstances"], None),
                 id="verification-passed-no-delay-succeeds-at-once"),
    pytest.param(MANUAL, verifying(), Observed(verification="passed"), T0 + 6,
                 (P.PAUSED, ON_STABLE, [], None),
                 id="verification-passed-manual-pauses"),
    pytest.param(MANUAL, verifying(promote_requested=True), Observed(verification="passed"),
                 T0 + 6, (P.SCALING_DOWN, SWITCHED, ["SetRoutes"], T0 + 36),
                 id="verification-passed-manual-already-promoted-switches"),
    pytest.param(MANUAL, state(P.PAUSED, preview=CANARY, verification="passed"), Observed(),
                 T0 + 999, (P.PAUSED, ON_STABLE, [], None), id="paused-waits-for-promote"),
    pytest.param(MANUAL, state(P.PAUSED, preview=CANARY, verification="passed",
                               promote_requested=True), Observed(), T0 + 100,
                 (P.SCALING_DOWN, SWITCHED, ["SetRoutes"], T0 + 130),
                 id="paused-promote-switches"),
    pytest.param(MANUAL, state(P.PAUSED, preview=CANARY, verification="passed",
                               promote_full=True), Observed(), T0 + 100,
                 (P.SCALING_DOWN, SWITCHED, ["SetRoutes"], T0 + 130),
                 id="paused-promote-full-switches"),
    pytest.param(AUTO, scaling_down(), Observed(), T0 + 10,
                 (P.SCALING_DOWN, SWITCHED, [], T0 + 30), id="scaling-down-waits-for-delay"),
    pytest.param(AUTO, scaling_down(), Observed(), T0 + 30,
                 (P.SUCCEEDED, SWITCHED, ["StopInstances"], None),
                 id="scaling-down-delay-over-stops-stable"),
    # -- abort ---------------------------------------------------------------------------
    pytest.param(AUTO, state(P.PENDING, abort_requested=True), Observed(), T0,
                 (P.ROLLED_BACK, ON_STABLE, ROLLBACK, None), id="abort-pending"),
    pytest.param(AUTO, state(P.STARTING, abort_requested=True), observed(), T0,
                 (P.ROLLED_BACK, ON_STABLE, ROLLBACK, None), id="abort-starting"),
    pytest.param(AUTO, verifying(abort_requested=True), Observed(verification="passed"), T0,
                 (P.ROLLED_BACK, ON_STABLE, ROLLBACK, None), id="abort-verifying"),
    pytest.param(MANUAL, state(P.PAUSED, preview=CANARY, abort_requested=True,
                               promote_requested=True), Observed(), T0,
                 (P.ROLLED_BACK, ON_STABLE, ROLLBACK, None), id="abort-paused-wins-over-promote"),
    pytest.param(AUTO, scaling_down(abort_requested=True), Observed(), T0 + 30,
                 (P.ROLLED_BACK, ON_STABLE, ROLLBACK, None), id="abort-scaling-down"),
    # -- terminal ------------------------------------------------------------------------
    *(pytest.param(AUTO, state(phase, weights=w, abort_requested=True, promote_requested=True),
                   observed(verification="failed", canary_error="x"), T0 + 10_000,
                   (phase, w, [], None), id=f"terminal-{phase.value}-is-fixed")
      for phase, w in ((P.SUCCEEDED, SWITCHED), (P.ROLLED_BACK, ON_STABLE),
                       (P.FAILED, ON_STABLE))),
]


@pytest.mark.parametrize(("spec", "st", "obs", "now", "expected"), CASES)
def test_bluegreen_transition(spec, st, obs, now, expected):
    assert summary(go(spec, st, obs, now=now)) == expected


def test_ready_serves_the_canary_on_preview_only():
    t = go(AUTO, state(P.STARTING), observed(), now=T0)
    assert t.actions == (SetRoutes({STABLE: 100}, preview=CANARY), RunVerification(CANARY))
    assert (t.state.preview, t.state.verification) == (CANARY, "running")


def test_switch_clears_preview_and_sets_scale_down_at():
    t = go(AUTO, verifying(), Observed(verification="passed"), now=T0 + 6)
    assert t.actions == (SetRoutes({CANARY: 100}),)
    assert t.state.preview is None
    assert t.state.scale_down_at == t.requeue_at == T0 + 36


def test_verification_failure_takes_preview_away_then_stops_canary():
    t = go(AUTO, verifying(), Observed(verification="failed", verification_detail="GET / 500"),
           now=T0 + 6)
    assert t.actions == (SetRoutes({STABLE: 100}), StopInstances(CANARY))
    assert t.state.preview is None
    assert t.state.verification == "failed"
    assert "GET / 500" in t.state.message


def test_abort_after_switch_puts_traffic_back_on_warm_stable_first():
    t = go(AUTO, scaling_down(abort_requested=True), Observed(), now=T0 + 10)
    assert t.actions == (SetRoutes({STABLE: 100}), StopInstances(CANARY))
    assert t.state.scale_down_at is None


def test_scale_down_stops_only_the_old_release():
    t = go(AUTO, scaling_down(), Observed(), now=T0 + 31)
    assert t.actions == (StopInstances(STABLE),)
    assert t.state.scale_down_at is None


#: (now, observed, (phase, weights, action kinds, requeue_at)) for consecutive passes
PASSES = [
    (T0, Observed(), (P.STARTING, ON_STABLE, ["StartInstances"], T0 + POLL_S)),
    (T0 + 1, observed(), (P.VERIFYING, ON_STABLE, ["SetRoutes", "RunVerification"],
                          T0 + 1 + POLL_S)),
    (T0 + 2, observed(), (P.VERIFYING, ON_STABLE, [], T0 + 2 + POLL_S)),
    (T0 + 3, observed(verification="passed"), (P.SCALING_DOWN, SWITCHED, ["SetRoutes"], T0 + 33)),
    (T0 + 20, observed(), (P.SCALING_DOWN, SWITCHED, [], T0 + 33)),
    (T0 + 33, observed(), (P.SUCCEEDED, SWITCHED, ["StopInstances"], None)),
]


def test_bluegreen_walk_pass_by_pass():
    st = state(P.PENDING)
    for i, (now, obs, expected) in enumerate(PASSES):
        t = go(AUTO, st, obs, now=now)
        assert summary(t) == expected, f"pass {i} at T0+{now - T0:g}"
        st = t.state

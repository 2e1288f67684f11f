"""First releases and `rollback --to` (direct), storage round-trips, and invariants that
hold for every strategy under any sequence of observations and commands."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from entrega.rollouts import advance
from entrega.rollouts.model import (
    AnalysisProgress,
    AnalysisStep,
    AnalysisVerdict,
    Observed,
    PauseStep,
    Phase,
    RolloutSpec,
    RolloutState,
    RunVerification,
    SetRoutes,
    StartInstances,
    StopInstances,
    WeightStep,
    initial_state,
    spec_from_dict,
    spec_to_dict,
    state_from_dict,
    state_to_dict,
)

from .conftest import (
    CANARY,
    POLL_S,
    STABLE,
    T0,
    analysis,
    bluegreen,
    canary,
    go,
    observed,
    pause,
    state,
    summary,
    weight,
)

P = Phase
STRATEGIES = {
    "canary": canary(weight(10), analysis(60), weight(50), pause()),
    "blue-green": bluegreen(auto_promote=False, verify=False),
    "direct": RolloutSpec(strategy="direct"),
}
FIRST = [pytest.param(spec, id=name) for name, spec in STRATEGIES.items()]


@pytest.mark.parametrize("spec", FIRST)
def test_first_release_goes_straight_to_100_whatever_the_strategy(spec):
    first = initial_state(stable=None, canary=CANARY, now=T0)
    assert first.weights == {}
    started = go(spec, first, Observed(), now=T0)
    assert summary(started) == (P.STARTING, {}, ["StartInstances"], T0 + POLL_S)
    assert started.actions == (StartInstances(CANARY),)
    done = go(spec, started.state, observed(), now=T0 + 1)
    assert summary(done) == (P.SUCCEEDED, {CANARY: 100}, ["SetRoutes"], None)
    assert done.actions == (SetRoutes({CANARY: 100}),)


FIRST_RELEASE_ENDINGS = [
    pytest.param(state(P.STARTING, stable=None), observed(ready=False, canary_error="exit 1"),
                 T0 + 1, id="canary-error"),
    pytest.param(state(P.STARTING, stable=None), observed(ready=False), T0 + 301,
                 id="past-deadline"),
    pytest.param(state(P.STARTING, stable=None, abort_requested=True), observed(), T0 + 1,
                 id="aborted-while-starting"),
    pytest.param(state(P.PENDING, stable=None, abort_requested=True), Observed(), T0,
                 id="aborted-while-pending"),
]


@pytest.mark.parametrize("spec", FIRST)
@pytest.mark.parametrize(("st_", "obs", "now"), FIRST_RELEASE_ENDINGS)
def test_first_release_that_cannot_run_fails_without_routes(spec, st_, obs, now):
    t = go(spec, st_, obs, now=now)
    assert summary(t) == (P.FAILED, {}, ["StopInstances"], None)
    assert t.actions == (StopInstances(CANARY),)


DIRECT = STRATEGIES["direct"]

DIRECT_CASES = [
    pytest.param(state(P.PENDING), Observed(), T0,
                 (P.STARTING, {STABLE: 100}, ["StartInstances"], T0 + POLL_S),
                 id="pending-starts"),
    pytest.param(state(P.STARTING), observed(ready=False), T0 + 1,
                 (P.STARTING, {STABLE: 100}, [], T0 + 1 + POLL_S), id="not-ready-polls"),
    pytest.param(state(P.STARTING), observed(), T0 + 1,
                 (P.SUCCEEDED, {CANARY: 100}, ["SetRoutes", "StopInstances"], None),
                 id="ready-switches-then-stops-old"),
    pytest.param(state(P.STARTING), observed(ready=False, canary_error="boom"), T0 + 1,
                 (P.FAILED, {STABLE: 100}, ["SetRoutes", "StopInstances"], None),
                 id="canary-error-fails"),
    pytest.param(state(P.STARTING, abort_requested=True), observed(), T0 + 1,
                 (P.ROLLED_BACK, {STABLE: 100}, ["SetRoutes", "StopInstances"], None),
                 id="abort-rolls-back"),
    pytest.param(state(P.SUCCEEDED, weights={CANARY: 100}, abort_requested=True), observed(),
                 T0 + 1, (P.SUCCEEDED, {CANARY: 100}, [], None), id="terminal-is-fixed"),
]


@pytest.mark.parametrize(("st_", "obs", "now", "expected"), DIRECT_CASES)
def test_direct_with_a_stable_release(st_, obs, now, expected):
    """``rollback --to``: the target release already ran here; switch at once when ready."""
    assert summary(go(DIRECT, st_, obs, now=now)) == expected


def test_direct_switch_order_is_routes_then_stop():
    t = go(DIRECT, state(P.STARTING), observed(), now=T0)
    assert t.actions == (SetRoutes({CANARY: 100}), StopInstances(STABLE))


# -- storage ------------------------------------------------------------------------------

names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789.-", min_size=1, max_size=8)
times = st.floats(min_value=0, max_value=1e10, allow_nan=False)
json_scalars = st.none() | st.booleans() | st.integers(-10**6, 10**6) | times | st.text(max_size=8)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                           max_leaves=8)

progresses = st.builds(
    AnalysisProgress, window=st.integers(1, 50), started_at=times, next_check_at=times,
    checks=st.integers(0, 99), failures=st.integers(0, 9), extensions=st.integers(0, 9),
    last_verdict=st.sampled_from([None, "pass", "fail", "inconclusive"]),
    last_reason=st.text(max_size=20))

rollout_states = st.builds(
    RolloutState,
    phase=st.sampled_from(list(Phase)),
    stable=st.none() | names,
    canary=names,
    step_index=st.integers(0, 20),
    weights=st.dictionaries(names, st.integers(0, 100), max_size=3),
    preview=st.none() | names,
    phase_started_at=times,
    step_started_at=times,
    analysis=st.none() | progresses,
    analysis_windows=st.integers(0, 50),
    verification=st.sampled_from([None, "running", "passed", "failed"]),
    promote_requested=st.booleans(),
    promote_full=st.booleans(),
    abort_requested=st.booleans(),
    scale_down_at=st.none() | times,
    message=st.text(max_size=30),
    analysis_history=st.lists(st.dictionaries(st.text(max_size=6), json_values, max_size=4),
                              max_size=3).map(tuple),
)

steps = st.one_of(
    st.builds(WeightStep, st.integers(0, 100)),
    st.builds(PauseStep, st.none() | st.floats(0, 3600, allow_nan=False)),
    st.builds(AnalysisStep, metrics=st.lists(names, min_size=1, max_size=3).map(tuple),
              duration_s=st.floats(0, 3600, allow_nan=False),
              check_every_s=st.floats(0.1, 60, allow_nan=False),
              failure_limit=st.integers(0, 5), inconclusive_limit=st.integers(0, 5)),
)

rollout_specs = st.builds(
    RolloutSpec,
    strategy=st.sampled_from(["canary", "blue-green", "direct"]),
    steps=st.lists(steps, max_size=6).map(tuple),
    auto_promote=st.booleans(),
    scale_down_delay_s=st.floats(0, 3600, allow_nan=False),
    verify=st.booleans(),
    progress_deadline_s=st.floats(1, 3600, allow_nan=False),
)


@given(rollout_states)
def test_state_round_trips_through_the_stored_json(s):
    stored = json.loads(json.dumps(state_to_dict(s)))
    assert state_from_dict(stored) == s


@given(rollout_specs)
def test_spec_round_trips_through_the_stored_json(spec):
    stored = json.loads(json.dumps(spec_to_dict(spec)))
    assert spec_from_dict(stored) == spec


def test_state_from_an_older_document_takes_defaults_and_ignores_unknown_keys():
    data = state_to_dict(state(P.PROGRESSING, step_index=2))
    del data["analysis_windows"]
    data["from_a_newer_version"] = 1
    restored = state_from_dict(data)
    assert restored == state(P.PROGRESSING, step_index=2)


def test_spec_dict_is_readable_step_by_step():
    data = spec_to_dict(canary(weight(5), pause(), pause(60), analysis(30, every_s=2)))
    assert data["steps"] == [
        {"weight": 5}, {"pause": {"duration_s": None}}, {"pause": {"duration_s": 60}},
        {"analysis": {"metrics": ["error-rate"], "duration_s": 30, "check_every_s": 2,
                      "failure_limit": 0, "inconclusive_limit": 2}},
    ]


# -- invariants under any sequence of observations and commands ------------------------------

commands = st.sampled_from([None, None, None, "promote", "promote_full", "abort"])
passes = st.tuples(
    st.floats(0, 90, allow_nan=False),                                    # seconds elapsed
    st.sampled_from([True, True, True, False]),                           # canary ready
    st.sampled_from([None] * 19 + ["exit 1"]),                            # canary error
    st.sampled_from([None, "pass", "fail", "inconclusive"]),              # verdict
    st.sampled_from([0, 0, 0, -1]),                                       # window offset
    st.sampled_from([None, None, "passed", "failed"]),                    # verification
    commands,
)


def _command(s: RolloutState, command: str | None) -> RolloutState:
    if command is None or s.phase.terminal:
        return s
    return replace(s, **{{"promote": "promote_requested", "promote_full": "promote_full",
                          "abort": "abort_requested"}[command]: True})


@pytest.mark.parametrize("strategy", ["canary", "blue-green", "direct"])
@settings(max_examples=200, deadline=None)
@given(spec=rollout_specs, first=st.sampled_from([False, False, False, True]),
       run=st.lists(passes, min_size=2, max_size=40))
def test_invariants_hold_for_any_sequence(strategy, spec, first, run):
    spec = replace(spec, strategy=strategy)
    now = T0
    s = initial_state(stable=None if first else STABLE, canary=CANARY, now=now)
    for dt, ready, error, result, offset, verification, command in run:
        now += dt
        s = _command(s, command)
        window = (s.analysis.window if s.analysis else 1) + offset
        obs = Observed(canary_ready=ready, canary_error=error, verification=verification,
                       analysis=AnalysisVerdict(window, result) if result else None)
        t = advance(spec, s, obs, now=now)
        new = t.state
        event(f"{spec.strategy}:{new.phase.value}")

        if s.phase.terminal:
            assert t.state == s and t.actions == () and t.requeue_at is None
        if new.stable is not None:
            assert sum(new.weights.values()) == 100, (s.phase, new)
        assert all(w >= 0 for w in new.weights.values())
        for a in t.actions:
            if isinstance(a, SetRoutes) and a.weights:
                assert sum(a.weights.values()) == 100
        for i, a in enumerate(t.actions):
            if not isinstance(a, StopInstances):
                continue
            # Never stop a release the returned state still routes to.
            assert new.weights.get(a.release, 0) == 0 and new.preview != a.release
            # Anything that routed to it before is taken away first, in this transition.
            if s.weights.get(a.release, 0) > 0 or s.preview == a.release:
                assert any(isinstance(b, SetRoutes) and b.weights.get(a.release, 0) == 0
                           and b.preview != a.release for b in t.actions[:i])
            assert not any(isinstance(b, SetRoutes) and b.weights.get(a.release, 0) > 0
                           for b in t.actions[i:])
        # A rollout only waits without a time to look again for a human (or is over).
        if t.requeue_at is None:
            assert new.phase.terminal or new.phase == P.PAUSED, (s.phase, new.phase)
        else:
            assert t.requeue_at >= now
        s = new


# -- verification with all traffic (canary and direct; a first release of any strategy) ---

VERIFIED = {
    "canary": canary(weight(50), verify=True),
    "direct": RolloutSpec(strategy="direct", verify=True),
}


@pytest.mark.parametrize("spec", [pytest.param(s, id=n) for n, s in VERIFIED.items()])
def test_verification_runs_with_all_traffic_before_the_old_release_stops(spec):
    ready = state(P.STARTING, phase_started_at=T0)
    verifying = go(spec, ready, observed(), now=T0 + 1)
    assert verifying.state.phase == P.VERIFYING
    assert verifying.state.weights == {CANARY: 100}
    assert verifying.actions[-1] == RunVerification(CANARY, on_preview=False)
    assert not any(isinstance(a, StopInstances) for a in verifying.actions)  # stable warm

    waiting = go(spec, verifying.state, Observed(), now=T0 + 2)
    assert summary(waiting) == (P.VERIFYING, {CANARY: 100}, [], T0 + 2 + POLL_S)

    passed = go(spec, verifying.state, Observed(verification="passed",
                                                verification_detail="2 checks"), now=T0 + 3)
    assert passed.state.phase == P.SUCCEEDED
    assert passed.actions == (StopInstances(STABLE),)

    failed = go(spec, verifying.state, Observed(verification="failed",
                                                verification_detail="500 on /"), now=T0 + 3)
    assert failed.state.phase == P.ROLLED_BACK and "500 on /" in failed.state.message
    assert failed.actions == (SetRoutes({STABLE: 100}), StopInstances(CANARY))


@pytest.mark.parametrize("strategy", ["canary", "blue-green", "direct"])
def test_a_first_release_that_fails_verification_leaves_an_empty_table(strategy):
    spec = RolloutSpec(strategy=strategy, verify=True)
    ready = replace(initial_state(stable=None, canary=CANARY, now=T0), phase=P.STARTING)
    verifying = go(spec, ready, observed(), now=T0 + 1)
    assert verifying.state.phase == P.VERIFYING
    assert verifying.actions == (SetRoutes({CANARY: 100}),
                                 RunVerification(CANARY, on_preview=False))
    failed = go(spec, verifying.state, Observed(verification="failed"), now=T0 + 2)
    assert failed.state.phase == P.FAILED
    assert failed.actions == (SetRoutes({}), StopInstances(CANARY))
    passed = go(spec, verifying.state, Observed(verification="passed"), now=T0 + 2)
    assert passed.state.phase == P.SUCCEEDED and passed.actions == ()


@pytest.mark.parametrize("spec", FIRST)
@pytest.mark.parametrize(("problem", "expected"), [
    ("", "v2 was not ready within 300s"),
    ("host web2 (127.0.1.6:22) did not answer within 10 s",
     "v2 was not ready within 300s: host web2 (127.0.1.6:22) did not answer within 10 s"),
], ids=["not-ready", "a-host-that-does-not-answer"])
def test_the_progress_deadline_ends_the_wait_saying_what_held_it(spec, problem, expected):
    # A start that keeps failing for a reason that may pass (a fleet host that does not
    # answer) keeps the release not ready; the deadline fails it, quoting the reason.
    st_ = state(P.STARTING)
    t = go(spec, st_, observed(ready=False, canary_problem=problem), now=T0 + 299)
    assert t.state.phase == P.STARTING
    t = go(spec, st_, observed(ready=False, canary_problem=problem), now=T0 + 301)
    assert t.state.phase == P.FAILED and t.state.message == expected

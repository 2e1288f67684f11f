"""Selected users first: `cohort` and `users` canary steps in the pure state machine."""

from __future__ import annotations

from dataclasses import replace

import pytest

from entrega.rollouts.model import (
    CohortRoute,
    CohortStep,
    Observed,
    Phase,
    RolloutSpec,
    SetRoutes,
    StopInstances,
    Transition,
    UsersStep,
    WeightStep,
    spec_from_dict,
    spec_to_dict,
    state_from_dict,
    state_to_dict,
)

from .conftest import CANARY, STABLE, T0, go, pause, state

SPEC = RolloutSpec(strategy="canary", steps=(CohortStep("beta"), pause(), UsersStep(10),
                                             pause(), UsersStep(30), WeightStep(50),
                                             pause(), WeightStep(100)))


def walk() -> list[Transition]:
    s = state(Phase.STARTING, phase_started_at=T0)
    seen = []
    now = T0
    for _ in range(4):
        t = go(SPEC, s, Observed(canary_ready=True), now=now)
        seen.append(t)
        s = t.state
        if s.phase == Phase.PAUSED:
            s = replace(s, promote_requested=True)
        now += 1
    return seen


def test_cohort_then_users_then_weight() -> None:
    first, second, third, fourth = walk()
    # cohort: the canary joins the table at weight 0; the selected users go there
    assert first.state.cohort == CohortRoute(selected=True, percent=0)
    assert first.state.weights == {STABLE: 100, CANARY: 0}
    assert first.actions[-1] == SetRoutes({STABLE: 100, CANARY: 0},
                                          cohort=CohortRoute(selected=True, percent=0))
    assert first.state.cohort_name == "beta" and first.state.phase == Phase.PAUSED
    # users 10%: the same rule, a share of users added
    assert second.actions == (SetRoutes({STABLE: 100, CANARY: 0},
                                        cohort=CohortRoute(selected=True, percent=10)),)
    # users 30% then weight 50: the cohort stays on the canary as the weight grows
    assert third.actions == (SetRoutes({STABLE: 100, CANARY: 0},
                                       cohort=CohortRoute(selected=True, percent=30)),
                             SetRoutes({CANARY: 50, STABLE: 50},
                                       cohort=CohortRoute(selected=True, percent=30)))
    # promoted: everyone on the canary, no cohort rule left
    assert fourth.state.phase == Phase.SUCCEEDED and fourth.state.cohort is None
    routes = [a for a in fourth.actions if isinstance(a, SetRoutes)]
    assert routes[-1] == SetRoutes({CANARY: 100})


@pytest.mark.parametrize("step_index", [1, 3])
def test_abort_clears_the_cohort_before_stopping_the_canary(step_index: int) -> None:
    paused = walk()[step_index - 1 if step_index == 1 else 1].state
    aborted = go(SPEC, replace(paused, abort_requested=True), Observed(), now=T0 + 9)
    assert aborted.state.phase == Phase.ROLLED_BACK and aborted.state.cohort is None
    assert aborted.actions == (SetRoutes({STABLE: 100}), StopInstances(CANARY))


def test_cohort_steps_and_state_survive_storage() -> None:
    assert spec_from_dict(spec_to_dict(SPEC)) == SPEC
    s = walk()[1].state
    assert state_from_dict(state_to_dict(s)) == s


def test_a_first_release_ignores_cohorts() -> None:
    first = state(Phase.STARTING, stable=None, weights={}, phase_started_at=T0)
    done = go(SPEC, first, Observed(canary_ready=True), now=T0)
    assert done.state.phase == Phase.SUCCEEDED and done.state.cohort is None

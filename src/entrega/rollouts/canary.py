"""Canary: the new release takes a growing share of traffic, step by step.

Steps are ``weight`` (set the canary's share), ``pause`` (for a duration, or until
promoted), ``analysis`` (compare canary with stable on live traffic), ``cohort`` (the
selected users go to the canary whatever the weight) and ``users`` (a stable share of
users, by a hash of their id, goes there: the same users stay as the share grows). Zero-time steps
run back to back in one pass; a pass stops at the first step that has to wait. Stable
keeps all its instances until the canary is promoted, so rollback is one route change.
"""

from __future__ import annotations

from dataclasses import replace

from entrega.rollouts import common, fleet
from entrega.rollouts.analysing import AnalysisFailed, advance_analysis
from entrega.rollouts.analysing import passed_on_evidence as passed_on_evidence
from entrega.rollouts.model import (
    Action,
    CohortRoute,
    CohortStep,
    Observed,
    PauseStep,
    Phase,
    RolloutSpec,
    RolloutState,
    SetRoutes,
    Transition,
    UsersStep,
    WeightStep,
)


def advance(spec: RolloutSpec, state: RolloutState, observed: Observed, *,
            now: float) -> Transition:
    if (aborted := common.handle_abort(state, now)) is not None:
        return aborted
    if state.phase == Phase.PENDING:
        return common.start(state, now)
    if state.phase == Phase.STARTING:
        if (waiting := common.wait_ready(spec, state, observed, now)) is not None:
            return waiting
        # step_index is 0 at the first start; on a fleet whose canary just started on its
        # other hosts (fleet.widen), the step that wanted all traffic runs now.
        state = replace(common.enter(state, Phase.PROGRESSING, now, "running steps"),
                        step_started_at=now)
        return _run_steps(spec, state, observed, now, events=[f"{state.canary} is ready"])
    if state.phase in (Phase.PROGRESSING, Phase.PAUSED):
        return _run_steps(spec, state, observed, now, events=[])
    if state.phase == Phase.VERIFYING:
        return common.verify_then_succeed(state, observed, now)
    return Transition(state)


def _next_step(state: RolloutState, now: float) -> RolloutState:
    return replace(state, step_index=state.step_index + 1, step_started_at=now,
                   analysis=None, phase=Phase.PROGRESSING, promote_requested=False)


def _run_steps(spec: RolloutSpec, state: RolloutState, observed: Observed, now: float,
               events: list[str]) -> Transition:
    actions: list[Action] = []
    stable = state.stable
    if state.promote_full:
        state = replace(state, step_index=len(spec.steps), promote_full=False)
        events.append("promoted by a user: skipping the remaining steps")

    while state.step_index < len(spec.steps):
        step = spec.steps[state.step_index]
        number = f"step {state.step_index + 1}/{len(spec.steps)}"

        if isinstance(step, WeightStep):
            if step.weight == 100 and (wider := fleet.widen(spec, state, now)) is not None:
                return fleet.extend(wider, actions, events)
            weights = ({state.canary: step.weight, stable: 100 - step.weight}
                       if stable else {state.canary: 100})
            weights = {r: w for r, w in weights.items() if w > 0 or r == state.canary}
            state = replace(state, weights=weights)
            actions.append(SetRoutes(weights, cohort=state.cohort))
            events.append(f"{number}: {state.canary} receives {step.weight}% of traffic")
            state = _next_step(state, now)
            continue

        if isinstance(step, CohortStep | UsersStep):
            route = state.cohort or CohortRoute()
            if isinstance(step, CohortStep):
                route = replace(route, selected=True)
                state = replace(state, cohort_name=step.name)
                events.append(f"{number}: cohort {step.name!r} goes to {state.canary}")
            else:
                route = replace(route, percent=step.percent)
                events.append(f"{number}: {step.percent}% of users go to {state.canary}")
            # The canary joins the table (at its current weight, 0 at first) so that the
            # router can send the cohort there.
            weights = {**state.weights, state.canary: state.weights.get(state.canary, 0)}
            state = replace(state, cohort=route, weights=weights)
            actions.append(SetRoutes(weights, cohort=route))
            state = _next_step(state, now)
            continue

        if isinstance(step, PauseStep):
            if state.promote_requested:
                events.append(f"{number}: pause ended by a user")
                state = _next_step(state, now)
                continue
            if step.duration_s is None:
                if state.phase != Phase.PAUSED:
                    state = common.enter(state, Phase.PAUSED, now,
                                         f"{number}: paused until promoted")
                    events.append(state.message)
                return Transition(state, tuple(actions), tuple(events))
            end = state.step_started_at + step.duration_s
            if now >= end:
                state = _next_step(state, now)
                continue
            state = replace(state, message=f"{number}: pause {step.duration_s:g}s")
            return Transition(state, tuple(actions), tuple(events), requeue_at=end)

        result = advance_analysis(step, state, observed, now, number)
        if isinstance(result, AnalysisFailed):
            failed = common.rollback(result.state, now, result.reason)
            return Transition(failed.state, (*actions, *failed.actions),
                              (*events, *failed.events), failed.requeue_at)
        if isinstance(result, Transition):
            return Transition(result.state, (*actions, *result.actions),
                              (*events, *result.events), result.requeue_at)
        state = _next_step(result.state, now)
        events.extend(result.events)

    if (wider := fleet.widen(spec, state, now)) is not None:
        return fleet.extend(wider, actions, events)
    return fleet.extend(common.finish(spec, state, now), actions, events)

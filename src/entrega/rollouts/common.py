"""Transitions every strategy shares: starting the new release, rolling back, finishing.

Rollback order is always the same: the route table goes back to the stable release in one
``SetRoutes``, and only then are the new release's instances stopped. Stable stays fully
running during a rollout, so that first action alone ends the exposure.
"""

from __future__ import annotations

from dataclasses import replace

from entrega.rollouts.model import (
    Observed,
    Phase,
    RolloutSpec,
    RolloutState,
    RunVerification,
    SetRoutes,
    StartInstances,
    StopInstances,
    Transition,
)

#: How often to look again while waiting for instances to warm up or checks to end.
#: A pass costs a few file reads and one local HTTP call: cheap next to a slow rollout.
POLL_S = 0.1


def enter(state: RolloutState, phase: Phase, now: float, message: str = "") -> RolloutState:
    return replace(state, phase=phase, phase_started_at=now, message=message or state.message)


def start(state: RolloutState, now: float) -> Transition:
    new = enter(state, Phase.STARTING, now, f"starting {state.canary}")
    return Transition(new, (StartInstances(state.canary),),
                      (f"starting instances of {state.canary}",), now + POLL_S)


def wait_ready(spec: RolloutSpec, state: RolloutState, observed: Observed,
               now: float) -> Transition | None:
    """While STARTING: None once the new release is ready, else the waiting transition."""
    if observed.canary_error:
        return fail(state, now, f"{state.canary} cannot run: {observed.canary_error}")
    if observed.canary_ready:
        return None
    if now - state.phase_started_at > spec.progress_deadline_s:
        why = f": {observed.canary_problem}" if observed.canary_problem else ""
        return fail(state, now, f"{state.canary} was not ready within "
                                f"{spec.progress_deadline_s:g}s{why}")
    return Transition(state, requeue_at=now + POLL_S)


def fail(state: RolloutState, now: float, reason: str) -> Transition:
    """The new release never took traffic: stop it, leave routes on stable."""
    weights = {state.stable: 100} if state.stable else {}
    new = replace(enter(state, Phase.FAILED, now, reason), weights=weights, preview=None,
                  analysis=None, scale_down_at=None, cohort=None)
    exposed = state.weights.get(state.canary, 0) > 0 or state.preview == state.canary \
        or state.cohort is not None
    # Routes first whenever the new release took any traffic (a first release that failed
    # its verification leaves an empty table: nothing is better than a broken release).
    routes = (SetRoutes(weights),) if state.stable or exposed else ()
    actions = (*routes, StopInstances(state.canary))
    return Transition(new, actions, (f"failed: {reason}",))


def rollback(state: RolloutState, now: float, reason: str) -> Transition:
    """All traffic back to stable at once, then stop the new release."""
    if state.stable is None:
        return fail(state, now, reason)
    new = replace(enter(state, Phase.ROLLED_BACK, now, reason),
                  weights={state.stable: 100}, preview=None, analysis=None, cohort=None,
                  scale_down_at=None)
    return Transition(
        new,
        (SetRoutes({state.stable: 100}), StopInstances(state.canary)),
        (f"rolling back to {state.stable}: {reason}",
         f"traffic 100% on {state.stable}; stopping {state.canary}"),
    )


def succeed(state: RolloutState, now: float, *, stop_old: bool = True) -> Transition:
    """The new release takes all traffic for good; the old one is stopped after it drains."""
    new = replace(enter(state, Phase.SUCCEEDED, now, f"{state.canary} is stable"),
                  weights={state.canary: 100}, preview=None, analysis=None,
                  scale_down_at=None, cohort=None)
    actions: tuple[SetRoutes | StopInstances, ...] = ()
    events: list[str] = []
    if state.weights != {state.canary: 100} or state.preview is not None \
            or state.cohort is not None:
        actions = (SetRoutes({state.canary: 100}),)
        events.append(f"{state.canary} receives 100% of traffic")
    if stop_old and state.stable and state.stable != state.canary:
        actions = (*actions, StopInstances(state.stable))
        events.append(f"stopping {state.stable}")
    return Transition(new, actions, (*events, f"{state.canary} promoted"))


def handle_abort(state: RolloutState, now: float) -> Transition | None:
    if state.abort_requested:
        return rollback(state, now, "aborted by a user")
    return None


def finish(spec: RolloutSpec, state: RolloutState, now: float) -> Transition:
    """The release has passed its steps: verify it on the environment's own address
    (when configured) while the old release still runs, then succeed."""
    if not spec.verify:
        return succeed(state, now)
    new = replace(enter(state, Phase.VERIFYING, now, f"verifying {state.canary}"),
                  weights={state.canary: 100}, preview=None, analysis=None,
                  verification="running", cohort=None)
    actions: tuple[SetRoutes | RunVerification, ...] = (RunVerification(state.canary,
                                                                        on_preview=False),)
    events = [f"verifying {state.canary} with all traffic"]
    if state.weights != {state.canary: 100} or state.preview is not None \
            or state.cohort is not None:
        actions = (SetRoutes({state.canary: 100}), *actions)
        events.insert(0, f"{state.canary} receives 100% of traffic")
    return Transition(new, actions, tuple(events), requeue_at=now + POLL_S)


def await_verification(state: RolloutState, observed: Observed,
                       now: float) -> Transition | RolloutState:
    """While VERIFYING: the waiting transition, a rollback on failure, or the state with
    the verification recorded as passed (the caller decides what passing leads to)."""
    if state.verification != "running":
        return state
    if observed.verification is None:
        return Transition(state, requeue_at=now + POLL_S)
    if observed.verification == "failed":
        return rollback(replace(state, verification="failed"), now,
                        f"verification failed: {observed.verification_detail}")
    return replace(state, verification="passed",
                   message=f"verification passed: {observed.verification_detail}")


def verify_then_succeed(state: RolloutState, observed: Observed, now: float) -> Transition:
    """While VERIFYING with all traffic (canary, direct): wait, roll back, or succeed."""
    result = await_verification(state, observed, now)
    if isinstance(result, Transition):
        return result
    done = succeed(result, now)
    return Transition(done.state, done.actions, (result.message, *done.events))

"""Blue-green: the new release runs beside the old one, is verified on a preview address,
then takes all traffic at once; the old one stays warm for ``scale_down_delay_s`` so that
switching back is a single route change.
"""

from __future__ import annotations

from dataclasses import replace

from entrega.rollouts import common
from entrega.rollouts.model import (
    Observed,
    Phase,
    RolloutSpec,
    RolloutState,
    RunVerification,
    SetRoutes,
    StopInstances,
    Transition,
)


def advance(spec: RolloutSpec, state: RolloutState, observed: Observed, *,
            now: float) -> Transition:
    if state.phase == Phase.SCALING_DOWN:
        if state.abort_requested:
            return common.rollback(state, now, "aborted by a user after the switch")
        assert state.scale_down_at is not None
        if now < state.scale_down_at:
            return Transition(state, requeue_at=state.scale_down_at)
        assert state.stable is not None
        new = replace(common.enter(state, Phase.SUCCEEDED, now, f"{state.canary} is stable"),
                      scale_down_at=None)
        return Transition(new, (StopInstances(state.stable),),
                          (f"scale-down delay over: stopping {state.stable}",
                           f"{state.canary} promoted"))

    if (aborted := common.handle_abort(state, now)) is not None:
        return aborted

    if state.phase == Phase.PENDING:
        return common.start(state, now)

    if state.phase == Phase.STARTING:
        if (waiting := common.wait_ready(spec, state, observed, now)) is not None:
            return waiting
        if state.stable is None:
            return common.finish(spec, state, now)
        preview = replace(common.enter(state, Phase.VERIFYING, now,
                                       f"{state.canary} on preview, verifying"),
                          preview=state.canary,
                          verification="running" if spec.verify else "passed")
        actions = (SetRoutes(dict(state.weights), preview=state.canary),
                   *((RunVerification(state.canary),) if spec.verify else ()))
        return Transition(preview, actions,
                          (f"{state.canary} is ready and served on the preview address",),
                          requeue_at=now + common.POLL_S)

    if state.phase == Phase.VERIFYING:
        was_running = state.verification == "running"
        result = common.await_verification(state, observed, now)
        if isinstance(result, Transition):
            return result
        state = result
        events: tuple[str, ...] = (state.message,) if was_running else ()
        if state.stable is None:  # a first release is verified on the live address
            done = common.succeed(state, now)
            return Transition(done.state, done.actions, (*events, *done.events))
        if spec.auto_promote or state.promote_requested or state.promote_full:
            return _switch(spec, state, now, events)
        paused = common.enter(state, Phase.PAUSED, now, "verified; waiting for promote")
        return Transition(paused, (), (*events, paused.message))

    if state.phase == Phase.PAUSED:
        if state.promote_requested or state.promote_full:
            return _switch(spec, state, now, ())
        return Transition(state)

    return Transition(state)


def _switch(spec: RolloutSpec, state: RolloutState, now: float,
            events: tuple[str, ...]) -> Transition:
    assert state.stable is not None
    if spec.scale_down_delay_s <= 0:
        done = common.succeed(state, now)
        return Transition(done.state, done.actions, (*events, *done.events))
    new = replace(common.enter(state, Phase.SCALING_DOWN, now,
                               f"switched to {state.canary}; {state.stable} kept warm"),
                  weights={state.canary: 100}, preview=None,
                  scale_down_at=now + spec.scale_down_delay_s,
                  promote_requested=False, promote_full=False)
    return Transition(new, (SetRoutes({state.canary: 100}),),
                      (*events, f"switched: {state.canary} receives 100% of traffic; "
                       f"{state.stable} kept warm for {spec.scale_down_delay_s:g}s"),
                      requeue_at=new.scale_down_at)

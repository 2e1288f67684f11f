"""Direct: start the new release, and once it is ready give it all traffic at once,
verify it there (when the environment has checks), then stop the old one.

Used for an environment's first release (there is nothing to compare against) and for
``rollback --to``, where the target release already ran in this environment.
"""

from __future__ import annotations

from entrega.rollouts import common
from entrega.rollouts.model import Observed, Phase, RolloutSpec, RolloutState, Transition


def advance(spec: RolloutSpec, state: RolloutState, observed: Observed, *,
            now: float) -> Transition:
    if (aborted := common.handle_abort(state, now)) is not None:
        return aborted
    if state.phase == Phase.PENDING:
        return common.start(state, now)
    if state.phase == Phase.STARTING:
        if (waiting := common.wait_ready(spec, state, observed, now)) is not None:
            return waiting
        return common.finish(spec, state, now)
    if state.phase == Phase.VERIFYING:
        return common.verify_then_succeed(state, observed, now)
    return Transition(state)

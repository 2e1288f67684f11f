"""Pure rollout state machines: ``advance(spec, state, observed, now=...) -> Transition``.

Nothing in this package awaits, sleeps, reads the clock or logs. The controller passes
``now`` and what it observed, persists the returned state, then applies the returned
actions; every action is idempotent, so a crash between the two is repaired by the next
pass.
"""

from __future__ import annotations

from entrega.rollouts import bluegreen, canary, direct, fleet, rolling
from entrega.rollouts.model import Observed, RolloutSpec, RolloutState, Transition

_STRATEGIES = {"canary": canary.advance, "blue-green": bluegreen.advance,
               "direct": direct.advance, "rolling": rolling.advance}


def advance(spec: RolloutSpec, state: RolloutState, observed: Observed, *,
            now: float) -> Transition:
    """The next state of a rollout and the actions that take the world there."""
    if state.phase.terminal:
        return Transition(state)
    strategy = spec.strategy if state.stable is not None else "direct"
    if spec.fleet is not None and strategy != "rolling":
        # canary and blue-green over a fleet's hosts: canary_hosts, max_failed
        return fleet.advance(spec, state, observed, now=now, strategy=_STRATEGIES[strategy])
    return _STRATEGIES[strategy](spec, state, observed, now=now)

"""The controller: the reconcile loop that drives every rollout from the store.

It reads desired state (rollouts, each environment's current release) from the store,
observes the world (targets, routers), calls the pure ``rollouts.advance``, commits the
new state, then applies the actions. Observation is level-triggered: a pass re-derives
what must be true (instances started, routes as the state says, no stray instances), so
an action lost to a crash is redone by the next pass.
"""

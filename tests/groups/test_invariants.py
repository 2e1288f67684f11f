"""Whatever the members' rollouts and reverts do, and whenever: a group started through a
simulated world keeps its promises (ordering, consistency, one action per member)."""

from __future__ import annotations

import random
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from entrega.groups import advance
from entrega.groups.model import (
    DeployMember,
    GroupPhase,
    GroupSpec,
    Member,
    ObservedGroup,
    ObservedMember,
    RevertMember,
    initial_state,
)
from entrega.groups.order import dependencies

ENVS = ("staging", "qa", "production")
SPECS = [
    GroupSpec("shop", "1", (Member("api", "n"), Member("worker", "n"),
                            Member("web", "n", ("api",))), ENVS),
    # api skipped in qa (web still waits for db there); cron only in qa
    GroupSpec("chain", "1", (Member("db", "n"),
                             Member("api", "n", ("db",), ("staging", "production")),
                             Member("web", "n", ("api",)), Member("cron", "n", (), ("qa",))),
              ENVS),
]


class RandomWorld:
    """Member rollouts and reverts that end (or not) at random passes, as told by ``rnd``."""

    def __init__(self, spec: GroupSpec, rnd: random.Random) -> None:
        self.spec, self.rnd = spec, rnd
        self.before = {(e, m.app): rnd.choice(["old", None]) for e in ENVS for m in spec.members}
        self.running = dict(self.before)
        self.rollouts: dict[tuple[str, str], str] = {}
        self.reverts: dict[tuple[str, str], str] = {}
        self.log: list[DeployMember | RevertMember] = []

    def apply(self, actions) -> None:
        needs = dependencies(self.spec.members)
        for a in actions:
            key = (a.environment, a.app)
            if isinstance(a, DeployMember):
                assert key not in self.rollouts, f"{key} deployed twice"
                here = {m.app for m in self.spec.members_in(a.environment)}
                waiting_for = [d for d in needs[a.app] & here
                               if self.rollouts.get((a.environment, d)) != "succeeded"]
                assert not waiting_for, f"{key} started before {waiting_for} passed"
                self.rollouts[key] = "running"
            elif isinstance(a, RevertMember):
                assert key not in self.reverts, f"{key} reverted twice"
                assert a.to_version == self.before[key]
                above = [app for app, deps in needs.items() if a.app in deps
                         and (a.environment, app) in self.reverts
                         and self.reverts[(a.environment, app)] != "succeeded"]
                assert not above, f"{key} reverted before {above} went back"
                self.reverts[key] = "running"
            self.log.append(a)

    def step(self) -> None:
        for key, outcome in self.rollouts.items():
            if outcome == "running" and self.rnd.random() < 0.5:
                ended = self.rnd.choice(["succeeded"] * 6 + ["failed", "rolled_back"])
                self.rollouts[key] = ended
                if ended == "succeeded":
                    self.running[key] = "n"
        for key, outcome in self.reverts.items():
            if outcome == "running" and self.rnd.random() < 0.5:
                self.reverts[key] = self.rnd.choice(["succeeded"] * 8 + ["failed"])
                if self.reverts[key] == "succeeded":
                    self.running[key] = self.before[key]
                    self.rollouts[key] = "rolled_back"

    def observe(self, env: str) -> ObservedGroup:
        return ObservedGroup(env, {
            m.app: ObservedMember(running=self.running[(env, m.app)],
                                  outcome=self.rollouts.get((env, m.app), "none"),  # type: ignore[arg-type]
                                  revert=self.reverts.get((env, m.app), "none"))  # type: ignore[arg-type]
            for m in self.spec.members})


@settings(max_examples=300, deadline=None)
@given(spec=st.sampled_from(SPECS), rnd=st.randoms(use_true_random=False),
       abort_at=st.none() | st.integers(0, 30), twice=st.booleans())
def test_a_group_keeps_its_promises_whatever_its_members_do(spec, rnd, abort_at, twice):
    world = RandomWorld(spec, rnd)
    state = initial_state(now=0.0)
    for n in range(200):
        if n == abort_at:
            state = replace(state, abort_requested=True)  # what `abort` on the group writes
        env = spec.environments[state.environment_index]
        obs = world.observe(env)
        t = advance(spec, state, obs, now=float(n))
        world.apply(t.actions)
        if twice:  # a restarted coordinator fed the same observation: nothing new
            assert advance(spec, t.state, obs, now=float(n)).actions == ()
        previous, state = state, t.state
        if state.environment_index > previous.environment_index:
            left = spec.environments[previous.environment_index]
            assert all(world.rollouts.get((left, m.app)) == "succeeded" or
                       world.running[(left, m.app)] == "n" for m in spec.members_in(left))
        if state.phase.terminal:
            break
        world.step()
    else:
        raise AssertionError("the group did not end")

    env = spec.environments[state.environment_index]
    here = [m.app for m in spec.members_in(env)]
    if state.phase == GroupPhase.SUCCEEDED:
        assert all(world.running[(e, m.app)] == "n" for e in ENVS for m in spec.members_in(e))
    elif state.phase in (GroupPhase.ROLLED_BACK, GroupPhase.ABORTED):
        # consistent: the environment runs exactly what it ran before the group
        assert {app: world.running[(env, app)] for app in here} == \
               {app: world.before[(env, app)] for app in here}
        assert state.phase == GroupPhase.ROLLED_BACK or abort_at is not None
    else:
        assert state.phase == GroupPhase.FAILED
        assert any(world.reverts.get((env, app)) == "failed" for app in here)
    # environments the group left behind keep it whole
    for passed in spec.environments[:state.environment_index]:
        assert all(world.running[(passed, m.app)] == "n" for m in spec.members_in(passed))

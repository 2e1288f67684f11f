"""Release group state machine: (spec, state, observed) -> (phase, environment, member
phases there, actions), then what a table cannot show: walks through whole groups, a
coordinator restarting between commit and apply, and the stored documents."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from entrega.errors import InvalidRecord
from entrega.groups import advance, unapplied
from entrega.groups.advance import POLL_S
from entrega.groups.model import (
    DeployMember,
    GroupPhase,
    GroupSpec,
    GroupState,
    Member,
    MemberState,
    ObservedGroup,
    ObservedMember,
    RevertMember,
    initial_state,
    spec_from_dict,
    spec_to_dict,
    state_from_dict,
    state_to_dict,
)

from .conftest import API, SHOP, T0, WORKER, acts, go, group, member, seen, state, summary

ON_V40 = ObservedMember(running="v40")
#: web only in production (its app has no staging)
WEB_PROD = Member("web", "v17", depends_on=("api",), environments=("production",))
#: db <- api <- web: three layers
CHAIN = group(Member("db", "v3"), Member("api", "v41", ("db",)), Member("web", "v17", ("api",)))
#: db <- api <- web, api not in staging: web still waits for db there
SKIPPED_MIDDLE = group(Member("db", "v3"),
                       Member("api", "v41", ("db",), environments=("production",)),
                       Member("web", "v17", ("api",)))
STAGING_ALL_PASSED = {"staging": {"api": "succeeded", "worker": "succeeded", "web": "succeeded"}}


def prod(**apps: str | MemberState) -> dict[str, dict[str, str | MemberState]]:
    return {**STAGING_ALL_PASSED, "production": apps}


CASES = [
    # -- starting --------------------------------------------------------------------------
    pytest.param(SHOP, state("pending"), seen("staging", api=ON_V40),
                 ("progressing", "staging",
                  {"api": "deploying", "worker": "deploying", "web": "waiting"},
                  ["deploy api v41 to staging", "deploy worker v9 to staging"]),
                 id="pending-starts-the-first-layer-together"),
    pytest.param(SHOP, state("pending"), ObservedGroup(),
                 ("progressing", "staging",
                  {"api": "waiting", "worker": "waiting", "web": "waiting"}, []),
                 id="no-deploy-before-the-environment-was-observed"),
    pytest.param(SHOP, state(env=1, members=prod(api="waiting", worker="waiting", web="waiting")),
                 seen("staging", api="succeeded"),
                 ("progressing", "production",
                  {"api": "waiting", "worker": "waiting", "web": "waiting"}, []),
                 id="observation-of-the-previous-environment-is-stale"),
    pytest.param(SHOP, state(members={"staging": {"api": "deploying", "worker": "deploying",
                                                  "web": "waiting"}}),
                 seen("staging", api="running", worker="running"),
                 ("progressing", "staging",
                  {"api": "deploying", "worker": "deploying", "web": "waiting"}, []),
                 id="dependent-waits-while-its-dependency-runs"),
    pytest.param(SHOP, state(members={"staging": {"api": "deploying", "worker": "deploying",
                                                  "web": "waiting"}}),
                 seen("staging", api="succeeded", worker="running"),
                 ("progressing", "staging",
                  {"api": "succeeded", "worker": "deploying", "web": "deploying"},
                  ["deploy web v17 to staging"]),
                 id="dependent-starts-once-its-dependency-passed-not-waiting-for-the-layer"),
    pytest.param(SHOP, state("pending"),
                 seen("staging", api=ObservedMember(running="v41"), worker=ON_V40),
                 ("progressing", "staging",
                  {"api": "succeeded", "worker": "deploying", "web": "deploying"},
                  ["deploy worker v9 to staging", "deploy web v17 to staging"]),
                 id="member-already-running-its-version-passes-without-a-deploy"),
    # -- environments ----------------------------------------------------------------------
    pytest.param(SHOP, state(members={"staging": {"api": "succeeded", "worker": "deploying",
                                                  "web": "succeeded"}}),
                 seen("staging", worker="running"),
                 ("progressing", "staging",
                  {"api": "succeeded", "worker": "deploying", "web": "succeeded"}, []),
                 id="next-environment-waits-for-every-member"),
    pytest.param(SHOP, state(members={"staging": {"api": "succeeded", "worker": "deploying",
                                                  "web": "succeeded"}}),
                 seen("staging", worker="succeeded"),
                 ("progressing", "production",
                  {"api": "waiting", "worker": "waiting", "web": "waiting"}, []),
                 id="all-passed-enters-the-next-environment"),
    pytest.param(SHOP, state(env=1, members=prod(api="succeeded", worker="succeeded",
                                                  web="deploying")),
                 seen("production", web="succeeded"),
                 ("succeeded", "production",
                  {"api": "succeeded", "worker": "succeeded", "web": "succeeded"}, []),
                 id="last-environment-passed-group-succeeds"),
    pytest.param(group(API, WORKER, WEB_PROD), state("pending"), seen("staging", api=ON_V40),
                 ("progressing", "staging", {"api": "deploying", "worker": "deploying"},
                  ["deploy api v41 to staging", "deploy worker v9 to staging"]),
                 id="member-whose-app-has-no-such-environment-is-skipped-there"),
    pytest.param(group(API, WORKER, WEB_PROD),
                 state(members={"staging": {"api": "succeeded", "worker": "deploying"}}),
                 seen("staging", worker="succeeded"),
                 ("progressing", "production",
                  {"api": "waiting", "worker": "waiting", "web": "waiting"}, []),
                 id="skipped-member-does-not-hold-the-group"),
    pytest.param(group(Member("api", "v41", environments=("staging", "production")), WEB_PROD,
                       envs=("staging", "qa", "production")),
                 state(members={"staging": {"api": "deploying"}}),
                 seen("staging", api="succeeded"),
                 ("progressing", "production", {"api": "waiting", "web": "waiting"}, []),
                 id="environment-no-member-has-is-skipped"),
    pytest.param(SKIPPED_MIDDLE, state(members={"staging": {"db": "deploying", "web": "waiting"}}),
                 seen("staging", db="running"),
                 ("progressing", "staging", {"db": "deploying", "web": "waiting"}, []),
                 id="dependency-through-a-skipped-member-still-orders"),
    # -- promote ---------------------------------------------------------------------------
    pytest.param(SHOP, state(members={"staging": {"api": "deploying", "worker": "deploying",
                                                  "web": "waiting"}}, promote_requested=True),
                 seen("staging", api="running", worker="running"),
                 ("progressing", "staging",
                  {"api": "deploying", "worker": "deploying", "web": "waiting"},
                  ["promote api in staging", "promote worker in staging"]),
                 id="promote-goes-to-the-running-members"),
    pytest.param(SHOP, state(members={"staging": {"api": "deploying", "worker": "succeeded",
                                                  "web": "waiting"}}, promote_requested=True),
                 seen("staging", api="succeeded"),
                 ("progressing", "staging",
                  {"api": "succeeded", "worker": "succeeded", "web": "deploying"},
                  ["deploy web v17 to staging"]),
                 id="promote-is-not-given-to-a-member-started-after-it"),
    # -- a member fails: the moved members go back, last layer first ---------------------------
    pytest.param(SHOP, state(env=1, members=prod(api="succeeded", worker="succeeded",
                                                  web="deploying")),
                 seen("production", web="failed"),
                 ("rolling_back", "production",
                  {"api": "reverting", "worker": "reverting", "web": "failed"},
                  ["revert api in production to old", "revert worker in production to old"]),
                 id="failed-member-sends-the-moved-ones-back"),
    pytest.param(SHOP, state(env=1, members=prod(api="succeeded", worker="deploying",
                                                  web="deploying")),
                 seen("production", worker="rolled_back", web="running"),
                 ("rolling_back", "production",
                  {"api": "succeeded", "worker": "rolled_back", "web": "reverting"},
                  ["revert web in production to old"]),
                 id="rolled-back-member-stops-the-group-running-dependent-aborted-first"),
    pytest.param(SHOP, state("rolling_back", env=1,
                             members=prod(api="succeeded", worker="rolled_back", web="reverting"),
                             ends_as=GroupPhase.ROLLED_BACK),
                 seen("production", web=ObservedMember(revert="running")),
                 ("rolling_back", "production",
                  {"api": "succeeded", "worker": "rolled_back", "web": "reverting"}, []),
                 id="lower-layer-waits-for-the-upper-layer-revert"),
    pytest.param(SHOP, state("rolling_back", env=1,
                             members=prod(api="succeeded", worker="rolled_back", web="reverting"),
                             ends_as=GroupPhase.ROLLED_BACK),
                 seen("production", web=ObservedMember(revert="succeeded")),
                 ("rolling_back", "production",
                  {"api": "reverting", "worker": "rolled_back", "web": "reverted"},
                  ["revert api in production to old"]),
                 id="upper-layer-reverted-lower-layer-goes-back"),
    pytest.param(SHOP, state("rolling_back", env=1,
                             members=prod(api="reverting", worker="rolled_back", web="reverted"),
                             ends_as=GroupPhase.ROLLED_BACK),
                 seen("production", api=ObservedMember(revert="succeeded")),
                 ("rolled_back", "production",
                  {"api": "reverted", "worker": "rolled_back", "web": "reverted"}, []),
                 id="every-revert-done-group-rolled-back"),
    pytest.param(SHOP, state(env=1, members=prod(api=member("succeeded", replaced=None),
                                                  worker="deploying", web="waiting")),
                 seen("production", worker="failed"),
                 ("rolling_back", "production",
                  {"api": "reverting", "worker": "failed", "web": "waiting"},
                  ["revert api in production to None"]),
                 id="member-that-replaced-nothing-is-stopped-waiting-one-untouched"),
    pytest.param(SHOP, state(env=1, members=prod(api=member("succeeded", replaced="v41"),
                                                  worker="deploying", web="waiting")),
                 seen("production", worker="failed"),
                 ("rolled_back", "production",
                  {"api": "succeeded", "worker": "failed", "web": "waiting"}, []),
                 id="member-that-already-ran-its-version-has-nothing-to-revert"),
    pytest.param(SHOP, state(members={"staging": {"api": "deploying", "worker": "deploying",
                                                  "web": "waiting"}}),
                 seen("staging", api="failed", worker="failed"),
                 ("rolled_back", "staging",
                  {"api": "failed", "worker": "failed", "web": "waiting"}, []),
                 id="nothing-moved-group-rolled-back-at-once"),
    # -- a revert fails ----------------------------------------------------------------------
    pytest.param(SHOP, state("rolling_back", env=1,
                             members=prod(api="succeeded", worker="rolled_back", web="reverting"),
                             ends_as=GroupPhase.ROLLED_BACK),
                 seen("production", web=ObservedMember(revert="failed", detail="v16 crashed")),
                 ("failed", "production",
                  {"api": "succeeded", "worker": "rolled_back", "web": "failed"}, []),
                 id="revert-failure-stops-the-walk-group-failed"),
    pytest.param(SHOP, state("rolling_back", env=1,
                             members=prod(api="succeeded", worker="reverting", web="reverting"),
                             ends_as=GroupPhase.ROLLED_BACK),
                 seen("production", web=ObservedMember(revert="failed"),
                      worker=ObservedMember(revert="running")),
                 ("rolling_back", "production",
                  {"api": "succeeded", "worker": "reverting", "web": "failed"}, []),
                 id="revert-failure-waits-for-the-reverts-of-its-layer"),
    # -- abort -------------------------------------------------------------------------------
    pytest.param(SHOP, state(members={"staging": {"api": "succeeded", "worker": "deploying",
                                                  "web": "deploying"}}, abort_requested=True),
                 seen("staging", worker="running", web="running"),
                 ("rolling_back", "staging",
                  {"api": "succeeded", "worker": "deploying", "web": "reverting"},
                  ["revert web in staging to old"]),
                 id="abort-midway-reverts-the-last-layer-first"),
    pytest.param(SHOP, state("rolling_back", members={"staging": {
                     "api": "reverting", "worker": "reverting", "web": "reverted"}},
                     ends_as=GroupPhase.ABORTED),
                 seen("staging", api=ObservedMember(revert="succeeded"),
                      worker=ObservedMember(revert="rolled_back")),
                 ("aborted", "staging",
                  {"api": "reverted", "worker": "reverted", "web": "reverted"}, []),
                 id="abort-ends-aborted-once-reverted"),
    pytest.param(SHOP, state("pending", abort_requested=True), seen("staging", api=ON_V40),
                 ("aborted", "staging", {"api": "waiting", "worker": "waiting", "web": "waiting"},
                  []),
                 id="abort-before-any-deploy-ends-at-once"),
    # -- ended -------------------------------------------------------------------------------
    pytest.param(SHOP, state("rolled_back", members={"staging": {"api": "failed"}},
                             abort_requested=True, promote_requested=True),
                 seen("staging", api="failed"),
                 ("rolled_back", "staging", {"api": "failed"}, []),
                 id="ended-group-does-nothing"),
]


@pytest.mark.parametrize(("spec", "st", "obs", "expected"), CASES)
def test_advance(spec, st, obs, expected):
    assert summary(spec, go(spec, st, obs)) == expected


def test_a_rollback_leaves_the_environments_the_group_passed():
    st = state(env=1, members=prod(api="succeeded", worker="succeeded", web="deploying"))
    t = go(SHOP, st, seen("production", web="failed"))
    assert t.state.members["staging"] == st.members["staging"]
    assert all(a.environment == "production" for a in t.actions)


def test_what_a_revert_goes_back_to_is_read_before_the_deploy():
    started = go(SHOP, state("pending"), seen("staging", api=ON_V40,
                                               worker=ObservedMember(running=None)))
    assert started.state.members["staging"]["api"].replaced == "v40"
    assert started.state.members["staging"]["worker"].replaced is None
    failed = go(SHOP, started.state, seen("staging", api="succeeded", worker="failed"))
    assert [(a.app, a.to_version) for a in failed.actions] == [("api", "v40")]


def test_events_say_what_failed_where_and_what_goes_back():
    st = state(env=1, members=prod(api=member("succeeded", replaced="v40"), worker="succeeded",
                                   web="deploying"))
    t = go(SHOP, st, seen("production", web=ObservedMember(outcome="failed",
                                                           detail="error-rate rose")))
    assert t.events[:3] == (
        "web v17 failed in production: error-rate rose",
        "group shop 2026.12.1 stops in production: web v17 failed in production: "
        "error-rate rose",
        "reverting api in production to v40",
    )
    assert t.state.message == "web v17 failed in production: error-rate rose"
    assert t.requeue_at == T0 + POLL_S
    failed = go(SHOP, state("rolling_back", env=1, ends_as=GroupPhase.ROLLED_BACK,
                            members=prod(api="succeeded", worker="succeeded", web="reverting")),
                seen("production", web=ObservedMember(revert="failed", detail="v16 crashed")))
    assert failed.state.message == ("web could not go back from v17 in production: v16 crashed; "
                                    "left as they are: api, worker")
    assert failed.requeue_at is None


# -- whole groups through a simulated world ----------------------------------------------------


class World:
    """What each app runs in each environment, and the member rollouts the coordinator
    started: actions applied here, observations read from here, as the controller would."""

    def __init__(self, spec: GroupSpec, running: dict[str, str | None],
                 fails: set[tuple[str, str]] = frozenset()) -> None:
        self.spec = spec
        self.running = {(env, app): running.get(app) for env in spec.environments
                        for app in running}
        self.rollouts: dict[tuple[str, str], str] = {}
        self.reverts: dict[tuple[str, str], str] = {}
        self.fails = fails
        self.applied: list[object] = []

    def apply(self, actions) -> None:
        for a in actions:
            self.applied.append(a)
            key = (a.environment, a.app)
            if isinstance(a, DeployMember):
                self.rollouts[key] = "running"
            elif isinstance(a, RevertMember):
                self.rollouts[key] = "rolled_back"
                self.running[key] = a.to_version
                self.reverts[key] = "succeeded"

    def finish(self) -> None:
        """Every running member rollout ends: as told by ``fails``, else succeeded."""
        for key, outcome in self.rollouts.items():
            if outcome == "running":
                self.rollouts[key] = "failed" if key in self.fails else "succeeded"
                if self.rollouts[key] == "succeeded":
                    self.running[key] = self.spec.member(key[1]).version

    def observe(self, env: str) -> ObservedGroup:
        return ObservedGroup(env, {
            app: ObservedMember(running=self.running.get((env, app)),
                                outcome=self.rollouts.get((env, app), "none"),  # type: ignore[arg-type]
                                revert=self.reverts.get((env, app), "none"))  # type: ignore[arg-type]
            for (e, app) in self.running if e == env})


def walk(spec: GroupSpec, world: World, *, twice: bool = False,
         abort_at: int | None = None) -> tuple[GroupState, list[GroupState]]:
    """Drive a group to its end; ``twice``: every observation is fed a second time, as a
    coordinator that restarted after committing the state would."""
    st, states = initial_state(now=T0), []
    for n in range(40):
        if abort_at == n:
            st = replace(st, abort_requested=True)  # what `abort` on the group writes
        obs = world.observe(spec.environments[st.environment_index])
        t = advance(spec, st, obs, now=T0 + n)
        if twice:
            again = advance(spec, t.state, obs, now=T0 + n)
            assert again.actions == (), f"pass {n}: {again.actions} issued twice"
            t = replace(t, state=again.state)
        world.apply(t.actions)
        st = t.state
        states.append(st)
        if st.phase.terminal:
            return st, states
        world.finish()
    raise AssertionError("the group did not end")


@pytest.mark.parametrize("twice", [False, True], ids=["once", "each-observation-twice"])
def test_a_group_passes_every_environment_in_order(twice):
    world = World(SHOP, {"api": "v40", "worker": "v8", "web": "v16"})
    end, _ = walk(SHOP, world, twice=twice)
    assert end.phase == GroupPhase.SUCCEEDED
    deploys = [(a.environment, a.app) for a in world.applied]
    assert deploys == [("staging", "api"), ("staging", "worker"), ("staging", "web"),
                       ("production", "api"), ("production", "worker"), ("production", "web")]
    assert set(world.running.values()) == {"v41", "v9", "v17"}


@pytest.mark.parametrize("twice", [False, True], ids=["once", "each-observation-twice"])
def test_a_member_failing_in_production_sends_the_others_back_in_reverse_order(twice):
    world = World(CHAIN, {"db": "v2", "api": "v40", "web": None},
                  fails={("production", "web")})
    end, _ = walk(CHAIN, world, twice=twice)
    assert end.phase == GroupPhase.ROLLED_BACK
    reverts = [(a.app, a.to_version) for a in world.applied if isinstance(a, RevertMember)]
    assert reverts == [("api", "v40"), ("db", "v2")]
    assert world.running[("production", "db")] == "v2"
    assert world.running[("production", "api")] == "v40"
    assert world.running[("staging", "web")] == "v17"  # staging passed whole: kept


def test_abort_mid_way_sends_the_moved_members_back_and_ends_aborted():
    world = World(CHAIN, {"db": "v2", "api": "v40", "web": "v16"})
    end, _ = walk(CHAIN, world, abort_at=2)  # db and api passed staging, web not started
    assert end.phase == GroupPhase.ABORTED
    env = CHAIN.environments[end.environment_index]
    assert {app: str(m.phase) for app, m in end.members[env].items()} == {
        "db": "reverted", "api": "reverted", "web": "waiting"}
    assert world.running[(env, "db")] == "v2" and world.running[(env, "api")] == "v40"


# -- a coordinator restarting between commit and apply -------------------------------------


def test_a_restarted_coordinator_re_derives_the_actions_it_did_not_apply():
    committed = go(SHOP, state("pending"), seen("staging", api=ON_V40)).state
    # the actions were lost with the process: the environment shows no rollout
    obs = seen("staging", api=ON_V40)
    assert acts(unapplied(SHOP, committed, obs)) == ["deploy api v41 to staging",
                                                     "deploy worker v9 to staging"]
    assert go(SHOP, committed, obs).actions == ()  # advance alone does not repeat them
    # once the effect shows, nothing is re-derived
    assert unapplied(SHOP, committed, seen("staging", api="running", worker="running")) == ()
    reverting = state("rolling_back", members={"staging": {
        "api": member("reverting", replaced="v40"), "worker": "failed", "web": "waiting"}})
    assert [(a.app, a.to_version) for a in unapplied(SHOP, reverting, seen("staging"))] == [
        ("api", "v40")]
    assert unapplied(SHOP, reverting, seen("staging", api=ObservedMember(revert="running"))) == ()
    assert unapplied(SHOP, committed, seen("production")) == ()  # stale: nothing


# -- the stored documents ------------------------------------------------------------------


def test_every_state_of_a_walk_and_the_spec_round_trip_through_stored_json():
    world = World(CHAIN, {"db": "v2", "api": "v40", "web": None}, fails={("production", "web")})
    _, states = walk(CHAIN, world)
    for st in states:
        assert state_from_dict(json.loads(json.dumps(state_to_dict(st)))) == st
    spec = group(API, WORKER, WEB_PROD)
    assert spec_from_dict(json.loads(json.dumps(spec_to_dict(spec)))) == spec
    assert spec_to_dict(spec)["members"][2] == {
        "app": "web", "version": "v17", "depends_on": ["api"], "environments": ["production"]}


def test_a_damaged_stored_state_names_the_field():
    data = state_to_dict(state(members={"staging": {"api": "deploying"}}))
    data["members"]["staging"]["api"]["phase"] = "sideways"
    with pytest.raises(InvalidRecord) as caught:
        state_from_dict(data)
    assert "members.staging.api.phase" in str(caught.value)
    assert "MemberState" not in str(caught.value)

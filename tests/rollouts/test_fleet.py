"""Canary and blue-green over a fleet's hosts: ``canary_hosts`` (the canary on the first N
hosts that can run it, started on the others before it takes all traffic) and
``max_failed`` (hosts left out, named, the rollout going on with the others; one more
fails it). Every pass goes through the public ``rollouts.advance``; the walks store and
read back the state on every pass, as a restarted controller would."""

from __future__ import annotations

from typing import Any

import pytest

from entrega.rollouts import advance
from entrega.rollouts.fleet import canary_host_count, routed_hosts, running_hosts
from entrega.rollouts.model import (
    FleetProgress,
    FleetSpec,
    Observed,
    Phase,
    RolloutSpec,
    RolloutState,
    SetRoutes,
    StartInstances,
    StopInstances,
    Transition,
    initial_state,
    state_from_dict,
    state_to_dict,
)

from .conftest import CANARY, POLL_S, STABLE, T0, bluegreen, canary, kinds, pause, state, weight

P = Phase
HOSTS = ("a", "b", "c", "d")


def on_fleet(spec: RolloutSpec, *, canary_hosts: int | str | None = None,
             max_failed: int | str = 0, hosts: tuple[str, ...] = HOSTS) -> RolloutSpec:
    from dataclasses import replace

    return replace(spec, fleet=FleetSpec(hosts=hosts, canary_hosts=canary_hosts,
                                         max_failed=max_failed), progress_deadline_s=30)


def stored(st: RolloutState) -> RolloutState:
    return state_from_dict(state_to_dict(st))


def begin(spec: RolloutSpec, stable: str | None = STABLE) -> Transition:
    return advance(spec, initial_state(stable=stable, canary=CANARY, now=T0), Observed(),
                   now=T0)


def walk(spec: RolloutSpec, *, failing: dict[str, str] | None = None,
         lost: dict[str, str] | None = None, until: float = 10_000.0) -> list[Transition]:
    """Drive a rollout to its end: every host waited for is ready at once, except the
    ``failing`` ones (host -> why); once the canary serves, the ``lost`` hosts stop
    answering. The state is stored and read back on every pass."""
    failing, lost = failing or {}, lost or {}
    transitions = [begin(spec)]
    now = T0
    while not transitions[-1].state.phase.terminal and now < until:
        st = stored(transitions[-1].state)
        now = transitions[-1].requeue_at or now + POLL_S
        fleet = st.fleet
        assert fleet is not None
        waited = [h for h in fleet.hosts if h not in fleet.serving]
        seen = Observed(
            hosts_ready=tuple(h for h in waited if h not in failing),
            host_failures={**{h: why for h, why in failing.items() if h in waited},
                           **{h: why for h, why in lost.items() if h in fleet.serving}})
        transitions.append(advance(spec, st, seen, now=now))
    return transitions


def actions_of(transitions: list[Transition]) -> list[Any]:
    return [a for t in transitions for a in t.actions]


def events_of(transitions: list[Transition]) -> list[str]:
    return [e for t in transitions for e in t.events]


@pytest.mark.parametrize(("canary_hosts", "hosts", "count"), [
    (None, 4, 4), (1, 4, 1), (2, 3, 2), (9, 3, 3), ("25%", 4, 1), ("25%", 10, 3),
    ("50%", 3, 2), ("100%", 5, 5),
], ids=lambda v: str(v))
def test_canary_host_count(canary_hosts: int | str | None, hosts: int, count: int) -> None:
    assert canary_host_count(canary_hosts, hosts) == count


# -- canary_hosts ---------------------------------------------------------------------------


@pytest.mark.parametrize(("spec", "stable", "hosts"), [
    (on_fleet(canary(weight(100))), STABLE, HOSTS),
    (on_fleet(canary(weight(100)), canary_hosts=1), STABLE, ("a",)),
    (on_fleet(canary(weight(100)), canary_hosts="50%"), STABLE, ("a", "b")),
    (on_fleet(canary(weight(100)), canary_hosts=1), None, HOSTS),
    (on_fleet(bluegreen()), STABLE, HOSTS),
], ids=["every-host", "one-host", "half", "first-release-everywhere", "blue-green"])
def test_the_new_release_starts_on_the_canary_hosts_only(
        spec: RolloutSpec, stable: str | None, hosts: tuple[str, ...]) -> None:
    started = begin(spec, stable)
    assert started.actions == (StartInstances(CANARY, hosts=hosts),)
    assert running_hosts(spec, started.state) == {CANARY: hosts}
    assert routed_hosts(spec, started.state) == {CANARY: ()}


def test_the_canary_weight_goes_to_the_canary_hosts_and_all_traffic_waits_for_the_others(
        ) -> None:
    spec = on_fleet(canary(weight(25), pause(60), weight(100)), canary_hosts=1)
    transitions = walk(spec)
    assert transitions[-1].state.phase == P.SUCCEEDED
    routes = [a for a in actions_of(transitions) if isinstance(a, SetRoutes)]
    assert routes == [SetRoutes({CANARY: 25, STABLE: 75}, hosts={CANARY: ("a",)}),
                      SetRoutes({CANARY: 100}, hosts={CANARY: HOSTS})]
    starts = [a for a in actions_of(transitions) if isinstance(a, StartInstances)]
    assert starts == [StartInstances(CANARY, hosts=("a",)), StartInstances(CANARY, hosts=HOSTS)]
    # the old release stops only after the new one serves on every host
    assert actions_of(transitions)[-1] == StopInstances(STABLE)
    assert "starting v2 on b, c, d before it takes all traffic" in events_of(transitions)


def test_widening_keeps_the_routes_and_resumes_at_the_step_that_wanted_all_traffic() -> None:
    spec = on_fleet(canary(weight(25), weight(100)), canary_hosts=1)
    ready = advance(spec, stored(begin(spec).state), Observed(hosts_ready=("a",)), now=T0 + 1)
    # weight 25 applied, then weight 100 waits: the release starts on b, c, d first
    assert ready.state.phase == P.STARTING and ready.state.step_index == 1
    assert ready.state.weights == {CANARY: 25, STABLE: 75}
    assert kinds(ready) == ["SetRoutes", "StartInstances"]
    # the controller restarts here: the stored state says where everything runs
    st = stored(ready.state)
    assert running_hosts(spec, st) == {CANARY: HOSTS}
    assert routed_hosts(spec, st) == {CANARY: ("a",)}
    waiting = advance(spec, st, Observed(hosts_ready=("b", "c")), now=T0 + 2)
    assert waiting.actions == () and waiting.state.phase == P.STARTING
    done = advance(spec, st, Observed(hosts_ready=("b", "c", "d")), now=T0 + 3)
    assert done.state.phase == P.SUCCEEDED
    assert done.actions == (SetRoutes({CANARY: 100}, hosts={CANARY: HOSTS}),
                            StopInstances(STABLE))


def test_a_full_promote_also_starts_the_release_on_the_other_hosts_first() -> None:
    spec = on_fleet(canary(weight(10), pause()), canary_hosts=2)
    paused = walk(spec)[-1].state
    assert paused.phase == P.PAUSED
    from dataclasses import replace

    promoted = advance(spec, replace(paused, promote_full=True), Observed(), now=T0 + 5)
    assert promoted.state.phase == P.STARTING
    assert promoted.actions == (StartInstances(CANARY, hosts=HOSTS),)


# -- failures within and beyond max_failed ------------------------------------------------------


def test_a_canary_host_that_cannot_run_the_release_is_replaced_by_the_next_one() -> None:
    spec = on_fleet(canary(weight(50), weight(100)), canary_hosts=1, max_failed=1)
    transitions = walk(spec, failing={"a": "instance a/0 exits at once (code 4)"})
    end = transitions[-1].state
    assert end.phase == P.SUCCEEDED
    assert end.fleet == FleetProgress(hosts=("b", "c", "d"), serving=("b", "c", "d"),
                                      failed={"a": "instance a/0 exits at once (code 4)"})
    actions = actions_of(transitions)
    assert actions[:4] == [StartInstances(CANARY, hosts=("a",)),
                           StopInstances(CANARY, hosts=("a",)),
                           StartInstances(CANARY, hosts=("b",)),
                           SetRoutes({CANARY: 50, STABLE: 50}, hosts={CANARY: ("b",)})]
    assert ("a left out of v2 (1/1 host(s) allowed by max_failed): a: instance a/0 exits "
            "at once (code 4)") in events_of(transitions)
    assert "starting v2 on b instead" in events_of(transitions)


def test_a_host_standing_in_at_the_deadline_gets_a_deadline_of_its_own() -> None:
    spec = on_fleet(canary(weight(100)), canary_hosts=1, max_failed=1)
    st = stored(begin(spec).state)
    late = advance(spec, st, Observed(), now=T0 + 31)
    assert late.state.phase == P.STARTING and late.state.phase_started_at == T0 + 31
    assert late.state.fleet == FleetProgress(hosts=("b",), failed={"a": "not ready within 30s"})
    assert late.actions == (StopInstances(CANARY, hosts=("a",)),
                            StartInstances(CANARY, hosts=("b",)))
    waiting = advance(spec, stored(late.state), Observed(), now=T0 + 50)
    assert waiting.state.phase == P.STARTING and waiting.actions == ()
    ready = advance(spec, stored(late.state), Observed(hosts_ready=("b",)), now=T0 + 52)
    assert ready.state.phase == P.STARTING  # and now b, c, d before all traffic
    assert ready.actions == (StartInstances(CANARY, hosts=("b", "c", "d")),)


@pytest.mark.parametrize(("failing", "phase", "message"), [
    ({"b": "instance b/0 exits at once"}, P.FAILED,
     "v2 cannot run: instance b/0 exits at once"),
    ({"b": "instance b/0 exits", "c": "instance c/1 exits"}, P.FAILED,
     "v2 cannot run: instance b/0 exits; instance c/1 exits (2 host(s) failed: b, c; "
     "max_failed is 0)"),
], ids=["one-host-budget-0", "two-hosts"])
def test_beyond_the_budget_while_starting_the_rollout_fails_naming_the_hosts(
        failing: dict[str, str], phase: Phase, message: str) -> None:
    spec = on_fleet(canary(weight(100)))
    end = walk(spec, failing=failing)[-1]
    assert end.state.phase == phase
    assert end.state.message == message
    assert end.actions == (SetRoutes({STABLE: 100}, hosts={CANARY: ()}), StopInstances(CANARY))


def test_a_host_that_never_answers_is_left_out_at_the_deadline() -> None:
    spec = on_fleet(canary(weight(100)), max_failed="25%")
    started = begin(spec)
    st = stored(started.state)
    waiting = advance(spec, st, Observed(hosts_ready=("a", "b", "d")), now=T0 + 29)
    assert waiting.state.phase == P.STARTING and waiting.actions == ()
    late = advance(spec, st, Observed(hosts_ready=("a", "b", "d")), now=T0 + 31)
    assert late.state.phase == P.SUCCEEDED
    assert late.state.fleet is not None
    assert late.state.fleet.failed == {"c": "not ready within 30s"}
    assert late.actions == (StopInstances(CANARY, hosts=("c",)),
                            SetRoutes({CANARY: 100}, hosts={CANARY: ("a", "b", "d")}),
                            StopInstances(STABLE))


def test_beyond_the_budget_at_the_deadline_the_message_says_which_host_was_not_ready() -> None:
    spec = on_fleet(canary(weight(100)))
    late = advance(spec, begin(spec).state,
                   Observed(hosts_ready=("a", "b", "d"),
                            canary_problem="host c: connection refused"), now=T0 + 31)
    assert late.state.phase == P.FAILED
    assert late.state.message == ("v2 was not ready within 30s: c not ready "
                                  "(host c: connection refused)")


def test_a_host_that_stops_answering_mid_canary_is_left_out_and_the_rollout_goes_on() -> None:
    spec = on_fleet(canary(weight(50), pause(10), weight(100)), max_failed=1)
    transitions = walk(spec, lost={"b": "stopped answering: host b: connection refused"})
    end = transitions[-1].state
    assert end.phase == P.SUCCEEDED
    assert end.fleet is not None and list(end.fleet.failed) == ["b"]
    actions = actions_of(transitions)
    # traffic leaves b first (in one route change), then its canary instances stop
    left = actions.index(StopInstances(CANARY, hosts=("b",)))
    assert actions[left - 1] == SetRoutes({CANARY: 50, STABLE: 50},
                                          hosts={CANARY: ("a", "c", "d")})
    assert actions[-2:] == [SetRoutes({CANARY: 100}, hosts={CANARY: ("a", "c", "d")}),
                            StopInstances(STABLE)]


def test_a_second_host_lost_beyond_the_budget_rolls_back_traffic_first() -> None:
    spec = on_fleet(canary(weight(50), pause(10), weight(100)), max_failed=1)
    end = walk(spec, lost={"b": "stopped answering", "d": "stopped answering"})[-1]
    assert end.state.phase == P.ROLLED_BACK
    assert end.state.message == ("2 host(s) failed (b, d), more than max_failed 1: "
                                 "b: stopped answering; d: stopped answering")
    assert kinds(end) == ["SetRoutes", "StopInstances"]
    assert end.actions[0].weights == {STABLE: 100}  # type: ignore[union-attr]


def test_no_host_left_fails_the_rollout_whatever_the_budget() -> None:
    spec = on_fleet(canary(weight(100)), max_failed="100%", hosts=("a", "b"))
    end = walk(spec, failing={"a": "crash loop", "b": "crash loop"})[-1]
    assert end.state.phase == P.FAILED
    assert end.state.message.startswith("v2 cannot run: a: crash loop; b: crash loop")


def test_blue_green_previews_and_switches_on_the_hosts_left() -> None:
    spec = on_fleet(bluegreen(verify=False, scale_down_delay_s=0), max_failed=1)
    transitions = walk(spec, failing={"c": "instance c/0 exits"})
    assert transitions[-1].state.phase == P.SUCCEEDED
    routes = [a for a in actions_of(transitions) if isinstance(a, SetRoutes)]
    assert routes == [SetRoutes({STABLE: 100}, preview=CANARY,
                                hosts={CANARY: ("a", "b", "d")}),
                      SetRoutes({CANARY: 100}, hosts={CANARY: ("a", "b", "d")})]


def test_without_a_fleet_nothing_changes() -> None:
    spec = canary(weight(100))
    started = advance(spec, state(P.STARTING), Observed(canary_ready=True), now=T0)
    assert started.state.fleet is None
    assert started.actions == (SetRoutes({CANARY: 100}), StopInstances(STABLE))


def test_a_host_that_goes_down_while_the_canary_starts_is_left_out_at_once() -> None:
    spec = on_fleet(canary(weight(50), weight(100)), canary_hosts=2, max_failed=1)
    st = stored(begin(spec).state)
    down = advance(spec, st, Observed(hosts_down={"b": "no answer for 10s: refused"}),
                   now=T0 + 12)
    assert down.state.phase == P.STARTING
    assert down.state.fleet is not None
    assert down.state.fleet.failed == {"b": "went down while v2 started: no answer for 10s: "
                                            "refused"}
    # the next host stands in for it, with a deadline of its own
    assert down.state.fleet.hosts == ("a", "c")
    assert down.actions == (StopInstances(CANARY, hosts=("b",)),
                            StartInstances(CANARY, hosts=("a", "c")))
    assert down.state.phase_started_at == T0 + 12


@pytest.mark.parametrize(("max_failed", "down", "left_out"), [
    (0, ("b",), ()),            # no budget: waited for until the deadline (it may come back)
    (1, ("b", "c"), ("b",)),    # the budget allows one: the other is waited for
    (2, ("b", "c"), ("b", "c")),
])
def test_hosts_going_down_while_starting_are_left_out_only_within_the_budget(
        max_failed: int, down: tuple[str, ...], left_out: tuple[str, ...]) -> None:
    spec = on_fleet(canary(weight(100)), max_failed=max_failed)
    seen = Observed(hosts_ready=tuple(h for h in HOSTS if h not in down),
                    hosts_down={h: "refused" for h in down})
    after = advance(spec, stored(begin(spec).state), seen, now=T0 + 12)
    assert after.state.fleet is not None
    assert tuple(after.state.fleet.failed) == left_out
    waited = [h for h in down if h not in left_out]
    if not waited:  # every other host is ready: the rollout goes on without them at once
        assert after.state.phase == P.SUCCEEDED
        return
    assert after.state.phase == P.STARTING
    late = advance(spec, stored(after.state), seen, now=T0 + 12 + 31)
    # the deadline judges the hosts the budget did not cover, as before
    assert late.state.phase == P.FAILED
    assert late.state.message.startswith(f"v2 was not ready within 30s: "
                                         f"{', '.join(waited)} not ready")


def test_a_host_down_that_already_serves_is_judged_by_the_serving_rule_not_this_one() -> None:
    spec = on_fleet(canary(weight(50), pause(10), weight(100)), max_failed=1)
    serving = next(t.state for t in walk(spec) if t.state.phase == P.PROGRESSING)
    after = advance(spec, stored(serving), Observed(hosts_down={"b": "refused"}),
                    now=serving.phase_started_at + 1)
    assert after.state.fleet is not None and after.state.fleet.failed == {}

"""Rolling state machine over hosts: batches, weights following the hosts, max_failed,
restore of the done hosts, pauses, and a controller restarted mid-batch (the state read
back from its stored JSON). Every pass goes through the public ``rollouts.advance``."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from entrega.rollouts import advance
from entrega.rollouts.model import (
    Observed,
    Phase,
    RollingSpec,
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
from entrega.rollouts.rolling import (
    batch_size,
    batches,
    compute_weights,
    failures_allowed,
    routed_hosts,
    running_hosts,
)

from .conftest import CANARY, POLL_S, STABLE, T0

P = Phase
FOUR = ("a", "b", "c", "d")


def rolling(hosts: tuple[str, ...] = FOUR, *, batch: int | str = 1,
            max_failed: int | str = 0, pause_s: float = 0.0, **kw: Any) -> RolloutSpec:
    return RolloutSpec(strategy="rolling", rolling=RollingSpec(
        hosts=hosts, batch=batch, max_failed=max_failed, pause_between_batches_s=pause_s),
        **kw)


def begin(spec: RolloutSpec) -> Transition:
    return advance(spec, initial_state(stable=STABLE, canary=CANARY, now=T0), Observed(),
                   now=T0)


def stored(state: RolloutState) -> RolloutState:
    """The state as a restarted controller reads it back from the store."""
    return state_from_dict(state_to_dict(state))


def walk(spec: RolloutSpec, *, failing: dict[str, str] | None = None,
         until: float = 10_000.0) -> list[Transition]:
    """Drive a rollout to its end: every host is ready as soon as it is waited on, except
    ``failing`` ones (host -> why); the state is stored and read back on every pass."""
    failing = failing or {}
    transitions = [begin(spec)]
    now = T0
    while not transitions[-1].state.phase.terminal and now < until:
        state = stored(transitions[-1].state)
        now = transitions[-1].requeue_at or now + POLL_S
        progress = state.rolling
        assert progress is not None
        waited = progress.done if progress.restoring else progress.batch
        seen = Observed(
            hosts_ready=tuple(h for h in waited if progress.restoring or h not in failing),
            host_failures={} if progress.restoring
            else {h: why for h, why in failing.items() if h in waited})
        transitions.append(advance(spec, state, seen, now=now))
    return transitions


def after_first_batch(spec: RolloutSpec) -> RolloutState:
    """Host a done, the batch of b in flight."""
    return advance(spec, begin(spec).state, Observed(hosts_ready=("a",)), now=T0 + 0.5).state


def actions_of(transitions: list[Transition]) -> list[Any]:
    return [a for t in transitions for a in t.actions]


# -- arithmetic ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("batch", "hosts", "size"), [
    (1, 4, 1), (2, 5, 2), (10, 3, 3), ("25%", 4, 1), ("25%", 10, 3), ("50%", 3, 2),
    ("100%", 7, 7), ("1%", 3, 1), ("33.3%", 3, 1),
], ids=lambda v: str(v))
def test_batch_size(batch: int | str, hosts: int, size: int) -> None:
    assert batch_size(batch, hosts) == size


@pytest.mark.parametrize(("max_failed", "hosts", "allowed"), [
    (0, 4, 0), (2, 4, 2), ("10%", 5, 0), ("25%", 4, 1), ("50%", 5, 2), ("100%", 3, 3),
], ids=lambda v: str(v))
def test_failures_allowed(max_failed: int | str, hosts: int, allowed: int) -> None:
    assert failures_allowed(max_failed, hosts) == allowed


@pytest.mark.parametrize(("spec", "expected"), [
    (rolling(batch="25%"), (("a",), ("b",), ("c",), ("d",))),
    (rolling(("a", "b", "c", "d", "e"), batch=2), (("a", "b"), ("c", "d"), ("e",))),
    (rolling(("z", "y", "x"), batch="50%"), (("z", "y"), ("x",))),
], ids=["25%-of-4", "2-of-5", "config-order"])
def test_batches_follow_the_config_order(spec: RolloutSpec,
                                         expected: tuple[tuple[str, ...], ...]) -> None:
    assert spec.rolling is not None
    assert batches(spec.rolling) == expected


@pytest.mark.parametrize(("routed", "weights"), [
    ({STABLE: FOUR, CANARY: ()}, {STABLE: 100}),
    ({STABLE: ("b", "c", "d"), CANARY: ("a",)}, {CANARY: 25, STABLE: 75}),
    ({STABLE: tuple("efghij"), CANARY: tuple("abcd")}, {CANARY: 40, STABLE: 60}),
    ({STABLE: (), CANARY: FOUR}, {CANARY: 100}),
    ({STABLE: (), CANARY: ()}, {STABLE: 100}),
], ids=["none-done", "1-of-4", "4-of-10", "all", "nothing-routed"])
def test_weights_follow_the_hosts(routed: dict[str, tuple[str, ...]],
                                  weights: dict[str, int]) -> None:
    assert compute_weights(routed, stable=STABLE, canary=CANARY) == weights


# -- batches ---------------------------------------------------------------------------------


def test_batches_of_25_percent_of_four_hosts_move_one_host_at_a_time() -> None:
    transitions = walk(rolling(batch="25%"))
    assert transitions[-1].state.phase == P.SUCCEEDED
    starts = [a for a in actions_of(transitions) if isinstance(a, StartInstances)]
    assert starts == [StartInstances(CANARY, hosts=(h,)) for h in FOUR]
    stops = [a for a in actions_of(transitions) if isinstance(a, StopInstances)]
    assert stops == [*(StopInstances(STABLE, hosts=(h,)) for h in FOUR),
                     StopInstances(STABLE)]
    routes = [a for a in actions_of(transitions) if isinstance(a, SetRoutes)]
    # each batch: drained from stable, then served by the new release; the weights follow
    # the hosts that serve (a drained host serves neither)
    assert [r.weights for r in routes] == [
        {STABLE: 100}, {CANARY: 25, STABLE: 75},
        {CANARY: 33, STABLE: 67}, {CANARY: 50, STABLE: 50},
        {CANARY: 67, STABLE: 33}, {CANARY: 75, STABLE: 25},
        {CANARY: 100}, {CANARY: 100}]
    assert routes[0].hosts == {STABLE: ("b", "c", "d"), CANARY: ()}
    assert routes[3].hosts == {STABLE: ("c", "d"), CANARY: ("a", "b")}


def test_a_batch_of_n_hosts_starts_them_together() -> None:
    transitions = walk(rolling(("a", "b", "c", "d", "e"), batch=2))
    assert transitions[-1].state.phase == P.SUCCEEDED
    starts = [a.hosts for a in actions_of(transitions) if isinstance(a, StartInstances)]
    assert starts == [("a", "b"), ("c", "d"), ("e",)]
    assert transitions[-1].state.weights == {CANARY: 100}


def test_the_batch_is_drained_first_then_served_when_ready() -> None:
    spec = rolling(batch=2)
    first = begin(spec)
    assert first.state.phase == P.STARTING
    assert [type(a).__name__ for a in first.actions] == ["SetRoutes", "StartInstances"]
    assert routed_hosts(spec, first.state) == {STABLE: ("c", "d"), CANARY: ()}
    # the old release keeps running on the batch until the new one serves there
    assert running_hosts(spec, first.state) == {STABLE: FOUR, CANARY: ("a", "b")}
    # one host of two ready: still waiting, nothing to do
    half = advance(spec, first.state, Observed(hosts_ready=("a",)), now=T0 + 1)
    assert half.actions == () and half.state == first.state
    both = advance(spec, first.state, Observed(hosts_ready=("a", "b")), now=T0 + 2)
    assert both.actions[0] == SetRoutes({CANARY: 50, STABLE: 50},
                                        hosts={STABLE: ("c", "d"), CANARY: ("a", "b")})
    # ... and the next batch is drained at once: the new release serves alone for now
    assert both.actions[2] == SetRoutes({CANARY: 100}, hosts={STABLE: (), CANARY: ("a", "b")})
    assert StopInstances(STABLE, hosts=("a", "b")) in both.actions
    assert both.state.rolling is not None and both.state.rolling.batch == ("c", "d")


def test_a_single_host_is_not_drained_before_the_new_release_is_ready() -> None:
    spec = rolling(("only",))
    first = begin(spec)
    assert [type(a).__name__ for a in first.actions] == ["StartInstances"]
    assert routed_hosts(spec, first.state)[STABLE] == ("only",)
    done = advance(spec, first.state, Observed(hosts_ready=("only",)), now=T0 + 1)
    assert done.state.phase == P.SUCCEEDED
    assert done.actions[0] == SetRoutes({CANARY: 100}, hosts={STABLE: (), CANARY: ("only",)})


# -- failures ---------------------------------------------------------------------------------


def test_a_failing_batch_over_max_failed_restores_the_done_hosts() -> None:
    spec = rolling(batch=1, max_failed=0)
    transitions = walk(spec, failing={"b": "instance b/0 exited 5 times"})
    final = transitions[-1].state
    assert final.phase == P.ROLLED_BACK
    assert "b: instance b/0 exited 5 times" in final.message
    assert final.weights == {STABLE: 100}
    restore = next(t for t in transitions if t.state.rolling and t.state.rolling.restoring)
    # the failed batch stops, the old release starts again on the done host, and the new
    # release keeps serving there until the old one is ready
    assert StopInstances(CANARY, hosts=("b",)) in restore.actions
    assert StartInstances(STABLE, hosts=("a",)) in restore.actions
    assert restore.actions[0] == SetRoutes({CANARY: 25, STABLE: 75},
                                           hosts={STABLE: ("b", "c", "d"), CANARY: ("a",)})
    assert running_hosts(spec, restore.state) == {STABLE: FOUR, CANARY: ("a",)}
    assert transitions[-1].actions == (SetRoutes({STABLE: 100}), StopInstances(CANARY))
    starts = [a.hosts for a in actions_of(transitions)
              if isinstance(a, StartInstances) and a.release == CANARY]
    assert starts == [("a",), ("b",)]  # c and d never saw the new release


def test_the_restore_waits_for_the_old_release_to_be_ready_again() -> None:
    spec = rolling()
    s = after_first_batch(spec)
    assert s.rolling is not None and s.rolling.done == ("a",)
    restore = advance(spec, s, Observed(host_failures={"b": "crash"}), now=T0 + 1)
    assert restore.state.phase == P.STARTING
    waiting = advance(spec, restore.state, Observed(), now=T0 + 2)
    assert waiting.actions == () and waiting.state.phase == P.STARTING
    back = advance(spec, restore.state, Observed(hosts_ready=("a",)), now=T0 + 3)
    assert back.state.phase == P.ROLLED_BACK
    assert "restored on a" in back.events[-1]


def test_failed_hosts_under_max_failed_go_back_to_stable_and_the_rollout_continues() -> None:
    spec = rolling(batch=1, max_failed=1)
    transitions = walk(spec, failing={"b": "not ready"})
    final = transitions[-1].state
    assert final.phase == P.SUCCEEDED
    assert final.rolling is not None and final.rolling.failed == ("b",)
    assert final.rolling.done == ("a", "c", "d")
    assert any("b failed their batch" in e for t in transitions for e in t.events)
    after_b = next(t for t in transitions if t.state.rolling and t.state.rolling.failed)
    assert StopInstances(CANARY, hosts=("b",)) in after_b.actions
    # b serves the old release again beside c and d's... until c is drained
    assert routed_hosts(spec, replace(after_b.state, rolling=replace(
        after_b.state.rolling, batch=())))[STABLE] == ("b", "c", "d")


def test_two_failures_over_a_max_failed_of_one_stop_the_rollout() -> None:
    transitions = walk(rolling(max_failed=1), failing={"b": "x", "c": "y"})
    final = transitions[-1].state
    assert final.phase == P.ROLLED_BACK
    assert "2 host(s) failed (b, c)" in final.message


def test_a_host_not_ready_by_the_progress_deadline_counts_as_failed() -> None:
    spec = rolling(progress_deadline_s=30)
    first = begin(spec)
    waiting = advance(spec, first.state, Observed(), now=T0 + 29)
    assert waiting.state.phase == P.STARTING and waiting.actions == ()
    late = advance(spec, first.state, Observed(), now=T0 + 31)
    assert late.state.phase == P.ROLLED_BACK  # nothing was done: nothing to restore
    assert "a: not ready within 30s" in late.state.message
    assert late.actions[-2:] == (SetRoutes({STABLE: 100}), StopInstances(CANARY))


def test_abort_restores_the_done_hosts() -> None:
    spec = rolling()
    s = after_first_batch(spec)
    aborted = advance(spec, replace(s, abort_requested=True), Observed(), now=T0 + 1)
    assert aborted.state.rolling is not None and aborted.state.rolling.restoring
    assert StartInstances(STABLE, hosts=("a",)) in aborted.actions
    assert "aborted by a user" in aborted.state.message


# -- pauses and verification ---------------------------------------------------------------------


def test_the_pause_between_batches_holds_the_next_batch() -> None:
    spec = rolling(pause_s=20)
    first = begin(spec)
    served = advance(spec, first.state, Observed(hosts_ready=("a",)), now=T0 + 1)
    assert served.state.phase == P.PROGRESSING
    assert served.requeue_at == T0 + 21
    assert not any(isinstance(a, StartInstances) for a in served.actions)
    early = advance(spec, stored(served.state), Observed(), now=T0 + 10)
    assert early.actions == () and early.requeue_at == T0 + 21
    due = advance(spec, stored(served.state), Observed(), now=T0 + 21)
    assert due.state.phase == P.STARTING
    assert StartInstances(CANARY, hosts=("b",)) in due.actions
    # the last batch needs no pause after it
    assert walk(spec)[-1].state.phase == P.SUCCEEDED


def test_promote_ends_the_pause_between_batches() -> None:
    spec = rolling(pause_s=600)
    served = advance(spec, begin(spec).state, Observed(hosts_ready=("a",)), now=T0 + 1)
    promoted = advance(spec, replace(served.state, promote_requested=True), Observed(),
                       now=T0 + 2)
    assert StartInstances(CANARY, hosts=("b",)) in promoted.actions


def test_verify_runs_after_the_first_batch_and_its_failure_restores() -> None:
    spec = rolling(verify=True)
    served = advance(spec, begin(spec).state, Observed(hosts_ready=("a",)), now=T0 + 1)
    assert served.state.phase == P.VERIFYING
    assert type(served.actions[-1]).__name__ == "RunVerification"
    failed = advance(spec, served.state, Observed(verification="failed",
                                                  verification_detail="GET / 500"),
                     now=T0 + 2)
    assert failed.state.rolling is not None and failed.state.rolling.restoring
    assert "GET / 500" in failed.state.message
    passed = advance(spec, served.state, Observed(verification="passed"), now=T0 + 2)
    assert StartInstances(CANARY, hosts=("b",)) in passed.actions


# -- a controller restarted mid-batch --------------------------------------------------------------


def test_a_restarted_controller_resumes_the_batch_from_the_stored_state() -> None:
    spec = rolling(batch=2)
    first = begin(spec)
    # the controller died after committing the batch's start: the next one reads the
    # stored state, starts nothing again, and carries on when the hosts are ready
    resumed = stored(first.state)
    assert resumed == first.state
    again = advance(spec, resumed, Observed(hosts_ready=("a",)), now=T0 + 5)
    assert again.actions == ()
    done = advance(spec, resumed, Observed(hosts_ready=("a", "b")), now=T0 + 6)
    assert StartInstances(CANARY, hosts=("c", "d")) in done.actions
    assert not any(isinstance(a, StartInstances) and a.hosts == ("a", "b")
                   for a in done.actions)
    # the deadline runs from the batch's start, not from the restart
    late = advance(spec, resumed, Observed(), now=T0 + spec.progress_deadline_s + 1)
    assert late.state.phase == P.ROLLED_BACK


@pytest.mark.parametrize(("max_failed", "phase"), [
    (1, P.SUCCEEDED),  # within the budget: b fails its batch now, the rollout goes on
    (0, P.STARTING),   # no budget: b is waited for until the deadline (it may come back)
])
def test_a_host_that_went_down_fails_its_batch_at_once_only_within_the_budget(
        max_failed: int, phase: Phase) -> None:
    spec = rolling(hosts=("a", "b"), batch=2, max_failed=max_failed, progress_deadline_s=300)
    first = begin(spec)
    after = advance(spec, stored(first.state),
                    Observed(hosts_ready=("a",), hosts_down={"b": "no answer for 10s"}),
                    now=T0 + 12)
    assert after.state.phase == phase
    assert after.state.rolling is not None
    if max_failed:
        assert after.state.rolling.failed == ("b",)
        assert after.state.rolling.done == ("a",)
        assert "b: went down while v2 started: no answer for 10s" in " ".join(after.events)
    else:
        assert after.state.rolling.failed == ()

"""Rolling between batches: the analysis that judges the new release against the old once
a batch serves (the canary's judges, verdicts and events), and ``max_unavailable`` (how
many hosts may be out of serving at once). Every pass goes through ``rollouts.advance``;
states are stored and read back as a restarted controller would."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from entrega.rollouts import advance
from entrega.rollouts.model import (
    AnalysisVerdict,
    BeginAnalysis,
    Observed,
    Phase,
    RollingSpec,
    RolloutSpec,
    RolloutState,
    RunVerification,
    SetRoutes,
    StartInstances,
    StopInstances,
    Transition,
    initial_state,
    state_from_dict,
    state_to_dict,
)
from entrega.rollouts.rolling import drained_hosts, routed_hosts, unavailable_allowed

from .conftest import CANARY, STABLE, T0, analysis

P = Phase
FOUR = ("a", "b", "c", "d")


def rolling(hosts: tuple[str, ...] = FOUR, *, batch: int | str = 1,
            max_unavailable: int | str | None = None, judged: bool = False,
            max_failed: int | str = 0, **kw: Any) -> RolloutSpec:
    step = analysis(60, every_s=5) if judged else None
    return RolloutSpec(strategy="rolling", rolling=RollingSpec(
        hosts=hosts, batch=batch, max_failed=max_failed, max_unavailable=max_unavailable,
        analysis=step), **kw)


def stored(state: RolloutState) -> RolloutState:
    return state_from_dict(state_to_dict(state))


def begin(spec: RolloutSpec) -> Transition:
    return advance(spec, initial_state(stable=STABLE, canary=CANARY, now=T0), Observed(),
                   now=T0)


def first_batch_served(spec: RolloutSpec) -> Transition:
    return advance(spec, stored(begin(spec).state), Observed(hosts_ready=("a",)),
                   now=T0 + 1)


def judged(result: str, window: int = 1) -> Observed:
    """A verdict for the window, its one metric judged alike."""
    reason = {"pass": "error-rate within limits", "fail": "error-rate 0.3 vs 0.0",
              "inconclusive": "too few requests"}[result]
    return Observed(analysis=AnalysisVerdict(
        window=window, verdict=result, reason=reason,  # type: ignore[arg-type]
        metrics={"error-rate": {"verdict": result, "critical": True}}))


def walk(spec: RolloutSpec, *, verdict: str = "pass") -> list[Transition]:
    """Every host ready as soon as waited on, every analysis check judged ``verdict``."""
    transitions = [begin(spec)]
    now = T0
    while not transitions[-1].state.phase.terminal and now < T0 + 100_000:
        state = stored(transitions[-1].state)
        now = transitions[-1].requeue_at or now + 1
        progress = state.rolling
        assert progress is not None
        waited = progress.done if progress.restoring else progress.batch
        seen = judged(verdict, state.analysis.window) if state.analysis else Observed()
        transitions.append(advance(spec, state, replace(seen, hosts_ready=waited), now=now))
    return transitions


def actions_of(transitions: list[Transition]) -> list[Any]:
    return [a for t in transitions for a in t.actions]


# -- analysis between batches -----------------------------------------------------------------


def test_an_analysis_begins_once_the_first_batch_serves_and_holds_the_next_batch() -> None:
    spec = rolling(judged=True)
    served = first_batch_served(spec)
    assert served.state.phase == P.PROGRESSING
    assert served.actions[0] == SetRoutes({CANARY: 25, STABLE: 75},
                                          hosts={STABLE: ("b", "c", "d"), CANARY: ("a",)})
    assert served.actions[-1] == BeginAnalysis(1, ("error-rate",))
    assert not any(isinstance(a, StartInstances) for a in served.actions)
    assert "batch 1/4: analysis of error-rate started" in served.events
    assert served.requeue_at == T0 + 1 + 5
    # the old release serves the other hosts while the new one is judged against it
    assert routed_hosts(spec, served.state) == {STABLE: ("b", "c", "d"), CANARY: ("a",)}


@pytest.mark.parametrize(("verdict", "at", "phase", "starts_next", "event"), [
    ("pass", 30, P.PROGRESSING, False, None),
    ("pass", 61, P.STARTING, True, "batch 1/4: analysis passed: error-rate within limits"),
    ("inconclusive", 61, P.PROGRESSING, False,
     "batch 1/4: analysis inconclusive (too few requests); watching 60s more"),
    ("fail", 6, P.STARTING, False, None),
], ids=["pass-before-the-end-waits", "pass-at-the-end-moves-on",
        "inconclusive-is-extended", "fail-restores"])
def test_an_analysis_check_is_judged_as_a_canary_step(verdict: str, at: float, phase: Phase,
                                                       starts_next: bool,
                                                       event: str | None) -> None:
    spec = rolling(judged=True)
    served = first_batch_served(spec)
    after = advance(spec, stored(served.state), judged(verdict), now=T0 + 1 + at)
    assert after.state.phase == phase
    assert (StartInstances(CANARY, hosts=("b",)) in after.actions) is starts_next
    if event is not None:
        assert event in after.events, after.events


def test_a_failed_analysis_restores_the_old_release_on_the_batch_done() -> None:
    spec = rolling(judged=True)
    served = first_batch_served(spec)
    failed = advance(spec, stored(served.state), judged("fail"), now=T0 + 7)
    assert failed.state.rolling is not None and failed.state.rolling.restoring
    assert failed.state.analysis is None
    assert failed.state.message == "batch 1/4: analysis failed: error-rate 0.3 vs 0.0"
    assert StartInstances(STABLE, hosts=("a",)) in failed.actions
    assert failed.state.analysis_history[-1]["verdict"] == "fail"
    assert failed.state.analysis_history[-1]["step"] == 0  # the first batch's analysis
    # once the old release is ready again on a: all traffic to it at once, then the
    # new one stops
    back = advance(spec, stored(failed.state), Observed(hosts_ready=("a",)), now=T0 + 8)
    assert back.state.phase == P.ROLLED_BACK
    assert back.actions == (SetRoutes({STABLE: 100}), StopInstances(CANARY))
    assert "analysis failed: error-rate 0.3 vs 0.0" in back.state.message


def test_a_failure_within_the_failure_limit_begins_a_fresh_window() -> None:
    spec = rolling(judged=True)
    assert spec.rolling is not None and spec.rolling.analysis is not None
    spec = replace(spec, rolling=replace(spec.rolling, analysis=replace(
        spec.rolling.analysis, failure_limit=1)))
    served = first_batch_served(spec)
    once = advance(spec, stored(served.state), judged("fail"), now=T0 + 7)
    assert once.actions == (BeginAnalysis(2, ("error-rate",)),)
    assert "batch 1/4: analysis check failed (1/1 allowed): error-rate 0.3 vs 0.0" \
        in once.events
    twice = advance(spec, stored(once.state), judged("fail", 2), now=T0 + 13)
    assert twice.state.rolling is not None and twice.state.rolling.restoring


def test_an_analysis_passes_on_evidence_reached_during_its_window() -> None:
    spec = rolling(judged=True)
    served = first_batch_served(spec)
    early = advance(spec, stored(served.state), judged("pass"), now=T0 + 7)
    end = advance(spec, stored(early.state), judged("inconclusive"), now=T0 + 62)
    assert StartInstances(CANARY, hosts=("b",)) in end.actions
    assert any("every metric reached its pass evidence" in e for e in end.events)


def test_an_analysis_inconclusive_to_the_end_pauses_and_promote_or_abort_decides() -> None:
    spec = rolling(judged=True)
    state = first_batch_served(spec).state
    now = T0 + 1
    for _ in range(3):  # the duration, then its two extensions
        assert state.analysis is not None
        now = state.analysis.started_at + 60 * (1 + state.analysis.extensions) + 0.5
        state = advance(spec, stored(state), judged("inconclusive"), now=now).state
    assert state.phase == P.PAUSED
    assert state.message == ("batch 1/4: analysis inconclusive (too few requests): "
                             "promote or abort")
    idle = advance(spec, stored(state), Observed(), now=now + 100)
    assert idle.actions == () and idle.state == state
    promoted = advance(spec, replace(state, promote_requested=True), Observed(), now=now + 1)
    assert "batch 1/4: analysis skipped by a user" in promoted.events
    assert StartInstances(CANARY, hosts=("b",)) in promoted.actions
    aborted = advance(spec, replace(state, abort_requested=True), Observed(), now=now + 1)
    assert aborted.state.rolling is not None and aborted.state.rolling.restoring
    assert StartInstances(STABLE, hosts=("a",)) in aborted.actions


def test_every_batch_but_the_last_is_judged() -> None:
    transitions = walk(rolling(judged=True))
    assert transitions[-1].state.phase == P.SUCCEEDED
    begun = [a for a in actions_of(transitions) if isinstance(a, BeginAnalysis)]
    # after the last batch the new release serves every host: nothing left to compare
    assert [a.window for a in begun] == [1, 2, 3]
    assert len(transitions[-1].state.analysis_history) == 3
    passed = [e for t in transitions for e in t.events if "analysis passed" in e]
    assert [e.split(":")[0] for e in passed] == ["batch 1/4", "batch 2/4", "batch 3/4"]


def test_without_analysis_the_batches_follow_each_other_at_once() -> None:
    transitions = walk(rolling())
    assert transitions[-1].state.phase == P.SUCCEEDED
    assert not any(isinstance(a, BeginAnalysis) for a in actions_of(transitions))


def test_verification_runs_first_then_the_analysis() -> None:
    spec = rolling(judged=True, verify=True)
    served = first_batch_served(spec)
    assert served.state.phase == P.VERIFYING
    assert isinstance(served.actions[-1], RunVerification)
    verified = advance(spec, stored(served.state), Observed(verification="passed"),
                       now=T0 + 2)
    assert verified.state.phase == P.PROGRESSING
    assert verified.actions == (BeginAnalysis(1, ("error-rate",)),)


def test_a_batch_whose_hosts_all_failed_within_max_failed_is_not_judged() -> None:
    spec = rolling(judged=True, max_failed=1)
    failed = advance(spec, stored(begin(spec).state), Observed(host_failures={"a": "crash"}),
                     now=T0 + 1)
    assert not any(isinstance(a, BeginAnalysis) for a in failed.actions)
    assert StartInstances(CANARY, hosts=("b",)) in failed.actions


def test_a_restarted_controller_resumes_the_analysis_window() -> None:
    spec = rolling(judged=True)
    served = first_batch_served(spec)
    resumed = stored(served.state)
    assert resumed == served.state
    waiting = advance(spec, resumed, Observed(), now=T0 + 7)
    assert waiting.actions == () and waiting.state.phase == P.PROGRESSING


# -- max_unavailable --------------------------------------------------------------------------


@pytest.mark.parametrize(("max_unavailable", "hosts", "batch", "allowed"), [
    (None, 4, 2, 2), (0, 4, 2, 0), (1, 4, 2, 1), (3, 4, 2, 3), ("25%", 4, 2, 1),
    ("25%", 3, 1, 0), ("50%", 5, 3, 2), ("0%", 10, 5, 0),
], ids=lambda v: str(v))
def test_unavailable_allowed(max_unavailable: int | str | None, hosts: int, batch: int,
                             allowed: int) -> None:
    assert unavailable_allowed(max_unavailable, hosts=hosts, batch=batch) == allowed


@pytest.mark.parametrize(("hosts", "batch", "max_unavailable", "drained"), [
    (FOUR, 2, None, ("a", "b")),
    (FOUR, 2, 1, ("a",)),
    (FOUR, 2, 0, ()),
    (FOUR, 2, 3, ("a", "b")),
    (FOUR, 2, "25%", ("a",)),
    (FOUR, 4, 2, ("a", "b")),
    (FOUR, 4, None, ()),
    (("only",), 1, 1, ()),
], ids=["default-whole-batch", "one-of-two", "none", "more-than-a-batch", "share",
        "half-of-a-whole-fleet-batch", "whole-fleet-batch", "fleet-of-one"])
def test_at_most_max_unavailable_of_a_batch_leave_the_route_table(
        hosts: tuple[str, ...], batch: int, max_unavailable: int | str | None,
        drained: tuple[str, ...]) -> None:
    spec = rolling(hosts, batch=batch, max_unavailable=max_unavailable)
    first = begin(spec)
    assert spec.rolling is not None and first.state.rolling is not None
    assert drained_hosts(spec.rolling, first.state.rolling) == drained
    serving = routed_hosts(spec, first.state)
    assert serving[STABLE] == tuple(h for h in hosts if h not in drained)
    # the old release runs on every host of the batch until the new one serves there
    assert first.state.rolling.batch == hosts[:batch]


@pytest.mark.parametrize(("batch", "max_unavailable", "fewest"), [
    (1, None, 3), (2, None, 2), (1, 0, 4), (2, 0, 4), (2, 1, 3), (3, "25%", 3),
], ids=lambda v: str(v))
def test_the_route_table_never_has_fewer_than_hosts_minus_max_unavailable(
        batch: int, max_unavailable: int | str | None, fewest: int) -> None:
    transitions = walk(rolling(batch=batch, max_unavailable=max_unavailable))
    assert transitions[-1].state.phase == P.SUCCEEDED
    tables = [a for a in actions_of(transitions) if isinstance(a, SetRoutes) and a.hosts]
    serving = [len({h for hosts in table.hosts.values() for h in hosts}) for table in tables]
    assert min(serving) == fewest, serving


def test_with_max_unavailable_0_a_batch_switches_then_the_old_release_stops() -> None:
    spec = rolling(batch=2, max_unavailable=0)
    first = begin(spec)
    assert [type(a).__name__ for a in first.actions] == ["StartInstances"]
    assert "batch 1/2: a, b keep serving v1 until v2 is ready there" in first.events
    assert not any("drained" in e for e in first.events)
    switched = advance(spec, stored(first.state), Observed(hosts_ready=("a", "b")),
                       now=T0 + 1)
    assert switched.actions[:2] == (
        SetRoutes({CANARY: 50, STABLE: 50}, hosts={STABLE: ("c", "d"), CANARY: ("a", "b")}),
        StopInstances(STABLE, hosts=("a", "b")))
    # the next batch starts beside the old release too: no route change before it is ready
    assert [type(a).__name__ for a in switched.actions[2:]] == ["StartInstances"]

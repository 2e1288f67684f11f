"""Observing one rollout: what the pure state machine needs to decide its next step."""

from __future__ import annotations

import asyncio
import logging
import time

from entrega.analysis.evaluate import evaluate_window, uses_feedback
from entrega.analysis.feedback import FeedbackCounts
from entrega.analysis.peers import peer_key
from entrega.analysis.providers import MeasureWindow, measure_external
from entrega.analysis.providers.builtin import snapshot
from entrega.controller.actions import ActionRunner
from entrega.controller.runtime import EnvironmentRuntime
from entrega.errors import EntregaError
from entrega.rollouts.fleet import running_hosts
from entrega.rollouts.model import (
    AnalysisStep,
    AnalysisVerdict,
    Observed,
    Phase,
    RolloutSpec,
    RolloutState,
)
from entrega.store.insights_repository import InsightsRepository
from entrega.store.models import Rollout
from entrega.store.repository import AnalysisRecord
from entrega.targets.base import Readiness, host_of

log = logging.getLogger("entrega.controller")
#: how long a host the new release is starting on must fail every observation (one every
#: 2 s) before it counts as down and ``max_failed`` may leave it out at once
HOST_DOWN_AFTER_S = 10.0


async def observe_rollout(actions: ActionRunner, rt: EnvironmentRuntime, row: Rollout,
                          spec: RolloutSpec, state: RolloutState, *, now: float) -> Observed:
    if state.phase == Phase.PENDING or state.phase.terminal:
        return Observed()
    if spec.rolling is not None and state.rolling is not None and state.stable is not None:
        return await _observe_rolling(actions, rt, row, spec, state, now=now)

    # Level-triggered: whatever phase we are in, the new release must be running (on a
    # fleet: on the hosts its rollout says).
    problem = ""
    hosts = state.fleet.hosts if spec.fleet is not None and state.fleet is not None else None
    try:
        if hosts != ():
            await actions.ensure_started(rt, state.canary, hosts)
    except EntregaError as exc:
        if not exc.temporary:
            raise
        # A host or runtime that does not answer now: not ready yet, and the progress
        # deadline (which needs this pass to go on) ends the wait, quoting it.
        problem = str(exc)
    error = rt.start_errors.get(state.canary)

    ready = False
    hosts_ready: tuple[str, ...] = ()
    host_failures: dict[str, str] = {}
    hosts_down: dict[str, str] = {}
    if hosts is not None:
        hosts_ready, host_failures = await _probe_hosts(actions, rt, state, error)
        hosts_down = _hosts_down(rt, state)
    elif state.phase == Phase.STARTING and not error and not problem:
        readiness = await rt.target.ready(release=actions.ref(state.canary))
        ready = readiness.ready
        error = readiness.failure  # a crash loop: waiting out the deadline would not help

    analysis = None
    progress = state.analysis
    if progress is not None and state.phase == Phase.PROGRESSING \
            and now >= progress.next_check_at:
        step = spec.steps[state.step_index]
        assert isinstance(step, AnalysisStep)
        analysis = await _judge(actions, rt, row, state, step, progress.window)

    verification = detail = None
    if state.phase == Phase.VERIFYING and state.verification == "running":
        result = actions.verifications.get(row.id)
        if result is None:
            actions.start_verification(rt, row, state.canary,
                                       on_preview=state.preview == state.canary)
        else:
            verification = "passed" if result.passed else "failed"
            detail = result.detail

    return Observed(canary_ready=ready, canary_error=error, canary_problem=problem,
                    analysis=analysis,
                    verification=verification, verification_detail=detail or "",
                    hosts_ready=hosts_ready, host_failures=host_failures,
                    hosts_down=hosts_down)


def _hosts_down(rt: EnvironmentRuntime, state: RolloutState) -> dict[str, str]:
    """The hosts that have failed every observation of the fleet for ``HOST_DOWN_AFTER_S``
    (down, not slow: one observation that times out on a busy host is not enough) and run
    none of the new release's instances, while it starts (the rollout core keeps those it
    waits for)."""
    if state.phase != Phase.STARTING:
        return {}
    unreachable = rt.target.host_errors()
    down_for = rt.target.hosts_down_for()
    alive = {host_of(i.instance) for i in rt.observed if i.alive and i.version == state.canary}
    return {host: f"no answer for {down_for[host]:.0f}s: {why}"
            for host, why in unreachable.items()
            if down_for.get(host, 0.0) >= HOST_DOWN_AFTER_S and host not in alive}


async def _probe_hosts(actions: ActionRunner, rt: EnvironmentRuntime, state: RolloutState,
                       error: str | None) -> tuple[tuple[str, ...], dict[str, str]]:
    """A fleet's canary or blue-green: the hosts waited for, each probed on its own (ready,
    or why not: a crash loop there); the hosts serving the new release that stopped
    answering at the last observation of the fleet (every 2 s: no host is asked here for
    it). A host that cannot be reached while it starts is not ready, so the progress
    deadline judges it, as in rolling."""
    progress = state.fleet
    assert progress is not None
    ready: list[str] = []
    failures: dict[str, str] = {}
    unreachable = rt.target.host_errors()
    alive = {host_of(i.instance) for i in rt.observed if i.alive and i.version == state.canary}
    for host in progress.serving:
        if host in unreachable and host not in alive:
            failures[host] = f"stopped answering: {unreachable[host]}"
    if state.phase != Phase.STARTING or error:
        return (), failures
    ref = actions.ref(state.canary)

    async def probe(host: str) -> Readiness | None:
        try:
            return await rt.target.ready(release=ref, hosts=(host,))
        except EntregaError as exc:
            log.warning("probing %s on %s: %s", state.canary, host, exc)
            return None

    # Each host's probe may ask its agent (a command over SSH): all at once, not in turn,
    # after the first, which starts the probes of every host (one look at the fleet).
    waited = [h for h in progress.hosts if h not in progress.serving]
    first = [await probe(waited[0])] if waited else []
    rest = await asyncio.gather(*map(probe, waited[1:]))
    for host, readiness in zip(waited, [*first, *rest], strict=True):
        if readiness is None:
            continue
        if readiness.ready:
            ready.append(host)
        elif readiness.failure:
            failures[host] = readiness.failure
    return tuple(ready), failures


async def _observe_rolling(actions: ActionRunner, rt: EnvironmentRuntime, row: Rollout,
                           spec: RolloutSpec, state: RolloutState, *, now: float) -> Observed:
    """Rolling: each release runs where the state says (level-triggered, so a restarted
    controller or a lost action is repaired), and the hosts waited on are probed one by
    one: the new release on the batch's hosts, or the old one on the hosts it is restored
    to. A host that cannot be reached is not ready, so the progress deadline judges it.
    Between batches, an analysis is judged as a canary's is."""
    progress = state.rolling
    assert progress is not None and state.stable is not None
    for version, hosts in running_hosts(spec, state).items():
        try:
            await actions.ensure_started(rt, version, hosts)
        except EntregaError as exc:
            log.warning("starting %s on %s: %s", version, ", ".join(hosts), exc)

    verification = detail = None
    if state.phase == Phase.VERIFYING and state.verification == "running":
        result = actions.verifications.get(row.id)
        if result is None:
            actions.start_verification(rt, row, state.canary, on_preview=False)
        else:
            verification = "passed" if result.passed else "failed"
            detail = result.detail

    waited, hosts = (state.stable, progress.done) if progress.restoring \
        else (state.canary, progress.batch)
    ready: list[str] = []
    failures: dict[str, str] = {}
    if state.phase == Phase.STARTING and hosts:
        if error := rt.start_errors.get(waited):
            failures = dict.fromkeys(hosts, error)
        else:
            ref = actions.ref(waited)
            for host in hosts:
                try:
                    readiness = await rt.target.ready(release=ref, hosts=(host,))
                except EntregaError as exc:
                    log.warning("probing %s on %s: %s", waited, host, exc)
                    continue
                if readiness.ready:
                    ready.append(host)
                elif readiness.failure:
                    failures[host] = readiness.failure
    analysis = None
    if state.analysis is not None and state.phase == Phase.PROGRESSING \
            and now >= state.analysis.next_check_at:
        assert spec.rolling is not None and spec.rolling.analysis is not None
        analysis = await _judge(actions, rt, row, state, spec.rolling.analysis,
                                state.analysis.window)
    down = _hosts_down(rt, state) if not progress.restoring else {}
    return Observed(hosts_ready=tuple(ready), host_failures=failures, analysis=analysis,
                    verification=verification, verification_detail=detail or "",
                    hosts_down=down)


async def _judge(actions: ActionRunner, rt: EnvironmentRuntime, row: Rollout,
                 state: RolloutState, step: AnalysisStep, window: int) -> AnalysisVerdict | None:
    run = actions.analysis_run(row.id, window)
    if run is None:  # the BeginAnalysis action was lost to a crash: start the window now
        await actions.begin_analysis(rt, row, window, list(step.metrics))
        return None
    try:
        latest = await snapshot(rt.router, samples=True)
    except EntregaError:
        return None  # no data is never a pass; the state machine simply waits
    configs = {name: rt.config.metric(name) for name in step.metrics}
    peers = {}
    if actions.peers is not None:
        for peer in {p for cfg in configs.values() if (p := cfg.peer(rt.name)) is not None}:
            if (snap := await actions.peers.latest(*peer)) is not None:
                peers[peer_key(*peer)] = snap
    measured = await measure_external(
        configs, app=row.app, canary=state.canary, stable=state.stable,
        window=MeasureWindow(started_at=run.started_at, ended_at=time.time()))
    ratings = (count_ratings(InsightsRepository(actions.repo.store), app=row.app,
                             environment=rt.name, canary=state.canary, stable=state.stable,
                             since=run.started_at)
               if uses_feedback(configs) else None)
    verdict, reason, metrics = evaluate_window(configs, baseline=run.baseline, latest=latest,
                                               canary=state.canary, stable=state.stable,
                                               measurements=measured, feedback=ratings,
                                               duration_s=max(0.0, time.time() - run.started_at),
                                               environment=rt.name, peers=peers)
    result = {"verdict": verdict, "reason": reason, "metrics": [m.to_dict() for m in metrics]}
    # Stored with the rollout's state the check leads to, in the same transaction.
    actions.checked(row.id, AnalysisRecord(run.id, verdict, result))
    return AnalysisVerdict(window=window, verdict=verdict, reason=reason,
                           metrics={m.metric: m.to_dict() for m in metrics})


def count_ratings(insights: InsightsRepository, *, app: str, environment: str, canary: str,
                  stable: str | None, since: float) -> FeedbackCounts:
    """The ratings users gave canary and stable in this environment since ``since`` (the
    analysis window's start): what the ``feedback`` metric judges."""
    versions = [canary] + ([stable] if stable else [])
    counted = insights.ratings_since(app, environment, versions, since=since)
    canary_ratings, canary_low = counted.get(canary, (0, 0))
    stable_ratings, stable_low = counted.get(stable, (0, 0)) if stable else (0, 0)
    return FeedbackCounts(canary_ratings, canary_low, stable_ratings, stable_low)

"""Rolling over hosts: the new release replaces the old one a batch of hosts at a time.

What Kamal and Ansible (``serial``, ``max_fail_percentage``) users expect, plus an
automatic restore. Hosts are taken in batches in the config's order. For each batch:

1. the batch's hosts leave the old release's route table (drained), at most
   ``max_unavailable`` of them (a whole batch by default), and none when no other host
   would be left to serve (a fleet of one host, or a batch of every host, must not go
   dark): the batch's other hosts keep serving the old release, which runs beside the new
   one until it is ready there (instances take free ports, so both fit on a host);
2. the new release starts on the batch's hosts only, and is probed as always (readiness,
   crash loop, the progress deadline);
3. the ready hosts join the new release's route table, the weights following the hosts'
   counts (4 of 10 hosts done: 40/60), and the old release stops on them;
4. hosts that failed (not ready before the deadline, crash loop, unreachable) are counted
   and given back to the old release. More than ``max_failed`` failed hosts in all stop
   the rollout: the old release is started again on the hosts already done, the route
   table goes back to it, then the new release stops everywhere (``rolled_back``).

Between batches: after the first batch (the canary batch), the environment's ``verify``
checks run on its address when configured; then, with ``analysis`` configured and the old
release still serving some hosts, the new release is judged against the old on live
traffic by the canary's judges (:mod:`entrega.rollouts.analysing`: the same verdicts,
limits and events as a canary's analysis step); then ``pause_between_batches_s``. A
failed verification or analysis restores the old release like a failed batch.

Everything the controller needs to keep the data plane as the store says (which hosts run
and serve which release) is computed from the state by :func:`running_hosts` and
:func:`routed_hosts`, so a controller restarted mid-batch repairs and resumes from the
stored state alone. ``step_index`` is the batch number.
"""

from __future__ import annotations

import math
from dataclasses import replace

from entrega.rollouts import common
from entrega.rollouts.analysing import AnalysisFailed, advance_analysis
from entrega.rollouts.model import (
    Action,
    Observed,
    Phase,
    RollingProgress,
    RollingSpec,
    RolloutSpec,
    RolloutState,
    RunVerification,
    SetRoutes,
    StartInstances,
    StopInstances,
    Transition,
)

# -- pure arithmetic of batches ---------------------------------------------------------------


def _share(value: str) -> float:
    return float(value.strip().rstrip("%")) / 100


def batch_size(batch: int | str, hosts: int) -> int:
    """Hosts per batch: a count, or a share of the fleet rounded up (25% of 10 is 3), at
    least one and at most the fleet."""
    size = math.ceil(hosts * _share(batch) - 1e-9) if isinstance(batch, str) else batch
    return max(1, min(size, hosts))


def failures_allowed(max_failed: int | str, hosts: int) -> int:
    """Failed hosts a rollout tolerates: a count, or a share of the fleet rounded down
    (Ansible's max_fail_percentage: 10% of 5 hosts tolerates none)."""
    if isinstance(max_failed, str):
        return math.floor(hosts * _share(max_failed) + 1e-9)
    return max_failed


def unavailable_allowed(max_unavailable: int | str | None, *, hosts: int, batch: int) -> int:
    """Hosts that may be out of serving at once: a count, or a share of the fleet rounded
    down (Kubernetes' maxUnavailable: 25% of 3 hosts is none, so every host keeps
    serving until its replacement is ready); a whole batch when not set."""
    if max_unavailable is None:
        return batch
    if isinstance(max_unavailable, str):
        return math.floor(hosts * _share(max_unavailable) + 1e-9)
    return max_unavailable


def batches(rolling: RollingSpec) -> tuple[tuple[str, ...], ...]:
    size = batch_size(rolling.batch, len(rolling.hosts))
    return tuple(rolling.hosts[i:i + size] for i in range(0, len(rolling.hosts), size))


# -- what runs and serves where -----------------------------------------------------------------


def _ordered(rolling: RollingSpec, hosts: set[str]) -> tuple[str, ...]:
    return tuple(h for h in rolling.hosts if h in hosts)


def drained_hosts(rolling: RollingSpec, progress: RollingProgress) -> tuple[str, ...]:
    """The batch's hosts out of the old release's table while the new one starts there:
    the first ``max_unavailable`` of them, and only when some host (of the old release or
    the new) still serves without them."""
    if not progress.batch or progress.restoring:
        return ()
    allowed = unavailable_allowed(rolling.max_unavailable, hosts=len(rolling.hosts),
                                  batch=batch_size(rolling.batch, len(rolling.hosts)))
    drained = progress.batch[:max(0, allowed)]
    return drained if set(rolling.hosts) - set(drained) else ()


def routed_hosts(spec: RolloutSpec, state: RolloutState) -> dict[str, tuple[str, ...]]:
    """Release -> the hosts whose instances take its traffic now."""
    rolling, progress = spec.rolling, state.rolling
    if rolling is None or progress is None or state.stable is None:
        return {}
    done = set(progress.done)
    old = set(rolling.hosts) - done - set(drained_hosts(rolling, progress))
    return {state.stable: _ordered(rolling, old), state.canary: _ordered(rolling, done)}


def running_hosts(spec: RolloutSpec, state: RolloutState) -> dict[str, tuple[str, ...]]:
    """Release -> the hosts where its instances must run now (the old release keeps
    running on the batch until the new one serves there: a restore needs no start)."""
    rolling, progress = spec.rolling, state.rolling
    if rolling is None or progress is None or state.stable is None:
        return {}
    done = set(progress.done)
    if progress.restoring:
        return {state.stable: rolling.hosts, state.canary: _ordered(rolling, done)}
    return {state.stable: _ordered(rolling, set(rolling.hosts) - done),
            state.canary: _ordered(rolling, done | set(progress.batch))}


def compute_weights(routed: dict[str, tuple[str, ...]], *, stable: str,
                    canary: str) -> dict[str, int]:
    """Weights that follow the hosts' counts (every host runs as many instances)."""
    new, old = len(routed.get(canary, ())), len(routed.get(stable, ()))
    if new + old == 0 or new == 0:
        return {stable: 100}
    share = round(100 * new / (new + old))
    return {canary: share, stable: 100 - share} if share < 100 else {canary: 100}


def _routes(spec: RolloutSpec, state: RolloutState) -> tuple[RolloutState, SetRoutes]:
    assert state.stable is not None
    routed = routed_hosts(spec, state)
    weights = compute_weights(routed, stable=state.stable, canary=state.canary)
    return replace(state, weights=weights), SetRoutes(weights, hosts=routed)


# -- the state machine ------------------------------------------------------------------------


def advance(spec: RolloutSpec, state: RolloutState, observed: Observed, *,
            now: float) -> Transition:
    rolling = spec.rolling
    assert rolling is not None and state.stable is not None  # launch and rollouts.advance
    progress = state.rolling or RollingProgress()

    if progress.restoring:
        return _restoring(spec, state, progress, observed, now)
    if state.abort_requested:
        return _restore(spec, state, now, "aborted by a user")
    if state.phase == Phase.PENDING:
        return _begin_batch(spec, replace(state, rolling=progress), now, [])
    if state.phase == Phase.STARTING:
        return _batch(spec, state, progress, observed, now)
    if state.phase == Phase.VERIFYING:
        result = common.await_verification(state, observed, now)
        if isinstance(result, Transition):
            if result.state.phase.terminal:  # the checks failed: restore, not a plain stop
                return _restore(spec, state, now, result.state.message)
            return result
        return _between_batches(spec, result, now, [result.message])
    if state.analysis is not None and state.phase in (Phase.PROGRESSING, Phase.PAUSED):
        return _analysing(spec, state, observed, now)
    if state.phase == Phase.PROGRESSING:
        due = progress.next_batch_at
        if due is not None and now < due and not state.promote_requested:
            return Transition(state, requeue_at=due)
        state = replace(state, promote_requested=False)
        return _begin_batch(spec, state, now, [])
    return Transition(state)


def _begin_batch(spec: RolloutSpec, state: RolloutState, now: float,
                 events: list[str]) -> Transition:
    rolling, progress = spec.rolling, state.rolling
    assert rolling is not None and progress is not None
    plan = batches(rolling)
    if state.step_index >= len(plan):
        return _finish(spec, state, now, events)
    batch = plan[state.step_index]
    progress = replace(progress, batch=batch, next_batch_at=None)
    number = f"batch {state.step_index + 1}/{len(plan)}"
    state = common.enter(replace(state, rolling=progress), Phase.STARTING, now,
                         f"{number}: starting {state.canary} on {', '.join(batch)}")
    state, routes = _routes(spec, state)
    events.append(state.message)
    actions: list[Action] = []
    drained = drained_hosts(rolling, progress)
    if drained:
        actions.append(routes)
        events.append(f"{number}: {', '.join(drained)} drained from {state.stable}")
    if kept := [h for h in batch if h not in drained]:
        events.append(f"{number}: {', '.join(kept)} keep serving {state.stable} until "
                      f"{state.canary} is ready there")
    actions.append(StartInstances(state.canary, hosts=batch))
    return Transition(state, tuple(actions), tuple(events), now + common.POLL_S)


def _batch(spec: RolloutSpec, state: RolloutState, progress: RollingProgress,
           observed: Observed, now: float) -> Transition:
    """The batch's hosts start the new release: wait until each is ready or has failed."""
    rolling = spec.rolling
    assert rolling is not None and state.stable is not None
    allowed = failures_allowed(rolling.max_failed, len(rolling.hosts))
    failures = {h: why for h, why in observed.host_failures.items() if h in progress.batch}
    ready = [h for h in progress.batch if h in observed.hosts_ready and h not in failures]
    late = now - state.phase_started_at > spec.progress_deadline_s
    if late:
        for host in progress.batch:
            if host not in ready and host not in failures:
                failures[host] = f"not ready within {spec.progress_deadline_s:g}s"
    # A host that went down is not waited for while the budget can take it (it may come
    # back, so beyond the budget the deadline judges it, as above).
    budget = allowed - len(progress.failed) - len(failures)
    for host, why in observed.hosts_down.items():
        if budget > 0 and host in progress.batch and host not in ready \
                and host not in failures:
            failures[host] = f"went down while {state.canary} started: {why}"
            budget -= 1
    failed = (*progress.failed, *(h for h in progress.batch if h in failures))
    if len(failed) > allowed:
        named = "; ".join(f"{h}: {why}" for h, why in failures.items())
        return _restore(spec, state, now,
                        f"{len(failed)} host(s) failed ({', '.join(failed)}), more than "
                        f"max_failed {allowed}: {named}")
    if len(ready) + len(failures) < len(progress.batch):
        return Transition(state, requeue_at=now + common.POLL_S)

    number = f"batch {state.step_index + 1}/{len(batches(rolling))}"
    stable = state.stable
    progress = replace(progress, done=_ordered(rolling, {*progress.done, *ready}),
                       failed=failed, batch=())
    state, routes = _routes(spec, replace(state, rolling=progress))
    actions: list[Action] = [routes]
    events = [f"{number}: {', '.join(ready) or 'no host'} now serve {state.canary} "
              f"({state.weights.get(state.canary, 0)}% of traffic)"]
    if ready:
        actions.append(StopInstances(stable, hosts=tuple(ready)))
        events.append(f"{number}: stopping {stable} on {', '.join(ready)}")
    if failures:
        gone = tuple(failures)
        actions.append(StopInstances(state.canary, hosts=gone))
        events.append(f"{number}: {len(failures)} host(s) failed and stay on {state.stable} "
                      f"({len(failed)}/{allowed} allowed): "
                      + "; ".join(f"{h}: {why}" for h, why in failures.items()))
    state = replace(state, step_index=state.step_index + 1)
    if spec.verify and state.step_index == 1 and ready:
        state = replace(common.enter(state, Phase.VERIFYING, now,
                                     f"verifying {state.canary} after its first batch"),
                        verification="running")
        actions.append(RunVerification(state.canary, on_preview=False))
        events.append(state.message)
        return Transition(state, tuple(actions), tuple(events), now + common.POLL_S)
    done = _between_batches(spec, state, now, events)
    return Transition(done.state, (*actions, *done.actions), done.events, done.requeue_at)


def _between_batches(spec: RolloutSpec, state: RolloutState, now: float,
                     events: list[str], *, analysed: bool = False) -> Transition:
    rolling, progress = spec.rolling, state.rolling
    assert rolling is not None and progress is not None
    if not analysed and _analysis_due(spec, state):
        assert rolling.analysis is not None
        state = common.enter(state, Phase.PROGRESSING, now)
        begun = advance_analysis(rolling.analysis, state, Observed(), now, _label(spec, state))
        assert isinstance(begun, Transition)  # a first pass only begins the window
        return Transition(begun.state, begun.actions, (*events, *begun.events),
                          begun.requeue_at)
    if state.step_index >= len(batches(rolling)) or rolling.pause_between_batches_s <= 0:
        return _begin_batch(spec, state, now, events)
    due = now + rolling.pause_between_batches_s
    state = common.enter(replace(state, rolling=replace(progress, next_batch_at=due)),
                         Phase.PROGRESSING, now,
                         f"pause {rolling.pause_between_batches_s:g}s before batch "
                         f"{state.step_index + 1}")
    return Transition(state, (), (*events, state.message), requeue_at=due)


def _label(spec: RolloutSpec, state: RolloutState) -> str:
    """The batch just routed (``step_index`` counts the batches done)."""
    assert spec.rolling is not None
    return f"batch {state.step_index}/{len(batches(spec.rolling))}"


def _analysis_due(spec: RolloutSpec, state: RolloutState) -> bool:
    """An analysis is configured and has both sides to compare: the new release serves
    some hosts and the old one others (after the last batch the new one has them all)."""
    if spec.rolling is None or spec.rolling.analysis is None or state.stable is None:
        return False
    routed = routed_hosts(spec, state)
    return bool(routed.get(state.canary)) and bool(routed.get(state.stable))


def _analysing(spec: RolloutSpec, state: RolloutState, observed: Observed,
               now: float) -> Transition:
    """The batch serves its share: the canary's judges compare it with the old release on
    live traffic. A failure restores the old release like a failed batch."""
    rolling = spec.rolling
    assert rolling is not None and rolling.analysis is not None
    label = _label(spec, state)
    result = advance_analysis(rolling.analysis, state, observed, now, label,
                              index=state.step_index - 1)
    if isinstance(result, Transition):
        return result
    if isinstance(result, AnalysisFailed):
        return _restore(spec, result.state, now, f"{label}: {result.reason}")
    state = replace(result.state, analysis=None, promote_requested=False)
    return _between_batches(spec, state, now, list(result.events), analysed=True)


def _finish(spec: RolloutSpec, state: RolloutState, now: float,
            events: list[str]) -> Transition:
    progress = state.rolling
    assert progress is not None
    if not progress.done:
        return _restore(spec, state, now, "no host could run the new release")
    done = common.succeed(replace(state, rolling=replace(progress, batch=())), now)
    more = [f"{', '.join(progress.failed)} failed their batch (within max_failed) and "
            f"will run {state.canary} like every host"] if progress.failed else []
    return Transition(done.state, done.actions, (*events, *more, *done.events))


def _restore(spec: RolloutSpec, state: RolloutState, now: float, reason: str) -> Transition:
    """Give every host back to the old release: start it again where it was stopped,
    then (in :func:`_restoring`) route back and stop the new release."""
    rolling, progress = spec.rolling, state.rolling or RollingProgress()
    assert rolling is not None and state.stable is not None
    stable, batch = state.stable, progress.batch
    progress = replace(progress, restoring=True, batch=(), next_batch_at=None)
    state = common.enter(replace(state, rolling=progress, verification=None, analysis=None),
                         Phase.STARTING, now, reason)
    state, routes = _routes(spec, state)
    actions: list[Action] = [routes]
    if batch:
        actions.append(StopInstances(state.canary, hosts=batch))
    if progress.done:
        actions.append(StartInstances(stable, hosts=progress.done))
    events = [f"restoring {stable}: {reason}"]
    if progress.done:
        events.append(f"starting {stable} again on {', '.join(progress.done)}")
        return Transition(state, tuple(actions), tuple(events), now + common.POLL_S)
    ended = _end_restore(state, now)
    return Transition(ended.state, (*actions, *ended.actions), (*events, *ended.events))


def _restoring(spec: RolloutSpec, state: RolloutState, progress: RollingProgress,
               observed: Observed, now: float) -> Transition:
    """The old release starts again on the done hosts; once they are ready (or the
    deadline passed: a host that cannot run the old release either is named) traffic goes
    back to it."""
    waiting = [h for h in progress.done
               if h not in observed.hosts_ready and h not in observed.host_failures]
    late = now - state.phase_started_at > spec.progress_deadline_s
    if waiting and not late:
        return Transition(state, requeue_at=now + common.POLL_S)
    assert state.stable is not None
    unready = [h for h in progress.done if h not in observed.hosts_ready]
    if unready:
        state = replace(state, message=f"{state.message}; {state.stable} not ready again "
                                       f"on {', '.join(unready)}")
    return _end_restore(state, now)


def _end_restore(state: RolloutState, now: float) -> Transition:
    assert state.stable is not None and state.rolling is not None
    hosts = state.rolling.done
    new = replace(common.enter(state, Phase.ROLLED_BACK, now, state.message),
                  weights={state.stable: 100},
                  rolling=replace(state.rolling, restoring=False))
    restored = f" (restored on {', '.join(hosts)})" if hosts else ""
    return Transition(new, (SetRoutes({state.stable: 100}), StopInstances(state.canary)),
                      (f"traffic 100% on {state.stable}{restored}; stopping {state.canary}",))

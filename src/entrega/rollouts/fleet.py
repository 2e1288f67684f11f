"""Canary and blue-green over a fleet's hosts: where the new release runs and serves, and
how many hosts may fail before the rollout does.

The strategies themselves do not change on a fleet; this module wraps them
(:func:`advance`) and keeps :class:`~entrega.rollouts.model.FleetProgress` beside their
state:

- ``canary_hosts: N`` starts the new release on the first N hosts (in the config's order)
  only; a host that fails while they start is replaced by the next one, so the canary
  runs on the first N hosts *that can run it*. The canary's weight goes to their
  instances. Before the canary takes all traffic (a ``weight: 100`` step, the end of the
  steps, a full promote) the release is started on every other host and waited for
  (phase ``starting`` again), so no moment has fewer instances serving than before.
- ``max_failed``: a host that cannot run the new release (crash loop there, not ready by
  ``progress_deadline_s``), that goes down while it starts, or that stops answering once
  it serves it is *left out*: named in the events and the rollout's state, its new
  instances stopped and out of the route table, and the rollout goes on with the
  others. One host more than the budget fails the rollout as without a fleet: never
  exposed, it stops; exposed, traffic goes back to stable first. The budget is 0 by
  default, as in rolling and in Kamal (any host's failure stops a deploy): a host that
  cannot run the release more often means the release is wrong than the host. A host
  that goes down while the release starts is left out at once only while the budget
  allows it; beyond the budget it is waited for until the deadline, as it may come back
  (a reboot), and the rollout fails only then.

Everything the controller needs to keep the data plane as the store says is computed
from the state by :func:`running_hosts` and :func:`routed_hosts` (which also answer for
rolling), so a controller restarted mid-rollout repairs and resumes from the stored
state alone. A left-out host that answers again gets the environment's stable release
from the controller's repair, not from the rollout.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from entrega.rollouts import common, rolling
from entrega.rollouts.model import (
    Action,
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
)

Advance = Callable[..., Transition]


def canary_host_count(canary_hosts: int | str | None, hosts: int) -> int:
    """Hosts the canary starts on: every host (None), a count, or a share of the fleet
    rounded up (25% of 10 is 3); at least one, at most the fleet."""
    if canary_hosts is None:
        return hosts
    return rolling.batch_size(canary_hosts, hosts)


def failures_allowed(fleet: FleetSpec) -> int:
    """Hosts that may be left out: a count, or a share of the fleet rounded down."""
    return rolling.failures_allowed(fleet.max_failed, len(fleet.hosts))


# -- what runs and serves where -----------------------------------------------------------------


def running_hosts(spec: RolloutSpec, state: RolloutState) -> dict[str, tuple[str, ...]]:
    """Release -> the hosts where its instances must run now (absent: every host)."""
    if spec.rolling is not None:
        return rolling.running_hosts(spec, state)
    if spec.fleet is None or state.fleet is None:
        return {}
    return {state.canary: state.fleet.hosts}


def routed_hosts(spec: RolloutSpec, state: RolloutState) -> dict[str, tuple[str, ...]]:
    """Release -> the hosts whose instances take its traffic now (absent: every host)."""
    if spec.rolling is not None:
        return rolling.routed_hosts(spec, state)
    if spec.fleet is None or state.fleet is None:
        return {}
    return {state.canary: state.fleet.serving}


def _first(fleet: FleetSpec, count: int, *, besides: set[str]) -> tuple[str, ...]:
    return tuple(h for h in fleet.hosts if h not in besides)[:count]


# -- the wrapper ----------------------------------------------------------------------------


def advance(spec: RolloutSpec, state: RolloutState, observed: Observed, *, now: float,
            strategy: Advance) -> Transition:
    """``strategy``'s transition, on the hosts the fleet progress says; hosts that failed
    are left out first (or fail the rollout beyond the budget)."""
    fleet = spec.fleet
    if fleet is None:
        return strategy(spec, state, observed, now=now)
    if state.fleet is None:
        # A first release has nothing to be a canary next to: it starts everywhere.
        count = canary_host_count(fleet.canary_hosts, len(fleet.hosts)) if state.stable \
            else len(fleet.hosts)
        state = replace(state, fleet=FleetProgress(hosts=fleet.hosts[:count]))
    actions: list[Action] = []
    events: list[str] = []
    if state.phase != Phase.PENDING:
        left = _leave_out(spec, fleet, state, observed, now)
        if isinstance(left, Transition):
            return _placed(left)
        state, actions, events = left
        observed = _readiness(state, observed)
        if observed.canary_ready and state.phase == Phase.STARTING:
            assert state.fleet is not None
            # Ready everywhere it was waited for: those hosts serve from the first route
            # change the strategy makes now.
            state = replace(state, fleet=replace(state.fleet, serving=state.fleet.hosts))
    moved = _placed(strategy(spec, state, observed, now=now))
    return Transition(moved.state, (*actions, *moved.actions), (*events, *moved.events),
                      moved.requeue_at)


def _readiness(state: RolloutState, observed: Observed) -> Observed:
    """The strategy's ``canary_ready``: every host waited for is ready (and one runs it)."""
    progress = state.fleet
    assert progress is not None
    waited = [h for h in progress.hosts if h not in progress.serving]
    ready = bool(progress.hosts) and all(h in observed.hosts_ready for h in waited)
    return replace(observed, canary_ready=ready)


def _failures(spec: RolloutSpec, state: RolloutState, observed: Observed,
              now: float) -> dict[str, str]:
    """Hosts of the new release that failed this pass, with why."""
    progress = state.fleet
    assert progress is not None
    found = {h: why for h, why in observed.host_failures.items()
             if h in progress.hosts and h not in progress.failed}
    if state.phase == Phase.STARTING \
            and now - state.phase_started_at > spec.progress_deadline_s:
        for host in progress.hosts:
            if host not in progress.serving and host not in observed.hosts_ready \
                    and host not in found:
                found[host] = f"not ready within {spec.progress_deadline_s:g}s"
    if state.phase == Phase.STARTING and spec.fleet is not None:
        budget = failures_allowed(spec.fleet) - len(progress.failed) - len(found)
        for host, why in observed.hosts_down.items():
            if budget > 0 and host in progress.hosts and host not in progress.serving \
                    and host not in found and host not in progress.failed:
                found[host] = f"went down while {state.canary} started: {why}"
                budget -= 1
    return found


def _leave_out(spec: RolloutSpec, fleet: FleetSpec, state: RolloutState, observed: Observed,
               now: float) -> Transition | tuple[RolloutState, list[Action], list[str]]:
    """Leave this pass's failed hosts out (a Transition when that fails the rollout)."""
    progress = state.fleet
    assert progress is not None
    found = _failures(spec, state, observed, now)
    if not found:
        return state, [], []
    failed = {**progress.failed, **found}
    allowed = failures_allowed(fleet)
    hosts = tuple(h for h in progress.hosts if h not in found)
    serving = tuple(h for h in progress.serving if h not in found)
    if state.phase == Phase.STARTING and not progress.serving:
        # Still starting: the next hosts in order stand in for the failed ones.
        want = canary_host_count(fleet.canary_hosts, len(fleet.hosts)) \
            if state.stable else len(fleet.hosts)
        hosts = (*hosts, *_first(fleet, want - len(hosts), besides={*hosts, *failed}))
        hosts = tuple(h for h in fleet.hosts if h in hosts)
    state = replace(state, fleet=replace(progress, hosts=hosts, serving=serving,
                                         failed=failed))
    if len(failed) > allowed or not hosts:
        return _fail(spec, state, observed, found, allowed, now,
                     exposed=bool(progress.serving))
    said = "; ".join(f"{h}: {why}" for h, why in found.items())
    events = [f"{', '.join(found)} left out of {state.canary} ({len(failed)}/{allowed} "
              f"host(s) allowed by max_failed): {said}"]
    actions: list[Action] = [StopInstances(state.canary, hosts=tuple(found))]
    if set(found) & set(progress.serving):
        actions.insert(0, SetRoutes(dict(state.weights), preview=state.preview,
                                    cohort=state.cohort, hosts={state.canary: serving}))
    new_hosts = tuple(h for h in hosts if h not in progress.hosts)
    state = replace(state, message=events[0])
    if new_hosts:
        actions.append(StartInstances(state.canary, hosts=hosts))
        events.append(f"starting {state.canary} on {', '.join(new_hosts)} instead")
        # The hosts standing in get the whole progress deadline from now.
        state = common.enter(state, Phase.STARTING, now)
    return state, actions, events


def _fail(spec: RolloutSpec, state: RolloutState, observed: Observed, found: dict[str, str],
          allowed: int, now: float, *, exposed: bool) -> Transition:
    """More hosts failed than the budget (or none is left): the rollout fails as on one
    machine, naming the hosts."""
    assert state.fleet is not None
    failed = state.fleet.failed
    # A crash loop's words name the instance (``instance web-1/0 ...``) and so its host.
    said = "; ".join(why if f"{h}/" in why else f"{h}: {why}" for h, why in found.items())
    budget = f" ({len(failed)} host(s) failed: {', '.join(failed)}; max_failed is " \
             f"{allowed})" if allowed or len(failed) > 1 else ""
    if exposed:
        return common.rollback(state, now, f"{len(failed)} host(s) failed "
                                           f"({', '.join(failed)}), more than max_failed "
                                           f"{allowed}: {said}")
    late = all(why.startswith("not ready within") for why in found.values())
    if late:
        problem = f" ({observed.canary_problem})" if observed.canary_problem else ""
        return common.fail(state, now, f"{state.canary} was not ready within "
                                       f"{spec.progress_deadline_s:g}s: "
                                       f"{', '.join(found)} not ready{problem}{budget}")
    return common.fail(state, now, f"{state.canary} cannot run: {said}{budget}")


def _placed(transition: Transition) -> Transition:
    """The strategy's actions, on the fleet's hosts: a route change sends the new release's
    traffic to the hosts serving it, a start starts it where it runs."""
    state = transition.state
    progress = state.fleet
    if progress is None:
        return transition
    actions: list[Action] = []
    for action in transition.actions:
        if isinstance(action, SetRoutes) and not action.hosts:
            action = replace(action, hosts={state.canary: progress.serving})
        elif isinstance(action, StartInstances) and action.release == state.canary \
                and action.hosts is None:
            action = replace(action, hosts=progress.hosts)
        actions.append(action)
    return replace(transition, actions=tuple(actions))


# -- before all traffic ------------------------------------------------------------------------


def widen(spec: RolloutSpec, state: RolloutState, now: float) -> Transition | None:
    """Before the canary takes all traffic: start it on the fleet's other hosts and wait
    for them (None when it runs on every host left already). The route table stays as it
    is meanwhile; the step that wanted all traffic runs once they are ready."""
    fleet, progress = spec.fleet, state.fleet
    if fleet is None or progress is None:
        return None
    others = tuple(h for h in fleet.hosts if h not in progress.hosts and h not in progress.failed)
    if not others:
        return None
    hosts = tuple(h for h in fleet.hosts if h in progress.hosts or h in others)
    state = common.enter(replace(state, fleet=replace(progress, hosts=hosts)), Phase.STARTING,
                         now, f"starting {state.canary} on {', '.join(others)} before it "
                              "takes all traffic")
    return Transition(state, (StartInstances(state.canary, hosts=hosts),), (state.message,),
                      now + common.POLL_S)


def extend(done: Transition, actions: list[Action], events: list[str]) -> Transition:
    """``done`` after the actions and events a pass gathered before it."""
    return Transition(done.state, (*actions, *done.actions), (*events, *done.events),
                      done.requeue_at)


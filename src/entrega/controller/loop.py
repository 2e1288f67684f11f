"""The reconcile loop: one asyncio task drives every rollout of the app.

Each pass, per environment:
1. the active rollout (if any) is observed, advanced by the pure state machine, its new
   state and events committed, then its actions applied in order (the first that fails
   ends them: a rollback never stops the canary while the table still sends it traffic).
   One exception: the route change of the transition to ``succeeded`` is applied first,
   so the store never says succeeded while the routers still send the old table;
2. the environment is repaired toward what the store says: the releases it must run are
   started (adopted after a restart), the router's table matches the desired weights,
   instances of releases nobody needs any more are stopped, restarts are recorded.

After a (re)start the order is reversed once per environment: the data plane is repaired
to the stored state *before* anything observes it. A crash between committing a
transition and applying its action (say ``verifying`` committed, the preview route not
yet applied) otherwise has the restarted controller judge a data plane that lags the
store: a verification against an empty preview listener, an analysis baseline taken
before the canary's weight, would roll a good release back. Until that first repair
succeeds, the environment's rollout waits (it is retried every pass).

The loop never sleeps inside a step: it waits until the earliest ``requeue_at``, a
command (``wake``), or the repair interval.

Reconcile lag is the time from a rollout being due (the ``requeue_at`` its last pass
returned: a pause's end, an analysis check, a step that may advance; a command's "now")
to the pass that reaches it. A rollout is not due before its environment's last pass
has ended: a pass that starts instances waits for them and then repairs the routes to
them, and that time is the step's own work, not the loop's lag (without that rule, an
app's slow start would read as the controller falling behind). The loop knows both
ends, so it reports each one to ``on_lag`` when set (``bench/scale.py`` and the
many-apps test read it): the one observation point, no timing of its own.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from entrega.config import Config
from entrega.configdiff import (
    diff_configs,
    metrics_in_use_problem,
    running_config,
)
from entrega.controller.actions import ActionRunner
from entrega.controller.batched import BatchedWrites
from entrega.controller.launch import cohort_rule
from entrega.controller.notify import Notifier
from entrega.controller.observe import observe_rollout
from entrega.controller.peers import PeerLookup, PeerWatch
from entrega.controller.pipeline import after_success, start_next
from entrega.controller.reload import Reload
from entrega.controller.restarts import RouterRestartLog, record_adoption, router_answers
from entrega.controller.retention import prune
from entrega.controller.router_change import RouterChanges
from entrega.controller.runtime import EnvironmentRuntime, build_runtime
from entrega.controller.writeback import WriteBack
from entrega.errors import ConfigError, EntregaError
from entrega.insights.collector import MetricsCollector
from entrega.releases.artifacts import ArtifactStore
from entrega.rollouts import advance
from entrega.rollouts.analysing import only_bookkeeping
from entrega.rollouts.fleet import routed_hosts, running_hosts
from entrega.rollouts.model import (
    Action,
    AnalysisStep,
    Phase,
    RolloutSpec,
    RolloutState,
    SetRoutes,
    Transition,
    spec_from_dict,
    state_from_dict,
    state_to_dict,
)
from entrega.store.insights_repository import InsightsRepository
from entrega.store.models import DeployRequest, Rollout
from entrega.store.repository import Repository
from entrega.vocabulary import FINAL_EVENT, EventKind
from entrega.waiting import stop_task, wait_event

log = logging.getLogger("entrega.controller")

#: How often an environment is compared with the store even when nothing is due. One
#: second bounds how long a lost action (crash, router restart) stays unrepaired.
REPAIR_INTERVAL_S = 1.0
#: Instances are observed (restarts, strays) this often; it reads files of every instance.
OBSERVE_INTERVAL_S = 2.0

#: An environment is read from the store at least this often even when nothing woke the
#: loop (everything that writes it wakes the loop: this bounds the cost of one that
#: would not).
STORE_READ_INTERVAL_S = 5.0
#: ... or once it was taken from the last read this many passes (a loop that lags passes
#: each environment less often than every second: with the time limit alone, each late
#: pass would read, and the reads make more lag), never longer than MAX_UNREAD_S.
READ_EVERY_PASSES = 5
MAX_UNREAD_S = 30.0


class _Unread:
    """The current release was not read from the store (a rollout in progress needs none)."""


UNREAD = _Unread()


@dataclass(frozen=True)
class _Repaired:
    """What a repair did: whether it got there, and the current release it used."""

    done: bool
    current: str | None | _Unread

    def __bool__(self) -> bool:
        return self.done


@dataclass(frozen=True)
class _LastRead:
    """An environment as its last pass read it from the store: when, its rollout in
    progress (the row the pass keeps current) and, without one, its current release."""

    at: float
    rollout: Rollout | None
    current: str | None | _Unread
    passes: int = 0  #: passes that took the environment from this read
    #: how long it may be taken from this read whatever the passes: drawn at the read,
    #: from four fifths of STORE_READ_INTERVAL_S to all of it, so that environments read
    #: together (a start, a wake) are not all read together again every interval
    fresh_for: float = STORE_READ_INTERVAL_S


@dataclass(frozen=True)
class _AppRead:
    """Every environment of the app as one read saw it: a pass that must read one
    environment from the store reads them all, in three queries at most (not three per
    environment), and each of them takes its rollout from it."""

    wakes: int  #: ``Controller._wakes`` at the read: a wake since makes it stale
    rollouts: dict[str, Rollout]  #: environment -> its rollout in progress
    #: environments with none: their waiting requests and their current release
    waiting: dict[str, list[DeployRequest]]
    current: dict[str, str | None]


def _may_reuse(last: _LastRead, now: float) -> bool:
    """An environment's pass may take it from ``last`` instead of the store."""
    age = now - last.at
    return age < last.fresh_for or (last.passes < READ_EVERY_PASSES and age < MAX_UNREAD_S)


class Controller:
    def __init__(self, config: Config, repo: Repository, artifacts: ArtifactStore, *,
                 clock: Callable[[], float] = time.time,
                 batch: BatchedWrites | None = None) -> None:
        self.config = config
        self.repo = repo
        self.clock = clock
        self.runtimes: dict[str, EnvironmentRuntime] = {
            env.name: build_runtime(config, env) for env in config.environments}
        self.locks = {name: asyncio.Lock() for name in self.runtimes}
        self.artifacts = artifacts
        self.actions = ActionRunner(config.app, repo, artifacts, on_result=self.wake,
                                    inherit_env=tuple(config.run.inherit_env))
        self.notifier = Notifier(config, repo)
        #: other apps' routers this app's metrics name (``app:``): see ``peers.py``
        self.peer_watch = PeerWatch(config, clock=clock)
        self.actions.peers = self.peer_watch
        self.router_restarts = RouterRestartLog(repo, config.app)
        #: the writes that may wait a moment (batched.py): the server's, shared by its
        #: apps, or this controller's own, written at the end of each pass
        self.batch = batch or BatchedWrites(repo)
        self.collector = MetricsCollector(config.app, InsightsRepository(repo.store),
                                          interval_s=config.insights.sample_interval_s,
                                          write=self.batch.samples)
        self._wake = asyncio.Event()
        #: environment -> what its last pass read from the store (reconcile_once)
        self._last_read: dict[str, _LastRead] = {}
        #: wake() calls so far: a pass that saw one keeps nothing of what it read
        self._wakes = 0
        #: this pass reads every environment from the store (reconcile_once)
        self._read_all = True
        #: what this pass read of every environment at its start (None: nothing)
        self._app_read: _AppRead | None = None
        self._due: dict[int, float] = {}
        #: rollout id -> its spec, parsed once (a rollout's spec never changes)
        self._specs: dict[int, RolloutSpec] = {}
        #: checks that moved only their bookkeeping, kept a few seconds (writeback.py)
        self.writeback = WriteBack(clock)
        self._last_observe: dict[str, float] = {}
        #: environments whose data plane was repaired to the store since this start
        self._repaired: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self.passes = 0
        #: called with the lag (s) of every pass over a rollout that was due (module
        #: docstring); None: not measured. Called on the loop: it must return at once.
        self.on_lag: Callable[[float], None] | None = None
        #: router changes waiting for an idle environment (router_change.py)
        self.router_changes = RouterChanges(self, repo, clock)

    @property
    def may_act(self) -> Callable[[], bool]:
        """False while this server does not lead the servers sharing its store: no pass
        runs, and each data plane call checks it again (plane/leader.py)."""
        return self.actions.may_act

    @may_act.setter
    def may_act(self, leads: Callable[[], bool]) -> None:
        self.actions.may_act = leads
        self.notifier.may_act = leads

    @property
    def peers(self) -> PeerLookup | None:
        """Finds another app's router (the control plane sets it; None: a lone app)."""
        return self.peer_watch.lookup

    @peers.setter
    def peers(self, lookup: PeerLookup | None) -> None:
        self.peer_watch.lookup = lookup

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Adopt the running data plane and instances, then start the loop."""
        self.repo.sync_app(self.config.app, [e.name for e in self.config.environments])
        for rt in self.runtimes.values():
            router_adopted = await router_answers(rt.router)
            if router_adopted:
                await self.router_changes.adopt_as_it_runs(rt)
            await rt.router.ensure_running()
            instances = await self.actions.adopt(rt)
            record_adoption(self.repo, self.config.app, rt, router_adopted=router_adopted,
                            instances=instances)
        self.notifier.start()
        self._task = asyncio.create_task(self._run(), name="entrega-reconcile")

    @property
    def running(self) -> bool:
        """The loop is started and has not ended."""
        return self._task is not None and not self._task.done()

    async def stop(self) -> None:
        """Stop the loop; routers and instances keep running (the data plane outlives us)."""
        await stop_task(self._task)
        self._write_kept()
        await self.notifier.stop()
        await self.actions.cancel_background()
        await self.router_changes.wait_for_retiring()
        for rt in self.runtimes.values():
            await rt.target.close()
            await rt.router.close()

    def _write_kept(self) -> None:
        """A stopping controller writes the checks it kept (writeback.py), each only if
        nobody wrote its rollout since; a server that does not lead any more writes
        nothing (its successor has checked again already)."""
        if self.may_act():
            self.batch.flush()
        for kept in self.writeback.unwritten():
            if not self.may_act():
                return
            try:
                self.repo.save_transition(
                    kept.rollout_id, state=kept.state, phase=kept.state["phase"], events=[],
                    actor="controller", analysis=self.actions.take_verdict(kept.rollout_id),
                    if_updated_at=kept.updated_at)
            except EntregaError as exc:  # the store is gone: a crash would lose as much
                log.warning("writing the last analysis checks: %s", exc)
                return

    def wake(self) -> None:
        """Pass again at once, reading every environment from the store again: whatever
        writes a rollout, a request or a current release of this app calls it (see
        ``reconcile_once``)."""
        self._last_read.clear()
        self._wakes += 1
        self._wake.set()

    async def _run(self) -> None:
        while True:
            # Cleared before the pass, not after: a wake() during the pass (a command, a
            # finished verification) must cause another pass, not be lost.
            self._wake.clear()
            try:
                await self.reconcile_once(read_all=False)
            except Exception:  # noqa: BLE001 - the loop must survive anything
                log.exception("reconcile pass failed")
            self.batch.flush_if_due()
            now = self.clock()
            next_at = min([now + REPAIR_INTERVAL_S, *self._due.values()])
            await wait_event(self._wake, timeout_s=next_at - now)

    # -- one pass --------------------------------------------------------------------------

    async def reconcile_once(self, *, read_all: bool = True) -> None:
        """One pass over every environment. ``read_all=False`` (the loop's own passes):
        an environment is taken from what its last pass read, not read from the store
        again, as long as nothing called :meth:`wake` since (everything that writes this
        app's rollouts, requests or current releases does, and that drops what was
        read), at most ``STORE_READ_INTERVAL_S`` later (or ``READ_EVERY_PASSES`` passes,
        for a loop that lags). Its rollout, if due, is then advanced from the row the
        loop keeps current itself; if not due, or with none, the environment is only
        repaired. A thousand environments in one server would otherwise ask the store a
        thousand times a second what it already knows (``bench/scale.py``). When one
        environment must be read, the pass reads every environment of the app with one
        query (``_AppRead``): their reads fall due together from then on."""
        self.passes += 1
        self._read_all = read_all
        now = self.clock()
        self._app_read = None
        if read_all or not all(self._may_take_last_read(name, now) for name in self.runtimes):
            self._app_read = self._read_app()
        for name, rt in self.runtimes.items():
            # Environments are independent: a fault in one (a bug, a store hiccup) must
            # not keep the others from their pass; it is retried with the next.
            try:
                await self._reconcile_environment(name, rt)
            except Exception:  # noqa: BLE001 - logged with its stack, retried next pass
                log.exception("reconcile pass of %s failed", name)
        if self.peer_watch.watched:
            await self.peer_watch.sample(now=self.clock())
        try:
            await self.collector.maybe_collect(self.runtimes, now=self.clock())
        except EntregaError as exc:  # a router down now is repaired next pass
            log.warning("collecting release metrics: %s", exc)
        self.notifier.wake()

    def _may_take_last_read(self, name: str, now: float) -> bool:
        last = self._last_read.get(name)
        return last is not None and name in self._repaired and _may_reuse(last, now)

    def _read_app(self) -> _AppRead:
        app, wakes = self.config.app, self._wakes
        rollouts = self.repo.active_rollouts_of(app)
        waiting: dict[str, list[DeployRequest]] = {}
        current: dict[str, str | None] = {}
        if any(name not in rollouts for name in self.runtimes):
            for request in self.repo.waiting_requests(app):
                waiting.setdefault(request.environment, []).append(request)
            current = {e.name: e.current_version for e in self.repo.environments(app)}
        return _AppRead(wakes, rollouts, waiting, current)

    async def _reconcile_environment(self, name: str, rt: EnvironmentRuntime) -> None:
        async with self.locks[name]:
            if not self.may_act():
                return  # a leader that woke from a pause: it steps down, it acts no more
            now, wakes = self.clock(), self._wakes
            last = self._last_read.get(name)
            read = self._app_read if self._app_read and self._app_read.wakes == wakes else None
            known = read is None and not self._read_all and self._may_take_last_read(name, now)
            current: str | None | _Unread = UNREAD
            if known and last is not None:
                if last.rollout is None or self._due.get(last.rollout.id, 0.0) > now:
                    # a pass all the same: an idle environment is read every five
                    self._last_read[name] = replace(last, passes=last.passes + 1)
                    await self._repair(rt, last.rollout, current=last.current)
                    if last.rollout is None:
                        await self.router_changes.maybe_apply(rt)
                    return
                rollout: Rollout | None = last.rollout
                read_at, passes, fresh_for = last.at, last.passes + 1, last.fresh_for
            else:
                rollout = read.rollouts.get(name) if read \
                    else self.repo.active_rollout(self.config.app, name)
                if rollout is not None:
                    rollout = self.writeback.merged(rollout)
                else:
                    rollout = start_next(self.repo, self.config, name,
                                         waiting=read.waiting.get(name, []) if read else None)
                    if rollout is None and read is not None:
                        current = read.current.get(name, UNREAD)
                read_at, passes = now, 0
                fresh_for = random.uniform(0.8, 1.0) * STORE_READ_INTERVAL_S
            if name not in self._repaired:
                if not await self._repair(rt, rollout):
                    return  # nothing may observe a data plane behind the store
                self._repaired.add(name)
            if rollout is not None:
                await self._reconcile_rollout(rt, rollout)
                if Phase(rollout.phase).terminal:  # _persist keeps the row current
                    rollout = None
            if wakes != self._wakes:  # what the read said of the current release may be old
                current = UNREAD
            repaired = await self._repair(rt, rollout, current=current)
            if rollout is not None and self._due.get(rollout.id, math.inf) < self.clock():
                self._due[rollout.id] = self.clock()  # not due before its pass ended
            if wakes == self._wakes:  # else what was read may be stale already
                self._last_read[name] = _LastRead(read_at, rollout, repaired.current, passes,
                                                  fresh_for)
            if rollout is None:
                await self.router_changes.maybe_apply(rt)

    async def _reconcile_rollout(self, rt: EnvironmentRuntime, row: Rollout) -> None:
        now = self.clock()
        due = self._due.get(row.id, math.inf)
        if self.on_lag is not None and now >= due:
            self.on_lag(now - due)
        spec = self._spec(row)
        state = state_from_dict(row.state)
        observed = await observe_rollout(self.actions, rt, row, spec, state, now=now)
        transition = advance(spec, state, observed, now=now)
        if transition.state.phase == Phase.SUCCEEDED and state.phase != Phase.SUCCEEDED:
            # "succeeded" is what `deploy --wait` and a pipeline read as "the new release
            # has all the traffic", so its table is set before the phase is committed,
            # not after. A crash in between leaves the last step committed: the restart's
            # repair puts that step's table back and the step succeeds again.
            routes = tuple(a for a in transition.actions if isinstance(a, SetRoutes))
            if not await self._apply(rt, row, routes):
                self._due[row.id] = now + REPAIR_INTERVAL_S
                return
            transition = replace(transition, actions=tuple(
                a for a in transition.actions if not isinstance(a, SetRoutes)))
        self._persist(row, state, transition)
        # The state is committed; a failed action is re-derived and retried next pass.
        await self._apply(rt, row, transition.actions)
        if transition.state.phase.terminal:
            self._due.pop(row.id, None)
            self.actions.forget(row.id)
            self.writeback.forget(row.id)
            self.batch.withdraw(row.id)
            self._specs.pop(row.id, None)
            if transition.state.phase == Phase.SUCCEEDED and state.phase != Phase.SUCCEEDED:
                after_success(self.repo, self.config, row)
                for version in prune(self.repo, self.artifacts, self.config):
                    log.info("retention pruned %s", version)
            self.wake()  # a queued rollout (or the repair) may go on at once
        else:
            self._due[row.id] = transition.requeue_at or math.inf

    def _spec(self, row: Rollout) -> RolloutSpec:
        spec = self._specs.get(row.id)
        if spec is None:
            spec = self._specs[row.id] = spec_from_dict(row.spec)
        return spec

    async def _apply(self, rt: EnvironmentRuntime, row: Rollout,
                     actions: tuple[Action, ...]) -> bool:
        """Apply ``actions`` in order; False when one failed (logged and recorded)."""
        for action in actions:
            try:
                await self.actions.apply(rt, row, action)
            except EntregaError as exc:
                log.warning("action %s on %s failed: %s", type(action).__name__, rt.name, exc)
                self.repo.add_event(app=row.app, environment=row.environment,
                                    version=row.version, rollout_id=row.id, kind=EventKind.ERROR,
                                    actor="controller", message=str(exc))
                return False
        return True

    def _persist(self, row: Rollout, before: RolloutState, transition: Transition) -> None:
        after = transition.state
        if after == before and not transition.events:
            return
        now, dumped = self.clock(), state_to_dict(after)
        if not transition.events and only_bookkeeping(before, after) \
                and self.writeback.updated_at(row.id) is not None:
            row.state = dumped
            self.writeback.keep(row.id, dumped)
            if not self.writeback.may_keep(row.id, now):
                # due to be written: with the other rollouts' in a moment (batched.py)
                self.batch.bookkeeping(self.writeback, row.id, dumped,
                                       self.actions.take_verdict(row.id))
            return
        data = {"phase": after.phase.value, "weights": after.weights,
                "step_index": after.step_index}
        events: list[tuple[str, str, dict[str, Any]]] = [
            (EventKind.STEP, message, data) for message in transition.events]
        if after.phase != before.phase and after.phase in FINAL_EVENT and events:
            _, message, _ = events[-1]
            events[-1] = (FINAL_EVENT[after.phase], message,
                          {**data, "reason": after.message})
        succeeded = after.phase == Phase.SUCCEEDED and before.phase != Phase.SUCCEEDED
        waiting = self.batch.withdraw(row.id)  # this write supersedes it
        updated_at = self.repo.save_transition(
            row.id, state=dumped, phase=after.phase.value, events=events,
            actor="controller", current_version=after.canary, set_current=succeeded,
            analysis=self.actions.take_verdict(row.id) or waiting)
        assert updated_at is not None
        self.writeback.written(row.id, at=now, updated_at=updated_at)
        row.state = dumped
        row.phase = after.phase.value

    async def _repair(self, rt: EnvironmentRuntime, active: Rollout | None, *,
                      current: str | None | _Unread = UNREAD) -> _Repaired:
        """Bring the environment to what the store says: ``active`` is its rollout in
        progress (None: it runs its current release alone, ``current``, read from the
        store unless given). True when it got there; its value says which current
        release it used (``UNREAD`` with a rollout in progress: none was needed)."""
        cohort = None
        #: rolling: where each release runs and serves (empty: every host)
        running: dict[str, tuple[str, ...]] = {}
        routed: dict[str, tuple[str, ...]] = {}
        if active is not None:
            state = state_from_dict(active.state)
            spec = self._spec(active)
            weights, preview = state.weights, state.preview
            cohort = cohort_rule(spec.cohort, state.cohort,
                                 canary=state.canary, app=self.config.app)
            running, routed = running_hosts(spec, state), routed_hosts(spec, state)
            needed = {v for v in (state.stable, state.canary) if v}
            if state.phase == Phase.PENDING:
                needed.discard(state.canary)
        else:
            if isinstance(current, _Unread):
                env = self.repo.environment(self.config.app, rt.name)
                assert env is not None
                current = env.current_version
            weights = {current: 100} if current else {}
            preview = None
            needed = {current} if current else set()
        try:
            for version in sorted(set(weights) | ({preview} if preview else set())):
                await self.actions.ensure_started(rt, version, running.get(version))
            await self.actions.ensure_routes(rt, weights, preview, cohort,
                                             rollout_id=active.id if active else None,
                                             hosts=routed)
            now = self.clock()
            if now - self._last_observe.get(rt.name, 0.0) >= OBSERVE_INTERVAL_S:
                self._last_observe[rt.name] = now
                await self.actions.observe_instances(rt, needed, running)
                await self.router_restarts.record_new(rt)
        except EntregaError as exc:
            log.warning("repair of %s: %s", rt.name, exc)
            return _Repaired(False, current)
        return _Repaired(True, current)

    # -- configuration (controller/reload.py) -----------------------------------------------

    def reload(self, new: Config, *, actor: str, shown_as: str) -> Reload:
        """Run ``new`` from now on: live changes at once, router changes once their
        environment is idle, the rest after a restart. Raises ConfigError (nothing changed)
        when ``new`` cannot take over. One synchronous swap: no pass sees half of it."""
        for name in self.runtimes:
            active = self.repo.active_rollout(self.config.app, name)
            fresh = next((e for e in new.environments if e.name == name), None)
            if active is None or fresh is None:
                continue
            active_spec = spec_from_dict(active.spec)
            used = {m for step in active_spec.steps
                    if isinstance(step, AnalysisStep) for m in step.metrics}
            if active_spec.rolling is not None and active_spec.rolling.analysis is not None:
                used |= set(active_spec.rolling.analysis.metrics)
            if problem := metrics_in_use_problem(fresh, used):
                raise ConfigError(problem, file=shown_as,
                                  hint=f"keep them until rollout {active.id} has ended")
        changes = diff_configs(self.config, new)
        running = running_config(self.config, new, shown_as=shown_as)
        self.config = running
        for name, rt in self.runtimes.items():
            rt.config = running.environment(name)
        waiting = self.router_changes.asked(running, new)
        self.notifier.use(running)
        self.peer_watch.use(running)
        waiting_for = {}
        for name in waiting:
            active = self.repo.active_rollout(running.app, name)
            waiting_for[name] = (f"rollout {active.id} of {active.version} in progress"
                                 if active else "applying now")
        outcome = Reload(tuple(changes), waiting_for)
        self.repo.add_event(app=running.app, kind=EventKind.CONFIG_RELOADED, actor=actor,
                            message=f"configuration reloaded by {actor}: {outcome.summary()}",
                            data=outcome.to_data())
        self.wake()
        return outcome

    # -- commands (called by the service layer, under the environment's lock) ---------------

    def update_state(self, row: Rollout, state: RolloutState, *, actor: str,
                     message: str) -> None:
        updated_at = self.repo.save_transition(
            row.id, state=state_to_dict(state), phase=state.phase.value,
            events=[(EventKind.COMMAND, message, {})], actor=actor,
            analysis=self.batch.withdraw(row.id))
        assert updated_at is not None
        self.writeback.written(row.id, at=self.clock(), updated_at=updated_at)
        self._due[row.id] = self.clock()  # due now (and the lag of its pass counts from now)
        self.wake()

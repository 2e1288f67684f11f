"""Applying rollout actions to the world, idempotently.

Slow work (draining and stopping instances, running verifications) runs in background
tasks keyed by what they act on, so the loop keeps serving other environments and a
second request for the same work joins the first instead of repeating it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from entrega.analysis.peers import PEERS
from entrega.analysis.providers.builtin import snapshot
from entrega.controller.launch import cohort_rule
from entrega.controller.peers import PeerWatch
from entrega.controller.restarts import restart_router
from entrega.controller.runtime import EnvironmentRuntime, release_ref
from entrega.controller.verification import VerificationResult, run_verification
from entrega.errors import EntregaError, NotFound, NotLeader, RouterUnreachable
from entrega.net import http_url, local_host, parse_address
from entrega.releases.artifacts import ArtifactStore
from entrega.rollouts.model import (
    Action,
    AnalysisStep,
    BeginAnalysis,
    RunVerification,
    SetRoutes,
    StartInstances,
    StopInstances,
    spec_from_dict,
)
from entrega.routers.base import CohortRule
from entrega.store.models import AnalysisRun, Rollout
from entrega.store.repository import AnalysisRecord, Repository
from entrega.targets.base import InstanceState, ReleaseRef, host_of
from entrega.vocabulary import EventKind
from entrega.waiting import stop_task, wait_until

log = logging.getLogger("entrega.controller")

#: Longest wait for a removed release's in-flight requests before its instances get
#: SIGTERM anyway (they then have their own drain_s to finish).
ROUTER_DRAIN_TIMEOUT_S = 30.0


class ActionRunner:
    def __init__(self, app: str, repo: Repository, artifacts: ArtifactStore, *,
                 on_result: Callable[[], None] = lambda: None,
                 inherit_env: tuple[str, ...] = ()) -> None:
        #: called when background work has a result the rollouts wait for
        self.on_result = on_result
        self.app = app
        self.repo = repo
        self.artifacts = artifacts
        self._tasks: dict[tuple[str, ...], asyncio.Task[Any]] = {}
        self.verifications: dict[int, VerificationResult] = {}
        #: the controller's variables a verification command may see (run.inherit_env)
        self.inherit_env = inherit_env
        #: other apps' routers the metrics name (``app:``); set by the controller
        self.peers: PeerWatch | None = None
        #: asked right before each call that changes the data plane: False on a server
        #: that does not lead (any more) the servers sharing its store (plane/leader.py)
        self.may_act: Callable[[], bool] = lambda: True
        #: rollout id -> its analysis window as begun (its id, start and baseline never
        #: change once stored): a check reads it from here, not from the store
        self._runs: dict[int, AnalysisRun] = {}
        #: rollout id -> its latest check's verdict, not stored yet: the controller writes
        #: it with the rollout's state (``take_verdict``), in one transaction
        self._verdicts: dict[int, AnalysisRecord] = {}

    def _must_lead(self, what: str) -> None:
        if not self.may_act():
            raise NotLeader(f"{what} was not done: this server does not lead any more")

    # -- helpers ---------------------------------------------------------------------------

    def ref(self, version: str) -> ReleaseRef:
        release = self.repo.release(self.app, version)
        if release is None:
            raise NotFound(f"release {self.app} {version} is not in the store")
        return release_ref(self.app, version, release.digest, release.artifact_path)

    def _background(self, key: tuple[str, ...], work: Coroutine[Any, Any, Any]) -> None:
        task = self._tasks.get(key)
        if task is not None and not task.done():
            work.close()
            return
        self._tasks[key] = asyncio.create_task(work, name="/".join(key))

    def busy(self, *key: str) -> bool:
        task = self._tasks.get(key)
        return task is not None and not task.done()

    async def cancel_background(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        for task in self._tasks.values():
            await stop_task(task)

    # -- instances ------------------------------------------------------------------------

    async def adopt(self, rt: EnvironmentRuntime) -> list[InstanceState]:
        """After a (re)start: learn the endpoints of instances that kept running; returns
        them (restarts until now are theirs to report, not events to record again)."""
        adopted = []
        for instance in await rt.target.observe():
            if instance.alive and instance.endpoint is not None:
                adopted.append(instance)
                known = rt.endpoints.get(instance.version, ())
                if instance.endpoint not in known:
                    rt.endpoints[instance.version] = tuple(sorted((*known, instance.endpoint)))
            rt.restarts_seen[(instance.version, instance.instance)] = instance.restarts
        return adopted

    def _stopping(self, rt: EnvironmentRuntime, version: str,
                  hosts: tuple[str, ...] | None) -> bool:
        """Whether a stop of the release (on any of ``hosts``; None: anywhere) runs."""
        for key, task in self._tasks.items():
            if key[:3] != ("stop", rt.name, version) or task.done():
                continue
            if hosts is None or len(key) == 3 or set(key[3:]) & set(hosts):
                return True
        return False

    async def ensure_started(self, rt: EnvironmentRuntime, version: str,
                             hosts: tuple[str, ...] | None = None) -> None:
        """Start (or adopt) a release's instances once (on ``hosts`` only, when given);
        remembers a permanent failure."""
        if version in rt.start_errors or self._stopping(rt, version, hosts):
            return
        # Instances lost with their supervisor are the whole release's business; a start
        # on some hosts (a rolling batch) leaves them to the next whole-release pass.
        lost = rt.lost_instances.pop(version, 0) if hosts is None else 0
        restart = lost > 0
        if hosts is None:
            wanted = rt.config.target.instances
        else:
            wanted = rt.config.target.instances // max(1, len(rt.host_names)) * len(hosts)
        have = len(rt.endpoints_on(version, hosts))
        if have >= wanted and not restart:
            return
        if hosts is None and not restart and have:
            # It serves with fewer instances than it had: the others were lost (a host
            # back without them, a left-out host answering again), whichever pass saw it
            # first, and the history says they were started again.
            lost, restart = wanted - have, True
        try:
            ref = self.ref(version)
            # Hashing a large tree takes seconds: off the loop that serves the API.
            await asyncio.to_thread(self.artifacts.verify, ref.digest)
            self._must_lead(f"starting {version}")
            endpoints = await rt.target.start(release=ref, hosts=hosts)
        except EntregaError as exc:
            if exc.temporary and restart:
                # The live instances keep serving with the routes they have; the next
                # pass asks again, still as a restart (a host back by then gets its
                # instances from that pass, and the event must say so).
                log.warning("starting lost instances of %s again: %s", version, exc)
                rt.lost_instances.setdefault(version, lost)
                return
            if exc.temporary:
                raise
            rt.start_errors[version] = str(exc)
            self.repo.add_event(app=self.app, environment=rt.name, version=version,
                                kind=EventKind.ERROR, actor="controller",
                                message=f"{version} cannot start: {exc}")
            return
        if hosts is not None:  # the other hosts' endpoints stay as they are
            others = [e for e in rt.endpoints.get(version, ()) if host_of(e.instance) not in hosts]
            endpoints = sorted((*others, *endpoints))
        rt.endpoints[version] = tuple(endpoints)
        if restart:
            self.repo.add_event(
                app=self.app, environment=rt.name, version=version,
                kind=EventKind.INSTANCE_RESTARTED, actor="controller",
                message=f"{lost} instance(s) of {version} were gone with their supervisor "
                        "and were started again", data={"restarted": lost})

    async def observe_instances(self, rt: EnvironmentRuntime, needed: set[str],
                                running: Mapping[str, tuple[str, ...]] | None = None
                                ) -> None:
        """Record restarts; stop instances of releases nobody needs (left by a crash);
        start again the instances of a needed release that are gone."""
        observed = await rt.target.observe()
        rt.observed = tuple(observed)
        self._restart_lost(rt, needed, observed, running or {})
        for instance in observed:
            key = (instance.version, instance.instance)
            seen = rt.restarts_seen.get(key, 0)
            if instance.restarts > seen:
                rt.restarts_seen[key] = instance.restarts
                self.repo.add_event(
                    app=self.app, environment=rt.name, version=instance.version,
                    kind=EventKind.INSTANCE_RESTARTED, actor="controller",
                    message=f"instance {instance.instance} of {instance.version} crashed and "
                            f"was restarted ({instance.restarts} restart(s) so far)",
                    data={"instance": instance.instance, "restarts": instance.restarts})
            if instance.alive and instance.version not in needed:
                self._background(("stop", rt.name, instance.version),
                                 self._stop(rt, instance.version, reason="no longer needed"))

    def _restart_lost(self, rt: EnvironmentRuntime, needed: set[str],
                      observed: list[InstanceState],
                      running: Mapping[str, tuple[str, ...]]) -> None:
        """A started release that now has fewer live instances than it should lost some
        with their supervisor (killed, its machine rebooted, a fleet host that came back
        empty): the next pass starts it again, which adopts the live instances and starts
        the others (on their old ports when free). Until then the routes keep the live
        ones only: the route table never loses a release that still serves, nor keeps an
        address that no longer answers while others do. A release that runs on some
        hosts only (``running``: a rolling rollout's) is left to the rollout, which starts
        it host by host."""
        for version in needed & set(rt.endpoints):
            if version in rt.start_errors or self.busy("stop", rt.name, version) \
                    or version in running:
                continue
            alive = [i for i in observed if i.version == version and i.alive]
            missing = rt.config.target.instances - len(alive)
            if missing <= 0:
                continue
            rt.lost_instances[version] = missing
            # Meanwhile the router sends nothing to the lost ones (a dead address costs a
            # retry, and two in a row fail a request), as long as some are alive.
            live = {i.endpoint for i in alive}
            if live:
                rt.endpoints[version] = tuple(e for e in rt.endpoints[version] if e in live)

    async def _stop(self, rt: EnvironmentRuntime, version: str, *, reason: str,
                    hosts: tuple[str, ...] | None = None) -> None:
        # Traffic first: wait until the router has no request in flight for the release
        # (a router that does not answer has none to wait for; after the timeout, stop).
        # On some hosts only: until the router no longer lists their instances (the
        # instances finish what they hold within drain_s after SIGTERM).
        async def drained() -> bool:
            try:
                routes = await rt.router.get_routes()
            except EntregaError:
                return True
            if hosts is not None:
                return not any(host_of(e.instance) in hosts
                               for e in routes.backends.get(version, ()))
            return version not in routes.backends and not routes.draining.get(version)

        await wait_until(drained, timeout_s=ROUTER_DRAIN_TIMEOUT_S, interval_s=0.05)
        if hosts is None:
            rt.endpoints.pop(version, None)
        else:
            rt.endpoints[version] = tuple(e for e in rt.endpoints.get(version, ())
                                          if host_of(e.instance) not in hosts)
        try:
            ref = self.ref(version)
        except NotFound:
            return
        self._must_lead(f"stopping {version}")
        await rt.target.stop(release=ref, drain_s=rt.drain_s, hosts=hosts)
        if hosts is None:
            rt.start_errors.pop(version, None)
        where = f" on {', '.join(hosts)}" if hosts is not None else ""
        self.repo.add_event(app=self.app, environment=rt.name, version=version,
                            kind=EventKind.STOPPED, actor="controller",
                            message=f"{version} stopped{where} ({reason})")

    # -- routes ----------------------------------------------------------------------------

    async def ensure_routes(self, rt: EnvironmentRuntime, weights: dict[str, int],
                            preview: str | None, cohort: CohortRule | None = None, *,
                            force: bool = False, rollout_id: int | None = None,
                            hosts: dict[str, tuple[str, ...]] | None = None) -> bool:
        """Make the router's table match (a release named in ``hosts``: its instances on
        those hosts only); True when it had to change it."""
        wanted = rt.routes_for(weights, preview, cohort, rollout_id=rollout_id, hosts=hosts)
        try:
            if not force and (await rt.router.get_routes()).same_table(wanted):
                return False
        except RouterUnreachable:
            # The router died (or was killed): start it again; it reloads its last routes,
            # and the set_routes below makes sure they are the ones the store says.
            await restart_router(self.repo, self.app, rt)
        self._must_lead(f"changing the routes of {rt.name}")
        await rt.router.set_routes(wanted)
        return True

    # -- actions ---------------------------------------------------------------------------

    async def apply(self, rt: EnvironmentRuntime, row: Rollout, action: Action) -> None:
        if isinstance(action, StartInstances):
            await self.ensure_started(rt, action.release, action.hosts)
        elif isinstance(action, SetRoutes):
            for version in action.weights:
                await self.ensure_started(rt, version, action.hosts.get(version))
            spec = spec_from_dict(row.spec)
            rule = cohort_rule(spec.cohort, action.cohort, canary=row.version, app=self.app)
            await self.ensure_routes(rt, action.weights, action.preview, rule, force=True,
                                     rollout_id=row.id, hosts=action.hosts)
            shown = ", ".join(f"{v} {w}%" for v, w in action.weights.items())
            if rule is not None:
                shown += f"; cohort{' + ' if rule.header else ' '}{rule.percent}% of users" \
                         f" to {rule.release}"
            self.repo.add_event(app=self.app, environment=rt.name, version=row.version,
                                rollout_id=row.id, kind=EventKind.TRAFFIC, actor="controller",
                                message=f"router now sends {shown}"
                                        + (f"; preview: {action.preview}" if action.preview
                                           else ""),
                                data={"weights": action.weights, "preview": action.preview,
                                      "cohort": rule.to_dict() if rule else None})
        elif isinstance(action, StopInstances):
            self._background(("stop", rt.name, action.release, *(action.hosts or ())),
                             self._stop(rt, action.release, reason=f"rollout {row.id}",
                                        hosts=action.hosts))
        elif isinstance(action, BeginAnalysis):
            await self.begin_analysis(rt, row, action.window, list(action.metrics))
        elif isinstance(action, RunVerification):
            self.start_verification(rt, row, action.release, on_preview=action.on_preview)

    async def begin_analysis(self, rt: EnvironmentRuntime, row: Rollout, window: int,
                             metrics: list[str]) -> None:
        baseline = await snapshot(rt.router)
        named = [peer for name in metrics
                 if (peer := rt.config.metric(name).peer(rt.name)) is not None]
        if named and self.peers is not None:
            # the other apps' "before" stretch ends now, as long as this step lasts
            baseline[PEERS] = await self.peers.begin(
                named, length_s=analysis_length_s(row, metrics))
        self._runs[row.id] = self.repo.begin_analysis_run(
            rollout_id=row.id, window=window, metrics=metrics, baseline=baseline)

    def analysis_run(self, rollout_id: int, window: int) -> AnalysisRun | None:
        """The rollout's analysis window ``window`` (None: not begun): from memory after
        the first read, one query less per check of a thousand rollouts."""
        run = self._runs.get(rollout_id)
        if run is None or run.window != window:
            run = self.repo.analysis_run(rollout_id, window)
            if run is None:
                return None
            self._runs[rollout_id] = run
        return run

    def checked(self, rollout_id: int, record: AnalysisRecord) -> None:
        """A check's verdict, kept until the rollout's state is next written."""
        self._verdicts[rollout_id] = record

    def take_verdict(self, rollout_id: int) -> AnalysisRecord | None:
        """The verdict to write with the rollout's state now (None: none since the last)."""
        return self._verdicts.pop(rollout_id, None)

    def forget(self, rollout_id: int) -> None:
        """A rollout ended: its window is read no more."""
        self._runs.pop(rollout_id, None)
        self._verdicts.pop(rollout_id, None)

    def start_verification(self, rt: EnvironmentRuntime, row: Rollout, version: str, *,
                           on_preview: bool) -> None:
        if row.id in self.verifications:
            return
        self._background(("verify", str(row.id)),
                         self._verify(rt, row, version, on_preview=on_preview))

    async def _verify(self, rt: EnvironmentRuntime, row: Rollout, version: str, *,
                      on_preview: bool) -> None:
        listen = rt.config.router.preview_listen if on_preview else rt.config.router.listen
        if listen:
            host, port = parse_address(listen)
            host = local_host(host)
            if getattr(rt.config.router, "placement", "front") == "every_host":
                # Every host's router routes alike: the first host that answered the last
                # observation (a host that went down, left out by max_failed, would fail
                # the checks of a release that serves well everywhere else).
                unreachable = rt.target.host_errors()
                hosts = rt.target.hosts()
                host = next((address for name, address in hosts if name not in unreachable),
                            hosts[0][1])
            base_url = http_url(host, port)
        else:
            endpoints = rt.endpoints.get(version) or ()
            if not endpoints:
                self.verifications[row.id] = VerificationResult(False, "no instance", 0.0)
                return
            base_url = f"http://{endpoints[0].address}"
        ref = self.ref(version)
        # A command check runs in a copy of the release, as instances do (it may write
        # bytecode or caches where it runs; the stored tree keeps its digest).
        checkout = None
        if any(step.command for step in rt.config.verify):
            try:
                checkout = await asyncio.to_thread(self.artifacts.checkout, ref.path,
                                                   prefix="verify-")
            except EntregaError as exc:
                self.verifications[row.id] = VerificationResult(False, exc.message, 0.0)
                self.on_result()
                return
        try:
            result = await run_verification(list(rt.config.verify), base_url=base_url,
                                            version=version,
                                            cwd=str(checkout) if checkout else None,
                                            via_router=bool(listen),
                                            inherit_env=self.inherit_env)
        finally:
            if checkout is not None:
                await asyncio.to_thread(self.artifacts.drop_checkout, checkout)
        self.verifications[row.id] = result
        self.on_result()
        self.repo.add_event(app=self.app, environment=rt.name, version=version,
                            rollout_id=row.id,
                            kind=EventKind.VERIFIED if result.passed
                            else EventKind.VERIFICATION_FAILED,
                            actor="controller", message=f"verification of {version} on "
                            f"{base_url}: {result.detail}",
                            data={"passed": result.passed, "duration_s": result.duration_s})


def analysis_length_s(row: Rollout, metrics: list[str]) -> float:
    """How long the rollout's analysis step over these metrics lasts (the longest, if
    several steps judge the same metrics): the length of another app's "before" stretch."""
    spec = spec_from_dict(row.spec)
    steps = [s for s in spec.steps if isinstance(s, AnalysisStep)]
    if spec.rolling is not None and spec.rolling.analysis is not None:
        steps.append(spec.rolling.analysis)
    return max((s.duration_s for s in steps if list(s.metrics) == metrics), default=0.0)

"""Use cases: create a release, deploy, promote, abort, roll back, and the read models.

The API and the dashboard call these; they validate, write through the repository under
the environment's lock (so a command never interleaves with a reconcile pass of the same
environment), and wake the controller. Reads answer typed views (``entrega.views``), the
one contract the API, the CLI and the dashboard share; nothing above this layer reads
the store.
"""

from __future__ import annotations

import asyncio
import functools
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from entrega.config import Config
from entrega.config.apps import load_apps
from entrega.controller.launch import launch_rollout
from entrega.controller.loop import Controller
from entrega.controller.pipeline import order_problem
from entrega.errors import ConfigError, Conflict, Forbidden, NotFound, RolloutInProgress
from entrega.feedback import FeedbackIntake, FeedbackSettings
from entrega.feedback.intake import load_or_create_key
from entrega.insights.gather import Sources, build_dora, build_history, build_report
from entrega.insights.prometheus import render_metrics
from entrega.insights.team import AppHistory
from entrega.releases.artifacts import ArtifactStore
from entrega.releases.catalog import check_version, record_release
from entrega.releases.sources import fetch_artifact
from entrega.rollouts.model import (
    CohortStep,
    PauseStep,
    Phase,
    Step,
    UsersStep,
    WeightStep,
    spec_from_dict,
    state_from_dict,
)
from entrega.rollouts.rolling import batches
from entrega.routers.base import HostRouterState
from entrega.store.insights_repository import InsightsRepository
from entrega.store.models import DeployRequest, Event, Feedback, Release, Rollout
from entrega.store.repository import Repository
from entrega.views import (
    AnalysisView,
    Approved,
    CohortView,
    ConfigReloaded,
    DeployQueued,
    DeployRequestView,
    DeployStarted,
    DoraView,
    EnvironmentStatus,
    EventView,
    FeedbackList,
    FeedbackSummary,
    FeedbackView,
    HostRouterView,
    HostView,
    PipelineRelease,
    PipelineView,
    ReleaseReport,
    ReleaseView,
    RolloutAnalysis,
    RolloutDetail,
    RolloutView,
    StageView,
    StatusView,
    WindowView,
)
from entrega.vocabulary import EventKind, RequestStatus


class Service:
    def __init__(self, config: Config, repo: Repository, artifacts: ArtifactStore,
                 controller: Controller, *, config_file: Path | None = None) -> None:
        self.repo = repo
        self.artifacts = artifacts
        self.controller = controller
        #: the entrega.yaml the server was started from (reloaded by `config reload`)
        self.config_file = config_file
        #: called with the running config after each reload (the API's authenticator)
        self.on_reload: list[Callable[[Config], None]] = []
        self.insights = InsightsRepository(repo.store)
        self._sources = Sources(config.app, repo, self.insights)

    @property
    def config(self) -> Config:
        """The running configuration: one place, swapped whole by a reload."""
        return self.controller.config

    @property
    def app(self) -> str:
        return self.config.app

    # -- configuration -----------------------------------------------------------------------

    def reload_config(self, *, actor: str) -> ConfigReloaded:
        """Read entrega.yaml again and run it (controller/reload.py says what applies
        when). A file that is not valid is refused with its file:line, recorded as an
        event, and changes nothing."""
        if self.config_file is None:
            raise Conflict("this server was not started from a file, so it has none to "
                           "reload")
        shown_as = self.config_file.name  # never the server's own path in an answer
        try:
            new = load_apps(self.config_file, shown_as=shown_as).app(self.app)
            outcome = self.controller.reload(new, actor=actor, shown_as=shown_as)
        except ConfigError as exc:
            self.repo.add_event(app=self.app, kind=EventKind.CONFIG_REFUSED, actor=actor,
                                message=f"configuration reload by {actor} refused; the "
                                        f"running configuration stays: {exc}",
                                data={"error": str(exc)})
            raise
        for listener in self.on_reload:
            listener(self.config)
        return ConfigReloaded.model_validate({**outcome.to_data(),
                                              "message": outcome.summary()})

    # -- releases --------------------------------------------------------------------------

    async def create_release(self, *, version: str, artifact: Path, meta: dict[str, Any],
                             actor: str, label: str = "the uploaded artifact"
                             ) -> tuple[Release, bool]:
        """Unpack and hash ``artifact`` in a worker thread (the loop keeps serving), then
        check, commit and record it in one step. Returns (release, created). A refusal
        (bad version, conflict, limits, bad tarball) leaves nothing in the store."""
        _checked_version(version)
        staged = await anyio.to_thread.run_sync(
            functools.partial(self.artifacts.stage, artifact, label=label))
        try:
            return record_release(self.repo, self.artifacts, app=self.app, version=version,
                                  staged=staged, meta=meta, actor=actor)
        finally:
            with anyio.CancelScope(shield=True):  # a client gone must not skip the cleanup
                await anyio.to_thread.run_sync(self.artifacts.discard, staged)

    async def create_release_from(self, *, version: str, location: str, meta: dict[str, Any],
                                  actor: str) -> tuple[Release, bool]:
        """A release from a server-side path or URL: refused (one message, whatever the
        location) unless ``auth.artifact_sources`` allows it."""
        _checked_version(version)
        workdir = await anyio.to_thread.run_sync(self.artifacts.new_staging_dir, "fetch-")
        try:
            source = await fetch_artifact(
                location, sources=self.config.auth.artifact_sources,
                base_dir=self.config.base_dir, state_dir=self.config.state_path,
                workdir=workdir, limit_bytes=self.config.auth.max_body_bytes)
            return await self.create_release(version=version, artifact=source, meta=meta,
                                             actor=actor, label=f"artifact {location!r}")
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(shutil.rmtree, workdir, True)

    def release(self, version: str) -> Release:
        release = self.repo.release(self.app, version)
        if release is None:
            raise NotFound(f"no release {version} of {self.app}",
                           hint="create it with `entrega deploy VERSION --artifact PATH`")
        return release

    # -- rollouts --------------------------------------------------------------------------

    async def deploy(self, *, environment: str, version: str, actor: str,
                     strategy: str | None = None, reason: str = "", queue: bool = True,
                     force: bool = False, admin: bool = False,
                     group_id: int | None = None) -> DeployStarted | DeployQueued:
        """Roll ``version`` out to ``environment`` now, or queue it behind the rollout in
        progress (newest wins). ``group_id``: a release group's member (never queued: the
        group tries again)."""
        self.config.environment(environment)
        release = self.release(version)
        if release.pruned_at is not None:
            raise Conflict(f"release {version} is no longer retained (its artifact was "
                           "deleted)")
        problem = order_problem(self.repo, self.config, environment, version)
        if problem and not force:
            raise Conflict(problem, hint="an admin can force it: --force --reason '...'")
        if force:
            if not admin:
                raise Forbidden("forcing a release past the pipeline's order needs an admin")
            if not reason.strip():
                raise Conflict("--force needs a --reason: it is recorded in the audit log")
        async with self._lock(environment):
            active = self.repo.active_rollout(self.app, environment)
            if active is None:
                rollout = launch_rollout(self.repo, self.config, environment=environment,
                                         version=version, actor=actor, strategy=strategy,
                                         reason=reason, group_id=group_id)
                self.repo.add_request(app=self.app, environment=environment, version=version,
                                      status=RequestStatus.STARTED, actor=actor, reason=reason,
                                      strategy=strategy, forced=force, rollout_id=rollout.id)
                if force:
                    self.repo.add_event(app=self.app, environment=environment, version=version,
                                        rollout_id=rollout.id, kind=EventKind.FORCED, actor=actor,
                                        message=f"{actor} forced {version} into {environment}"
                                                f": {reason}")
                self.controller.wake()
                return DeployStarted(rollout=self.rollout_view(rollout))
            if not queue:
                raise RolloutInProgress(
                    f"{environment} is busy with rollout {active.id} of {active.version} "
                    f"({active.phase})", hint="wait for it, `entrega abort` it, or queue")
            request = self.repo.add_request(app=self.app, environment=environment,
                                            version=version, status=RequestStatus.QUEUED,
                                            actor=actor, reason=reason, strategy=strategy,
                                            forced=force)
            self.repo.add_event(app=self.app, environment=environment, version=version,
                                kind=EventKind.QUEUED, actor=actor,
                                message=f"{version} queued for {environment} behind rollout "
                                        f"{active.id} of {active.version}")
        return DeployQueued(queued=request_view(request))

    async def approve(self, *, environment: str, version: str, actor: str) -> Approved:
        """Pass a manual gate: the release waiting at it is queued for the environment."""
        async with self._lock(environment):
            waiting = [r for r in self.repo.waiting_requests(self.app, environment)
                       if r.version == version and r.status == RequestStatus.AWAITING_APPROVAL]
            if not waiting:
                raise NotFound(f"{version} is not waiting for approval in {environment}",
                               hint="`entrega pipeline` shows where each release stands")
            self.repo.set_request_status(waiting[-1].id, RequestStatus.QUEUED)
            self.repo.add_event(app=self.app, environment=environment, version=version,
                                kind=EventKind.APPROVED, actor=actor,
                                message=f"{actor} approved {version} for {environment}")
        self.controller.wake()
        return Approved(approved=version, environment=environment)

    def _lock(self, environment: str) -> asyncio.Lock:
        self.config.environment(environment)  # a clear error for an unknown name
        return self.controller.locks[environment]

    def _environment(self, name: str) -> Any:
        env = self.repo.environment(self.app, name)
        if env is None:
            raise NotFound(f"no environment {name!r}")
        return env

    def _active(self, environment: str) -> Rollout:
        self.config.environment(environment)
        active = self.repo.active_rollout(self.app, environment)
        if active is None:
            raise NotFound(f"no rollout in progress in {environment}")
        return self.controller.writeback.merged(active)  # with the checks it keeps

    async def promote(self, *, environment: str, actor: str, full: bool = False) -> Rollout:
        async with self._lock(environment):
            row = self._active(environment)
            state = state_from_dict(row.state)
            state = replace(state, promote_requested=True, promote_full=full)
            what = "fully promoted" if full else "promoted (current step ends)"
            self.controller.update_state(row, state, actor=actor,
                                         message=f"{row.version} {what} by {actor}")
            return row

    async def abort(self, *, environment: str, actor: str) -> Rollout:
        async with self._lock(environment):
            return self._abort(self._active(environment), actor=actor)

    def _abort(self, row: Rollout, *, actor: str) -> Rollout:
        """Ask the rollout to roll back (the caller holds the environment's lock)."""
        state = replace(state_from_dict(row.state), abort_requested=True)
        self.controller.update_state(row, state, actor=actor,
                                     message=f"rollout of {row.version} aborted by {actor}")
        return row

    async def rollback(self, *, environment: str, actor: str, to: str | None = None,
                       group_id: int | None = None) -> Rollout:
        """Abort the rollout in progress, or restore an earlier retained release at once
        (default: the one the current release replaced)."""
        self.config.environment(environment)
        # Everything is decided under the lock: a deploy that starts a rollout while we
        # wait for it must be seen (and aborted), never doubled by a second rollout.
        async with self._lock(environment):
            active = self.repo.active_rollout(self.app, environment)
            if active is not None and to in (None, active.from_version):
                return self._abort(active, actor=actor)
            if active is not None:
                raise RolloutInProgress(f"{environment} has rollout {active.id} in progress",
                                        hint="abort it first")
            current = self._environment(environment).current_version
            if to is None:
                to = self._previous(environment, current)
            self.release(to)
            rollout = launch_rollout(self.repo, self.config, environment=environment,
                                     version=to, actor=actor, strategy="direct",
                                     reason=f"rollback from {current}", rollback=True,
                                     group_id=group_id)
        self.controller.wake()
        return rollout

    def _previous(self, environment: str, current: str | None) -> str:
        for row in self.repo.rollouts(self.app, environment, limit=200):
            if row.phase == Phase.SUCCEEDED.value and row.version == current \
                    and row.from_version:
                return row.from_version
        raise NotFound(f"{environment} has no earlier release to roll back to",
                       hint="name one with --to VERSION")

    # -- read models -----------------------------------------------------------------------

    def status(self) -> StatusView:
        environments = []
        for env in self.repo.environments(self.app):
            active = self.repo.active_rollout(self.app, env.name)
            last = self.repo.rollouts(self.app, env.name, limit=1)
            environments.append(EnvironmentStatus(
                name=env.name, current=env.current_version,
                rollout=self.rollout_view(active) if active else None,
                last_rollout=self.rollout_view(last[0]) if last and not active else None,
                hosts=self._hosts(env.name)))
        return StatusView(app=self.app, environments=environments)

    def _hosts(self, environment: str) -> list[HostView]:
        """Per host of a fleet: reachable at the last observation, live instances by
        release (the controller's memory: no host is asked while answering)."""
        rt = self.controller.runtimes.get(environment)
        if rt is None:
            return []
        errors = rt.target.host_errors()
        routers = rt.router.host_states()
        views = []
        for name, address in rt.target.hosts():
            counts: dict[str, int] = {}
            for instance in rt.observed:
                if instance.alive and instance.extra.get("host") == name:
                    counts[instance.version] = counts.get(instance.version, 0) + 1
            views.append(HostView(name=name, address=address, reachable=name not in errors,
                                  error=errors.get(name), instances=counts,
                                  router=_host_router_view(routers.get(name))))
        return views

    def pipeline(self, *, limit: int = 20) -> PipelineView:
        """Where each recent release stands in each environment."""
        envs = self.repo.environments(self.app)
        rollouts = self.repo.rollouts(self.app, limit=2000)
        requests = self.repo.requests(self.app, limit=2000)
        releases = []
        for release in self.repo.releases(self.app)[:limit]:
            stages = {env.name: _stage(release.version, env.name, env.current_version,
                                       rollouts, requests)
                      for env in envs}
            releases.append(PipelineRelease(
                version=release.version, digest=release.digest, created_at=release.created_at,
                meta=release.meta, retained=release.pruned_at is None, environments=stages))
        return PipelineView(app=self.app, environments=[e.name for e in envs],
                            releases=releases)

    def awaiting_approval(self) -> dict[str, list[str]]:
        """Per environment, the releases waiting at its manual gate (oldest first)."""
        waiting: dict[str, list[str]] = {}
        for request in self.repo.requests(self.app, limit=200):
            if request.status == "awaiting_approval":
                waiting.setdefault(request.environment, []).append(request.version)
        return waiting

    def rollout_view(self, row: Rollout) -> RolloutView:
        return RolloutView.model_validate(self._rollout_fields(row))

    def _rollout_fields(self, row: Rollout) -> dict[str, Any]:
        # What the controller knows now: a check it has not written yet counts too.
        state = state_from_dict(self.controller.writeback.live_state(row))
        spec = spec_from_dict(row.spec)
        # A first release goes straight to 100% (strategy "direct") although its spec
        # is the environment's canary: its steps never run, so they are not shown.
        steps = [] if row.strategy == "direct" else [_step_text(s) for s in spec.steps]
        analysis = None
        if state.analysis is not None:
            run = self.repo.analysis_run(row.id, state.analysis.window)
            analysis = AnalysisView(
                window=state.analysis.window, checks=state.analysis.checks,
                failures=state.analysis.failures, verdict=state.analysis.last_verdict,
                reason=state.analysis.last_reason,
                metrics=(run.result or {}).get("metrics") if run else None)
        cohort = (CohortView(name=state.cohort_name, selected=state.cohort.selected,
                             users_percent=state.cohort.percent) if state.cohort else None)
        return {
            "id": row.id, "environment": row.environment, "version": row.version,
            "from_version": row.from_version, "strategy": row.strategy,
            "phase": state.phase, "weights": state.weights, "preview": state.preview,
            "step_index": state.step_index, "steps": steps, "message": state.message,
            "cohort": cohort, "analysis": analysis,
            "analysis_history": list(state.analysis_history),
            "created_at": row.created_at, "updated_at": row.updated_at,
            "finished_at": row.finished_at, "created_by": row.created_by,
            "reason": row.reason,
            "hosts": list(state.fleet.hosts) if state.fleet else [],
            "hosts_left_out": dict(state.fleet.failed) if state.fleet else {},
        }

    def _row(self, rollout_id: int) -> Rollout:
        row = self.repo.rollout(rollout_id)
        if row is None or row.app != self.app:
            raise NotFound(f"no rollout {rollout_id}")
        return row

    def rollout(self, rollout_id: int) -> RolloutDetail:
        row = self._row(rollout_id)
        events = [event_view(e) for e in self.repo.events(self.app, rollout_id=rollout_id)]
        return RolloutDetail.model_validate({**self._rollout_fields(row), "events": events})

    def analysis(self, rollout_id: int) -> RolloutAnalysis:
        """Every analysis window of a rollout: per metric, the numbers, the test and why
        it decided (what `entrega analysis explain` shows)."""
        row = self._row(rollout_id)
        state = state_from_dict(row.state)
        spec = spec_from_dict(row.spec)
        steps = {h["window"]: h.get("step") for h in state.analysis_history}
        windows: list[WindowView] = []
        asked: set[str] = set()
        for run in self.repo.analysis_runs(rollout_id):
            asked.update(run.metrics)
            step = steps.get(run.window)
            windows.append(WindowView(
                window=run.window, metrics_asked=run.metrics, started_at=run.started_at,
                updated_at=run.updated_at, step=None if step is None else step + 1,
                verdict=run.verdict, result=run.result, final=run.window in steps))
        environment = self.config.environment(row.environment)
        return RolloutAnalysis(
            rollout=self.rollout_view(row),
            steps=len(batches(spec.rolling)) if spec.rolling else len(spec.steps),
            environment_metrics={name: environment.metric(name).model_dump(exclude_none=True)
                                 for name in sorted(asked)},
            windows=windows)

    def history(self, *, environment: str | None = None, limit: int = 100,
                after_id: int = 0) -> list[EventView]:
        if environment:
            self.config.environment(environment)
        return [event_view(e) for e in self.repo.events(self.app, environment=environment,
                                                        limit=limit, after_id=after_id)]

    def releases(self) -> list[ReleaseView]:
        return [ReleaseView(version=r.version, digest=r.digest, meta=r.meta,
                            created_at=r.created_at, created_by=r.created_by)
                for r in self.repo.releases(self.app)]

    # -- practice 5: feedback, reports, DORA, metrics ---------------------------------------

    def feedback_intake(self, *, settings: FeedbackSettings, router_key: bytes,
                        clock: Callable[[], float]) -> FeedbackIntake:
        """Public feedback intake (rate limits, release resolution) over this app's store;
        the feedback key is created under the state directory on first use."""
        return FeedbackIntake(
            app=self.app, repo=self.repo, insights=self.insights, settings=settings,
            key=load_or_create_key(self.config.state_path / "feedback.key"),
            router_key=router_key, clock=clock)

    def feedback_summary(self) -> dict[str, FeedbackSummary]:
        """Per release: how many said something, how many rated, the mean rating, and
        how many ratings were 1 or 2."""
        return {v: FeedbackSummary(count=t.count, rated=t.rated, mean_rating=t.mean_rating,
                                   low_ratings=t.low)
                for v, t in sorted(self.insights.feedback_totals(self.app).items())}

    def feedback(self, *, version: str | None = None, environment: str | None = None,
                 limit: int = 200) -> FeedbackList:
        """What users said, newest first, with the per-release summary."""
        rows = self.insights.feedback(self.app, version=version, environment=environment,
                                      limit=limit)
        return FeedbackList(app=self.app, feedback=[feedback_view(r) for r in rows],
                            summary={v: s for v, s in self.feedback_summary().items()
                                     if version is None or v == version})

    def report(self, version: str, *, environment: str | None = None,
               rollout_id: int | None = None, now: float) -> ReleaseReport:
        """One rollout of a release (default: its latest) against the release it replaced
        in that rollout: scorecard, timeline, series, ratings and comments."""
        return ReleaseReport.model_validate(build_report(
            self._sources, version, environment=environment, rollout_id=rollout_id, now=now))

    def dora(self, *, environment: str | None = None, days: float = 90,
             now: float) -> DoraView:
        """DORA's four keys for ``environment`` (default: the last, production)."""
        name = environment or self.config.environments[-1].name
        self.config.environment(name)
        report = build_dora(self._sources, environment=name, days=days, now=now)
        return DoraView.model_validate(report.to_dict())

    def dora_history(self, *, environment: str | None = None, days: float = 90,
                     now: float) -> AppHistory:
        """This app's deployments to ``environment`` (default: the last) over the ``days``
        up to ``now``: its share of the team's DORA (``insights/team.py``)."""
        name = environment or self.config.environments[-1].name
        self.config.environment(name)
        return build_history(self._sources, environment=name, days=days, now=now)

    def metrics_text(self) -> bytes:
        """entrega's own Prometheus exposition (rollouts, verdicts, events, feedback)."""
        return render_metrics([self.app], self.insights)


def _checked_version(version: str) -> None:
    try:
        check_version(version)
    except ValueError as exc:
        raise ConfigError(str(exc), file="request", field="version") from None


def request_view(request: DeployRequest) -> DeployRequestView:
    return DeployRequestView(
        id=request.id, environment=request.environment, version=request.version,
        status=request.status, actor=request.actor, reason=request.reason,
        forced=request.forced, rollout_id=request.rollout_id, created_at=request.created_at)


def event_view(event: Event) -> EventView:
    return EventView(id=event.id, time=event.time, environment=event.environment,
                     version=event.version, rollout_id=event.rollout_id, kind=event.kind,
                     actor=event.actor, message=event.message, data=event.data,
                     epoch=event.epoch)


def feedback_view(row: Feedback) -> FeedbackView:
    return FeedbackView(id=row.id, time=row.time, environment=row.environment,
                        version=row.version, claimed_version=row.claimed_version,
                        rating=row.rating, comment=row.comment, user_id=row.user_id,
                        tags=list(row.tags or []))


def _step_text(step: Step) -> str:
    if isinstance(step, WeightStep):
        return f"weight {step.weight}%"
    if isinstance(step, PauseStep):
        return f"pause {step.duration_s:g}s" if step.duration_s is not None else "pause"
    if isinstance(step, CohortStep):
        return f"cohort {step.name}"
    if isinstance(step, UsersStep):
        return f"users {step.percent}%"
    return f"analysis {', '.join(step.metrics)} {step.duration_s:g}s"


def _host_router_view(state: HostRouterState | None) -> HostRouterView | None:
    if state is None:
        return None
    shown = ("unreachable" if not state.reachable else "not answering" if not state.answering
             else "in step" if state.in_step else "behind")
    return HostRouterView(listen=state.listen, state=shown, generation=state.generation,
                          pid=state.pid, error=state.error)


def _stage(version: str, environment: str, current: str | None, rollouts: list[Rollout],
           requests: list[DeployRequest]) -> StageView:
    """One cell of the pipeline view (rollouts and requests come newest first)."""
    rollout = next((r for r in rollouts
                    if r.version == version and r.environment == environment), None)
    request = next((r for r in requests
                    if r.version == version and r.environment == environment), None)
    if request is not None and request.status in ("queued", "awaiting_approval",
                                                  "superseded", "cancelled") \
            and (rollout is None or request.created_at > rollout.created_at):
        return StageView(status=request.status, since=request.created_at,
                         running=current == version)
    if rollout is None:
        return StageView(status="-", running=current == version)
    return StageView(status=rollout.phase, rollout_id=rollout.id, since=rollout.updated_at,
                     running=current == version, message=rollout.state.get("message", ""))

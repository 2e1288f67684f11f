"""Queries and writes of the store, in domain words. Each method is one transaction."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import select

from entrega.store.database import Store
from entrega.store.models import AnalysisRun, App, Environment, Event, Release, Rollout

TERMINAL_PHASES = ("succeeded", "rolled_back", "failed")


class Repository:
    def __init__(self, store: Store) -> None:
        self.store = store

    # -- apps and environments -------------------------------------------------------------

    def sync_app(self, app: str, environments: list[str]) -> None:
        """Make sure the app and its environments exist, in the configured order."""
        now = time.time()
        with self.store.session() as s:
            if s.get(App, app) is None:
                s.add(App(name=app, created_at=now))
                s.flush()
            existing = {e.name: e for e in s.scalars(
                select(Environment).where(Environment.app == app))}
            for position, name in enumerate(environments):
                if name in existing:
                    existing[name].position = position
                else:
                    s.add(Environment(app=app, name=name, position=position,
                                      current_version=None, updated_at=now))

    def environments(self, app: str) -> list[Environment]:
        with self.store.session() as s:
            return list(s.scalars(select(Environment).where(Environment.app == app)
                                  .order_by(Environment.position)))

    def environment(self, app: str, name: str) -> Environment | None:
        with self.store.session() as s:
            return s.scalar(select(Environment).where(Environment.app == app,
                                                      Environment.name == name))

    def set_current(self, app: str, environment: str, version: str | None) -> None:
        with self.store.session() as s:
            env = s.scalar(select(Environment).where(Environment.app == app,
                                                     Environment.name == environment))
            assert env is not None
            env.current_version = version
            env.updated_at = time.time()

    # -- releases --------------------------------------------------------------------------

    def release(self, app: str, version: str) -> Release | None:
        with self.store.session() as s:
            return s.scalar(select(Release).where(Release.app == app,
                                                  Release.version == version))

    def releases(self, app: str) -> list[Release]:
        with self.store.session() as s:
            return list(s.scalars(select(Release).where(Release.app == app)
                                  .order_by(Release.id.desc())))

    def add_release(self, *, app: str, version: str, digest: str, artifact_path: str,
                    meta: dict[str, Any], actor: str) -> Release:
        with self.store.session() as s:
            release = Release(app=app, version=version, digest=digest,
                              artifact_path=artifact_path, meta=meta,
                              created_at=time.time(), created_by=actor)
            s.add(release)
            s.add(Event(time=release.created_at, app=app, version=version, kind="release",
                        actor=actor, message=f"release {version} created ({digest[:19]})",
                        data={"digest": digest, **meta}))
            return release

    # -- rollouts --------------------------------------------------------------------------

    def create_rollout(self, *, app: str, environment: str, version: str,
                       from_version: str | None, strategy: str, spec: dict[str, Any],
                       state: dict[str, Any], actor: str, reason: str) -> Rollout:
        now = time.time()
        with self.store.session() as s:
            rollout = Rollout(app=app, environment=environment, version=version,
                              from_version=from_version, strategy=strategy,
                              phase=state["phase"], spec=spec, state=state, created_at=now,
                              updated_at=now, finished_at=None, created_by=actor,
                              reason=reason)
            s.add(rollout)
            s.flush()
            s.add(Event(time=now, app=app, environment=environment, version=version,
                        rollout_id=rollout.id, kind="rollout", actor=actor,
                        message=f"rollout of {version} to {environment} requested "
                                f"({strategy}{', from ' + from_version if from_version else ''})"
                                + (f": {reason}" if reason else ""),
                        data={"strategy": strategy}))
            return rollout

    def rollout(self, rollout_id: int) -> Rollout | None:
        with self.store.session() as s:
            return s.get(Rollout, rollout_id)

    def active_rollout(self, app: str, environment: str) -> Rollout | None:
        with self.store.session() as s:
            return s.scalar(select(Rollout).where(
                Rollout.app == app, Rollout.environment == environment,
                Rollout.phase.not_in(TERMINAL_PHASES)).order_by(Rollout.id))

    def active_rollouts(self) -> list[Rollout]:
        with self.store.session() as s:
            return list(s.scalars(select(Rollout).where(Rollout.phase.not_in(TERMINAL_PHASES))
                                  .order_by(Rollout.id)))

    def rollouts(self, app: str, environment: str | None = None,
                 limit: int = 50) -> list[Rollout]:
        with self.store.session() as s:
            query = select(Rollout).where(Rollout.app == app)
            if environment:
                query = query.where(Rollout.environment == environment)
            return list(s.scalars(query.order_by(Rollout.id.desc()).limit(limit)))

    def save_transition(self, rollout_id: int, *, state: dict[str, Any], phase: str,
                        events: list[tuple[str, str, dict[str, Any]]], actor: str,
                        current_version: str | None = None, set_current: bool = False) -> None:
        """Persist a rollout's new state, its events and (when it ends) the environment's
        current release, in one transaction: the record of a step and the step are one."""
        now = time.time()
        with self.store.session() as s:
            rollout = s.get(Rollout, rollout_id)
            assert rollout is not None
            rollout.state = state
            rollout.phase = phase
            rollout.updated_at = now
            if phase in TERMINAL_PHASES and rollout.finished_at is None:
                rollout.finished_at = now
            for kind, message, data in events:
                s.add(Event(time=now, app=rollout.app, environment=rollout.environment,
                            version=rollout.version, rollout_id=rollout_id, kind=kind,
                            actor=actor, message=message, data=data))
            if set_current:
                env = s.scalar(select(Environment).where(
                    Environment.app == rollout.app, Environment.name == rollout.environment))
                assert env is not None
                env.current_version = current_version
                env.updated_at = now

    # -- analysis runs ---------------------------------------------------------------------

    def analysis_run(self, rollout_id: int, window: int) -> AnalysisRun | None:
        with self.store.session() as s:
            return s.scalar(select(AnalysisRun).where(AnalysisRun.rollout_id == rollout_id,
                                                      AnalysisRun.window == window))

    def analysis_runs(self, rollout_id: int) -> list[AnalysisRun]:
        with self.store.session() as s:
            return list(s.scalars(select(AnalysisRun).where(AnalysisRun.rollout_id == rollout_id)
                                  .order_by(AnalysisRun.window)))

    def begin_analysis_run(self, *, rollout_id: int, window: int, metrics: list[str],
                           baseline: dict[str, Any]) -> AnalysisRun:
        """Idempotent: a window that has a baseline keeps it."""
        now = time.time()
        with self.store.session() as s:
            existing = s.scalar(select(AnalysisRun).where(
                AnalysisRun.rollout_id == rollout_id, AnalysisRun.window == window))
            if existing is not None:
                return existing
            run = AnalysisRun(rollout_id=rollout_id, window=window, metrics=metrics,
                              baseline=baseline, started_at=now, verdict=None, result=None,
                              updated_at=now)
            s.add(run)
            return run

    def record_analysis(self, run_id: int, *, verdict: str, result: dict[str, Any]) -> None:
        with self.store.session() as s:
            run = s.get(AnalysisRun, run_id)
            assert run is not None
            run.verdict = verdict
            run.result = result
            run.updated_at = time.time()

    # -- events ----------------------------------------------------------------------------

    def add_event(self, *, app: str, kind: str, actor: str, message: str,
                  environment: str | None = None, version: str | None = None,
                  rollout_id: int | None = None, data: dict[str, Any] | None = None) -> None:
        with self.store.session() as s:
            s.add(Event(time=time.time(), app=app, environment=environment, version=version,
                        rollout_id=rollout_id, kind=kind, actor=actor, message=message,
                        data=data or {}))

    def events(self, app: str, *, environment: str | None = None,
               rollout_id: int | None = None, after_id: int = 0,
               limit: int = 200) -> list[Event]:
        with self.store.session() as s:
            query = select(Event).where(Event.app == app, Event.id > after_id)
            if environment:
                query = query.where(Event.environment == environment)
            if rollout_id is not None:
                query = query.where(Event.rollout_id == rollout_id)
            rows = list(s.scalars(query.order_by(Event.id.desc()).limit(limit)))
            return rows[::-1]

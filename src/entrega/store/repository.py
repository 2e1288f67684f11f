"""Queries and writes of the store, in domain words. Each method is one transaction."""

from __future__ import annotations

import time
from typing import Any, NamedTuple

from sqlalchemy import Table, bindparam, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from entrega.errors import RolloutInProgress
from entrega.store.database import Store
from entrega.store.models import (
    AnalysisRun,
    App,
    Cursor,
    DeployRequest,
    Environment,
    Event,
    Notification,
    Release,
    Rollout,
)
from entrega.vocabulary import (
    TERMINAL_PHASES,
    WAITING,
    EventKind,
    NotificationStatus,
    RequestStatus,
)


class AnalysisRecord(NamedTuple):
    """An analysis check's verdict, for its window's row (``analysis_runs``)."""

    run_id: int
    verdict: str
    result: dict[str, Any]


# Built once, run with parameters: a thousand rollouts checked every second run these
# (bench/scale.py), and building a statement costs more than running it on SQLite.
_ACTIVE_ROLLOUT = (select(Rollout)
                   .where(Rollout.app == bindparam("app"),
                          Rollout.environment == bindparam("environment"),
                          Rollout.phase.not_in(TERMINAL_PHASES))
                   .order_by(Rollout.id))
_ACTIVE_ROLLOUTS_OF = (select(Rollout)
                       .where(Rollout.app == bindparam("app"),
                              Rollout.phase.not_in(TERMINAL_PHASES))
                       .order_by(Rollout.id))
# The writes are on the tables, not the mapped classes: the ORM's bulk UPDATE machinery
# has nothing to do here (no objects in the session) and cost as much as the rest. The
# session's fence (store/database.py) sees them as it sees every statement.
_rollouts: Table = Rollout.__table__  # type: ignore[assignment]
_analysis_runs: Table = AnalysisRun.__table__  # type: ignore[assignment]
_SAVE_STATE = (update(_rollouts).where(_rollouts.c.id == bindparam("rollout_id"))
               .values(state=bindparam("new_state", type_=_rollouts.c.state.type),
                       phase=bindparam("new_phase"), updated_at=bindparam("now"))
               .returning(_rollouts.c.app, _rollouts.c.environment, _rollouts.c.version))
# Bookkeeping (below) is written only over the row it was derived from.
_SAVE_BOOKKEEPING = (update(_rollouts)
                     .where(_rollouts.c.id == bindparam("rollout_id"),
                            _rollouts.c.updated_at == bindparam("if_updated_at"))
                     .values(state=bindparam("new_state", type_=_rollouts.c.state.type),
                             updated_at=bindparam("now")))
_RECORD_VERDICT = (update(_analysis_runs).where(_analysis_runs.c.id == bindparam("run_id"))
                   .values(verdict=bindparam("new_verdict"),
                           result=bindparam("new_result", type_=_analysis_runs.c.result.type),
                           updated_at=bindparam("now")))


class Bookkeeping(NamedTuple):
    """An analysis check that moved only its bookkeeping (controller/batched.py): the
    rollout's new state, written only if the row is still at ``if_updated_at``, and the
    check's verdict."""

    rollout_id: int
    state: dict[str, Any]
    if_updated_at: float
    analysis: AnalysisRecord | None


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
        with self.store.read() as s:
            return list(s.scalars(select(Environment).where(Environment.app == app)
                                  .order_by(Environment.position)))

    def environment(self, app: str, name: str) -> Environment | None:
        with self.store.read() as s:
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
        with self.store.read() as s:
            return s.scalar(select(Release).where(Release.app == app,
                                                  Release.version == version))

    def releases(self, app: str) -> list[Release]:
        with self.store.read() as s:
            return list(s.scalars(select(Release).where(Release.app == app)
                                  .order_by(Release.id.desc())))

    def digests_in_use(self, *, besides: str) -> set[str]:
        """The digests of every unpruned release of the apps other than ``besides`` (one
        artifact directory serves every app of a server: bytes two apps share stay)."""
        with self.store.read() as s:
            return set(s.scalars(select(Release.digest).where(
                Release.app != besides, Release.pruned_at.is_(None))))

    def add_release(self, *, app: str, version: str, digest: str, artifact_path: str,
                    meta: dict[str, Any], actor: str) -> Release:
        with self.store.session() as s:
            release = Release(app=app, version=version, digest=digest,
                              artifact_path=artifact_path, meta=meta,
                              created_at=time.time(), created_by=actor)
            s.add(release)
            s.add(Event(time=release.created_at, app=app, version=version, kind=EventKind.RELEASE,
                        actor=actor, message=f"release {version} created ({digest[:19]})",
                        data={"digest": digest, **meta}))
            return release

    # -- rollouts --------------------------------------------------------------------------

    def create_rollout(self, *, app: str, environment: str, version: str,
                       from_version: str | None, strategy: str, spec: dict[str, Any],
                       state: dict[str, Any], actor: str, reason: str,
                       purpose: str = "deploy", group_id: int | None = None) -> Rollout:
        now = time.time()
        with self.store.session() as s:
            rollout = Rollout(app=app, environment=environment, version=version,
                              from_version=from_version, strategy=strategy,
                              phase=state["phase"], spec=spec, state=state, created_at=now,
                              updated_at=now, finished_at=None, created_by=actor,
                              reason=reason, purpose=purpose, group_id=group_id)
            s.add(rollout)
            try:
                s.flush()
            except IntegrityError as exc:
                # The partial unique index (models.ACTIVE_ROLLOUT): the last word on "one
                # rollout per environment", whatever a caller checked before.
                raise RolloutInProgress(
                    f"{environment} already has a rollout in progress",
                    hint="wait for it, `entrega abort` it, or queue the deploy") from exc
            s.add(Event(time=now, app=app, environment=environment, version=version,
                        rollout_id=rollout.id, kind=EventKind.ROLLOUT, actor=actor,
                        message=f"rollout of {version} to {environment} requested "
                                f"({strategy}{', from ' + from_version if from_version else ''})"
                                + (f": {reason}" if reason else ""),
                        data={"strategy": strategy}))
            return rollout

    def rollout(self, rollout_id: int) -> Rollout | None:
        with self.store.read() as s:
            return s.get(Rollout, rollout_id)

    def active_rollout(self, app: str, environment: str) -> Rollout | None:
        with self.store.read() as s:
            return s.scalar(_ACTIVE_ROLLOUT, {"app": app, "environment": environment})

    def active_rollouts_of(self, app: str) -> dict[str, Rollout]:
        """Every environment's rollout in progress, by environment: one query for all of
        an app's environments (the controller reads them together)."""
        with self.store.read() as s:
            return {r.environment: r for r in s.scalars(_ACTIVE_ROLLOUTS_OF, {"app": app})}

    def active_rollouts(self) -> list[Rollout]:
        with self.store.read() as s:
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
                        current_version: str | None = None, set_current: bool = False,
                        analysis: AnalysisRecord | None = None,
                        if_updated_at: float | None = None) -> float | None:
        """Persist a rollout's new state, its events, the analysis verdict that led to it
        and (when it ends) the environment's current release, in one transaction: the
        record of a step and the step are one. Returns the ``updated_at`` written (the
        controller knows by it that nobody wrote the row since). With ``if_updated_at``,
        only a row still at that ``updated_at`` is written (else nothing, and None)."""
        now = time.time()
        with self.store.session() as s:
            # One UPDATE, not a load and a flush; the usual one built once.
            if phase in TERMINAL_PHASES or if_updated_at is not None:
                row = update(Rollout).where(Rollout.id == rollout_id)
                if if_updated_at is not None:
                    row = row.where(Rollout.updated_at == if_updated_at)
                rollout = s.execute(
                    row.values(state=state, phase=phase, updated_at=now,
                               finished_at=func.coalesce(Rollout.finished_at, now)
                               if phase in TERMINAL_PHASES else Rollout.finished_at)
                    .returning(Rollout.app, Rollout.environment, Rollout.version)
                    .execution_options(synchronize_session=False)).one_or_none()
            else:
                rollout = s.execute(_SAVE_STATE, {"rollout_id": rollout_id, "new_state": state,
                                                  "new_phase": phase, "now": now}).one_or_none()
            if rollout is None and if_updated_at is not None:
                return None
            assert rollout is not None
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
            if analysis is not None:
                s.execute(_RECORD_VERDICT, {"run_id": analysis.run_id, "now": now,
                                            "new_verdict": analysis.verdict,
                                            "new_result": analysis.result})
        return now

    def save_bookkeeping(self, writes: list[Bookkeeping], *, session: Session) -> float:
        """Many rollouts' bookkeeping, in ``session``'s transaction, each only over the
        row it was derived from (a row written since keeps what it has; the verdict is
        written all the same: the controller takes a rollout's bookkeeping back before it
        writes the row itself, so what is here is the newest check). Returns the
        ``updated_at`` of the rows written. Two statements of many rows each."""
        now = time.time()
        session.execute(_SAVE_BOOKKEEPING, [
            {"rollout_id": w.rollout_id, "new_state": w.state,
             "if_updated_at": w.if_updated_at, "now": now} for w in writes])
        verdicts = [{"run_id": w.analysis.run_id, "new_verdict": w.analysis.verdict,
                     "new_result": w.analysis.result, "now": now}
                    for w in writes if w.analysis is not None]
        if verdicts:
            session.execute(_RECORD_VERDICT, verdicts)
        return now

    # -- analysis runs ---------------------------------------------------------------------

    def analysis_run(self, rollout_id: int, window: int) -> AnalysisRun | None:
        with self.store.read() as s:
            return s.scalar(select(AnalysisRun).where(AnalysisRun.rollout_id == rollout_id,
                                                      AnalysisRun.window == window))

    def analysis_runs(self, rollout_id: int) -> list[AnalysisRun]:
        with self.store.read() as s:
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
            s.execute(_RECORD_VERDICT, {"run_id": run_id, "new_verdict": verdict,
                                        "new_result": result, "now": time.time()})

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

    def last_event(self, app: str, *, kind: str, environment: str | None = None,
                   actor: str | None = None) -> Event | None:
        """The newest event of a kind (e.g. what a cursor-like record saw last)."""
        with self.store.session() as s:
            query = select(Event).where(Event.app == app, Event.kind == kind)
            if environment:
                query = query.where(Event.environment == environment)
            if actor:
                query = query.where(Event.actor == actor)
            return s.scalar(query.order_by(Event.id.desc()).limit(1))

    # -- deploy requests (queue and gates) ----------------------------------------------------

    def add_request(self, *, app: str, environment: str, version: str, status: str,
                    actor: str, reason: str, strategy: str | None = None,
                    forced: bool = False, rollout_id: int | None = None) -> DeployRequest:
        """Record a request; a waiting one supersedes older waiting ones (newest wins)."""
        now = time.time()
        with self.store.session() as s:
            if status in WAITING:
                for older in s.scalars(select(DeployRequest).where(
                        DeployRequest.app == app, DeployRequest.environment == environment,
                        DeployRequest.status.in_(WAITING))):
                    older.status = RequestStatus.SUPERSEDED
                    older.updated_at = now
                    s.add(Event(time=now, app=app, environment=environment,
                                version=older.version, kind=EventKind.SUPERSEDED, actor=actor,
                                message=f"{older.version} will not go to {environment}: "
                                        f"superseded by {version}",
                                data={"request": older.id}))
            request = DeployRequest(app=app, environment=environment, version=version,
                                    status=status, strategy=strategy, actor=actor,
                                    reason=reason, forced=forced, rollout_id=rollout_id,
                                    created_at=now, updated_at=now)
            s.add(request)
            return request

    def waiting_requests(self, app: str, environment: str | None = None) -> list[DeployRequest]:
        with self.store.read() as s:
            query = select(DeployRequest).where(DeployRequest.app == app,
                                                DeployRequest.status.in_(WAITING))
            if environment:
                query = query.where(DeployRequest.environment == environment)
            return list(s.scalars(query.order_by(DeployRequest.id)))

    def requests(self, app: str, limit: int = 500) -> list[DeployRequest]:
        with self.store.read() as s:
            return list(s.scalars(select(DeployRequest).where(DeployRequest.app == app)
                                  .order_by(DeployRequest.id.desc()).limit(limit)))

    def set_request_status(self, request_id: int, status: str, *,
                           rollout_id: int | None = None) -> None:
        with self.store.session() as s:
            request = s.get(DeployRequest, request_id)
            assert request is not None
            request.status = status
            request.updated_at = time.time()
            if rollout_id is not None:
                request.rollout_id = rollout_id

    # -- cursors and the notification outbox ------------------------------------------------

    def cursor(self, name: str) -> int | None:
        with self.store.session() as s:
            row = s.get(Cursor, name)
            return None if row is None else row.value

    def set_cursor(self, name: str, value: int) -> None:
        with self.store.session() as s:
            row = s.get(Cursor, name)
            if row is None:
                s.add(Cursor(name=name, value=value))
            else:
                row.value = value

    def last_event_id(self) -> int:
        with self.store.read() as s:
            return int(s.scalar(select(func.max(Event.id))) or 0)

    def events_after(self, after_id: int, limit: int = 500) -> list[Event]:
        with self.store.read() as s:
            return list(s.scalars(select(Event).where(Event.id > after_id)
                                  .order_by(Event.id).limit(limit)))

    def enqueue_notifications(self, rows: list[tuple[int, str, dict[str, Any]]],
                              cursor: tuple[str, int]) -> None:
        """Add outbox rows and move the cursor past their events, in one transaction."""
        now = time.time()
        with self.store.session() as s:
            for event_id, url, payload in rows:
                s.add(Notification(event_id=event_id, url=url, payload=payload,
                                   status=NotificationStatus.PENDING, attempts=0,
                                   next_attempt_at=now, last_error=None, created_at=now))
            name, value = cursor
            row = s.get(Cursor, name)
            if row is None:
                s.add(Cursor(name=name, value=value))
            else:
                row.value = value

    def due_notifications(self, now: float, limit: int = 50) -> list[Notification]:
        with self.store.read() as s:
            return list(s.scalars(select(Notification).where(
                Notification.status == NotificationStatus.PENDING,
                Notification.next_attempt_at <= now).order_by(Notification.id).limit(limit)))

    def next_notification_at(self) -> float | None:
        with self.store.session() as s:
            value = s.scalar(select(func.min(Notification.next_attempt_at)).where(
                Notification.status == NotificationStatus.PENDING))
            return None if value is None else float(value)

    def record_delivery(self, notification_id: int, *, ok: bool, error: str | None,
                        retry_at: float | None) -> None:
        with self.store.session() as s:
            row = s.get(Notification, notification_id)
            assert row is not None
            row.attempts += 1
            row.last_error = error
            if ok:
                row.status = NotificationStatus.SENT
            elif retry_at is None:
                row.status = NotificationStatus.FAILED
            else:
                row.next_attempt_at = retry_at

    def notifications(self, limit: int = 100) -> list[Notification]:
        with self.store.read() as s:
            return list(s.scalars(select(Notification).order_by(Notification.id.desc())
                                  .limit(limit)))

    # -- retention ----------------------------------------------------------------------------

    def mark_pruned(self, app: str, version: str) -> None:
        with self.store.session() as s:
            release = s.scalar(select(Release).where(Release.app == app,
                                                     Release.version == version))
            assert release is not None
            release.pruned_at = time.time()
            s.add(Event(time=release.pruned_at, app=app, version=version, kind=EventKind.PRUNED,
                        actor="controller",
                        message=f"artifact of {version} deleted by retention"))

"""Queries and writes of the feedback and insights tables, in domain words.

Kept apart from ``repository.py`` (the controller's rollout state) because it is written by
other hands at other rates: feedback by the public API, samples by the collector every
few seconds. Each method is one transaction.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import case, func, insert, select
from sqlalchemy.orm import Session

from entrega.store.database import Store
from entrega.store.models import AnalysisRun, Event, Feedback, Release, ReleaseSample, Rollout

#: what a router sample stores (its id comes from the database)
_SAMPLE_COLUMNS = tuple(c.key for c in ReleaseSample.__table__.columns if c.key != "id")


@dataclass(frozen=True)
class FeedbackTotals:
    count: int
    rated: int
    rating_sum: int
    low: int  # ratings of 1 or 2

    @property
    def mean_rating(self) -> float | None:
        return self.rating_sum / self.rated if self.rated else None


class InsightsRepository:
    def __init__(self, store: Store) -> None:
        self.store = store

    # -- feedback --------------------------------------------------------------------------

    def add_feedback(self, *, app: str, version: str, environment: str | None,
                     claimed_version: str | None, rating: int | None, comment: str | None,
                     user_id: str | None, tags: list[str], client: str,
                     at: float | None = None) -> Feedback:
        with self.store.session() as s:
            row = Feedback(time=time.time() if at is None else at, app=app,
                           environment=environment, version=version,
                           claimed_version=claimed_version, rating=rating, comment=comment,
                           user_id=user_id, tags=tags, client=client)
            s.add(row)
            s.flush()
            return row

    def feedback(self, app: str, *, version: str | None = None,
                 environment: str | None = None, limit: int = 200) -> list[Feedback]:
        """Newest first."""
        with self.store.session() as s:
            query = select(Feedback).where(Feedback.app == app)
            if version is not None:
                query = query.where(Feedback.version == version)
            if environment is not None:
                query = query.where(Feedback.environment == environment)
            return list(s.scalars(query.order_by(Feedback.id.desc()).limit(limit)))

    def feedback_totals(self, app: str) -> dict[str, FeedbackTotals]:
        """Per version: how many, how many rated, the ratings' sum and the 1-2 ratings."""
        with self.store.session() as s:
            rows = s.execute(
                select(Feedback.version, Feedback.rating, func.count())
                .where(Feedback.app == app).group_by(Feedback.version, Feedback.rating))
            acc: dict[str, list[int]] = {}
            for version, rating, count in rows:
                a = acc.setdefault(version, [0, 0, 0, 0])
                a[0] += count
                if rating is not None:
                    a[1] += count
                    a[2] += rating * count
                    if rating <= 2:
                        a[3] += count
            return {v: FeedbackTotals(*a) for v, a in acc.items()}

    def ratings_since(self, app: str, environment: str, versions: Iterable[str], *,
                      since: float) -> dict[str, tuple[int, int]]:
        """Per version: (ratings, low ratings of 1 or 2) given in ``environment`` at or
        after ``since`` (Unix seconds); comments without a rating are not counted."""
        low = func.sum(case((Feedback.rating <= 2, 1), else_=0))
        with self.store.session() as s:
            rows = s.execute(
                select(Feedback.version, func.count(), low)
                .where(Feedback.app == app, Feedback.environment == environment,
                       Feedback.version.in_(list(versions)), Feedback.time >= since,
                       Feedback.rating.is_not(None))
                .group_by(Feedback.version))
            return {version: (int(count), int(lows or 0)) for version, count, lows in rows}

    def rating_counts(self, app: str) -> dict[tuple[str, int | None], int]:
        with self.store.session() as s:
            rows = s.execute(select(Feedback.version, Feedback.rating, func.count())
                             .where(Feedback.app == app)
                             .group_by(Feedback.version, Feedback.rating))
            return {(version, rating): int(count) for version, rating, count in rows}

    # -- router samples --------------------------------------------------------------------

    def add_samples(self, samples: Iterable[ReleaseSample], *,
                    session: Session | None = None) -> int:
        """Samples in one INSERT of many rows (in ``session``'s transaction if given),
        not a flush of objects (a thousand routers sampled every few seconds:
        bench/scale.py); the samples stay unbound."""
        rows = [{column: getattr(sample, column) for column in _SAMPLE_COLUMNS}
                for sample in samples]
        if rows and session is not None:
            session.execute(insert(ReleaseSample), rows)
        elif rows:
            with self.store.session() as s:
                s.execute(insert(ReleaseSample), rows)
        return len(rows)

    def latest_samples(self, app: str) -> dict[tuple[str, str], ReleaseSample]:
        """The newest sample of every (environment, version): where a restarted collector
        picks up."""
        with self.store.session() as s:
            newest = (select(func.max(ReleaseSample.id))
                      .where(ReleaseSample.app == app)
                      .group_by(ReleaseSample.environment, ReleaseSample.version))
            rows = s.scalars(select(ReleaseSample).where(ReleaseSample.id.in_(newest)))
            return {(r.environment, r.version): r for r in rows}

    def samples(self, app: str, version: str, *, environment: str | None = None,
                since: float | None = None) -> list[ReleaseSample]:
        """Oldest first."""
        with self.store.session() as s:
            query = select(ReleaseSample).where(ReleaseSample.app == app,
                                                ReleaseSample.version == version)
            if environment is not None:
                query = query.where(ReleaseSample.environment == environment)
            if since is not None:
                query = query.where(ReleaseSample.time >= since)
            return list(s.scalars(query.order_by(ReleaseSample.time, ReleaseSample.id)))

    # -- history for scorecards, DORA and /metrics -------------------------------------------

    def releases(self, app: str) -> dict[str, Release]:
        with self.store.session() as s:
            return {r.version: r for r in s.scalars(select(Release).where(Release.app == app))}

    def rollouts(self, app: str, *, environment: str | None = None,
                 version: str | None = None, since: float | None = None) -> list[Rollout]:
        """Oldest first, without a limit (DORA needs the whole period)."""
        with self.store.session() as s:
            query = select(Rollout).where(Rollout.app == app)
            if environment is not None:
                query = query.where(Rollout.environment == environment)
            if version is not None:
                query = query.where(Rollout.version == version)
            if since is not None:
                query = query.where(Rollout.created_at >= since)
            return list(s.scalars(query.order_by(Rollout.id)))

    def events(self, app: str, *, kinds: Iterable[str] | None = None,
               environment: str | None = None, version: str | None = None,
               rollout_ids: Iterable[int] | None = None,
               since: float | None = None) -> list[Event]:
        """Oldest first."""
        with self.store.session() as s:
            query = select(Event).where(Event.app == app)
            if kinds is not None:
                query = query.where(Event.kind.in_(list(kinds)))
            if environment is not None:
                query = query.where(Event.environment == environment)
            if version is not None:
                query = query.where(Event.version == version)
            if rollout_ids is not None:
                query = query.where(Event.rollout_id.in_(list(rollout_ids)))
            if since is not None:
                query = query.where(Event.time >= since)
            return list(s.scalars(query.order_by(Event.id)))

    def analysis_runs(self, rollout_ids: Iterable[int]) -> list[AnalysisRun]:
        with self.store.session() as s:
            return list(s.scalars(select(AnalysisRun)
                                  .where(AnalysisRun.rollout_id.in_(list(rollout_ids)))
                                  .order_by(AnalysisRun.rollout_id, AnalysisRun.window)))

    def rollout_phase_counts(self) -> dict[tuple[str, str, str], int]:
        """(app, environment, phase) -> rollouts."""
        with self.store.session() as s:
            rows = s.execute(select(Rollout.app, Rollout.environment, Rollout.phase,
                                    func.count())
                             .group_by(Rollout.app, Rollout.environment, Rollout.phase))
            return {(a, e, p): int(n) for a, e, p, n in rows}

    def analysis_verdict_counts(self) -> dict[tuple[str, str, str], int]:
        """(app, environment, verdict) -> analysis windows judged."""
        with self.store.session() as s:
            rows = s.execute(select(Rollout.app, Rollout.environment, AnalysisRun.verdict,
                                    func.count())
                             .join(Rollout, Rollout.id == AnalysisRun.rollout_id)
                             .where(AnalysisRun.verdict.is_not(None))
                             .group_by(Rollout.app, Rollout.environment, AnalysisRun.verdict))
            return {(a, e, str(v)): int(n) for a, e, v, n in rows}

    def event_counts(self, kinds: Iterable[str]) -> dict[tuple[str, str, str], int]:
        """(app, environment, kind) -> events."""
        with self.store.session() as s:
            rows = s.execute(select(Event.app, Event.environment, Event.kind, func.count())
                             .where(Event.kind.in_(list(kinds)))
                             .group_by(Event.app, Event.environment, Event.kind))
            return {(a, e or "", k): int(n) for a, e, k, n in rows}

    def feedback_counts(self) -> dict[tuple[str, str, str], int]:
        """(app, version, rating or "none") -> feedback entries."""
        with self.store.session() as s:
            rows = s.execute(select(Feedback.app, Feedback.version, Feedback.rating,
                                    func.count())
                             .group_by(Feedback.app, Feedback.version, Feedback.rating))
            return {(a, v, "none" if r is None else str(r)): int(n) for a, v, r, n in rows}

"""SQLAlchemy models. The schema itself is owned by the Alembic migrations beside this file;
a test checks that the migrated schema and these models agree."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from entrega.vocabulary import TERMINAL_PHASES


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class App(Base):
    __tablename__ = "apps"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[float] = mapped_column(Float)


class Release(Base):
    """app + version + artifact digest + commit metadata. Immutable once written."""

    __tablename__ = "releases"
    __table_args__ = (UniqueConstraint("app", "version"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    app: Mapped[str] = mapped_column(ForeignKey("apps.name"))
    version: Mapped[str] = mapped_column(String(128))
    digest: Mapped[str] = mapped_column(String(71))  # "sha256:" + 64 hex
    artifact_path: Mapped[str] = mapped_column(Text)
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[float] = mapped_column(Float)
    created_by: Mapped[str] = mapped_column(String(64))
    #: when retention removed the artifact (the release row stays, for history)
    pruned_at: Mapped[float | None] = mapped_column(Float, nullable=True, default=None)


class Environment(Base):
    __tablename__ = "environments"
    __table_args__ = (UniqueConstraint("app", "name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    app: Mapped[str] = mapped_column(ForeignKey("apps.name"))
    name: Mapped[str] = mapped_column(String(64))
    position: Mapped[int] = mapped_column(Integer)
    #: the release the environment runs when no rollout is in progress
    current_version: Mapped[str | None] = mapped_column(String(128), nullable=True)
    updated_at: Mapped[float] = mapped_column(Float)


#: The rows of rollouts still in progress (phase not terminal): an environment may have at
#: most one, which a partial unique index enforces (SQLite and PostgreSQL both have them).
ACTIVE_ROLLOUT = "phase NOT IN (" + ", ".join(f"'{p}'" for p in TERMINAL_PHASES) + ")"


class Rollout(Base):
    __tablename__ = "rollouts"
    __table_args__ = (
        Index("ix_rollouts_env_phase", "app", "environment", "phase"),
        Index("uq_rollouts_one_active", "app", "environment", unique=True,
              sqlite_where=text(ACTIVE_ROLLOUT), postgresql_where=text(ACTIVE_ROLLOUT)),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    app: Mapped[str] = mapped_column(ForeignKey("apps.name"))
    environment: Mapped[str] = mapped_column(String(64))
    version: Mapped[str] = mapped_column(String(128))
    from_version: Mapped[str | None] = mapped_column(String(128), nullable=True)
    strategy: Mapped[str] = mapped_column(String(32))
    #: denormalised from state, for queries
    phase: Mapped[str] = mapped_column(String(32))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    state: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_by: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text, default="")
    #: "deploy" (moves the release along the pipeline) or "rollback" (restores one)
    purpose: Mapped[str] = mapped_column(String(16), default="deploy",
                                         server_default="deploy")
    #: the release group that started this rollout (None: not part of a group)
    group_id: Mapped[int | None] = mapped_column(Integer, nullable=True)


class ReleaseGroup(Base):
    """Releases of several apps delivered as one (``groups/model.py``: spec and state)."""

    __tablename__ = "release_groups"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    phase: Mapped[str] = mapped_column(String(32))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    state: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_by: Mapped[str] = mapped_column(String(64))


class AnalysisRun(Base):
    """One analysis window of a rollout: the baseline snapshot and the latest verdict."""

    __tablename__ = "analysis_runs"
    __table_args__ = (UniqueConstraint("rollout_id", "window"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    rollout_id: Mapped[int] = mapped_column(ForeignKey("rollouts.id"))
    window: Mapped[int] = mapped_column(Integer)
    metrics: Mapped[list[Any]] = mapped_column(JSON)
    baseline: Mapped[dict[str, Any]] = mapped_column(JSON)
    started_at: Mapped[float] = mapped_column(Float)
    verdict: Mapped[str | None] = mapped_column(String(16), nullable=True)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    updated_at: Mapped[float] = mapped_column(Float)


class Event(Base):
    """Append-only record of everything that happened (audit log, notifications, DORA)."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_app_time", "app", "time"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    time: Mapped[float] = mapped_column(Float)
    app: Mapped[str] = mapped_column(String(64))
    environment: Mapped[str | None] = mapped_column(String(64), nullable=True)
    version: Mapped[str | None] = mapped_column(String(128), nullable=True)
    rollout_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    kind: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(64))
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    #: the epoch of the leader that wrote it (None: a server without election)
    epoch: Mapped[int | None] = mapped_column(Integer, nullable=True, default=None)


class Leadership(Base):
    """The one row servers sharing a store elect their leader by (store/leadership.py)."""

    __tablename__ = "leadership"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    epoch: Mapped[int] = mapped_column(Integer)
    holder: Mapped[str | None] = mapped_column(String(128), nullable=True)
    address: Mapped[str | None] = mapped_column(String(256), nullable=True)
    since: Mapped[float | None] = mapped_column(Float, nullable=True)


class DeployRequest(Base):
    """A request to roll a release out to an environment: queued behind a running
    rollout, waiting at a manual gate, started, or superseded by a newer one."""

    __tablename__ = "deploy_requests"
    __table_args__ = (Index("ix_deploy_requests_env_status", "app", "environment", "status"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    app: Mapped[str] = mapped_column(ForeignKey("apps.name"))
    environment: Mapped[str] = mapped_column(String(64))
    version: Mapped[str] = mapped_column(String(128))
    #: a vocabulary.RequestStatus
    status: Mapped[str] = mapped_column(String(32))
    strategy: Mapped[str | None] = mapped_column(String(32), nullable=True)
    actor: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text, default="")
    forced: Mapped[bool] = mapped_column(Boolean, default=False)
    rollout_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)


class Cursor(Base):
    """A named position in the event log (e.g. the last event considered for notifying),
    so work driven by events resumes after a restart without repeating or skipping."""

    __tablename__ = "cursors"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[int] = mapped_column(Integer)


class Notification(Base):
    """Outbox of outgoing webhooks: persisted so retries survive a restart."""

    __tablename__ = "notifications"
    __table_args__ = (Index("ix_notifications_status_next", "status", "next_attempt_at"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id"))
    url: Mapped[str] = mapped_column(Text)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    #: a vocabulary.NotificationStatus
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[float] = mapped_column(Float)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[float] = mapped_column(Float)


class Feedback(Base):
    """What a user said about a release. ``version`` is ``unknown`` when the release could
    not be resolved (kept, never dropped); ``claimed_version`` keeps what the client sent
    in that case. ``comment`` is stored as given: every view escapes it."""

    __tablename__ = "feedback"
    __table_args__ = (Index("ix_feedback_app_version_time", "app", "version", "time"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    time: Mapped[float] = mapped_column(Float)
    app: Mapped[str] = mapped_column(String(64))
    environment: Mapped[str | None] = mapped_column(String(64), nullable=True)
    version: Mapped[str] = mapped_column(String(128))
    claimed_version: Mapped[str | None] = mapped_column(String(128), nullable=True)
    #: 1..5, or None for a comment alone
    rating: Mapped[int | None] = mapped_column(Integer, nullable=True)
    comment: Mapped[str | None] = mapped_column(Text, nullable=True)
    user_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    tags: Mapped[list[Any]] = mapped_column(JSON, default=list)
    #: keyed hash of the client's address (rate limiting, spotting floods); never the address
    client: Mapped[str] = mapped_column(String(32))


class ReleaseSample(Base):
    """One cumulative snapshot of a release's router counters (see routers.base).

    Consumers take differences between consecutive samples of one (environment, version);
    a change of ``router_started_at`` or a counter that went down means the router
    restarted, and the later sample is then the whole difference.
    """

    __tablename__ = "release_samples"
    __table_args__ = (Index("ix_release_samples_app_version_time", "app", "version", "time"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    time: Mapped[float] = mapped_column(Float)
    app: Mapped[str] = mapped_column(String(64))
    environment: Mapped[str] = mapped_column(String(64))
    version: Mapped[str] = mapped_column(String(128))
    router_started_at: Mapped[float] = mapped_column(Float)
    requests: Mapped[int] = mapped_column(Integer)
    errors_5xx: Mapped[int] = mapped_column(Integer)
    latency_buckets: Mapped[list[Any]] = mapped_column(JSON)
    latency_sum_ms: Mapped[float] = mapped_column(Float)
    inflight: Mapped[int] = mapped_column(Integer)
    #: percent of traffic the router gave the release when sampled (None: unknown)
    weight: Mapped[int | None] = mapped_column(Integer, nullable=True)

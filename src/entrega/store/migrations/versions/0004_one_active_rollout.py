"""one active rollout per environment: a partial unique index on (app, environment)

Revision ID: 0004
Revises: 0003

A store written before this revision may already hold two rollouts in progress in one
environment (the race this index closes). The controller always drove the oldest one
(``Repository.active_rollout`` orders by id), so the newer ones never moved a byte of
traffic: they are ended as ``failed`` with a message and an event saying why, and the
index can then be built.
"""

import time

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TERMINAL = ("succeeded", "rolled_back", "failed")
ACTIVE_ROLLOUT = "phase NOT IN ('succeeded', 'rolled_back', 'failed')"

rollouts = sa.table(
    "rollouts", sa.column("id", sa.Integer), sa.column("app", sa.String),
    sa.column("environment", sa.String), sa.column("version", sa.String),
    sa.column("phase", sa.String), sa.column("state", sa.JSON),
    sa.column("updated_at", sa.Float), sa.column("finished_at", sa.Float))
events = sa.table(
    "events", sa.column("time", sa.Float), sa.column("app", sa.String),
    sa.column("environment", sa.String), sa.column("version", sa.String),
    sa.column("rollout_id", sa.Integer), sa.column("kind", sa.String),
    sa.column("actor", sa.String), sa.column("message", sa.Text),
    sa.column("data", sa.JSON))


def _end_duplicates(connection: sa.Connection) -> None:
    now = time.time()
    kept: dict[tuple[str, str], int] = {}
    active = connection.execute(
        sa.select(rollouts.c.id, rollouts.c.app, rollouts.c.environment,
                  rollouts.c.version, rollouts.c.state)
        .where(rollouts.c.phase.not_in(TERMINAL)).order_by(rollouts.c.id)).all()
    for row in active:
        key = (row.app, row.environment)
        if key not in kept:
            kept[key] = row.id
            continue
        message = (f"ended by the store upgrade: rollout {kept[key]} was already in "
                   f"progress in {row.environment} (one rollout per environment at a time)")
        state = {**(row.state or {}), "phase": "failed", "message": message}
        connection.execute(sa.update(rollouts).where(rollouts.c.id == row.id).values(
            phase="failed", state=state, updated_at=now, finished_at=now))
        connection.execute(sa.insert(events).values(
            time=now, app=row.app, environment=row.environment, version=row.version,
            rollout_id=row.id, kind="failed", actor="store", message=message,
            data={"phase": "failed", "reason": message, "kept_rollout": kept[key]}))


def upgrade() -> None:
    _end_duplicates(op.get_bind())
    op.create_index("uq_rollouts_one_active", "rollouts", ["app", "environment"],
                    unique=True, sqlite_where=sa.text(ACTIVE_ROLLOUT),
                    postgresql_where=sa.text(ACTIVE_ROLLOUT))


def downgrade() -> None:
    op.drop_index("uq_rollouts_one_active", table_name="rollouts")

"""leadership: the leader epoch of servers sharing one store, and who wrote each event

Revision ID: 0006
Revises: 0005

One row (id 1). A server that becomes leader bumps ``epoch`` in the session that holds the
election's lock (``store/leadership.py``); every write of a leader first reads the row
``FOR SHARE`` and gives up unless the epoch is still its own. ``events.epoch`` records the
epoch of the leader that wrote each event (NULL: a server without election, SQLite's),
so a write by a stale leader would show in the history.
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    leadership = op.create_table(
        "leadership",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("epoch", sa.Integer, nullable=False),
        sa.Column("holder", sa.String(128), nullable=True),
        sa.Column("address", sa.String(256), nullable=True),
        sa.Column("since", sa.Float, nullable=True),
    )
    op.bulk_insert(leadership, [{"id": 1, "epoch": 0}])
    with op.batch_alter_table("events") as batch:
        batch.add_column(sa.Column("epoch", sa.Integer, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.drop_column("epoch")
    op.drop_table("leadership")

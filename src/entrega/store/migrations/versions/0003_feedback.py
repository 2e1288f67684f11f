"""feedback: user ratings and comments, per-release router samples

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "feedback",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("time", sa.Float, nullable=False),
        sa.Column("app", sa.String(64), nullable=False),
        sa.Column("environment", sa.String(64), nullable=True),
        sa.Column("version", sa.String(128), nullable=False),
        sa.Column("claimed_version", sa.String(128), nullable=True),
        sa.Column("rating", sa.Integer, nullable=True),
        sa.Column("comment", sa.Text, nullable=True),
        sa.Column("user_id", sa.String(128), nullable=True),
        sa.Column("tags", sa.JSON, nullable=False),
        sa.Column("client", sa.String(32), nullable=False),
    )
    op.create_index("ix_feedback_app_version_time", "feedback", ["app", "version", "time"])
    op.create_table(
        "release_samples",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("time", sa.Float, nullable=False),
        sa.Column("app", sa.String(64), nullable=False),
        sa.Column("environment", sa.String(64), nullable=False),
        sa.Column("version", sa.String(128), nullable=False),
        sa.Column("router_started_at", sa.Float, nullable=False),
        sa.Column("requests", sa.Integer, nullable=False),
        sa.Column("errors_5xx", sa.Integer, nullable=False),
        sa.Column("latency_buckets", sa.JSON, nullable=False),
        sa.Column("latency_sum_ms", sa.Float, nullable=False),
        sa.Column("inflight", sa.Integer, nullable=False),
        sa.Column("weight", sa.Integer, nullable=True),
    )
    op.create_index("ix_release_samples_app_version_time", "release_samples",
                    ["app", "version", "time"])


def downgrade() -> None:
    op.drop_table("release_samples")
    op.drop_table("feedback")

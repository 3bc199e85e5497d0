"""The job queue: claiming, batching, cancelling and quotas on jobs; workers; daily usage.

Revision ID: 0002
Revises: 0001
Create Date: 2025-12-03

``jobs`` gains the columns the queue needs (all with server defaults, so existing rows
stay valid); ``workers`` holds heartbeats (is a worker alive? hung? what does it run?) and
its measured step times (ETAs in other processes); ``guild_usage`` counts images and
GPU-seconds per server and UTC day, so daily quotas survive restarts.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def timestamp() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("job_class", sa.String(16), nullable=False, server_default="interactive"))
        batch.add_column(sa.Column("batch_key", sa.String(64), nullable=True))
        batch.add_column(sa.Column("images", sa.Integer(), nullable=False, server_default="1"))
        batch.add_column(sa.Column("work", sa.Float(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("cost_group", sa.String(255), nullable=False, server_default=""))
        batch.add_column(sa.Column("worker_id", sa.String(128), nullable=True))
        batch.add_column(sa.Column("cancel_requested", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("checkpoint", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("error_code", sa.String(64), nullable=True))
        batch.add_column(sa.Column("error_params", sa.JSON(), nullable=True))
        batch.create_check_constraint("ck_jobs_job_class", "job_class IN ('interactive', 'long')")
        batch.create_check_constraint("ck_jobs_images", "images >= 1")
        batch.create_index("ix_jobs_worker_id", ["worker_id"])
        batch.create_index("ix_jobs_finished_at", ["finished_at"])  # recent GPU usage, read at start

    op.create_table(
        "workers",
        sa.Column("worker_id", sa.String(128), nullable=False),
        sa.Column("device", sa.String(64), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("running", sa.JSON(), nullable=False),
        sa.Column("stats", sa.JSON(), nullable=False),
        sa.Column("started_at", timestamp(), nullable=False),
        sa.Column("heartbeat_at", timestamp(), nullable=False),
        sa.PrimaryKeyConstraint("worker_id", name="pk_workers"),
        sa.CheckConstraint("state IN ('idle', 'busy', 'hung', 'stopped')", name="ck_workers_state"),
    )

    op.create_table(
        "guild_usage",
        sa.Column("guild_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("images", sa.Integer(), nullable=False),
        sa.Column("gpu_seconds", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("guild_id", "day", name="pk_guild_usage"),
        sa.CheckConstraint("images >= 0", name="ck_guild_usage_images"),
        sa.CheckConstraint("gpu_seconds >= 0", name="ck_guild_usage_gpu_seconds"),
    )


def downgrade() -> None:
    op.drop_table("guild_usage")
    op.drop_table("workers")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_finished_at")
        batch.drop_index("ix_jobs_worker_id")
        batch.drop_constraint("ck_jobs_images", type_="check")
        batch.drop_constraint("ck_jobs_job_class", type_="check")
        for column in ("error_params", "error_code", "checkpoint", "cancel_requested", "worker_id", "cost_group",
                       "work", "images", "batch_key", "job_class"):
            batch.drop_column(column)

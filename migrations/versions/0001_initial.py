"""Initial schema: jobs, images, user and server settings.

Revision ID: 0001
Revises:
Create Date: 2025-11-26

Constraint and index names follow ``storage.models.NAMING_CONVENTION`` and are written out
here, so later migrations can address them on every database.  Types are spelled as
plain SQLAlchemy types (``UTCDateTime`` is ``DateTime(timezone=True)`` underneath).
LoRAs and datasets come in a later revision.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Auto-incrementing key: BIGINT, but INTEGER (the rowid) on SQLite.
surrogate_key = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def timestamp() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", surrogate_key, nullable=False),
        sa.Column("public_id", sa.String(16), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("owner_id", sa.BigInteger(), nullable=False),
        sa.Column("guild_id", sa.BigInteger(), nullable=True),
        sa.Column("channel_id", sa.BigInteger(), nullable=True),
        sa.Column("request", sa.JSON(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("progress", sa.Float(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("result_image_ids", sa.JSON(), nullable=False),
        sa.Column("reply_ref", sa.JSON(), nullable=True),
        sa.Column("gpu_seconds", sa.Float(), nullable=False),
        sa.Column("created_at", timestamp(), nullable=False),
        sa.Column("started_at", timestamp(), nullable=True),
        sa.Column("finished_at", timestamp(), nullable=True),
        sa.Column("heartbeat_at", timestamp(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_jobs"),
        sa.UniqueConstraint("public_id", name="uq_jobs_public_id"),
        sa.CheckConstraint(
            "kind IN ('generate', 'reroll', 'tweak', 'upscale', 'vary', 'train')", name="ck_jobs_kind"
        ),
        sa.CheckConstraint(
            "status IN ('queued', 'running', 'done', 'failed', 'cancelled')", name="ck_jobs_status"
        ),
        sa.CheckConstraint("attempts >= 0", name="ck_jobs_attempts"),
        sa.CheckConstraint("max_attempts >= 1", name="ck_jobs_max_attempts"),
    )
    op.create_index("ix_jobs_status_priority_created_at", "jobs", ["status", "priority", "created_at"])
    op.create_index("ix_jobs_owner_id_status", "jobs", ["owner_id", "status"])
    op.create_index("ix_jobs_guild_id_created_at", "jobs", ["guild_id", "created_at"])

    op.create_table(
        "images",
        sa.Column("id", surrogate_key, nullable=False),
        sa.Column("public_id", sa.String(16), nullable=False),
        sa.Column("owner_id", sa.BigInteger(), nullable=False),
        sa.Column("guild_id", sa.BigInteger(), nullable=True),
        sa.Column("channel_id", sa.BigInteger(), nullable=True),
        sa.Column("message_id", sa.BigInteger(), nullable=True),
        sa.Column("job_id", surrogate_key, nullable=True),
        sa.Column("parent_id", surrogate_key, nullable=True),
        sa.Column("relation", sa.String(16), nullable=True),
        sa.Column("batch_index", sa.Integer(), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("negative_prompt", sa.Text(), nullable=True),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column("steps", sa.Integer(), nullable=False),
        sa.Column("cfg", sa.Float(), nullable=False),
        sa.Column("sampler", sa.String(64), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("model", sa.String(255), nullable=False),
        sa.Column("model_hash", sa.String(64), nullable=True),
        sa.Column("lora_hashes", sa.JSON(), nullable=False),
        sa.Column("request", sa.JSON(), nullable=False),
        sa.Column("canonical", sa.Text(), nullable=False),
        sa.Column("file_path", sa.String(512), nullable=False),
        sa.Column("content_sha256", sa.String(64), nullable=False),
        sa.Column("file_size", sa.BigInteger(), nullable=False),
        sa.Column("created_at", timestamp(), nullable=False),
        sa.Column("deleted_at", timestamp(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_images"),
        sa.UniqueConstraint("public_id", name="uq_images_public_id"),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name="fk_images_job_id_jobs", ondelete="SET NULL"),
        sa.ForeignKeyConstraint(
            ["parent_id"], ["images.id"], name="fk_images_parent_id_images", ondelete="SET NULL"
        ),
        sa.CheckConstraint(
            "relation IS NULL OR relation IN ('reroll', 'tweak', 'upscale', 'vary')",
            name="ck_images_relation",
        ),
        sa.CheckConstraint("batch_index >= 0", name="ck_images_batch_index"),
        sa.CheckConstraint("file_size >= 0", name="ck_images_file_size"),
    )
    op.create_index("ix_images_owner_id_created_at", "images", ["owner_id", "created_at"])
    op.create_index("ix_images_guild_id_created_at", "images", ["guild_id", "created_at"])
    op.create_index("ix_images_message_id", "images", ["message_id"])
    op.create_index("ix_images_job_id", "images", ["job_id"])
    op.create_index("ix_images_parent_id", "images", ["parent_id"])

    op.create_table(
        "user_settings",
        sa.Column("user_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("defaults", sa.Text(), nullable=False),
        sa.Column("locale", sa.String(16), nullable=True),
        sa.Column("updated_at", timestamp(), nullable=False),
        sa.PrimaryKeyConstraint("user_id", name="pk_user_settings"),
    )

    op.create_table(
        "guild_settings",
        sa.Column("guild_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("defaults", sa.Text(), nullable=False),
        sa.Column("allowed_models", sa.JSON(), nullable=True),
        sa.Column("limits", sa.JSON(), nullable=False),
        sa.Column("channels", sa.JSON(), nullable=False),
        sa.Column("safety", sa.JSON(), nullable=False),
        sa.Column("updated_at", timestamp(), nullable=False),
        sa.PrimaryKeyConstraint("guild_id", name="pk_guild_settings"),
    )


def downgrade() -> None:
    op.drop_table("guild_settings")
    op.drop_table("user_settings")
    for index in (
        "ix_images_parent_id",
        "ix_images_job_id",
        "ix_images_message_id",
        "ix_images_guild_id_created_at",
        "ix_images_owner_id_created_at",
    ):
        op.drop_index(index, table_name="images")
    op.drop_table("images")
    for index in (
        "ix_jobs_guild_id_created_at",
        "ix_jobs_owner_id_status",
        "ix_jobs_status_priority_created_at",
    ):
        op.drop_index(index, table_name="jobs")
    op.drop_table("jobs")

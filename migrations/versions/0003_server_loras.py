"""Server LoRAs: training datasets and their images, LoRAs, and two server settings.

Revision ID: 0003
Revises: 0002
Create Date: 2026-01-14

``datasets`` and ``loras`` keep names unique per namespace (``scope_key``: ``g:<guild>``
or ``u:<user>``) and case-insensitively (``name_key``); a deleted LoRA's ``name_key`` is
NULL, which frees its name.  ``dataset_images`` are deleted with their dataset; a LoRA
keeps its row (``dataset_id`` set to NULL) when its dataset goes.  ``guild_settings``
gains the role that may train LoRAs and whether the operator's folder LoRAs apply there.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Auto-incrementing key: BIGINT, but INTEGER (the rowid) on SQLite.
surrogate_key = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def timestamp() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "datasets",
        sa.Column("id", surrogate_key, nullable=False),
        sa.Column("public_id", sa.String(16), nullable=False),
        sa.Column("guild_id", sa.BigInteger(), nullable=True),
        sa.Column("owner_id", sa.BigInteger(), nullable=False),
        sa.Column("scope_key", sa.String(32), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("name_key", sa.String(64), nullable=False),
        sa.Column("created_at", timestamp(), nullable=False),
        sa.Column("updated_at", timestamp(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_datasets"),
        sa.UniqueConstraint("public_id", name="uq_datasets_public_id"),
        sa.UniqueConstraint("scope_key", "name_key", name="uq_datasets_scope_key_name_key"),
    )
    op.create_table(
        "dataset_images",
        sa.Column("id", surrogate_key, nullable=False),
        sa.Column("public_id", sa.String(16), nullable=False),
        sa.Column("dataset_id", surrogate_key, nullable=False),
        sa.Column("file_path", sa.String(512), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("caption", sa.Text(), nullable=True),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("original_name", sa.String(255), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("created_at", timestamp(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_dataset_images"),
        sa.UniqueConstraint("public_id", name="uq_dataset_images_public_id"),
        sa.UniqueConstraint("dataset_id", "sha256", name="uq_dataset_images_dataset_id_sha256"),
        sa.ForeignKeyConstraint(["dataset_id"], ["datasets.id"], name="fk_dataset_images_dataset_id_datasets",
                                ondelete="CASCADE"),
        sa.CheckConstraint("width > 0 AND height > 0", name="ck_dataset_images_size"),
        sa.CheckConstraint("bytes >= 0", name="ck_dataset_images_bytes"),
    )
    op.create_table(
        "loras",
        sa.Column("id", surrogate_key, nullable=False),
        sa.Column("public_id", sa.String(16), nullable=False),
        sa.Column("guild_id", sa.BigInteger(), nullable=True),
        sa.Column("owner_id", sa.BigInteger(), nullable=False),
        sa.Column("scope_key", sa.String(32), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("name_key", sa.String(64), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("file_path", sa.String(512), nullable=True),
        sa.Column("sha256", sa.String(64), nullable=True),
        sa.Column("short_hash", sa.String(12), nullable=True),
        sa.Column("base_model", sa.String(255), nullable=False),
        sa.Column("base_model_hash", sa.String(64), nullable=True),
        sa.Column("family", sa.String(16), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("alpha", sa.Float(), nullable=False),
        sa.Column("steps", sa.Integer(), nullable=False),
        sa.Column("dataset_id", surrogate_key, nullable=True),
        sa.Column("dataset_name", sa.String(64), nullable=True),
        sa.Column("dataset_size", sa.Integer(), nullable=False),
        sa.Column("trigger_words", sa.JSON(), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("job_public_id", sa.String(16), nullable=True),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("created_at", timestamp(), nullable=False),
        sa.Column("updated_at", timestamp(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_loras"),
        sa.UniqueConstraint("public_id", name="uq_loras_public_id"),
        sa.UniqueConstraint("scope_key", "name_key", name="uq_loras_scope_key_name_key"),
        sa.ForeignKeyConstraint(["dataset_id"], ["datasets.id"], name="fk_loras_dataset_id_datasets",
                                ondelete="SET NULL"),
        sa.CheckConstraint("status IN ('training', 'ready', 'failed', 'deleted')", name="ck_loras_status"),
        sa.CheckConstraint("source IN ('trained', 'imported')", name="ck_loras_source"),
        sa.CheckConstraint("size_bytes >= 0", name="ck_loras_size_bytes"),
    )
    op.create_index("ix_loras_dataset_id", "loras", ["dataset_id"])
    with op.batch_alter_table("guild_settings") as batch:
        batch.add_column(sa.Column("trainer_role_id", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("folder_loras", sa.Boolean(), nullable=False, server_default=sa.true()))


def downgrade() -> None:
    with op.batch_alter_table("guild_settings") as batch:
        batch.drop_column("folder_loras")
        batch.drop_column("trainer_role_id")
    op.drop_index("ix_loras_dataset_id", table_name="loras")
    op.drop_table("loras")
    op.drop_table("dataset_images")
    op.drop_table("datasets")

"""Uploads: pictures people send to start an image from (``/imagine picture:``, img2img).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26

An upload is validated, re-encoded as PNG and stored under ``uploads/``; its public id lives
in the same id space as images' (``--image ID`` finds either), and it is visible where an
image made in the same place would be: its server, or its owner's direct messages.  The same
picture sent twice in one place is one upload (``sha256``).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

surrogate_key = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "uploads",
        sa.Column("id", surrogate_key, nullable=False),
        sa.Column("public_id", sa.String(16), nullable=False),
        sa.Column("owner_id", sa.BigInteger(), nullable=False),
        sa.Column("guild_id", sa.BigInteger(), nullable=True),
        sa.Column("scope_key", sa.String(32), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("file_path", sa.String(512), nullable=False),
        sa.Column("original_name", sa.String(255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_uploads"),
        sa.UniqueConstraint("public_id", name="uq_uploads_public_id"),
        sa.UniqueConstraint("scope_key", "sha256", name="uq_uploads_scope_key_sha256"),
        sa.CheckConstraint("width > 0 AND height > 0", name="ck_uploads_size"),
        sa.CheckConstraint("bytes >= 0", name="ck_uploads_bytes"),
    )


def downgrade() -> None:
    op.drop_table("uploads")

"""Open operation names: ``jobs.kind`` and ``images.relation`` lose their CHECK constraints.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02

Both columns hold names of things the engine can do (generate, reroll, tweak, upscale, vary,
train…).  A CHECK listing them made every new operation or job kind a migration; they are now
checked on write against ``generation``'s enums (``Relation``, ``JobKind``) instead.

The constraints' names are the ones 0001 really gave them: its explicit names went through
the naming convention a second time (``ck_jobs_`` + ``ck_jobs_kind``), on every backend.
``op.f`` marks them as final so the convention leaves them alone here.  The downgrade puts the
0004 lists back; it fails if a row holds a name those lists do not know.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JOB_KIND = "ck_jobs_ck_jobs_kind"
IMAGE_RELATION = "ck_images_ck_images_relation"


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_constraint(op.f(JOB_KIND), type_="check")
    with op.batch_alter_table("images") as batch:
        batch.drop_constraint(op.f(IMAGE_RELATION), type_="check")


def downgrade() -> None:
    with op.batch_alter_table("images") as batch:
        batch.create_check_constraint(
            op.f(IMAGE_RELATION), "relation IS NULL OR relation IN ('reroll', 'tweak', 'upscale', 'vary')")
    with op.batch_alter_table("jobs") as batch:
        batch.create_check_constraint(
            op.f(JOB_KIND), "kind IN ('generate', 'reroll', 'tweak', 'upscale', 'vary', 'train')")

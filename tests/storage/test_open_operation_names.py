"""Migration 0005: operation names and job kinds are no longer listed by the database.

A new operation (inpaint, pan, zoom…) or job kind is one enum member in Python and needs no
migration; storage still refuses names it does not know, on write.  Run on SQLite and, with
``BRUSHWORK_TEST_POSTGRES_URL``, on PostgreSQL.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from storage.db import create_engine, make_session_factory
from storage.errors import InvalidValue
from storage.files import StoredFile
from storage.migrate import current_revision, downgrade, upgrade, upgrade_to_head
from storage.models import Base
from storage.records import ImageRelation, JobKind, NewJob, Scope
from storage.unit_of_work import UnitOfWork

OPERATOR = Scope.local_operator()


@pytest.fixture
def old_engine(db_url):
    """This test's database, migrated to 0004 only."""
    engine = create_engine(db_url)
    upgrade(engine, "0004")
    yield engine
    engine.dispose()


def _add_lineage(engine, make_new_image) -> tuple[str, str, str]:
    """A job, its image, and an upscale of that image: (job, parent, child) public ids."""
    with UnitOfWork(make_session_factory(engine)) as uow:
        job = uow.jobs.add(NewJob(kind=JobKind.UPSCALE, owner_id=1, request={}))
        parent = uow.images.add(make_new_image(), public_id="parent22",
                                stored=StoredFile("2000/01/parent22.png", "0" * 64, 1))
        child = uow.images.add(make_new_image(parent_public_id=parent.public_id, relation=ImageRelation.UPSCALE,
                                              job_public_id=job.public_id),
                               public_id="child234", stored=StoredFile("2000/01/child234.png", "0" * 64, 1))
        uow.commit()
    return job.public_id, parent.public_id, child.public_id


def _insert_raw(connection, kind: str, relation: str) -> None:
    """Rows with names this version's enums do not know, as a newer version might write them."""
    connection.execute(sa.text(
        "INSERT INTO jobs (public_id, kind, status, priority, owner_id, request, attempts, max_attempts, progress, "
        "result_image_ids, gpu_seconds, created_at, job_class, images, work, cost_group, cancel_requested) "
        "VALUES ('newkind2', :kind, 'done', 0, 1, '{}', 1, 3, 1, '[]', 0, :now, 'interactive', 1, 0, '', :no)"),
        {"kind": kind, "now": "2000-01-01 00:00:00", "no": False})
    parent = connection.execute(sa.text("SELECT id FROM images WHERE public_id = 'parent22'")).scalar()
    connection.execute(sa.text(
        "INSERT INTO images (public_id, owner_id, parent_id, relation, batch_index, prompt, seed, steps, cfg, "
        "sampler, width, height, model, lora_hashes, request, canonical, file_path, content_sha256, file_size, "
        "created_at) VALUES ('newrel22', 1, :parent, :relation, 0, 'p', 1, 1, 1, 'Euler', 64, 64, 'tiny', '{}', "
        "'{}', 'p', '2000/01/newrel22.png', :sha, 1, :now)"),
        {"parent": parent, "relation": relation, "sha": "0" * 64, "now": "2000-01-01 00:00:00"})


def test_upgrade_keeps_every_row_and_link_and_opens_the_names(old_engine, make_new_image):
    job, parent, child = _add_lineage(old_engine, make_new_image)
    with pytest.raises(sa.exc.IntegrityError), old_engine.begin() as connection:  # 0004 lists the names
        _insert_raw(connection, "inpaint", "inpaint")

    assert upgrade_to_head(old_engine) == "0005"
    with UnitOfWork(make_session_factory(old_engine)) as uow:
        upscaled = uow.images.get(child, OPERATOR)
        assert (upscaled.parent_public_id, upscaled.relation, upscaled.job_public_id) == (
            parent, ImageRelation.UPSCALE, job)
        assert uow.jobs.get(job, OPERATOR).kind is JobKind.UPSCALE
    with old_engine.begin() as connection:  # the database takes a name it was never told about
        _insert_raw(connection, "inpaint", "inpaint")
    with pytest.raises(InvalidValue):  # storage itself still writes only the names it knows
        NewJob(kind="inpaint", owner_id=1, request={})
    with pytest.raises(InvalidValue):
        make_new_image(parent_public_id=parent, relation="inpaint")


def test_downgrade_puts_the_lists_back_and_upgrade_again_matches_the_models(old_engine, make_new_image):
    _add_lineage(old_engine, make_new_image)
    upgrade_to_head(old_engine)
    assert downgrade(old_engine, "0004") == "0004"
    with pytest.raises(sa.exc.IntegrityError), old_engine.begin() as connection:
        _insert_raw(connection, "inpaint", "inpaint")
    with old_engine.connect() as connection:
        assert connection.execute(sa.text("SELECT count(*) FROM images")).scalar() == 2
    upgrade_to_head(old_engine)
    assert current_revision(old_engine) == "0005"
    with old_engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []

"""Storage's copies of the engine's enums and values are equal to them, one by one.

``storage`` imports none of our other packages (``test_storage_boundaries.py``), so the
enums and values it shares with ``generation`` are written twice; these tests are what keeps
the copies from drifting: enum by enum (names, values, order), value by value (fields and
defaults), the database's CHECK constraints against the enums they are built from, and the
public-id alphabet the engine names pictures with.
"""

from __future__ import annotations

import dataclasses
from enum import Enum

import pytest
import sqlalchemy as sa

from generation.operations import Relation
from generation.queue import DailyUsage, PendingCounts, Recovery, WorkerStatus
from generation.queue import JobClass as QueueJobClass
from generation.queue import JobState as QueueJobState
from generation.queue import WorkerState as QueueWorkerState
from storage import records
from storage.db import create_engine, sqlite_url
from storage.migrate import upgrade_to_head
from storage.models import Base


def members(enum: type[Enum]) -> list[tuple[str, object]]:
    return [(member.name, member.value) for member in enum]


@pytest.mark.parametrize(("stored", "engine_side"), [
    (records.ImageRelation, Relation),
    (records.JobStatus, QueueJobState),
    (records.JobClass, QueueJobClass),
    (records.WorkerState, QueueWorkerState),
], ids=lambda enum: enum.__qualname__)
def test_each_stored_enum_equals_the_engines(stored, engine_side):
    assert members(stored) == members(engine_side)


def test_a_stored_status_is_finished_exactly_when_the_queues_state_is():
    assert [status.finished for status in records.JobStatus] == [state.finished for state in QueueJobState]


def test_job_kinds_are_generate_the_operations_and_train():
    from bot.training_jobs import TRAIN_KIND

    operations = [(relation.name, relation.value) for relation in Relation]
    assert members(records.JobKind) == [("GENERATE", "generate"), *operations, ("TRAIN", "train")]
    assert records.JobKind(TRAIN_KIND) is records.JobKind.TRAIN


def fields(value_type: type) -> list[tuple[str, object]]:
    return [(field.name, field.default) for field in dataclasses.fields(value_type)]


@pytest.mark.parametrize(("stored", "engine_side"), [
    (records.JobCounts, PendingCounts),
    (records.JobRecovery, Recovery),
], ids=lambda value: value.__qualname__)
def test_each_stored_value_has_the_engines_fields_and_defaults(stored, engine_side):
    assert fields(stored) == fields(engine_side)


def test_a_days_usage_record_carries_the_queues_daily_usage():
    assert set(fields(DailyUsage)) <= set(fields(records.UsageRecord))
    assert [name for name, _ in fields(records.UsageRecord) if (name, _) not in fields(DailyUsage)] == [
        "guild_id", "day"]  # the row's key, which the queue asks with


def test_a_worker_record_has_the_fields_of_a_worker_status():
    """The same fields in storage's types (UTC datetimes, lists); the state in the mirrored enum."""
    stored = {field.name: field.type for field in dataclasses.fields(records.WorkerRecord)}
    assert set(stored) == {field.name for field in dataclasses.fields(WorkerStatus)}
    assert stored["state"] == "WorkerState"


def _model_checks() -> dict[str, set[str]]:
    return {name: {str(c.sqltext) for c in table.constraints if isinstance(c, sa.CheckConstraint)}
            for name, table in Base.metadata.tables.items()}


def test_the_migrated_checks_are_the_ones_the_models_build_from_the_enums(tmp_path):
    """Alembic's comparison does not look at CHECK constraints: this does (their text, on SQLite,
    which keeps it as written).  The names differ — the migrations' went through the naming
    convention twice (``ck_jobs_ck_jobs_status``) — so only the conditions are compared."""
    engine = create_engine(sqlite_url(tmp_path / "checks.db"))
    try:
        upgrade_to_head(engine)
        inspector = sa.inspect(engine)
        migrated = {name: {check["sqltext"] for check in inspector.get_check_constraints(name)}
                    for name in Base.metadata.tables}
    finally:
        engine.dispose()
    assert migrated == _model_checks()
    assert "status IN ('queued', 'running', 'done', 'failed', 'cancelled')" in migrated["jobs"]


def test_operation_names_and_job_kinds_have_no_check():
    checks = _model_checks()
    assert not [text for text in checks["jobs"] if "kind" in text]
    assert not [text for text in checks["images"] if "relation" in text]


def test_the_engines_picture_ids_use_storages_id_alphabet_and_length():
    """``generation.api`` names pictures with ids shaped like stored ones (``--image`` reads either)."""
    from PIL import Image

    from generation.api import IMAGE_ID_ALPHABET, _picture_id
    from storage.ids import ALPHABET, is_public_id

    assert IMAGE_ID_ALPHABET == ALPHABET
    assert is_public_id(_picture_id(Image.new("RGB", (8, 8))))

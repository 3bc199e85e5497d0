"""Model conventions (names, UTC timestamps, per-row defaults) and their behaviour."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import StatementError

from storage.models import NAMING_CONVENTION, Base, UTCDateTime, utcnow
from storage.records import JobKind, NewJob, Scope

PREFIXES = {
    sa.PrimaryKeyConstraint: "pk_",
    sa.UniqueConstraint: "uq_",
    sa.CheckConstraint: "ck_",
    sa.ForeignKeyConstraint: "fk_",
}


def test_metadata_has_the_naming_convention_and_every_name_follows_it():
    for key, template in NAMING_CONVENTION.items():
        assert Base.metadata.naming_convention[key] == template
    for table in Base.metadata.tables.values():
        for constraint in table.constraints:
            assert str(constraint.name).startswith(f"{PREFIXES[type(constraint)]}{table.name}")
        for index in table.indexes:
            columns = "_".join(column.name for column in index.columns)
            assert index.name == f"ix_{table.name}_{columns}"


def test_every_timestamp_is_utc_aware_and_every_default_is_per_row():
    for table in Base.metadata.tables.values():
        for column in table.columns:
            if isinstance(column.type, sa.DateTime | UTCDateTime):
                assert isinstance(column.type, UTCDateTime), f"{table.name}.{column.name}"
            for default in (column.default, column.onupdate):
                if default is None:
                    continue
                if default.is_callable:
                    continue
                # A constant is fine unless it is a value computed once (a time, a mutable).
                assert isinstance(default.arg, str | int | float | bool), f"{table.name}.{column.name}"


def test_discord_ids_are_64_bit():
    for table in Base.metadata.tables.values():
        for column in table.columns:
            if column.name in {"owner_id", "guild_id", "channel_id", "message_id", "user_id", "seed"}:
                assert isinstance(column.type, sa.BigInteger), f"{table.name}.{column.name}"


def _add_job(uow_factory, **changes):
    with uow_factory() as uow:
        job = uow.jobs.add(NewJob(kind=JobKind.GENERATE, owner_id=5, request={}))
        if changes:
            job = uow.jobs.update(job.public_id, **changes)
        uow.commit()
    return job


def _read_job(uow_factory, public_id):
    with uow_factory() as uow:
        return uow.jobs.get(public_id, Scope.local_operator())


def test_created_at_is_taken_when_each_row_is_inserted(uow_factory):
    before = utcnow()
    first = _add_job(uow_factory)
    while utcnow() <= first.created_at:  # wait for the clock to move on, however coarse it is
        pass
    second = _add_job(uow_factory)
    after = utcnow()

    first, second = _read_job(uow_factory, first.public_id), _read_job(uow_factory, second.public_id)
    assert before <= first.created_at < second.created_at <= after
    for value in (first.created_at, second.created_at):
        assert value.tzinfo is not None and value.utcoffset() == timedelta(0)


def test_times_are_stored_in_utc_and_read_back_aware(engine, uow_factory):
    beijing = timezone(timedelta(hours=8))
    job = _add_job(uow_factory, started_at=datetime(2025, 5, 1, 20, 30, tzinfo=beijing))
    with engine.connect() as connection:
        raw = connection.execute(
            sa.text("SELECT started_at FROM jobs WHERE public_id = :p"), {"p": job.public_id}
        ).scalar()
    if engine.dialect.name == "sqlite":  # text
        assert raw.startswith("2025-05-01 12:30:00")
    else:  # a timestamp (PostgreSQL hands it back in the session's zone)
        assert raw.astimezone(UTC) == datetime(2025, 5, 1, 12, 30, tzinfo=UTC)

    read = _read_job(uow_factory, job.public_id)
    assert read.started_at == datetime(2025, 5, 1, 12, 30, tzinfo=UTC)
    assert read.started_at.tzinfo is UTC


def test_naive_datetimes_are_refused(uow_factory):
    job = _add_job(uow_factory)
    with uow_factory() as uow, pytest.raises(StatementError, match="naive datetime"):
        uow.jobs.update(job.public_id, started_at=datetime(2025, 5, 1, 12, 0))


def test_updated_at_moves_on_each_save(uow_factory):
    with uow_factory() as uow:
        first = uow.settings.set_user(7, defaults="--steps 20")
        uow.commit()
    while utcnow() <= first.updated_at:
        pass
    with uow_factory() as uow:
        second = uow.settings.set_user(7, locale="zh-CN")
        uow.commit()
    assert second.updated_at > first.updated_at

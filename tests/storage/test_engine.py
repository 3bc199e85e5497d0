"""The engine: SQLite pragmas on every pooled connection, URLs, folders, foreign keys."""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

import storage.db
from storage.db import BUSY_TIMEOUT_MS, create_engine, is_sqlite, sqlite_url
from storage.errors import NotFound
from storage.files import StoredFile
from storage.records import JobKind, NewJob, Scope


def _pragmas(connection) -> dict[str, object]:
    names = ("journal_mode", "foreign_keys", "busy_timeout", "synchronous")
    return {name: connection.exec_driver_sql(f"PRAGMA {name}").scalar() for name in names}


EXPECTED = {"journal_mode": "wal", "foreign_keys": 1, "busy_timeout": BUSY_TIMEOUT_MS, "synchronous": 1}


def test_every_connection_gets_the_pragmas_in_every_thread(tmp_path):
    engine = create_engine(sqlite_url(tmp_path / "a" / "b" / "brushwork.db"))
    try:
        # Two connections held at once are two distinct DBAPI connections.
        with engine.connect() as first, engine.connect() as second:
            assert first.connection.driver_connection is not second.connection.driver_connection
            assert _pragmas(first) == EXPECTED
            assert _pragmas(second) == EXPECTED

        seen = []

        def from_thread():
            with engine.connect() as connection:
                seen.append(_pragmas(connection))

        worker = threading.Thread(target=from_thread)
        worker.start()
        worker.join()
        assert seen == [EXPECTED]
        assert (tmp_path / "a" / "b" / "brushwork.db").is_file()
        assert isinstance(engine.pool, sa.pool.QueuePool)
    finally:
        engine.dispose()


@pytest.mark.parametrize("name", ["plain.db", "with space.db", "图片 库.db", "odd#name?.db", "50% off.db"])
def test_sqlite_url_round_trips_any_file_name(tmp_path, name):
    path = tmp_path / name
    url = sqlite_url(path)
    assert is_sqlite(url)
    assert sa.make_url(url).database == str(path)
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql("CREATE TABLE t (x INTEGER)")
            connection.commit()
    finally:
        engine.dispose()
    assert path.is_file()


def test_sqlite_url_makes_relative_paths_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert sa.make_url(sqlite_url("rel/b.db")).database == str(tmp_path / "rel" / "b.db")


def test_in_memory_database_is_shared_between_threads():
    engine = create_engine("sqlite://")
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql("CREATE TABLE t (x INTEGER)")
            assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        found = []

        def look():
            with engine.connect() as connection:
                found.append(sa.inspect(connection).get_table_names())

        worker = threading.Thread(target=look)
        worker.start()
        worker.join()
        assert found == [["t"]]
    finally:
        engine.dispose()


def test_other_databases_get_nothing_sqlite_specific(monkeypatch):
    calls = []
    monkeypatch.setattr(
        storage.db.sqlalchemy, "create_engine", lambda url, **kw: calls.append((url, kw)) or "engine"
    )
    assert create_engine("postgresql+psycopg://bot:secret@db/brushwork") == "engine"
    ((url, options),) = calls
    assert url.get_backend_name() == "postgresql"
    assert options == {"echo": False, "pool_pre_ping": True, "json_serializer": storage.db._json_dumps}
    assert options["json_serializer"]({"p": "水墨"}) == '{"p": "水墨"}'  # readable, not \\u escapes


def test_foreign_keys_are_enforced_and_set_null_works(engine, uow_factory, add_image):
    with uow_factory() as uow:
        job = uow.jobs.add(NewJob(kind=JobKind.GENERATE, owner_id=1, request={}))
        uow.commit()
    image = add_image(job_public_id=job.public_id)
    assert image.job_public_id == job.public_id

    with engine.begin() as connection, pytest.raises(IntegrityError):
        connection.execute(
            sa.text("UPDATE images SET job_id = 999999 WHERE public_id = :p"), {"p": image.public_id}
        )

    with engine.begin() as connection:
        connection.execute(sa.text("DELETE FROM jobs"))
    with uow_factory() as uow:
        assert uow.images.get(image.public_id, Scope.local_operator()).job_public_id is None


def test_missing_parent_or_job_is_refused(uow_factory, make_new_image):
    stored = StoredFile("2025/01/x.png", "0" * 64, 1)
    with uow_factory() as uow, pytest.raises(NotFound):
        uow.images.add(make_new_image(job_public_id="nosuchjb"), public_id="aaaaaaaa", stored=stored)
    with uow_factory() as uow, pytest.raises(NotFound):
        uow.images.add(
            make_new_image(parent_public_id="nosuchim", relation="tweak"), public_id="aaaaaaaa", stored=stored
        )

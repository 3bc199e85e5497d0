"""save_image: the file is written before the row, and a failure leaves neither behind."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, OperationalError

from storage.archive import save_image
from storage.errors import IdsExhausted, NotFound
from storage.records import Scope
from storage.repositories import ImageRepository

PNG = b"\x89PNG\r\n\x1a\n" + "水墨".encode() * 100
OPERATOR = Scope.local_operator()


def _rows(engine) -> int:
    with engine.connect() as connection:
        return connection.execute(sa.text("SELECT count(*) FROM images")).scalar()


def _files(store):
    return sorted(p.relative_to(store.root).as_posix() for p in store.root.rglob("*") if p.is_file())


def test_saved_image_has_its_file_and_row(engine, uow_factory, store, make_new_image):
    record = save_image(uow_factory, store, PNG, make_new_image(guild_id=9, prompt="一只猫"))
    assert store.read(record.file_path) == PNG
    assert record.file_size == len(PNG) and len(record.content_sha256) == 64
    assert record.file_path.endswith(f"/{record.public_id}.png")
    with uow_factory() as uow:
        assert uow.images.get(record.public_id, Scope(1, 9)) == record
    assert _rows(engine) == 1 and _files(store) == [record.file_path]


def test_the_file_exists_when_the_row_is_inserted(uow_factory, store, make_new_image, monkeypatch):
    seen = []
    original_add = ImageRepository.add

    def add_and_look(self, new, *, public_id, stored, created_at=None):
        seen.append(store.read(stored.relative_path))
        return original_add(self, new, public_id=public_id, stored=stored, created_at=created_at)

    monkeypatch.setattr(ImageRepository, "add", add_and_look)
    save_image(uow_factory, store, PNG, make_new_image())
    assert seen == [PNG]


def test_a_failed_insert_removes_the_file(engine, uow_factory, store, make_new_image, monkeypatch):
    written = []
    original_write = store.write

    def write(*args):
        written.append(original_write(*args))
        return written[-1]

    def broken_add(self, *args, **kwargs):
        assert store.exists(written[-1].relative_path)  # the file came first
        raise OperationalError("INSERT", {}, Exception("disk I/O error"))

    monkeypatch.setattr(store, "write", write)
    monkeypatch.setattr(ImageRepository, "add", broken_add)
    with pytest.raises(OperationalError):
        save_image(uow_factory, store, PNG, make_new_image())
    assert len(written) == 1 and not store.exists(written[0].relative_path)
    assert _rows(engine) == 0 and _files(store) == []


def test_a_failed_commit_removes_the_file(engine, uow_factory, store, make_new_image):
    def failing_uow():
        uow = uow_factory()
        uow.commit = lambda: (_ for _ in ()).throw(OperationalError("COMMIT", {}, Exception("I/O")))
        return uow

    with pytest.raises(OperationalError):
        save_image(failing_uow, store, PNG, make_new_image())
    assert _rows(engine) == 0 and _files(store) == []


def test_a_missing_parent_removes_the_file(engine, uow_factory, store, make_new_image):
    with pytest.raises(NotFound):
        save_image(uow_factory, store, PNG, make_new_image(parent_public_id="nosuchid", relation="vary"))
    assert _rows(engine) == 0 and _files(store) == []


def test_a_failed_file_write_inserts_no_row(engine, uow_factory, store, make_new_image, monkeypatch):
    import os

    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError("read-only file system")))
    with pytest.raises(OSError, match="read-only"):
        save_image(uow_factory, store, PNG, make_new_image())
    assert _rows(engine) == 0 and _files(store) == []


def test_a_commit_reported_as_failed_that_happened_keeps_file_and_row(
    engine, uow_factory, store, make_new_image
):
    def flaky_uow():
        uow = uow_factory()
        real_commit = uow.commit

        def commit():
            real_commit()
            raise OperationalError("COMMIT", {}, Exception("connection lost after commit"))

        uow.commit = commit
        return uow

    record = save_image(flaky_uow, store, PNG, make_new_image())
    assert _rows(engine) == 1 and store.read(record.file_path) == PNG


def test_a_public_id_taken_by_a_row_is_replaced(engine, uow_factory, store, make_new_image):
    # An older image holds the id in another month folder, so only the row insert collides.
    old = save_image(
        uow_factory,
        store,
        b"old",
        make_new_image(),
        new_id=lambda: "samesame",
        clock=lambda: datetime(2024, 1, 1, tzinfo=UTC),
    )
    ids = iter(["samesame", "fresh222"])
    new = save_image(uow_factory, store, PNG, make_new_image(), new_id=lambda: next(ids))
    assert new.public_id == "fresh222"
    assert store.read(old.file_path) == b"old" and store.read(new.file_path) == PNG
    assert _rows(engine) == 2 and sorted(_files(store)) == sorted([old.file_path, new.file_path])


def test_a_public_id_taken_by_a_file_is_replaced(uow_factory, store, make_new_image):
    first = save_image(uow_factory, store, b"first", make_new_image(), new_id=lambda: "samesame")
    ids = iter(["samesame", "fresh222"])
    second = save_image(uow_factory, store, PNG, make_new_image(), new_id=lambda: next(ids))
    assert second.public_id == "fresh222" and store.read(first.file_path) == b"first"


def test_other_integrity_errors_are_not_retried(engine, uow_factory, store, make_new_image, monkeypatch):
    calls = itertools.count()

    def broken_add(self, *args, **kwargs):
        next(calls)
        raise IntegrityError("INSERT", {}, Exception("CHECK constraint failed"))

    monkeypatch.setattr(ImageRepository, "add", broken_add)
    with pytest.raises(IntegrityError):
        save_image(uow_factory, store, PNG, make_new_image())
    assert next(calls) == 1 and _files(store) == []


def test_ids_running_out_is_a_clear_error(uow_factory, store, make_new_image):
    save_image(uow_factory, store, PNG, make_new_image(), new_id=lambda: "samesame")
    with pytest.raises(IdsExhausted):
        save_image(uow_factory, store, PNG, make_new_image(), new_id=lambda: "samesame")
    assert len(_files(store)) == 1

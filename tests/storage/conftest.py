"""Fixtures for storage tests: a migrated SQLite file per test, an image store, factories."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from storage.db import create_engine, make_session_factory, sqlite_url
from storage.files import ImageStore, StoredFile
from storage.ids import new_public_id
from storage.migrate import upgrade_to_head
from storage.records import ImageRecord, NewImage
from storage.unit_of_work import UnitOfWork

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def db_url(tmp_path, database_server) -> str:
    """This test's database: a SQLite file, or a fresh PostgreSQL database (see tests/conftest.py)."""
    return database_server or sqlite_url(tmp_path / "home" / "brushwork.db")


@pytest.fixture
def engine(db_url) -> Iterator[Engine]:
    engine = create_engine(db_url)
    upgrade_to_head(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def uow_factory(engine) -> Callable[[], UnitOfWork]:
    session_factory = make_session_factory(engine)
    return lambda: UnitOfWork(session_factory)


@pytest.fixture
def store(tmp_path) -> ImageStore:
    return ImageStore(tmp_path / "images")


def new_image(**overrides: Any) -> NewImage:
    values: dict[str, Any] = {
        "owner_id": 111,
        "prompt": "a cat on a motorbike",
        "seed": 42,
        "steps": 30,
        "cfg": 7.0,
        "sampler": "DPM++ 2M Karras",
        "width": 512,
        "height": 768,
        "model": "tiny",
        "request": {"prompt": "a cat on a motorbike", "seed": 42},
        "canonical": "a cat on a motorbike --seed 42",
    }
    values.update(overrides)
    return NewImage(**values)


@pytest.fixture
def make_new_image() -> Callable[..., NewImage]:
    return new_image


@pytest.fixture
def add_image(uow_factory) -> Callable[..., ImageRecord]:
    """Insert an image row directly (no file), each one a minute after the previous by default."""
    minutes = itertools.count()

    def add(*, created_at: datetime | None = None, **overrides: Any) -> ImageRecord:
        public_id = new_public_id()
        when = created_at or T0 + timedelta(minutes=next(minutes))
        stored = StoredFile(f"{when:%Y/%m}/{public_id}.png", "0" * 64, 1)
        with uow_factory() as uow:
            record = uow.images.add(
                new_image(**overrides), public_id=public_id, stored=stored, created_at=when
            )
            uow.commit()
        return record

    return add

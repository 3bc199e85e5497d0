"""Engines and sessions.

SQLite (the default) gets, on every new DBAPI connection: WAL (readers never block the
writer), a busy timeout (writers queue instead of failing with "database is locked"),
foreign keys (off by default in SQLite) and ``synchronous=NORMAL`` (durable with WAL at a
fraction of the fsyncs).  Any other URL is passed to SQLAlchemy untouched apart from
``pool_pre_ping``.

Transactions on SQLite: the stdlib driver opens a transaction at the first INSERT/UPDATE/
DELETE, not at the first SELECT.  So a unit of work that reads and then writes waits for
the write lock (busy timeout) instead of failing on a stale snapshot, at the price that its
reads are not isolated from other writers; state changes that depend on a read use
conditional updates (see ``JobRepository.update(expected_status=...)``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import sqlalchemy
from sqlalchemy import event
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

#: How long a SQLite connection waits for a lock before giving up.
BUSY_TIMEOUT_MS = 10_000

# Enough connections for the queue worker thread, the event loop's helper threads and the
# CLI; SQLite has one writer anyway, the rest are WAL readers.
_SQLITE_POOL = {"pool_size": 8, "max_overflow": 8, "pool_timeout": 30}


def sqlite_url(path: str | os.PathLike[str]) -> str:
    """The SQLAlchemy URL of a SQLite database file (made absolute, ``~`` expanded)."""
    absolute = Path(path).expanduser().absolute()
    return URL.create("sqlite", database=str(absolute)).render_as_string(hide_password=False)


def is_sqlite(url: str | URL) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def _is_memory(url: URL) -> bool:
    database = url.database or ""
    return database in ("", ":memory:") or url.query.get("mode") == "memory"


def create_engine(url: str | URL, *, echo: bool = False) -> Engine:
    """An engine for ``url``; for a SQLite file, its folder is created and the pragmas are set."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        # Non-ASCII text stays readable in JSON columns here too (PostgreSQL's json keeps the text).
        return sqlalchemy.create_engine(parsed, echo=echo, pool_pre_ping=True, json_serializer=_json_dumps)

    options: dict[str, Any] = {
        "echo": echo,
        # JSON text keeps Chinese prompts readable in the sqlite3 shell and in backups.
        "json_serializer": _json_dumps,
        # The driver's own busy handler, in seconds; the pragma below says the same.
        "connect_args": {"check_same_thread": False, "timeout": BUSY_TIMEOUT_MS / 1000},
    }
    memory = _is_memory(parsed)
    if memory:
        # One shared connection, or each thread would get its own empty database.
        options["poolclass"] = sqlalchemy.pool.StaticPool
    else:
        database = parsed.database
        if not database:  # _is_memory() takes a URL without a database for an in-memory one
            raise ValueError(f"a SQLite URL without a database file: {parsed!r}")
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        options.update(_SQLITE_POOL)

    engine = sqlalchemy.create_engine(parsed, **options)
    event.listen(engine, "connect", _sqlite_pragmas_listener(wal=not memory))
    return engine


def _json_dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _sqlite_pragmas_listener(*, wal: bool):
    def set_pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            # busy_timeout first: switching a fresh file to WAL briefly needs a lock.
            cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            if wal:
                cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA foreign_keys = ON")
            cursor.execute("PRAGMA synchronous = NORMAL")
        finally:
            cursor.close()

    return set_pragmas


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded values after commit (records are built from them)."""
    return sessionmaker(bind=engine, expire_on_commit=False, autoflush=True)

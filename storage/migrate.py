"""Running the Alembic migrations from code (the database is upgraded to head at start).

The scripts live in the top-level ``migrations`` package; it is located with importlib, so
this works from a source checkout and from an installed wheel alike, without alembic.ini.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import text
from sqlalchemy.engine import URL, Connection, Engine, make_url

from storage.db import create_engine
from storage.errors import SchemaError

MIGRATIONS_PACKAGE = "migrations"
#: PostgreSQL advisory lock key held while migrating (any fixed 64-bit number; "brushwk1" in ASCII).
MIGRATION_LOCK_KEY = int.from_bytes(b"brushwk1", "big") & 0x7FFF_FFFF_FFFF_FFFF


def migrations_folder() -> Path:
    spec = importlib.util.find_spec(MIGRATIONS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise SchemaError(f"the {MIGRATIONS_PACKAGE!r} package is not installed")
    folder = Path(next(iter(spec.submodule_search_locations)))
    if not (folder / "env.py").is_file():
        raise SchemaError(f"{folder} holds no env.py")
    return folder


def alembic_config(url: str | URL | None = None) -> Config:
    """An Alembic configuration built in code, pointing at the installed migration scripts."""
    config = Config()
    config.set_main_option("script_location", str(migrations_folder()))
    config.set_main_option("path_separator", "os")
    if url is not None:
        rendered = make_url(url).render_as_string(hide_password=False)
        config.set_main_option("sqlalchemy.url", rendered.replace("%", "%%"))  # configparser syntax
    return config


@contextlib.contextmanager
def migration_connection(engine: Engine) -> Iterator[Connection]:
    """A connection inside one transaction, committed when the block succeeds.

    On PostgreSQL the transaction first takes an advisory lock, so processes starting at once
    migrate one after the other (DDL is transactional there).  On SQLite the driver's implicit
    transactions would run each DDL statement on its own, so this takes over: ``BEGIN IMMEDIATE`` (a second process starting at the same time waits,
    then finds the schema up to date), and foreign keys off while tables are rebuilt in batch
    mode (dropping a table would otherwise fire ON DELETE actions), checked before commit.
    """
    with engine.connect() as connection:
        if connection.dialect.name != "sqlite":
            with connection.begin():
                if connection.dialect.name == "postgresql":
                    # Processes starting at once on an empty database would each create
                    # alembic_version (a UniqueViolation for all but one): the first takes the
                    # lock and migrates, the others wait here, then find the schema at head.
                    # A transaction-level lock: released by the commit (or the rollback).
                    connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
                yield connection
            return

        # This connection's settings are changed below, so it is discarded afterwards rather
        # than handed back to the pool (a pooled connection without foreign keys would be a trap).
        driver_connection = connection.connection.driver_connection
        if driver_connection is None:  # a connection just opened always has one
            raise SchemaError("the migration's SQLite connection has no driver connection")
        driver_connection.isolation_level = None  # we say BEGIN ourselves
        try:
            connection.exec_driver_sql("PRAGMA foreign_keys = OFF")
            connection.commit()
            with connection.begin():
                connection.exec_driver_sql("BEGIN IMMEDIATE")
                yield connection
                broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise SchemaError(f"the migration left rows with dangling foreign keys: {broken[:5]}")
        finally:
            connection.invalidate()


@contextlib.contextmanager
def _engine(target: Engine | str | URL) -> Iterator[Engine]:
    if isinstance(target, Engine):
        yield target
        return
    engine = create_engine(target)
    try:
        yield engine
    finally:
        engine.dispose()


def _run(target: Engine | str | URL, action: str, revision: str) -> str | None:
    config = alembic_config()
    with _engine(target) as engine:
        try:
            with migration_connection(engine) as connection:
                config.attributes["connection"] = connection
                getattr(command, action)(config, revision)
        except CommandError as error:
            raise SchemaError(_explain(error, engine, config)) from error
        return current_revision(engine)


def _explain(error: CommandError, engine: Engine, config: Config) -> str:
    """Alembic's message, or a plain one for the usual case: a database from a newer version."""
    try:
        found = current_revision(engine)
        if found is not None:
            ScriptDirectory.from_config(config).get_revision(found)
    except CommandError:
        return (
            f"the database is at revision {found!r}, which this version of Brushwork does not know; "
            "it was probably upgraded by a newer version"
        )
    except Exception:  # the database cannot be read: Alembic's message is all there is
        pass
    return str(error)


def upgrade_to_head(target: Engine | str | URL) -> str | None:
    """Bring the database to the newest schema; returns the revision it is at."""
    return _run(target, "upgrade", "head")


def upgrade(target: Engine | str | URL, revision: str) -> str | None:
    return _run(target, "upgrade", revision)


def downgrade(target: Engine | str | URL, revision: str = "base") -> str | None:
    """Go back to ``revision`` (``"base"``: an empty schema); returns the revision it is at."""
    return _run(target, "downgrade", revision)


def current_revision(engine: Engine) -> str | None:
    """The revision stamped in the database; None for an empty (never migrated) one."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise SchemaError("no migration scripts found")
    return head


def is_up_to_date(engine: Engine) -> bool:
    return current_revision(engine) == head_revision()

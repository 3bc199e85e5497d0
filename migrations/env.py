"""Alembic environment: how migrations reach a database.

Called from code (``storage.migrate``), it gets an open connection, already inside the
transaction to use, in ``config.attributes["connection"]``.  Run by hand (``alembic upgrade
head``), it connects to ``-x url=...`` or the ``sqlalchemy.url`` of alembic.ini.
"""

from __future__ import annotations

from logging.config import fileConfig
from typing import Any

from alembic import context
from sqlalchemy import DateTime

from storage.db import create_engine
from storage.migrate import migration_connection
from storage.models import Base, UTCDateTime

config = context.config
target_metadata = Base.metadata

if config.config_file_name is not None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def _render_item(kind: str, obj: Any, autogen_context: Any) -> str | bool:
    # Scripts must not import the models (they change; a migration must not), so our
    # decorated type is written as the plain column type it stands for.
    if kind == "type" and isinstance(obj, UTCDateTime):
        impl = obj.impl
        assert isinstance(impl, DateTime)
        return f"sa.DateTime(timezone={impl.timezone!r})"
    return False


def _options() -> dict[str, Any]:
    return {
        "target_metadata": target_metadata,
        "compare_type": True,
        # Batch operations are what SQLite needs to alter tables, and plain ALTERs elsewhere,
        # so scripts generated against either database run on both.
        "render_as_batch": True,
        "render_item": _render_item,
    }


def _url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("No database: pass -x url=sqlite:///path/to/brushwork.db or set sqlalchemy.url")
    return url


def run_migrations_offline() -> None:
    context.configure(url=_url(), literal_binds=True, dialect_opts={"paramstyle": "named"}, **_options())
    with context.begin_transaction():
        context.run_migrations()


def _run_on(connection: Any) -> None:
    context.configure(connection=connection, **_options())
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_on(connection)
        return
    engine = create_engine(_url())
    try:
        with migration_connection(engine) as connection:
            _run_on(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()

"""Migrations are code and are tested: empty → head matches the models; head → base works."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from storage.db import create_engine, sqlite_url
from storage.errors import SchemaError
from storage.migrate import (
    alembic_config,
    current_revision,
    downgrade,
    head_revision,
    is_up_to_date,
    migration_connection,
    migrations_folder,
    upgrade_to_head,
)
from storage.models import Base


def _diff(engine, metadata=Base.metadata):
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return compare_metadata(context, metadata)


def _tables(engine) -> set[str]:
    return set(sa.inspect(engine).get_table_names())


@pytest.fixture
def empty_engine(tmp_path):
    engine = create_engine(sqlite_url(tmp_path / "db.sqlite"))
    yield engine
    engine.dispose()


def test_upgrade_from_empty_gives_exactly_the_models(empty_engine):
    assert current_revision(empty_engine) is None
    assert not is_up_to_date(empty_engine)

    assert upgrade_to_head(empty_engine) == head_revision()

    assert is_up_to_date(empty_engine)
    assert _tables(empty_engine) == set(Base.metadata.tables) | {"alembic_version"}
    assert _diff(empty_engine) == []


def test_the_comparison_would_notice_a_difference(empty_engine):
    # Guards the test above against passing vacuously.
    upgrade_to_head(empty_engine)
    changed = sa.MetaData()
    for table in Base.metadata.tables.values():
        table.to_metadata(changed)
    changed.tables["images"].append_column(sa.Column("extra", sa.Integer()))
    changed.tables["jobs"].c.kind.type = sa.String(99)

    kinds = {diff[0] if isinstance(diff, tuple) else diff[0][0] for diff in _diff(empty_engine, changed)}
    assert {"add_column", "modify_type"} <= kinds


def test_upgrade_twice_is_harmless_and_downgrade_to_base_empties(empty_engine):
    upgrade_to_head(empty_engine)
    upgrade_to_head(empty_engine)
    assert downgrade(empty_engine, "base") is None
    assert _tables(empty_engine) == {"alembic_version"}
    upgrade_to_head(empty_engine)  # and back up again
    assert _diff(empty_engine) == []


def test_upgrade_accepts_a_url_and_creates_the_folder(tmp_path):
    url = sqlite_url(tmp_path / "new" / "folder" / "brushwork.db")
    assert upgrade_to_head(url) == head_revision()
    engine = create_engine(url)
    try:
        assert is_up_to_date(engine)
    finally:
        engine.dispose()


def test_config_needs_no_ini_and_no_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = alembic_config("sqlite:///50%25 off.db")
    folder = Path(config.get_main_option("script_location"))
    assert folder.is_absolute() and (folder / "env.py").is_file()
    assert folder == migrations_folder()
    assert sa.make_url(config.get_main_option("sqlalchemy.url")).database == "50% off.db"
    assert ScriptDirectory.from_config(config).get_current_head() == head_revision()


def test_migrations_are_one_line_of_history_each_with_a_downgrade():
    scripts = ScriptDirectory.from_config(alembic_config())
    assert len(scripts.get_heads()) == 1
    for revision in scripts.walk_revisions():
        tree = ast.parse(Path(revision.path).read_text(encoding="utf-8"))
        functions = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}
        assert {"upgrade", "downgrade"} <= set(functions), revision.path
        body = functions["downgrade"].body
        assert not (len(body) == 1 and isinstance(body[0], ast.Pass)), f"{revision.path} cannot be undone"
        # Scripts must stay valid when the models change later.
        imported = {
            alias.name.split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.Import)
            for alias in node.names
        } | {
            node.module.split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module
        }
        assert "storage" not in imported, revision.path


def test_sqlite_migrations_are_transactional(empty_engine):
    upgrade_to_head(empty_engine)
    with pytest.raises(RuntimeError, match="half-way"):
        with migration_connection(empty_engine) as connection:
            connection.exec_driver_sql("CREATE TABLE half_done (id INTEGER)")
            connection.exec_driver_sql("UPDATE alembic_version SET version_num = 'zzz'")
            raise RuntimeError("failed half-way")
    assert "half_done" not in _tables(empty_engine)
    assert current_revision(empty_engine) == head_revision()
    with empty_engine.connect() as connection:  # the pooled connection is back to normal
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_a_database_from_a_newer_version_gets_a_clear_error(empty_engine):
    upgrade_to_head(empty_engine)
    with empty_engine.begin() as connection:
        connection.exec_driver_sql("UPDATE alembic_version SET version_num = '0999'")
    with pytest.raises(SchemaError, match="revision '0999'.*newer version") as caught:
        upgrade_to_head(empty_engine)
    assert caught.value.code == "storage.schema"
    assert not is_up_to_date(empty_engine)

"""Several processes starting at once on an empty database: every one of them starts.

On PostgreSQL the migration takes an advisory lock first (``storage.migrate``), so the
second process waits for the first and then finds the schema at head; without it, two
processes create ``alembic_version`` at the same moment and one dies of a UniqueViolation.
SQLite serialises the same way with ``BEGIN IMMEDIATE``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from storage.db import create_engine
from storage.migrate import current_revision, head_revision

PROCESSES = 6
ROOT = Path(__file__).resolve().parents[2]

# Each process waits for the start file, so all of them reach the empty database together.
SCRIPT = """
import sys, time
from pathlib import Path
from storage.migrate import upgrade_to_head
go = Path(sys.argv[2])
while not go.exists():
    time.sleep(0.005)
print(upgrade_to_head(sys.argv[1]))
"""


@pytest.mark.skipif(not os.environ.get("BRUSHWORK_TEST_POSTGRES_URL"),
                    reason="needs BRUSHWORK_TEST_POSTGRES_URL (a PostgreSQL server)")
def test_processes_starting_at_once_on_an_empty_postgresql_database_all_start(database_server, tmp_path):
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    processes = [subprocess.Popen([sys.executable, "-c", SCRIPT, database_server, str(go)], cwd=ROOT, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(PROCESSES)]
    time.sleep(1.0)  # not a timing assertion: only lets the interpreters get to the start line
    go.write_text("go")
    results = [(process.wait(timeout=120), *process.communicate()) for process in processes]
    failures = [next((line for line in reversed(err.splitlines()) if "Error" in line), err[-300:])
                for code, _out, err in results if code != 0]
    assert not failures, f"{len(failures)} of {PROCESSES} processes failed: {failures}"
    assert {out.strip() for _code, out, _err in results} == {head_revision()}
    engine = create_engine(database_server)
    try:
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()

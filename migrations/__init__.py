"""Alembic migration scripts for the Brushwork database (run through ``storage.migrate``).

New revision: ``alembic revision --autogenerate --rev-id 0002 -m "what changed"`` from the
repository root (see alembic.ini), then review it by hand: autogenerate is a first draft.
"""

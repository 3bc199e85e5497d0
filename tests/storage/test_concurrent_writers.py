"""Many writers on one SQLite file: they wait for each other instead of failing."""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa

from storage.archive import save_image
from storage.db import create_engine, make_session_factory
from storage.records import JobKind, NewJob, Scope
from storage.unit_of_work import UnitOfWork

THREADS, IMAGES_EACH = 8, 50


@pytest.mark.parametrize("engines", ["one shared engine", "one engine per thread (like processes)"])
def test_concurrent_writers_never_see_database_is_locked(engine, db_url, store, make_new_image, engines):
    barrier = threading.Barrier(THREADS + 1)
    errors: list[BaseException] = []
    saved: list[str] = []
    lock = threading.Lock()

    def writer(index: int) -> None:
        own = engine if engines == "one shared engine" else create_engine(db_url)
        sessions = make_session_factory(own)
        uow_factory = lambda: UnitOfWork(sessions)  # noqa: E731
        try:
            with uow_factory() as uow:  # a job per thread, updated as images arrive (read + write)
                job = uow.jobs.add(NewJob(kind=JobKind.GENERATE, owner_id=index, request={}))
                uow.commit()
            barrier.wait()
            for n in range(IMAGES_EACH):
                new = make_new_image(owner_id=index, guild_id=1, batch_index=n, job_public_id=job.public_id)
                record = save_image(uow_factory, store, f"{index}:{n}".encode(), new)
                with uow_factory() as uow:
                    uow.jobs.get(job.public_id, Scope.local_operator())
                    uow.jobs.update(job.public_id, progress=(n + 1) / IMAGES_EACH)
                    uow.commit()
                with lock:
                    saved.append(record.public_id)
        except BaseException as error:  # collected and asserted below
            with lock:
                errors.append(error)
            barrier.abort()
        finally:
            if own is not engine:
                own.dispose()

    def reader() -> None:
        sessions = make_session_factory(engine)
        try:
            barrier.wait()
            while len(saved) < THREADS * IMAGES_EACH and not errors:
                with UnitOfWork(sessions) as uow:
                    uow.images.history(Scope(0, 1), limit=50)
        except BaseException as error:
            with lock:
                errors.append(error)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(THREADS)]
    threads.append(threading.Thread(target=reader))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert errors == []
    assert len(set(saved)) == THREADS * IMAGES_EACH
    with engine.connect() as connection:
        per_owner = dict(
            connection.execute(sa.text("SELECT owner_id, count(*) FROM images GROUP BY owner_id")).all()
        )
        progress = connection.execute(sa.text("SELECT min(progress) FROM jobs")).scalar()
    assert per_owner == {index: IMAGES_EACH for index in range(THREADS)}
    assert progress == 1.0
    assert sum(1 for p in store.root.rglob("*") if p.is_file()) == THREADS * IMAGES_EACH

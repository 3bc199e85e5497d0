"""What the job queue needs from storage: conditional claims and finishes, cancel, recovery,
counts, worker heartbeats, daily usage, images + done in one transaction, migration 0002,
and SQLite under concurrent queue writers."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime, timedelta

import pytest
import sqlalchemy as sa

from storage.archive import save_job_images
from storage.db import create_engine, make_session_factory
from storage.errors import InvalidValue, StaleState
from storage.migrate import downgrade, upgrade, upgrade_to_head
from storage.records import JobClass, JobStatus, NewJob, Scope, WorkerState
from storage.unit_of_work import UnitOfWork

OPERATOR = Scope.local_operator()


def add_job(uow_factory, **overrides):
    values = {"kind": "generate", "owner_id": 1, "request": {"plan": {}}, "guild_id": 7, "images": 2,
              "batch_key": "k" * 32, "work": 1.5, "cost_group": "tiny"}
    values.update(overrides)
    with uow_factory() as uow:
        job = uow.jobs.add(NewJob(**values))
        uow.commit()
    return job


def claim(uow_factory, job, worker="w1"):
    with uow_factory() as uow:
        claimed = uow.jobs.claim([job.public_id], worker)
        uow.commit()
    return claimed


def test_new_queue_fields_round_trip(uow_factory):
    job = add_job(uow_factory, job_class="long")
    assert (job.job_class, job.images, job.batch_key, job.work, job.cost_group) == (
        JobClass.LONG, 2, "k" * 32, 1.5, "tiny")
    assert job.worker_id is None and not job.cancel_requested and job.checkpoint is None
    with pytest.raises(InvalidValue):
        NewJob(kind="generate", owner_id=1, request={}, images=0)
    with pytest.raises(InvalidValue):
        NewJob(kind="generate", owner_id=1, request={}, job_class="batch")


def test_a_job_is_claimed_once_and_finished_only_by_its_claim(uow_factory):
    job = add_job(uow_factory)
    [mine] = claim(uow_factory, job, "w1")
    assert (mine.status, mine.worker_id, mine.attempts) == (JobStatus.RUNNING, "w1", 1)
    assert claim(uow_factory, job, "w2") == []  # already running
    with uow_factory() as uow, pytest.raises(StaleState):
        uow.jobs.finish(job.public_id, worker_id="w2", attempt=1, status="done")
    with uow_factory() as uow, pytest.raises(StaleState):
        uow.jobs.finish(job.public_id, worker_id="w1", attempt=2, status="done")
    with uow_factory() as uow:
        done = uow.jobs.finish(job.public_id, worker_id="w1", attempt=1, status="failed", gpu_seconds=2.5,
                               error="Out of memory", error_code="queue.out_of_memory", error_params={"device": "cuda"})
        uow.commit()
    assert done.status is JobStatus.FAILED and done.gpu_seconds == 2.5 and done.finished_at is not None
    assert (done.error_code, done.error_params) == ("queue.out_of_memory", {"device": "cuda"})


def test_requeue_refunds_the_attempt_and_keeps_a_checkpoint(uow_factory):
    job = add_job(uow_factory, kind="train", job_class="long")
    [mine] = claim(uow_factory, job)
    with uow_factory() as uow:
        again = uow.jobs.requeue(job.public_id, worker_id="w1", attempt=1, refund_attempt=True, gpu_seconds=3,
                                 checkpoint={"step": 100})
        uow.commit()
    assert (again.status, again.attempts, again.worker_id, again.checkpoint) == (
        JobStatus.QUEUED, 0, None, {"step": 100})
    assert again.gpu_seconds == 3


def test_cancel_queued_now_running_by_flag(uow_factory):
    queued, running, done = add_job(uow_factory), add_job(uow_factory), add_job(uow_factory)
    claim(uow_factory, running)
    [finished] = claim(uow_factory, done)
    with uow_factory() as uow:
        uow.jobs.finish(done.public_id, worker_id="w1", attempt=1, status="done")
        assert uow.jobs.request_cancel(queued.public_id) is JobStatus.CANCELLED
        assert uow.jobs.request_cancel(running.public_id) is JobStatus.RUNNING
        assert uow.jobs.request_cancel(done.public_id) is JobStatus.DONE
        assert uow.jobs.request_cancel("zzzzzzzz") is None
        uow.commit()
    with uow_factory() as uow:
        assert uow.jobs.cancel_requested([queued.public_id, running.public_id, done.public_id]) == {
            queued.public_id, running.public_id}
        assert uow.jobs.claim([queued.public_id], "w9") == []  # a cancelled job is never claimed


def test_recover_requeues_fails_or_cancels_the_jobs_of_dead_workers(uow_factory):
    again, spent, asked, alive = (add_job(uow_factory, max_attempts=m) for m in (3, 1, 3, 3))
    for job, worker in ((again, "dead"), (spent, "dead"), (asked, "dead"), (alive, "live")):
        claim(uow_factory, job, worker)
    with uow_factory() as uow:
        uow.jobs.request_cancel(asked.public_id)
        report = uow.jobs.recover(lambda worker_id: worker_id == "live", crashed_error="crashed")
        uow.commit()
    assert report.requeued == (again.public_id,) and report.failed == (spent.public_id,)
    assert report.cancelled == (asked.public_id,)
    with uow_factory() as uow:
        statuses = {j.public_id: j.status for j in (uow.jobs.get(x.public_id, OPERATOR)
                                                    for x in (again, spent, asked, alive))}
        failed = uow.jobs.get(spent.public_id, OPERATOR)
    assert statuses == {again.public_id: JobStatus.QUEUED, spent.public_id: JobStatus.FAILED,
                        asked.public_id: JobStatus.CANCELLED, alive.public_id: JobStatus.RUNNING}
    assert failed.error_code == "queue.crashed" and failed.error == "crashed"


def test_counts_and_listings(uow_factory):
    add_job(uow_factory, owner_id=1, guild_id=7, images=2)
    add_job(uow_factory, owner_id=2, guild_id=7, images=4)
    running = add_job(uow_factory, owner_id=1, guild_id=None, images=1)
    finished = add_job(uow_factory, owner_id=1, guild_id=7)
    claim(uow_factory, running)
    with uow_factory() as uow:
        uow.jobs.request_cancel(finished.public_id)
        counts = uow.jobs.counts(1, 7)
        dm_counts = uow.jobs.counts(1, None)
        queued = uow.jobs.queued()
        active = uow.jobs.active()
        later = uow.jobs.queued(after_id=queued[0].id)
    assert (counts.user, counts.guild, counts.total, counts.guild_images) == (2, 2, 3, 6)
    assert (dm_counts.user, dm_counts.guild, dm_counts.total) == (2, 0, 3)
    assert len(queued) == 2 and len(active) == 3 and len(later) == 1


def test_counts_many_equals_counts_for_each_pair(uow_factory):
    add_job(uow_factory, owner_id=1, guild_id=7, images=2)
    add_job(uow_factory, owner_id=2, guild_id=7, images=4)
    add_job(uow_factory, owner_id=1, guild_id=None, images=1)
    add_job(uow_factory, owner_id=3, guild_id=8, images=3)
    keys = [(1, 7), (2, 7), (1, None), (3, 8), (9, 7), (9, None), (9, 99)]
    with uow_factory() as uow:
        many = uow.jobs.counts_many(keys)
        one_by_one = {key: uow.jobs.counts(*key) for key in keys}
    assert many == one_by_one
    assert (many[(9, 7)].user, many[(9, 7)].guild, many[(9, 7)].guild_images) == (0, 2, 6)


def test_add_many_inserts_in_order_and_keeps_asked_ids_unless_taken(uow_factory):
    first = add_job(uow_factory)
    new = NewJob(kind="generate", owner_id=5, request={"plan": {}}, guild_id=7)
    with uow_factory() as uow:
        records = uow.jobs.add_many([(new, "abcd2345"), (new, first.public_id), (new, None), (new, "not an id!")])
        uow.commit()
    assert records[0].public_id == "abcd2345"
    assert len({r.public_id for r in records} | {first.public_id}) == 5  # taken and bad ids replaced
    assert [r.id for r in records] == sorted(r.id for r in records)
    with uow_factory() as uow:
        assert [job.public_id for job in uow.jobs.queued()] == [first.public_id] + [r.public_id for r in records]


def test_workers_heartbeat_and_prune(uow_factory):
    old = datetime.now(UTC) - timedelta(days=30)
    with uow_factory() as uow:
        uow.workers.beat("a", device="cuda:0", host="h", pid=1, state="busy", running=["j1"],
                         stats={"rates": {"tiny": 0.1}}, now=old)
        uow.workers.beat("b", device="cpu", host="h", pid=2, state=WorkerState.IDLE)
        uow.workers.beat("b", device="cpu", host="h", pid=2, state="stopped")
        uow.commit()
    with uow_factory() as uow:
        rows = {row.worker_id: row for row in uow.workers.all()}
        assert rows["a"].running == ["j1"] and rows["a"].stats == {"rates": {"tiny": 0.1}}
        assert rows["b"].state is WorkerState.STOPPED
        assert uow.workers.prune(datetime.now(UTC) - timedelta(days=7)) == 1
        uow.commit()
    with uow_factory() as uow:
        assert [row.worker_id for row in uow.workers.all()] == ["b"]


def test_daily_usage_accumulates_per_server_and_day(uow_factory):
    today = date(2025, 6, 1)
    with uow_factory() as uow:
        uow.usage.add(7, today, images=2, gpu_seconds=1.5)
        uow.usage.add(7, today, images=1, gpu_seconds=0.5)
        uow.usage.add(7, today + timedelta(days=1), images=9)
        uow.commit()
    with uow_factory() as uow:
        usage = uow.usage.get(7, today)
        assert (usage.images, usage.gpu_seconds) == (3, 2.0)
        assert uow.usage.get(8, today).images == 0
        with pytest.raises(InvalidValue):
            uow.usage.add(7, today, images=-1)


def test_job_images_and_done_in_one_transaction(uow_factory, store, make_new_image):
    job = add_job(uow_factory)
    [mine] = claim(uow_factory, job)
    images = [(f"png {i}".encode(), make_new_image(batch_index=i, guild_id=7, job_public_id=job.public_id))
              for i in range(2)]
    done, records = save_job_images(uow_factory, store, images, job_public_id=job.public_id, worker_id="w1",
                                    attempt=1, gpu_seconds=4.0, usage_guild_id=7)
    assert done.status is JobStatus.DONE and done.result_image_ids == [r.public_id for r in records]
    assert [r.job_public_id for r in records] == [job.public_id] * 2
    assert all(store.absolute(r.file_path).read_bytes() == f"png {i}".encode() for i, r in enumerate(records))
    with uow_factory() as uow:
        assert uow.usage.get(7, done.finished_at.date()).images == 2


def test_a_lost_claim_records_no_image_and_leaves_no_file(uow_factory, store, make_new_image, engine):
    job = add_job(uow_factory)
    claim(uow_factory, job, "w1")
    with uow_factory() as uow:  # w1 was presumed dead; w2 took the job over
        uow.jobs.recover(lambda worker_id: False)
        uow.commit()
    claim(uow_factory, job, "w2")
    images = [(b"late", make_new_image(job_public_id=job.public_id))]
    with pytest.raises(StaleState):
        save_job_images(uow_factory, store, images, job_public_id=job.public_id, worker_id="w1", attempt=1)
    with engine.connect() as connection:
        assert connection.execute(sa.text("SELECT count(*) FROM images")).scalar() == 0
    assert not any(path.is_file() for path in store.root.rglob("*"))


def test_migration_0002_keeps_existing_jobs_and_goes_back(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    try:
        upgrade(engine, "0001")
        with engine.begin() as connection:
            connection.execute(sa.text(
                "INSERT INTO jobs (public_id, kind, status, priority, owner_id, request, attempts, max_attempts, "
                "progress, result_image_ids, gpu_seconds, created_at) VALUES ('abcdefgh', 'generate', 'queued', 0, "
                "1, '{}', 0, 3, 0, '[]', 0, '2025-01-01 00:00:00')"))
        upgrade_to_head(engine)
        sessions = make_session_factory(engine)
        with UnitOfWork(sessions) as uow:
            job = uow.jobs.get("abcdefgh", OPERATOR)
        assert (job.job_class, job.images, job.cancel_requested, job.cost_group) == (JobClass.INTERACTIVE, 1, False, "")
        downgrade(engine, "0001")
        with engine.connect() as connection:
            assert connection.execute(sa.text("SELECT public_id FROM jobs")).scalar() == "abcdefgh"
            assert "workers" not in sa.inspect(connection).get_table_names()
    finally:
        engine.dispose()


def test_sqlite_under_concurrent_queue_writers(db_url, engine):
    """Submitters, two claiming workers, a canceller and progress writers, each with its own
    engine (like separate processes), on one SQLite file: no "database is locked", and every
    job is claimed by exactly one worker."""
    uow_for = {}
    engines = []

    def uow_factory(name):
        if name not in uow_for:
            engines.append(create_engine(db_url))
            sessions = make_session_factory(engines[-1])
            uow_for[name] = lambda: UnitOfWork(sessions)
        return uow_for[name]

    total = 120
    submitted: list[str] = []
    claimed: dict[str, list[str]] = {"w1": [], "w2": []}
    errors: list[BaseException] = []
    lock = threading.Lock()
    done_submitting = threading.Event()

    def submitter(index):
        factory = uow_factory(f"s{index}")
        try:
            for n in range(total // 3):
                with factory() as uow:
                    if n % 5 == 0:
                        uow.jobs.counts(index, 7)  # the admission check reads, then writes
                    job = uow.jobs.add(NewJob(kind="generate", owner_id=index, guild_id=7, request={"n": n}))
                    uow.commit()
                with lock:
                    submitted.append(job.public_id)
        except BaseException as error:
            errors.append(error)

    def worker(name):
        factory = uow_factory(name)
        try:
            while not (done_submitting.is_set() and len(claimed["w1"]) + len(claimed["w2"]) + cancelled() >= total):
                with factory() as uow:
                    ids = [job.public_id for job in uow.jobs.queued()[:4]]
                with factory() as uow:
                    won = uow.jobs.claim(ids, name)
                    uow.commit()
                for job in won:
                    with factory() as uow:
                        uow.jobs.save_progress({job.public_id: 0.5})
                        uow.commit()
                    with factory() as uow:
                        uow.jobs.finish(job.public_id, worker_id=name, attempt=job.attempts, status="done")
                        uow.usage.add(7, date(2025, 6, 1), images=1)
                        uow.commit()
                with lock:
                    claimed[name].extend(job.public_id for job in won)
        except BaseException as error:
            errors.append(error)

    cancels: set[str] = set()  # cancelling a cancelled job again answers "cancelled" again

    def cancelled() -> int:
        with lock:
            return len(cancels)

    def canceller():
        factory = uow_factory("c")
        try:
            while not done_submitting.is_set():
                with lock:
                    target = submitted[-1] if submitted else None
                if target is not None:
                    with factory() as uow:
                        state = uow.jobs.request_cancel(target)
                        uow.commit()
                    if state is JobStatus.CANCELLED:
                        with lock:
                            cancels.add(target)
        except BaseException as error:
            errors.append(error)

    submitters = [threading.Thread(target=submitter, args=(i,)) for i in range(3)]
    others = [threading.Thread(target=worker, args=(n,)) for n in ("w1", "w2")] + [threading.Thread(target=canceller)]
    for thread in submitters + others:
        thread.start()
    for thread in submitters:
        thread.join(120)
    done_submitting.set()
    for thread in others:
        thread.join(120)
    for own in engines:
        own.dispose()
    assert errors == []
    both = claimed["w1"] + claimed["w2"]
    assert len(both) == len(set(both))  # nobody ran a job twice
    assert set(both) | set(cancels) == set(submitted) and not set(both) & set(cancels)
    with engine.connect() as connection:
        statuses = dict(connection.execute(sa.text("SELECT status, count(*) FROM jobs GROUP BY status")).all())
        images = connection.execute(sa.text("SELECT images FROM guild_usage")).scalar()
    assert statuses == {"done": len(both), **({"cancelled": len(cancels)} if cancels else {})}
    assert images == len(both)

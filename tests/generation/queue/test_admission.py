"""JobQueue.admit (the check before answering) and submit's admission under concurrency."""

from __future__ import annotations

import threading

import pytest

from generation.errors import QueueError
from generation.queue import JobQueue, MemoryJobStore, PendingCounts, QueueConfig, QueueLimits, Submission


def submission(owner: int = 1, guild: int | None = 7) -> Submission:
    return Submission(kind="generate", owner=owner, guild=guild, payload={"value": owner})


def test_admit_checks_without_storing_and_can_use_given_counts():
    store = MemoryJobStore()
    queue = JobQueue(store, config=QueueConfig(limits=QueueLimits(per_user=1)))
    assert queue.admit(submission()) == PendingCounts()
    assert store.active() == []
    queue.submit(submission())
    with pytest.raises(QueueError) as raised:
        queue.admit(submission())
    assert raised.value.code == "queue.user_full"
    assert queue.admit(submission(), PendingCounts()) == PendingCounts()  # a caller's (stale) snapshot
    with pytest.raises(QueueError):
        queue.submit(submission())  # submit always counts again


def test_concurrent_submits_cannot_both_squeeze_under_a_limit():
    store = MemoryJobStore()
    queue = JobQueue(store, config=QueueConfig(limits=QueueLimits(per_user=3)))
    start = threading.Barrier(12)
    accepted: list[str] = []
    refused: list[str] = []

    def submit() -> None:
        start.wait()
        try:
            accepted.append(queue.submit(submission()).job_id)
        except QueueError as error:
            refused.append(error.code)

    threads = [threading.Thread(target=submit) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(accepted) == 3 and len(refused) == 9 and len(store.active()) == 3


class CountingStore(MemoryJobStore):
    """The in-memory store, counting transactions of job inserts."""

    def __init__(self) -> None:
        super().__init__()
        self.add_calls = 0

    def add_many(self, submissions):
        self.add_calls += 1
        return super().add_many(submissions)


def test_submit_many_admits_each_in_turn_and_stores_the_admitted_in_one_transaction():
    store = CountingStore()
    queue = JobQueue(store, config=QueueConfig(limits=QueueLimits(per_user=2, per_guild=4)))
    queue.submit(submission(owner=1))
    batch = [submission(owner=1), submission(owner=1), submission(owner=2), submission(owner=3),
             submission(owner=4), submission(owner=5, guild=None)]
    outcomes = queue.submit_many(batch)
    # owner 1 had one job: the first of the batch fits (2 of 2), the second is refused; the
    # server's 4 are full after owners 1, 2, 3 — owner 4 refused; a direct message has no server cap
    assert [type(o).__name__ for o in outcomes] == ["JobHandle", "QueueError", "JobHandle", "JobHandle",
                                                    "QueueError", "JobHandle"]
    assert [o.code for o in outcomes if isinstance(o, QueueError)] == ["queue.user_full", "queue.guild_full"]
    assert store.add_calls == 2  # the single submit, then the whole batch at once
    stored = {spec.job_id: spec.owner for spec in store.queued()}
    assert [stored[o.job_id] for o in outcomes if not isinstance(o, QueueError)] == [1, 2, 3, 5]
    assert len(store.active()) == 5


def test_submit_many_counts_a_batchs_images_against_the_daily_quota():
    store = MemoryJobStore()
    queue = JobQueue(store, config=QueueConfig(limits=QueueLimits(per_user=None, daily_images=5)))
    big = [Submission(kind="generate", owner=owner, guild=7, payload={}, images=2) for owner in (1, 2, 3)]
    outcomes = queue.submit_many(big)
    assert [isinstance(o, QueueError) for o in outcomes] == [False, False, True]
    assert outcomes[2].code == "queue.quota_images"


def test_submit_many_stores_nothing_when_the_store_fails():
    class Broken(MemoryJobStore):
        def add_many(self, submissions):
            raise OSError("disk full")

    queue = JobQueue(Broken(), config=QueueConfig())
    with pytest.raises(OSError):
        queue.submit_many([submission(owner=1), submission(owner=2)])
    assert queue.jobs() == []

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

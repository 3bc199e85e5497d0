"""A scripted runner and a queue on the in-memory store, for the queue's own tests.

The runner is controlled with events, never with sleeps: ``runner.hold(tag)`` makes a run
pause after its first step until ``release(tag)``, and ``runner.entered(tag)`` waits until a
run containing that job has started.  A tag is a job's payload ``value`` (so a hold can be
set before the job exists) or its id.

Every worker ``make_queue`` adds reaches its queue through :class:`SeamOnly`, which passes on
the :class:`~generation.queue.WorkerSeam`'s members and fails on anything else: the
behaviour tests prove the worker needs nothing of the queue beyond the seam.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from generation.errors import Cancelled, OutOfMemoryError
from generation.queue import (
    Finished,
    JobQueue,
    JobSpec,
    MemoryJobStore,
    Outcome,
    QueueConfig,
    QueueLimits,
    RunContext,
    Submission,
    WorkerSeam,
)

WAIT = 20.0  # generous: a slow CI machine must never fail these tests by time


@dataclass(frozen=True)
class Call:
    jobs: tuple[str, ...]
    per_call: int
    low_memory: bool


class ScriptedRunner:
    def __init__(self, steps: int = 3) -> None:
        self.steps = steps
        self.calls: list[Call] = []
        self.limit = 8
        self.oom: Callable[[RunContext, list[JobSpec]], bool] | None = None
        self.errors: dict[str, BaseException] = {}
        self.outcome: Callable[[JobSpec], Outcome] | None = None
        self._holds: dict[str, threading.Event] = {}
        self._entered: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    # -- control ----------------------------------------------------------------------
    def hold(self, tag: object) -> None:
        with self._lock:
            self._holds[str(tag)] = threading.Event()

    def release(self, tag: object) -> None:
        self._holds[str(tag)].set()

    def release_all(self) -> None:
        for hold in list(self._holds.values()):
            hold.set()

    def entered(self, tag: object) -> None:
        assert self._event(str(tag)).wait(WAIT), f"job {tag} never started"

    def _event(self, job_id: str) -> threading.Event:
        with self._lock:
            return self._entered.setdefault(job_id, threading.Event())

    def ran(self) -> list[tuple[str, ...]]:
        return [call.jobs for call in self.calls]

    # -- Runner -----------------------------------------------------------------------
    def batch_limit(self, spec: JobSpec) -> int:
        return self.limit

    def run(self, jobs, context: RunContext):
        jobs = list(jobs)
        self.calls.append(Call(tuple(job.job_id for job in jobs), context.max_images_per_call, context.low_memory))
        for spec in jobs:
            for tag in _tags(spec):
                self._event(tag).set()
        if self.oom is not None and self.oom(context, jobs):
            raise OutOfMemoryError("engine.out_of_memory", images=context.max_images_per_call, device="fake")
        for spec in jobs:
            if spec.job_id in self.errors:
                raise self.errors[spec.job_id]
        for step in range(1, self.steps + 1):
            if context.should_abort():
                raise Cancelled("engine.cancelled")
            context.report_progress(step, self.steps, lambda job_id: f"preview of {job_id}")
            if step == 1:
                for spec in jobs:
                    for tag in _tags(spec):
                        hold = self._holds.get(tag)
                        if hold is not None:
                            assert hold.wait(WAIT), "a held job was never released"
        return {spec.job_id: self.outcome(spec) if self.outcome else Finished({"value": spec.payload.get("value")})
                for spec in jobs}


#: The public members of the worker seam: all a worker may touch of its queue.
SEAM_MEMBERS = frozenset(name for name in vars(WorkerSeam) if not name.startswith("_"))


class SeamOnly:
    """A queue seen through :class:`WorkerSeam` alone: any other attribute is a test failure.

    ``used`` records which members the worker reached for (tests check it is not vacuous).
    """

    def __init__(self, queue: JobQueue) -> None:
        self.__queue = queue
        self.used: set[str] = set()

    def __getattr__(self, name: str):
        if name not in SEAM_MEMBERS:
            raise AssertionError(f"the worker used {name!r} of its queue, which is not part of WorkerSeam")
        self.used.add(name)
        return getattr(self.__queue, name)


def _tags(spec: JobSpec) -> list[str]:
    return [spec.job_id, str(spec.payload.get("value"))]


def submission(owner: int = 1, guild: int | None = 1, value: object = None, **kwargs) -> Submission:
    return Submission(kind="generate", owner=owner, guild=guild, payload={"value": value}, **kwargs)


@pytest.fixture
def store() -> MemoryJobStore:
    return MemoryJobStore()


@pytest.fixture
def runner() -> ScriptedRunner:
    return ScriptedRunner()


@pytest.fixture
def make_queue(store) -> Iterator[Callable[..., JobQueue]]:
    made: list[JobQueue] = []
    runners: list[ScriptedRunner] = []

    def make(runner: ScriptedRunner | None = None, *, start: bool = True, store_=None, **config) -> JobQueue:
        config.setdefault("limits", QueueLimits(per_user=None, per_guild=None, total=None))
        config.setdefault("poll_interval_s", 0.05)
        config.setdefault("heartbeat_interval_s", 0.05)
        config.setdefault("progress_interval_s", 0.0)
        config.setdefault("preview_every", 2)
        queue = JobQueue(store_ or store, config=QueueConfig(**config))
        if runner is not None:
            worker = queue.add_worker(runner)
            worker.seam = SeamOnly(queue)
            runners.append(runner)
        if start:
            queue.start()
        made.append(queue)
        return queue

    yield make
    for runner in runners:  # a failed test must not leave a worker waiting
        runner.release_all()
    for queue in made:
        queue.stop(timeout=WAIT)

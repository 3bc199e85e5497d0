"""The shared GPU job queue: durable, fair, batched, cancellable, observable.

Pure Python (no torch, no database): persistence and execution plug in through two
protocols, :class:`JobStore` and :class:`Runner`.

* :mod:`~generation.queue.jobs` — values: :class:`Submission`, :class:`JobSpec`, :class:`JobState`…
* :mod:`~generation.queue.scheduler` — :class:`FairScheduler`: who goes next, who rides along;
* :mod:`~generation.queue.limits` — admission: caps and daily quotas;
* :mod:`~generation.queue.eta` — :class:`StepRates`: estimates from measured step times;
* :mod:`~generation.queue.store` — :class:`JobStore` protocol, :class:`MemoryJobStore`;
* :mod:`~generation.queue.runner` — :class:`Runner` protocol, :class:`RunContext`, outcomes;
* :mod:`~generation.queue.worker` — :class:`Worker`: one thread per device, OOM back-off; it
  reaches the queue only through :class:`WorkerSeam`, which :class:`JobQueue` implements;
* :mod:`~generation.queue.handle` — :class:`JobHandle`: status, position, events, wait, cancel;
* :mod:`~generation.queue.queue` — :class:`JobQueue`: submit, cancel, list, start/stop, recovery.
"""

from __future__ import annotations

from generation.queue.eta import StepRates
from generation.queue.events import (
    JobCancelled,
    JobDone,
    JobEvent,
    JobFailed,
    JobProgress,
    JobQueued,
    JobRequeued,
    JobStalled,
    JobStarted,
)
from generation.queue.handle import JobHandle
from generation.queue.jobs import (
    Claim,
    DailyUsage,
    DispatchView,
    JobClass,
    JobSnapshot,
    JobSpec,
    JobState,
    JobView,
    PendingCounts,
    Requester,
    Submission,
    UsageSample,
    WorkerState,
    WorkerStatus,
)
from generation.queue.limits import QueueLimits, check_admission
from generation.queue.queue import JobQueue, QueueConfig
from generation.queue.runner import Continue, Failure, Finished, Outcome, RunContext, Runner
from generation.queue.scheduler import FairScheduler
from generation.queue.store import JobStore, LostClaim, MemoryJobStore, Recovery, utc_day
from generation.queue.worker import Worker, WorkerSeam

__all__ = [
    "Claim", "Continue", "DailyUsage", "DispatchView", "FairScheduler", "Failure", "Finished", "JobCancelled", "JobClass",
    "JobDone", "JobEvent", "JobFailed", "JobHandle", "JobProgress", "JobQueue", "JobQueued", "JobRequeued",
    "JobSnapshot", "JobSpec", "JobStalled", "JobStarted", "JobState", "JobStore", "JobView", "LostClaim",
    "MemoryJobStore", "Outcome", "PendingCounts", "QueueConfig", "QueueLimits", "Recovery", "Requester",
    "RunContext", "Runner", "StepRates", "Submission", "UsageSample", "Worker", "WorkerSeam", "WorkerState", "WorkerStatus",
    "check_admission", "utc_day",
]

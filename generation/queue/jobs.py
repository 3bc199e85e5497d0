"""The queue's values: job states and classes, what is submitted, what a store hands back.

Everything here is a frozen value with no behaviour beyond small derived properties, so the
scheduler, the stores and the worker can pass them across threads freely.  A job's
``payload`` is opaque to the queue: the bot stores a ``GenerationPlan`` there, training
will store its own description; only the :class:`~generation.queue.runner.Runner` reads it.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from generation.errors import BrushworkError


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobState.DONE, JobState.FAILED, JobState.CANCELLED)


class JobClass(StrEnum):
    """Interactive jobs (generate, upscale, vary…) always go before long ones (training),
    which run in chunks and go back to the queue between chunks."""

    INTERACTIVE = "interactive"
    LONG = "long"


class WorkerState(StrEnum):
    """What a worker's heartbeat says it is doing (stored as ``storage.records.WorkerState``)."""

    IDLE = "idle"
    BUSY = "busy"
    HUNG = "hung"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class Submission:
    """What a caller asks the queue to run.

    ``batch_key``: jobs with the same (non-None) key may share one runner call.
    ``images``: how many images the job makes (batch limits and daily quotas count them).
    ``work``: the job's size in the runner's units (the bot uses megapixel-steps); the queue
    turns it into seconds with step times it measured.  ``cost_group``: jobs whose step
    times are alike (the bot uses the model name).
    """

    kind: str
    owner: int
    guild: int | None
    payload: Mapping[str, Any]
    job_class: JobClass = JobClass.INTERACTIVE
    priority: int = 0
    batch_key: str | None = None
    images: int = 1
    work: float = 1.0
    cost_group: str = ""
    channel: int | None = None
    reply_ref: Mapping[str, Any] | None = None
    max_attempts: int = 3
    job_id: str | None = None  # the id the caller already showed (a Cancel button); a store may pick
    #                            another if it is taken: the handle says which

    def __post_init__(self) -> None:
        object.__setattr__(self, "job_class", JobClass(self.job_class))
        if self.images < 1 or self.max_attempts < 1 or self.work < 0:
            raise ValueError("a submission needs images >= 1, max_attempts >= 1 and work >= 0")


@dataclass(frozen=True, slots=True)
class JobSpec:
    """A stored job waiting to run: the submission plus its id, order and history."""

    job_id: str
    seq: int  # submission order (the store's row id): first come, first served within a user
    kind: str
    owner: int
    guild: int | None
    payload: Mapping[str, Any]
    job_class: JobClass = JobClass.INTERACTIVE
    priority: int = 0
    batch_key: str | None = None
    images: int = 1
    work: float = 1.0
    cost_group: str = ""
    channel: int | None = None
    reply_ref: Mapping[str, Any] | None = None
    attempts: int = 0
    max_attempts: int = 3
    checkpoint: Mapping[str, Any] | None = None  # a long job's state between chunks
    created_at: float = 0.0  # seconds since the epoch


@dataclass(frozen=True, slots=True)
class Claim:
    """A job a worker has taken.  ``attempt`` is the job's attempt count after claiming:
    finishing is conditional on it, so a worker whose job was taken away (it was thought
    dead and the job re-queued) can never record a second result."""

    spec: JobSpec
    worker_id: str
    attempt: int

    @property
    def job_id(self) -> str:
        return self.spec.job_id


@dataclass(frozen=True, slots=True)
class JobSnapshot:
    """What the store knows about one job now (listings, and waiting from another process)."""

    job_id: str
    seq: int
    kind: str
    state: JobState
    owner: int
    guild: int | None
    job_class: JobClass = JobClass.INTERACTIVE
    priority: int = 0
    images: int = 1
    work: float = 1.0
    cost_group: str = ""
    progress: float = 0.0
    attempts: int = 0
    max_attempts: int = 3
    cancel_requested: bool = False
    worker_id: str | None = None
    error_code: str | None = None
    error_params: Mapping[str, Any] = field(default_factory=dict)
    result_ids: tuple[str, ...] = ()
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    gpu_seconds: float = 0.0

    @property
    def error(self) -> BrushworkError | None:
        if self.error_code is None:
            return None
        return BrushworkError(self.error_code, **dict(self.error_params))

    def as_spec(self) -> JobSpec:
        """Enough of a spec to place the job in a scheduler (positions in a listing)."""
        return JobSpec(job_id=self.job_id, seq=self.seq, kind=self.kind, owner=self.owner, guild=self.guild,
                       payload={}, job_class=self.job_class, priority=self.priority, images=self.images,
                       work=self.work, cost_group=self.cost_group, attempts=self.attempts,
                       max_attempts=self.max_attempts, created_at=self.created_at)


@dataclass(frozen=True, slots=True)
class UsageSample:
    """GPU time a finished job used: rebuilds the fair-share memory after a restart."""

    owner: int
    guild: int | None
    seconds: float
    finished_at: float


@dataclass(frozen=True, slots=True)
class DispatchView:
    """What a dispatcher reads under the store's dispatch lock (``JobStore.dispatch``): the
    GPU time every process has used and is using, and the jobs queued since it last looked."""

    used: tuple[UsageSample, ...] = ()  # finished jobs' measured GPU time since the usage window began
    running: tuple[JobSnapshot, ...] = ()  # running now, in any process (charged their estimate)
    fresh: tuple[JobSpec, ...] = ()  # queued with ``seq`` above the caller's cursor


@dataclass(frozen=True, slots=True)
class DailyUsage:
    images: int = 0
    gpu_seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class PendingCounts:
    """Jobs waiting or running now: the user's, the server's, everyone's; and the server's images."""

    user: int = 0
    guild: int = 0
    total: int = 0
    guild_images: int = 0


@dataclass(frozen=True, slots=True)
class WorkerStatus:
    """A worker's heartbeat row: who it is, whether it is alive, what it runs."""

    worker_id: str
    device: str
    host: str
    pid: int
    state: WorkerState
    heartbeat_at: float
    started_at: float
    running: tuple[str, ...] = ()
    stats: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "state", WorkerState(self.state))

    def alive(self, now: float, stale_after: float) -> bool:
        """Heartbeat recent, not stopped, and (on this machine) its process still exists.

        The process check makes a ``kill -9`` visible at once to a restart on the same host,
        instead of after ``stale_after`` seconds.
        """
        if self.state is WorkerState.STOPPED or now - self.heartbeat_at > stale_after:
            return False
        if self.host == socket.gethostname() and self.pid != os.getpid():
            return _process_exists(self.pid)
        return True


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return True  # cannot tell (e.g. Windows oddities): trust the heartbeat
    return True


@dataclass(frozen=True, slots=True)
class Requester:
    """Who asks to see or cancel a job (the same visibility rule as stored images).

    A job made in a server is visible from that server; one made in direct messages (or at
    the command line) to its owner only.  Cancelling also needs ownership, or a server
    manager's right (``can_manage``), or being the operator.
    """

    user: int
    guild: int | None = None
    operator: bool = False
    can_manage: bool = False

    def can_see(self, owner: int, guild: int | None) -> bool:
        if self.operator:
            return True
        if guild is not None:
            return self.guild == guild
        return self.guild is None and self.user == owner

    def can_cancel(self, owner: int, guild: int | None) -> bool:
        return self.can_see(owner, guild) and (self.operator or self.can_manage or self.user == owner)


@dataclass(frozen=True, slots=True)
class JobView:
    """One line of ``brushwork queue``: a waiting or running job with its place and ETA."""

    job_id: str
    kind: str
    state: JobState
    owner: int
    guild: int | None
    images: int
    position: int | None  # 0 = next to start; None while running
    progress: float
    eta_s: float | None  # seconds until it is done, from measured step times
    attempts: int
    created_at: float
    worker_id: str | None = None
    cancel_requested: bool = False


__all__ = [
    "Claim", "DailyUsage", "DispatchView", "JobClass", "JobSnapshot", "JobSpec", "JobState", "JobView", "PendingCounts",
    "Requester", "Submission", "UsageSample", "WorkerState", "WorkerStatus",
]

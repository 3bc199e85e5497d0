"""Where jobs live: the :class:`JobStore` protocol, and an in-memory store for tests.

The queue keeps its scheduling state in memory but every state change goes through the
store first, and the important ones are *conditional*: a claim moves a job from queued to
running only if it is still queued; completing it needs the claim (worker and attempt) to
still hold.  So several processes can share one database, a crashed worker's jobs can be
re-queued by anyone, and no job ever records two results.  The SQL implementation is in
``bot/jobs.py`` (``generation`` knows no database).
"""

from __future__ import annotations

import itertools
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from generation.errors import BrushworkError
from generation.queue.jobs import (
    Claim,
    DailyUsage,
    DispatchView,
    JobSnapshot,
    JobSpec,
    JobState,
    PendingCounts,
    Submission,
    UsageSample,
    WorkerStatus,
)

T = TypeVar("T")
#: Claims queued jobs for the dispatching worker, inside the dispatch's transaction.
ClaimFor = Callable[[Sequence[str]], list["Claim"]]


class LostClaim(Exception):
    """The job is no longer this worker's (re-queued after it was thought dead, or gone)."""


@dataclass(frozen=True, slots=True)
class Recovery:
    requeued: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()  # out of attempts: they failed with queue.crashed
    cancelled: tuple[str, ...] = ()  # cancel had been asked while they ran


def utc_day(moment: float) -> str:
    """The UTC calendar day of a timestamp, ``YYYY-MM-DD`` (daily quotas reset at 00:00 UTC)."""
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%d")


class JobStore(Protocol):
    """Persistence for the queue.  Every method is called from worker or caller threads,
    never from the asyncio loop, and must be thread-safe."""

    # -- submitting -----------------------------------------------------------------
    def add(self, submission: Submission) -> JobSpec: ...

    def add_many(self, submissions: Sequence[Submission]) -> list[JobSpec]:
        """:meth:`add` for several jobs in ONE transaction (all or none), in order: requests that
        arrive together cost one commit (the bot writes a job before acknowledging it)."""
        ...

    def pending_counts(self, owner: int, guild: int | None) -> PendingCounts: ...

    def pending_counts_many(self, keys: Sequence[tuple[int, int | None]]) -> dict[tuple[int, int | None],
                                                                                   PendingCounts]:
        """:meth:`pending_counts` for several (owner, server) pairs at once."""
        ...

    def daily_usage(self, guild: int, day: str) -> DailyUsage: ...

    # -- what waits --------------------------------------------------------------------
    def queued(self, after_seq: int = 0) -> list[JobSpec]:
        """Queued jobs with ``seq > after_seq``, in seq order."""
        ...

    def recent_usage(self, since: float) -> list[UsageSample]: ...

    # -- running -----------------------------------------------------------------------
    def claim(self, job_ids: Sequence[str], worker_id: str) -> list[Claim]:
        """Queued → running for each job still queued (attempts + 1); the others are left out."""
        ...

    def dispatch(self, worker_id: str, choose: Callable[[DispatchView, ClaimFor], T], *, since: float,
                 after_seq: int) -> T:
        """One dispatcher at a time across every process on this store.

        Under a lock held until the claims are committed: read the :class:`DispatchView` —
        GPU time used by jobs finished since ``since``, the jobs running now, the jobs queued
        with ``seq > after_seq`` —, call ``choose(view, claim)`` (``claim(job_ids)`` claims for
        ``worker_id`` inside the same transaction, as :meth:`claim` does), commit, and return
        what ``choose`` returned.  If ``choose`` raises, nothing it claimed is kept.  So the
        next job is chosen on what *every* process has dispatched: fair shares hold across
        processes (the SQL store: a PostgreSQL advisory lock, SQLite's write lock).
        """
        ...

    def save_progress(self, progress: Mapping[str, float]) -> None: ...

    def cancel_requested(self, job_ids: Iterable[str]) -> set[str]: ...

    def complete(self, claim: Claim, output: Any, gpu_seconds: float) -> Any:
        """Record the result and mark the job done, in one transaction; returns the result
        handed to waiters.  Raises :class:`LostClaim` (and records nothing) if the claim no
        longer holds."""
        ...

    def fail(self, claim: Claim, error: BrushworkError, gpu_seconds: float) -> None: ...

    def finish_cancelled(self, claim: Claim, gpu_seconds: float) -> None: ...

    def requeue(self, claim: Claim, *, refund_attempt: bool, gpu_seconds: float,
                checkpoint: Mapping[str, Any] | None = None) -> JobSpec:
        """Running → queued again (a long job between chunks, a worker shutting down)."""
        ...

    # -- anyone ------------------------------------------------------------------------
    def cancel(self, job_id: str) -> JobState | None:
        """Queued → cancelled at once; running → ``cancel_requested`` (the worker stops it at
        its next step).  Returns the state after the call, None for an unknown job."""
        ...

    def snapshot(self, job_id: str) -> JobSnapshot | None: ...

    def active(self) -> list[JobSnapshot]:
        """Queued and running jobs."""
        ...

    def result(self, job_id: str) -> Any:
        """The result of a done job, as :meth:`complete` returned it."""
        ...

    # -- workers ----------------------------------------------------------------------
    def heartbeat(self, status: WorkerStatus) -> None: ...

    def workers(self) -> list[WorkerStatus]: ...

    def recover(self, alive: Callable[[str | None], bool]) -> Recovery:
        """Re-queue (or fail, when out of attempts) running jobs whose worker is not alive."""
        ...


class MemoryJobStore:
    """A complete :class:`JobStore` in memory (tests, benchmarks, a throwaway queue).

    ``complete`` keeps the runner's output as the result.  Thread-safe with one lock.
    """

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.RLock()
        self._seq = itertools.count(1)
        self._specs: dict[str, JobSpec] = {}
        self._rows: dict[str, JobSnapshot] = {}
        self._results: dict[str, Any] = {}
        self._usage: dict[tuple[int, str], DailyUsage] = {}
        self._workers: dict[str, WorkerStatus] = {}
        self._dispatching = threading.Lock()  # the database's dispatch lock, for queues sharing this store
        self.completions: list[str] = []  # every job id completed, in order (tests check exactly-once)

    # -- submitting -----------------------------------------------------------------
    def add(self, submission: Submission) -> JobSpec:
        with self._lock:
            job_id = submission.job_id or secrets.token_hex(4)
            while job_id in self._specs:
                job_id = secrets.token_hex(4)
            now = self._clock()
            spec = JobSpec(job_id=job_id, seq=next(self._seq), kind=submission.kind, owner=submission.owner,
                           guild=submission.guild, payload=dict(submission.payload), job_class=submission.job_class,
                           priority=submission.priority, batch_key=submission.batch_key, images=submission.images,
                           work=submission.work, cost_group=submission.cost_group, channel=submission.channel,
                           reply_ref=submission.reply_ref, max_attempts=submission.max_attempts, created_at=now)
            self._specs[job_id] = spec
            self._rows[job_id] = JobSnapshot(
                job_id=job_id, seq=spec.seq, kind=spec.kind, state=JobState.QUEUED, owner=spec.owner,
                guild=spec.guild, job_class=spec.job_class, priority=spec.priority, images=spec.images,
                work=spec.work, cost_group=spec.cost_group, max_attempts=spec.max_attempts, created_at=now)
            return spec

    def add_many(self, submissions: Sequence[Submission]) -> list[JobSpec]:
        with self._lock:
            return [self.add(submission) for submission in submissions]

    def pending_counts_many(self, keys: Sequence[tuple[int, int | None]]) -> dict[tuple[int, int | None],
                                                                                   PendingCounts]:
        return {key: self.pending_counts(*key) for key in keys}

    def pending_counts(self, owner: int, guild: int | None) -> PendingCounts:
        with self._lock:
            active = [row for row in self._rows.values() if not row.state.finished]
            return PendingCounts(
                user=sum(1 for row in active if row.owner == owner),
                guild=sum(1 for row in active if guild is not None and row.guild == guild),
                total=len(active),
                guild_images=sum(row.images for row in active if guild is not None and row.guild == guild),
            )

    def daily_usage(self, guild: int, day: str) -> DailyUsage:
        with self._lock:
            return self._usage.get((guild, day), DailyUsage())

    # -- what waits --------------------------------------------------------------------
    def queued(self, after_seq: int = 0) -> list[JobSpec]:
        with self._lock:
            rows = sorted((row for row in self._rows.values() if row.state is JobState.QUEUED and row.seq > after_seq),
                          key=lambda row: row.seq)
            return [self._specs[row.job_id] for row in rows]

    def recent_usage(self, since: float) -> list[UsageSample]:
        with self._lock:
            return [UsageSample(row.owner, row.guild, row.gpu_seconds, row.finished_at)
                    for row in self._rows.values()
                    if row.finished_at is not None and row.finished_at >= since and row.gpu_seconds > 0]

    # -- running -----------------------------------------------------------------------
    def claim(self, job_ids: Sequence[str], worker_id: str) -> list[Claim]:
        claims = []
        with self._lock:
            now = self._clock()
            for job_id in job_ids:
                row = self._rows.get(job_id)
                if row is None or row.state is not JobState.QUEUED:
                    continue
                attempt = row.attempts + 1
                self._rows[job_id] = replace(row, state=JobState.RUNNING, attempts=attempt, worker_id=worker_id,
                                             started_at=now, progress=0.0)
                spec = self._specs[job_id] = replace(self._specs[job_id], attempts=attempt)
                claims.append(Claim(spec, worker_id, attempt))
        return claims

    def dispatch(self, worker_id: str, choose: Callable[[DispatchView, ClaimFor], T], *, since: float,
                 after_seq: int) -> T:
        with self._dispatching:
            with self._lock:
                view = DispatchView(used=tuple(self.recent_usage(since)),
                                    running=tuple(row for row in self._rows.values() if row.state is JobState.RUNNING),
                                    fresh=tuple(self.queued(after_seq)))
            before: dict[str, tuple[JobSnapshot, JobSpec]] = {}

            def claim(job_ids: Sequence[str]) -> list[Claim]:
                with self._lock:
                    before.update({job_id: (self._rows[job_id], self._specs[job_id])
                                   for job_id in job_ids if job_id in self._rows and job_id not in before})
                    return self.claim(job_ids, worker_id)

            try:
                return choose(view, claim)
            except BaseException:
                with self._lock:  # a rolled-back transaction: the claims were never made
                    for job_id, (row, spec) in before.items():
                        self._rows[job_id], self._specs[job_id] = row, spec
                raise

    def save_progress(self, progress: Mapping[str, float]) -> None:
        with self._lock:
            for job_id, fraction in progress.items():
                row = self._rows.get(job_id)
                if row is not None and row.state is JobState.RUNNING:
                    self._rows[job_id] = replace(row, progress=float(fraction))

    def cancel_requested(self, job_ids: Iterable[str]) -> set[str]:
        with self._lock:
            return {job_id for job_id in job_ids if (row := self._rows.get(job_id)) is not None
                    and (row.cancel_requested or row.state is JobState.CANCELLED)}

    def _holding(self, claim: Claim) -> JobSnapshot:
        row = self._rows.get(claim.job_id)
        if (row is None or row.state is not JobState.RUNNING or row.worker_id != claim.worker_id
                or row.attempts != claim.attempt):
            raise LostClaim(claim.job_id)
        return row

    def _finish(self, row: JobSnapshot, state: JobState, gpu_seconds: float, images: int = 0,
                **changes: Any) -> None:
        now = self._clock()
        self._rows[row.job_id] = replace(row, state=state, finished_at=now, gpu_seconds=row.gpu_seconds + gpu_seconds,
                                         progress=1.0 if state is JobState.DONE else row.progress, **changes)
        if row.guild is not None:
            key = (row.guild, utc_day(now))
            old = self._usage.get(key, DailyUsage())
            self._usage[key] = DailyUsage(old.images + images, old.gpu_seconds + gpu_seconds)

    def complete(self, claim: Claim, output: Any, gpu_seconds: float) -> Any:
        with self._lock:
            row = self._holding(claim)
            self._finish(row, JobState.DONE, gpu_seconds, images=row.images)
            self._results[claim.job_id] = output
            self.completions.append(claim.job_id)
            return output

    def fail(self, claim: Claim, error: BrushworkError, gpu_seconds: float) -> None:
        with self._lock:
            self._finish(self._holding(claim), JobState.FAILED, gpu_seconds, error_code=error.code,
                         error_params=dict(error.params))

    def finish_cancelled(self, claim: Claim, gpu_seconds: float) -> None:
        with self._lock:
            self._finish(self._holding(claim), JobState.CANCELLED, gpu_seconds)

    def requeue(self, claim: Claim, *, refund_attempt: bool, gpu_seconds: float,
                checkpoint: Mapping[str, Any] | None = None) -> JobSpec:
        with self._lock:
            row = self._holding(claim)
            attempts = row.attempts - 1 if refund_attempt else row.attempts
            self._rows[claim.job_id] = replace(row, state=JobState.QUEUED, attempts=attempts, worker_id=None,
                                               gpu_seconds=row.gpu_seconds + gpu_seconds, progress=0.0)
            spec = replace(self._specs[claim.job_id], attempts=attempts,
                           checkpoint=dict(checkpoint) if checkpoint is not None else claim.spec.checkpoint)
            self._specs[claim.job_id] = spec
            return spec

    # -- anyone ------------------------------------------------------------------------
    def cancel(self, job_id: str) -> JobState | None:
        with self._lock:
            row = self._rows.get(job_id)
            if row is None:
                return None
            if row.state is JobState.QUEUED:
                self._rows[job_id] = replace(row, state=JobState.CANCELLED, finished_at=self._clock())
                return JobState.CANCELLED
            if row.state is JobState.RUNNING:
                self._rows[job_id] = replace(row, cancel_requested=True)
            return row.state

    def snapshot(self, job_id: str) -> JobSnapshot | None:
        with self._lock:
            return self._rows.get(job_id)

    def active(self) -> list[JobSnapshot]:
        with self._lock:
            return sorted((row for row in self._rows.values() if not row.state.finished), key=lambda row: row.seq)

    def result(self, job_id: str) -> Any:
        with self._lock:
            return self._results.get(job_id)

    # -- workers ----------------------------------------------------------------------
    def heartbeat(self, status: WorkerStatus) -> None:
        with self._lock:
            self._workers[status.worker_id] = status

    def workers(self) -> list[WorkerStatus]:
        with self._lock:
            return list(self._workers.values())

    def recover(self, alive: Callable[[str | None], bool]) -> Recovery:
        requeued, failed, cancelled = [], [], []
        with self._lock:
            now = self._clock()
            for job_id, row in list(self._rows.items()):
                if row.state is not JobState.RUNNING or alive(row.worker_id):
                    continue
                if row.cancel_requested:
                    self._rows[job_id] = replace(row, state=JobState.CANCELLED, finished_at=now)
                    cancelled.append(job_id)
                elif row.attempts >= row.max_attempts:
                    self._rows[job_id] = replace(row, state=JobState.FAILED, finished_at=now,
                                                 error_code="queue.crashed", error_params={"attempts": row.attempts})
                    failed.append(job_id)
                else:
                    self._rows[job_id] = replace(row, state=JobState.QUEUED, worker_id=None, progress=0.0)
                    requeued.append(job_id)
        return Recovery(tuple(requeued), tuple(failed), tuple(cancelled))


__all__ = ["ClaimFor", "JobStore", "LostClaim", "MemoryJobStore", "Recovery", "utc_day"]

"""One worker per device: a thread that takes batches from the queue and runs them.

The thread owns its runner (and through it the device's engine and model cache), so the
asyncio loop never waits for a model; everything slow — the pipeline, PNG encoding, file
writes, database commits — happens here.

Faults stay with their job:

* :class:`~generation.errors.OutOfMemoryError`: retry with half the images per pipeline call,
  down to one; then once more with ``low_memory`` (VAE tiling); then fail with a clear
  reason.  The size that failed is remembered, so later batches of that size start smaller.
  Out of memory while *loading* the model (``engine.out_of_memory_loading``: the engine has
  already unloaded the other models and tried again) fails the run at once: smaller calls
  cannot help.
* any other exception from a run of several jobs: run them again one by one, so only the
  job that raises it fails (with a readable reason, never a traceback for the user).
* cancel: a cancelled job is acknowledged at the next step (its output, if the run goes on
  for the others, is dropped); when every job of the run is cancelled, the run stops.
* a worker that stops reporting for ``hang_timeout_s`` is reported by the queue's monitor.

One fault is the worker's, not a job's: a :class:`~generation.errors.DeviceError` (the device it
was given is not there) from the runner's ``warm_up``, its memory rule or a run.  Retrying cannot
help, so the worker gives its jobs back to the queue, tells it (:meth:`WorkerSeam.unusable`) and
stops; the queue reports it (``JobQueue.worker_failure``) so a caller waiting on it can say why.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from generation.errors import BrushworkError, Cancelled, DeviceError, OutOfMemoryError, QueueError
from generation.queue.events import JobCancelled, JobDone, JobEvent, JobFailed
from generation.queue.jobs import Claim, JobClass, JobSpec, WorkerState, WorkerStatus
from generation.queue.runner import Continue, Failure, Finished, Outcome, PreviewSource
from generation.queue.store import JobStore, LostClaim

if TYPE_CHECKING:
    from generation.queue.eta import StepRates
    from generation.queue.queue import QueueConfig
    from generation.queue.runner import Runner

log = logging.getLogger("brushwork.queue")
LOAD_OUT_OF_MEMORY = "engine.out_of_memory_loading"


class WorkerSeam(Protocol):
    """What a :class:`Worker` needs from its queue, and all it may use of it.

    :class:`~generation.queue.queue.JobQueue` implements it; a worker holds nothing else of
    the queue.  The life of a batch across the seam:

    1. :meth:`next_batch` blocks until there is work: the jobs leave the scheduler, claimed for
       this worker under the store's dispatch lock;
    2. the worker reports the claims to :meth:`claimed` (the jobs start);
    3. while it runs: :meth:`progress` for every step, :meth:`cancel_asked` to see a cancel
       asked in this process, :meth:`mark_cancel` for one it read from the store (asked in
       another process), :meth:`has_waiting` for long jobs that yield to interactive ones;
    4. each job ends exactly once, after the store recorded it: :meth:`finished` (done,
       failed or cancelled), :meth:`requeued` (a long job's chunk, a shutdown), or
       :meth:`lost` (another process took the claim over; the store did not record ours);
       :meth:`settle` charges the job's measured GPU time in place of its estimate;
    5. a device that is not there ends the worker, not a job: :meth:`unusable`, then it stops.
    """

    @property
    def store(self) -> JobStore:
        """Where claims, progress, cancel flags and results are recorded."""
        ...

    @property
    def config(self) -> QueueConfig:
        """Batch cap, polling and progress intervals, preview spacing."""
        ...

    @property
    def rates(self) -> StepRates:
        """The shared ETA model: the worker feeds it measured step times."""
        ...

    def now(self) -> float:
        """The queue's clock, seconds since the epoch (heartbeats)."""
        ...

    def next_batch(self, worker: Worker) -> list[Claim]:
        """Block until there is work for ``worker`` (``[]`` once it stops): the next fair batch,
        already claimed for it in the store (chosen under the store's dispatch lock, so fair
        across processes).  ``worker.batch_limit`` caps the batch."""
        ...

    def claimed(self, worker: Worker, batch: Sequence[JobSpec], claims: list[Claim]) -> list[Claim]:
        """The worker takes ``claims`` (for ``batch``): the jobs start (``JobStarted``); any
        lost to a cancel meanwhile leave this process's view.  Returns the claims to run."""
        ...

    def requeued(self, spec: JobSpec, reason: str) -> None:
        """The job is queued in the store again: given back (``reason`` ``chunk``: a long job
        between chunks; ``shutdown``) or never claimed (``retry``: claiming failed)."""
        ...

    def progress(self, job_ids: Sequence[str], step: int, total: int, eta: float | None,
                 preview: PreviewSource | None, detail: Mapping[str, Any] | None = None) -> None:
        """A step of the run of ``job_ids`` (cancelled jobs left out); ``preview`` (a job id →
        image callable) only on steps that should show one."""
        ...

    def finished(self, job_id: str, event: JobEvent) -> None:
        """The job's terminal event (``JobDone``, ``JobFailed``, ``JobCancelled``), once the
        store recorded it."""
        ...

    def lost(self, job_id: str) -> None:
        """Another process holds the job now: it is followed through the store from here on."""
        ...

    def cancel_asked(self, job_id: str) -> bool:
        """Whether a cancel of this running job is pending (cheap: called at every step)."""
        ...

    def mark_cancel(self, job_id: str) -> None:
        """The store says someone (maybe another process) asked to cancel this running job."""
        ...

    def settle(self, job_id: str, seconds: float) -> None:
        """Charge the job's measured GPU time (fair shares) in place of its estimate."""
        ...

    def has_waiting(self, job_class: JobClass) -> bool:
        """Whether a job of ``job_class`` waits (a long job stops its chunk for an interactive one)."""
        ...

    def unusable(self, worker: Worker, error: BrushworkError) -> None:
        """``worker`` cannot run anything (its device is not there, ``worker.failure``): it has
        given its claimed jobs back (:meth:`requeued`) and stops."""
        ...


def new_worker_id(device: str) -> str:
    """Unique per process start: a restarted process never mistakes old claims for its own."""
    return f"{socket.gethostname()}:{os.getpid()}:{device}:{uuid.uuid4().hex[:6]}"


class Worker:
    """One device's thread.  It reaches its queue only through ``seam`` (a :class:`WorkerSeam`)."""

    def __init__(self, seam: WorkerSeam, runner: Runner, *, device: str = "cpu", name: str | None = None) -> None:
        self.seam = seam
        self.runner = runner
        self.device = device
        self.worker_id = name or new_worker_id(device)
        self.stopping = False
        self.hung = False
        self.started_at = seam.now()
        self._thread: threading.Thread | None = None
        self._context: _Context | None = None
        self._activity = time.monotonic()
        self._busy = False
        self._oom_caps: dict[str, int] = {}  # batch key → images per call known to fit
        self.failure: BrushworkError | None = None  # why this worker stopped for good (its device)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self.stopping = False
            self._thread = threading.Thread(target=self._loop, name=f"brushwork-worker-{self.device}", daemon=True)
            self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def touch(self) -> None:
        self._activity = time.monotonic()
        self.hung = False

    def silent_for(self) -> float | None:
        """Seconds since a busy worker last showed life; None when idle."""
        return time.monotonic() - self._activity if self._busy else None

    def running_ids(self) -> list[str]:
        context = self._context
        return [claim.job_id for claim in context.claims] if context is not None else []

    def status(self) -> WorkerStatus:
        if self.failure is not None or (self.stopping and not self.alive):
            state = WorkerState.STOPPED
        elif self.hung:
            state = WorkerState.HUNG
        else:
            state = WorkerState.BUSY if self._busy else WorkerState.IDLE
        return WorkerStatus(worker_id=self.worker_id, device=self.device, host=socket.gethostname(),
                            pid=os.getpid(), state=state, heartbeat_at=self.seam.now(),
                            started_at=self.started_at, running=tuple(self.running_ids()),
                            stats=self.seam.rates.snapshot())

    def batch_limit(self, spec: JobSpec) -> int:
        """Images per run: the queue's cap, the runner's memory rule, what OOM taught us."""
        limit = min(self.seam.config.max_batch_images, max(1, self.runner.batch_limit(spec)))
        if spec.batch_key is not None and spec.batch_key in self._oom_caps:
            limit = min(limit, self._oom_caps[spec.batch_key])
        return max(1, limit)

    # ------------------------------------------------------------------ the loop
    def _loop(self) -> None:
        warm_up = getattr(self.runner, "warm_up", None)
        if warm_up is not None:  # slow set-up (importing torch…) here, not under the queue's lock
            try:
                warm_up()
            except DeviceError as error:
                self._unusable(error)
                return
            except Exception:
                log.exception("worker %s: warming up the runner failed", self.worker_id)
        while not self.stopping:
            try:
                claims = self.seam.next_batch(self)
                if not claims:
                    continue
                self._busy = True
                self.touch()
                self._run(claims)
            except DeviceError as error:  # the device is not there: no job can run here, ever
                self._unusable(error)
                return
            except Exception:  # never let the device's only thread die
                log.exception("worker %s: unexpected error between jobs", self.worker_id)
                time.sleep(self.seam.config.poll_interval_s)
            finally:
                self._busy = False
                self._context = None

    def _unusable(self, error: DeviceError) -> None:
        """Stop for good; the jobs it held were given back by :meth:`_execute` (a device that is
        gone while the queue chose a batch: the queue put the batch back itself)."""
        self.failure = error
        self.stopping = True
        log.error("worker %s stops: %s", self.worker_id, error.message())
        self.seam.unusable(self, error)

    def _run(self, claims: list[Claim]) -> None:
        claims = self.seam.claimed(self, [claim.spec for claim in claims], claims)
        if claims:
            spent: dict[str, float] = {claim.job_id: 0.0 for claim in claims}
            self._execute(claims, spent)

    def _execute(self, claims: list[Claim], spent: dict[str, float]) -> None:
        """Run claims with the OOM ladder; on another error in a group, isolate each job."""
        total_images = sum(claim.spec.images for claim in claims)
        key = claims[0].spec.batch_key
        per_call = min(total_images, self._oom_caps.get(key, total_images) if key else total_images)
        low_memory = False
        while True:
            context = _Context(self, claims, per_call, low_memory)
            self._context = context
            started = time.monotonic()
            try:
                outcomes = self.runner.run([claim.spec for claim in claims], context)
            except OutOfMemoryError as error:
                _share(spent, claims, time.monotonic() - started)
                if error.code == LOAD_OUT_OF_MEMORY:  # the model itself does not fit: smaller calls cannot help
                    self._settle(claims, {claim.job_id: Failure(error) for claim in claims}, context, spent)
                    return
                if key is not None:
                    self._oom_caps[key] = max(1, min(self._oom_caps.get(key, per_call), per_call // 2 or 1))
                if per_call > 1:
                    log.warning("out of memory with %d images per call; retrying with %d", per_call, per_call // 2)
                    per_call //= 2
                    continue
                if not low_memory:
                    low_memory = True
                    log.warning("out of memory with one image per call; retrying with VAE tiling")
                    continue
                failure = QueueError("queue.out_of_memory", device=self.device, detail=error.message())
                self._settle(claims, {claim.job_id: Failure(failure) for claim in claims}, context, spent)
                return
            except Cancelled as error:
                _share(spent, claims, time.monotonic() - started)
                self._aborted(claims, context, spent, error)
                return
            except DeviceError:  # the worker's fault, not the jobs': they go back for another worker
                for claim in claims:
                    if not context.acknowledged(claim.job_id):
                        self._give_back(claim, spent, "retry")
                raise
            except Exception as error:
                _share(spent, claims, time.monotonic() - started)
                if len(claims) > 1:
                    log.warning("a run of %d jobs failed (%s); running them one by one", len(claims),
                                _describe(error))
                    for claim in claims:
                        if not context.is_cancelled(claim.job_id):
                            self._execute([claim], spent)
                        else:
                            self._settle([claim], {}, context, spent)
                    return
                if not isinstance(error, BrushworkError):
                    log.error("job %s failed", claims[0].job_id, exc_info=error)
                self._settle(claims, {claims[0].job_id: Failure(_readable(error))}, context, spent)
                return
            elapsed = time.monotonic() - started
            _share(spent, claims, elapsed)
            context.observe_rates(elapsed, outcomes)
            self._settle(claims, outcomes, context, spent)
            return

    def _aborted(self, claims: list[Claim], context: _Context, spent: dict[str, float], error: Cancelled) -> None:
        outcomes: dict[str, Outcome] = {}
        for claim in claims:
            if context.is_cancelled(claim.job_id):
                continue  # settled as cancelled below
            if self.stopping:
                self._give_back(claim, spent, "shutdown")
                outcomes[claim.job_id] = _HANDLED
            else:  # the runner stopped on its own: say so rather than pretend it was asked to
                outcomes[claim.job_id] = Failure(error)
        self._settle(claims, outcomes, context, spent)

    def _give_back(self, claim: Claim, spent: dict[str, float], reason: str,
                   checkpoint: Mapping[str, Any] | None = None) -> None:
        seconds = spent.get(claim.job_id, 0.0)
        try:
            spec = self.seam.store.requeue(claim, refund_attempt=True, gpu_seconds=seconds, checkpoint=checkpoint)
        except LostClaim:
            log.warning("job %s was taken over before it could be re-queued", claim.job_id)
            return
        self.seam.settle(claim.job_id, seconds)
        self.seam.requeued(spec, reason)

    def _settle(self, claims: list[Claim], outcomes: Mapping[str, Outcome], context: _Context,
                spent: dict[str, float]) -> None:
        """Record each job's end in the store, then tell its followers."""
        seam = self.seam
        store = seam.store
        for claim in claims:
            job_id, seconds = claim.job_id, spent.get(claim.job_id, 0.0)
            outcome = outcomes.get(job_id)
            if outcome is _HANDLED:
                continue
            if context.acknowledged(job_id):
                seam.settle(job_id, seconds)
                continue  # already recorded as cancelled at the step where it was noticed
            event: Any
            try:
                if context.is_cancelled(job_id):
                    store.finish_cancelled(claim, seconds)
                    event = JobCancelled(job_id)
                elif isinstance(outcome, Finished):
                    result = store.complete(claim, outcome.output, seconds)
                    event = JobDone(job_id, result)
                elif isinstance(outcome, Continue):
                    self._give_back(claim, spent, "chunk", outcome.checkpoint)
                    continue
                else:
                    error = outcome.error if isinstance(outcome, Failure) else QueueError(
                        "queue.internal", error="the runner returned no outcome for this job")
                    store.fail(claim, error, seconds)
                    event = JobFailed(job_id, error)
            except LostClaim:
                log.warning("job %s was taken over by another worker; its result here is dropped", job_id)
                seam.lost(job_id)
                continue
            except Exception as error:
                log.exception("recording the end of job %s failed", job_id)
                event = JobFailed(job_id, _readable(error))
                try:
                    store.fail(claim, event.error, seconds)
                except Exception:
                    log.exception("recording the failure of job %s failed too", job_id)
            seam.settle(job_id, seconds)
            seam.finished(job_id, event)


class _Handled:
    """Marker outcome: the job was already dealt with (given back to the queue)."""


_HANDLED: Any = _Handled()


class _Context:
    """The :class:`~generation.queue.runner.RunContext` of one run."""

    def __init__(self, worker: Worker, claims: list[Claim], max_images: int, low_memory: bool) -> None:
        self.worker = worker
        self.claims = claims
        self.max_images_per_call = max(1, max_images)
        self.low_memory = low_memory
        self._ids = [claim.job_id for claim in claims]
        self._by_id = {claim.job_id: claim for claim in claims}
        self._acknowledged: set[str] = set()
        self._store_checked = -math.inf
        self._progress_saved = -math.inf
        self._first: tuple[float, int] | None = None  # (time, step) of the first step report
        self._last: tuple[float, int, int] | None = None  # (time, step, total)

    # -- RunContext -------------------------------------------------------------------
    def report_progress(self, step: int, total: int, preview: PreviewSource | None = None,
                        detail: Mapping[str, Any] | None = None) -> None:
        worker = self.worker
        worker.touch()
        now = time.monotonic()
        if self._first is None or step < self._first[1]:
            self._first = (now, step)  # restarted (a retry): measure from here
        self._last = (now, step, total)
        first_time, first_step = self._first
        eta = None
        if step > first_step:
            eta = (now - first_time) / (step - first_step) * max(0, total - step)
        if detail is not None and detail.get("eta_s") is not None:
            eta = float(detail["eta_s"])
        self._sync_store({job_id: step / total for job_id in self._ids} if total else {})
        every = worker.seam.config.preview_every
        live = [job_id for job_id in self._ids if not self.is_cancelled(job_id)]
        worker.seam.progress(live, step, total, eta,
                             preview if preview is not None and (step % every == 0 or step == total) else None,
                             detail)

    def should_abort(self) -> bool:
        self.worker.touch()
        self._sync_store(None)
        return self.worker.stopping or all(self.is_cancelled(job_id) for job_id in self._ids)

    def is_cancelled(self, job_id: str) -> bool:
        return job_id in self._acknowledged or self.worker.seam.cancel_asked(job_id)

    def interactive_waiting(self) -> bool:
        return self.worker.seam.has_waiting(JobClass.INTERACTIVE)

    # -- the worker's side ---------------------------------------------------------------
    def acknowledged(self, job_id: str) -> bool:
        return job_id in self._acknowledged

    def _sync_store(self, progress: dict[str, float] | None) -> None:
        """Every ``progress_interval_s``: write progress, read cancel flags set by other processes;
        and record cancels at once — a cancelled job stops at the next step even in a batch."""
        now = time.monotonic()
        seam = self.worker.seam
        interval = seam.config.progress_interval_s
        try:
            if progress and now - self._progress_saved >= interval:
                self._progress_saved = now
                seam.store.save_progress(progress)
            if now - self._store_checked >= interval:
                self._store_checked = now
                for job_id in seam.store.cancel_requested(self._ids):
                    seam.mark_cancel(job_id)
        except Exception:
            log.exception("progress/cancel exchange with the store failed")
        for job_id in self._ids:
            if job_id not in self._acknowledged and seam.cancel_asked(job_id):
                self._acknowledge(job_id)

    def _acknowledge(self, job_id: str) -> None:
        self._acknowledged.add(job_id)
        seam = self.worker.seam
        try:
            seam.store.finish_cancelled(self._by_id[job_id], 0.0)
        except LostClaim:
            seam.lost(job_id)
            return
        except Exception:
            log.exception("recording the cancel of job %s failed", job_id)
        seam.finished(job_id, JobCancelled(job_id))

    def observe_rates(self, elapsed: float, outcomes: Mapping[str, Outcome]) -> None:
        """Feed the ETA model with this run's measured step time and fixed cost."""
        if self._first is None or self._last is None or self.low_memory:
            return
        finished = [self._by_id[job_id].spec for job_id, outcome in outcomes.items()
                    if isinstance(outcome, Finished) and job_id in self._by_id]
        if len(finished) != len(self.claims):
            return
        (t0, s0), (t1, s1, total) = self._first, self._last
        if total <= 0 or s1 <= s0:
            return
        work = sum(spec.work for spec in finished)
        stepping = t1 - t0
        per_step_run = stepping / (s1 - s0)
        rates = self.worker.seam.rates
        group = finished[0].cost_group
        rates.observe_steps(group, work * (s1 - s0) / total, stepping)
        rates.observe_overhead(group, max(0.0, elapsed - per_step_run * total))


def _share(spent: dict[str, float], claims: list[Claim], seconds: float) -> None:
    """Split a run's time among its jobs by their work (GPU-seconds for fairness and quotas)."""
    total = sum(claim.spec.work for claim in claims) or len(claims)
    for claim in claims:
        weight = claim.spec.work if total else 1.0
        spent[claim.job_id] = spent.get(claim.job_id, 0.0) + seconds * (weight / total if total else 1 / len(claims))


def _readable(error: BaseException) -> BrushworkError:
    """What a user may read about an error: its own message, or its type and text."""
    if isinstance(error, BrushworkError):
        return error
    return QueueError("queue.internal", error=_describe(error))


def _describe(error: BaseException) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text}"[:300] if text else type(error).__name__


__all__ = ["Worker", "WorkerSeam", "new_worker_id"]

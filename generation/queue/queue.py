"""The job queue: submit, follow, cancel; the workers that own the devices; recovery.

    queue = JobQueue(store, config=QueueConfig(...))
    queue.add_worker(runner, device="cuda:0")      # one per device
    queue.start()                                   # recover, then run
    handle = queue.submit(Submission(...))          # → JobHandle
    async for event in handle.events(): ...
    queue.stop()

A queue without workers is a *client*: it submits, lists and cancels through the store and
follows jobs by reading it, while another process's worker runs them (``brushwork generate``
next to a running bot).

State: the store is the truth; the scheduler (who goes next) and the per-job *tracks*
(last state, progress, subscribers) are this process's view, rebuilt from the store at
start and kept in step by polling (jobs submitted elsewhere) and a periodic resync.  One
lock guards the view; store calls happen outside it (they may wait for the database).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from generation.errors import BrushworkError, QueueError
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
    DispatchView,
    JobClass,
    JobSnapshot,
    JobSpec,
    JobState,
    JobView,
    PendingCounts,
    Requester,
    Submission,
    WorkerStatus,
)
from generation.queue.limits import QueueLimits, check_admission
from generation.queue.scheduler import FairScheduler
from generation.queue.store import ClaimFor, JobStore, utc_day

if TYPE_CHECKING:
    from generation.queue.runner import Runner
    from generation.queue.worker import Worker

log = logging.getLogger("brushwork.queue")


@dataclass(frozen=True, slots=True)
class QueueConfig:
    limits: QueueLimits = field(default_factory=QueueLimits)
    half_life_s: float = 600.0  # how fast past GPU time stops counting against a user
    max_batch_images: int = 8  # the runner's memory rule may lower it
    poll_interval_s: float = 0.5  # reading the store: jobs from other processes, remote progress
    resync_interval_s: float = 10.0  # full comparison with the store; dead workers' jobs re-queued
    heartbeat_interval_s: float = 2.0
    stale_after_s: float = 15.0  # a worker silent this long (or whose process is gone) is dead
    hang_timeout_s: float = 600.0  # a busy worker silent this long is reported as hung
    progress_interval_s: float = 0.5  # progress written to, and cancel flags read from, the store
    preview_every: int = 5  # steps between previews (only for subscribers that asked)
    usage_window_s: float = 4 * 3600.0  # GPU time remembered across a restart
    keep_finished: int = 1000  # finished jobs whose last event stays in memory


@dataclass(eq=False)
class _Subscription:
    job_id: str
    deliver: Callable[[JobEvent], None]
    previews: bool


@dataclass(eq=False)
class _Track:
    """This process's view of one job."""

    job_id: str
    state: JobState
    spec: JobSpec | None = None
    worker: Worker | None = None  # the local worker running it
    claim: Claim | None = None
    attempt: int = 0
    batch_size: int = 1
    progress: JobProgress | None = None
    position: tuple[int, float | None] | None = None  # last published (position, eta)
    terminal: JobEvent | None = None
    subscribers: list[_Subscription] = field(default_factory=list)
    cancel: bool = False  # cancel asked here while it runs here
    added_at: float = 0.0  # monotonic time it entered the local scheduler

    @property
    def wants_previews(self) -> bool:
        return any(s.previews for s in self.subscribers)


class JobQueue:
    def __init__(self, store: JobStore, *, config: QueueConfig | None = None,
                 limits_for: Callable[[int | None], QueueLimits] | None = None,
                 rates: StepRates | None = None, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.config = config or QueueConfig()
        self.rates = rates or StepRates()
        self.clock = clock
        self._limits_for = limits_for or (lambda _guild: self.config.limits)
        self.scheduler = FairScheduler(half_life_s=self.config.half_life_s, cost=self.rates.estimate)
        self._lock = threading.RLock()
        self._admission = threading.Lock()
        self._work = threading.Condition(self._lock)
        self._tracks: dict[str, _Track] = {}
        self._finished: OrderedDict[str, None] = OrderedDict()
        self._workers: list[Worker] = []
        self._monitor: threading.Thread | None = None
        self._stopping = threading.Event()
        self._started = False
        self._cursor = 0  # highest seq seen in the store
        self._fetched_at = 0.0
        self._order_cache: tuple[int, float, dict[str, tuple[int, float | None]]] | None = None
        self._client_cache: tuple[float, dict[str, tuple[int, float | None]]] | None = None

    # ================================================================== submitting
    def submit(self, submission: Submission) -> JobHandle:
        """Check the limits, store the job, queue it; raises :class:`QueueError` when refused."""
        outcome = self.submit_many([submission])[0]
        if isinstance(outcome, QueueError):
            raise outcome
        return outcome

    def submit_many(self, submissions: Sequence[Submission]) -> list[JobHandle | QueueError]:
        """:meth:`submit` for several jobs that arrived together: each is admitted in turn — the
        ones admitted before it count against the limits, as if submitted one by one — and the
        admitted are stored in ONE transaction (a burst of requests costs one commit), then queued.
        One outcome per submission, in order: its handle, or the :class:`QueueError` refusing it.
        A failing store raises for all (none was stored)."""
        refusals: list[QueueError | None] = []  # per submission: why it was refused, or None
        with self._admission:  # concurrent submits of this process cannot both squeeze under a limit
            keys = list(dict.fromkeys((s.owner, s.guild) for s in submissions))
            stored = self.store.pending_counts_many(keys) if keys else {}
            admitted: list[Submission] = []
            for submission in submissions:
                key = (submission.owner, submission.guild)
                try:
                    self.admit(submission, _plus(stored[key], submission, admitted))
                except QueueError as error:
                    refusals.append(error)
                    continue
                admitted.append(submission)
                refusals.append(None)
            specs = iter(self.store.add_many(admitted) if admitted else [])
        handles: list[JobHandle | QueueError] = []
        with self._lock:
            for refusal in refusals:
                if refusal is not None:
                    handles.append(refusal)
                    continue
                spec = next(specs)
                track = self._track(spec.job_id, JobState.QUEUED)
                track.spec = spec
                if self._started:
                    self._schedule(track, spec)
                handles.append(JobHandle(self, spec.job_id))
        return handles

    def admit(self, submission: Submission, counts: PendingCounts | None = None) -> PendingCounts:
        """Raise :class:`QueueError` if :meth:`submit` would refuse ``submission`` now (limits,
        quotas); else the jobs pending before it.  Reads the store only: a caller that must answer
        fast (the bot's 3-second acknowledgement) checks first and submits after answering.
        ``counts``: pending counts the caller already has (a recent snapshot); :meth:`submit`
        always checks again with the store's."""
        limits = self._limits_for(submission.guild)
        now = self.clock()
        if counts is None:
            counts = self.store.pending_counts(submission.owner, submission.guild)
        usage = None
        if submission.guild is not None and (limits.daily_images is not None or limits.daily_gpu_seconds is not None):
            usage = self.store.daily_usage(submission.guild, utc_day(now))
        check_admission(submission, limits, counts, usage, queue_eta_s=self._queue_eta_if_needed(limits, counts),
                        now=now)
        return counts

    async def submit_async(self, submission: Submission) -> JobHandle:
        """:meth:`submit` off the event loop (it writes to the database)."""
        import asyncio

        return await asyncio.to_thread(self.submit, submission)

    def handle(self, job_id: str) -> JobHandle:
        return JobHandle(self, job_id)

    def _queue_eta_if_needed(self, limits: QueueLimits, counts: Any) -> float | None:
        full = ((limits.per_user is not None and counts.user >= limits.per_user)
                or (limits.per_guild is not None and counts.guild >= limits.per_guild)
                or (limits.total is not None and counts.total >= limits.total))
        return self.queue_eta() if full else None

    # ================================================================== reading
    def state_of(self, job_id: str) -> JobState:
        with self._lock:
            track = self._tracks.get(job_id)
        if track is None or (track.terminal is None and not self._is_local(track)):
            self.refresh(job_id)
            with self._lock:
                track = self._tracks.get(job_id)
        if track is None:
            raise QueueError("queue.not_found", id=job_id)
        return track.state

    def position_of(self, job_id: str) -> int | None:
        if self.state_of(job_id) is not JobState.QUEUED:
            return None
        place = self._positions().get(job_id)
        return None if place is None else place[0]

    def eta_of(self, job_id: str) -> float | None:
        state = self.state_of(job_id)
        if state.finished:
            return 0.0
        with self._lock:
            track = self._tracks.get(job_id)
            if state is JobState.RUNNING:
                return track.progress.eta_s if track is not None and track.progress is not None else None
        place = self._positions().get(job_id)
        return None if place is None else place[1]

    def jobs(self) -> list[JobView]:
        """Queued and running jobs, running first, then in the order they will start."""
        snapshots = self.store.active()
        places = self._positions(snapshots)
        views = []
        for snap in snapshots:
            place = places.get(snap.job_id)
            eta = place[1] if place else None
            if snap.state is JobState.RUNNING:
                eta = self._running_eta(snap)
            views.append(JobView(job_id=snap.job_id, kind=snap.kind, state=snap.state, owner=snap.owner,
                                 guild=snap.guild, images=snap.images,
                                 position=place[0] if place and snap.state is JobState.QUEUED else None,
                                 progress=snap.progress, eta_s=eta, attempts=snap.attempts,
                                 created_at=snap.created_at, worker_id=snap.worker_id,
                                 cancel_requested=snap.cancel_requested))
        views.sort(key=lambda v: (v.state is not JobState.RUNNING,
                                  v.position if v.position is not None else float("inf"), v.created_at))
        return views

    def workers_status(self) -> list[tuple[WorkerStatus, bool]]:
        """Every worker the store knows, with whether it is alive now."""
        now = self.clock()
        return [(status, status.alive(now, self.config.stale_after_s)) for status in self.store.workers()]

    def remote_worker_alive(self) -> bool:
        """Another process runs a live worker on this store (so submitting is enough)."""
        own = {worker.worker_id for worker in self._workers}
        return any(alive and status.worker_id not in own for status, alive in self.workers_status())

    def queue_eta(self) -> float | None:
        """Seconds until everything waiting now is done (from measured step times)."""
        places = self._positions()
        return max((eta for _, eta in places.values() if eta is not None), default=None)

    def _running_eta(self, snap: JobSnapshot) -> float | None:
        with self._lock:
            track = self._tracks.get(snap.job_id)
            if track is not None and track.progress is not None:
                return track.progress.eta_s
        estimate = self.rates.estimate(snap.as_spec())
        return max(0.0, estimate * (1.0 - snap.progress))

    # ================================================================== positions
    def _positions(self, snapshots: list[JobSnapshot] | None = None) -> dict[str, tuple[int, float | None]]:
        """job id → (position, seconds until done) for queued jobs, cached for a moment."""
        now = time.monotonic()
        if not self._started:
            if snapshots is not None:
                return self._positions_from_store(snapshots)
            cached = self._client_cache
            if cached is None or now - cached[0] >= max(2.0, self.config.poll_interval_s):
                cached = self._client_cache = (now, self._positions_from_store(self.store.active()))
            return cached[1]
        with self._lock:
            cache = self._order_cache
            version = self.scheduler.version
            if cache is not None and cache[0] == version and now - cache[1] < 60:
                return cache[2]
            if cache is not None and now - cache[1] < self.config.poll_interval_s:
                return cache[2]  # changed, but recomputing on every dispatch would cost O(n log n) each
            order = self.scheduler.order(self.clock())
            specs = [self.scheduler.get(job_id) for job_id in order]
            running = [t for t in self._tracks.values() if t.state is JobState.RUNNING and t.worker is not None]
            busy = sum((t.progress.eta_s or 0.0) if t.progress else self.rates.estimate(t.spec) if t.spec else 0.0
                       for t in running)
            places = self._accumulate(order, specs, busy, max(1, len(self._workers)))
            self._order_cache = (version, now, places)
            return places

    def _positions_from_store(self, snapshots: list[JobSnapshot]) -> dict[str, tuple[int, float | None]]:
        """Positions for a client queue: a scheduler rebuilt from the store's view."""
        statuses = self.store.workers()
        now = self.clock()
        alive = [s for s in statuses if s.alive(now, self.config.stale_after_s)]
        for status in sorted(statuses, key=lambda s: s.heartbeat_at):
            self.rates.restore(status.stats)  # the newest measurements win
        scheduler = FairScheduler(half_life_s=self.config.half_life_s, cost=self.rates.estimate)
        for sample in self.store.recent_usage(now - self.config.usage_window_s):
            scheduler.charge(sample.owner, sample.guild, sample.seconds, sample.finished_at)
        busy = 0.0
        for snap in snapshots:
            if snap.state is JobState.QUEUED:
                scheduler.add(snap.as_spec())
            elif snap.state is JobState.RUNNING:
                busy += max(0.0, self.rates.estimate(snap.as_spec()) * (1.0 - snap.progress))
        order = scheduler.order(now)
        return self._accumulate(order, [scheduler.get(job_id) for job_id in order], busy, max(1, len(alive)))

    def _accumulate(self, order: list[str], specs: list[JobSpec | None], busy: float,
                    workers: int) -> dict[str, tuple[int, float | None]]:
        places: dict[str, tuple[int, float | None]] = {}
        total = busy
        for position, (job_id, spec) in enumerate(zip(order, specs, strict=True)):
            total += self.rates.estimate(spec) if spec is not None else 0.0
            places[job_id] = (position, total / workers)
        return places

    # ================================================================== cancelling
    def cancel(self, job_id: str, requester: Requester | None = None) -> JobState:
        """Cancel a job (``requester`` None: trusted caller).  Returns its state afterwards:
        CANCELLED, RUNNING (it stops at its next step), or the state it had already ended in."""
        snap = self.store.snapshot(job_id)
        if snap is None or (requester is not None and not requester.can_see(snap.owner, snap.guild)):
            raise QueueError("queue.not_found", id=job_id)
        if requester is not None and not requester.can_cancel(snap.owner, snap.guild):
            raise QueueError("queue.not_yours", id=job_id)
        if snap.state.finished:
            return snap.state
        state = self.store.cancel(job_id)
        if state is None:
            raise QueueError("queue.not_found", id=job_id)
        with self._lock:
            track = self._tracks.get(job_id)
            if state is JobState.CANCELLED:
                self.scheduler.remove(job_id)
                if track is not None:
                    self._publish(track, JobCancelled(job_id))
            elif state is JobState.RUNNING and track is not None and track.worker is not None:
                track.cancel = True  # the worker acknowledges at the next step
        return state

    # ================================================================== following
    def subscribe(self, job_id: str, deliver: Callable[[JobEvent], None], *, previews: bool = False) -> _Subscription:
        """Deliver this job's events; the current state is delivered first (replay)."""
        with self._lock:
            known = job_id in self._tracks
        if not known:
            self.refresh(job_id)
        position = self._positions().get(job_id)
        with self._lock:
            track = self._tracks.get(job_id)
            if track is None:
                raise QueueError("queue.not_found", id=job_id)
            subscription = _Subscription(job_id, deliver, previews)
            for event in self._replay(track, position):
                deliver(event)
            if track.terminal is None:
                track.subscribers.append(subscription)
            return subscription

    def unsubscribe(self, subscription: _Subscription) -> None:
        """Stop delivering.  Takes no lock (it runs on event loops): ``list.remove`` is atomic,
        and delivery iterates over a copy."""
        track = self._tracks.get(subscription.job_id)
        if track is not None:
            with contextlib.suppress(ValueError):
                track.subscribers.remove(subscription)

    def _replay(self, track: _Track, position: tuple[int, float | None] | None) -> list[JobEvent]:
        if track.terminal is not None:
            return [track.terminal]
        if track.state is JobState.QUEUED:
            place = position or (0, None)
            track.position = place
            return [JobQueued(track.job_id, place[0], place[1])]
        events: list[JobEvent] = [JobStarted(track.job_id, track.attempt, track.batch_size)]
        if track.progress is not None:
            events.append(track.progress)
        return events

    def refresh(self, job_id: str) -> None:
        """Catch up with the store for a job this process does not run, and publish what changed
        (another process's worker, ``brushwork cancel``); for a queued job, its new position."""
        with self._lock:
            track = self._tracks.get(job_id)
            settled = track is not None and (track.terminal is not None or self._is_local(track))
        if not settled:
            snap = self.store.snapshot(job_id)
            result = self.store.result(job_id) if snap is not None and snap.state is JobState.DONE else None
            with self._lock:
                if snap is not None:
                    self._apply_snapshot(snap, result)
        with self._lock:
            track = self._tracks.get(job_id)
            if track is None or track.state is not JobState.QUEUED or not track.subscribers:
                return
        place = self._positions().get(job_id)
        with self._lock:
            if place is not None and track.state is JobState.QUEUED and place != track.position:
                track.position = place
                self._deliver(track, JobQueued(job_id, place[0], place[1]))

    def _is_local(self, track: _Track) -> bool:
        return track.worker is not None or (self._started and track.job_id in self.scheduler)

    def _apply_snapshot(self, snap: JobSnapshot, result: Any) -> None:
        """Turn a change seen in the store into events (under the lock)."""
        track = self._tracks.get(snap.job_id)
        if track is None:
            track = self._track(snap.job_id, snap.state)
            track.attempt = snap.attempts
            if snap.state.finished:
                track.terminal = _terminal_event(snap, result)
                self._retire(track)
            elif snap.state is JobState.RUNNING and snap.progress > 0:
                track.progress = _remote_progress(snap)
            return
        if track.terminal is not None or self._is_local(track):
            return
        if snap.state.finished:
            self._publish(track, _terminal_event(snap, result))
        elif snap.state is JobState.RUNNING:
            if track.state is not JobState.RUNNING:
                track.attempt = snap.attempts
                self._publish(track, JobStarted(snap.job_id, snap.attempts, 1))
            if snap.progress > 0 and (track.progress is None or snap.progress > track.progress.fraction):
                self._publish(track, _remote_progress(snap))
        elif snap.state is JobState.QUEUED and track.state is JobState.RUNNING:
            self._publish(track, JobRequeued(snap.job_id, "recovered"))

    # ================================================================== events
    def _track(self, job_id: str, state: JobState) -> _Track:
        track = self._tracks.get(job_id)
        if track is None:
            track = self._tracks[job_id] = _Track(job_id, state)
        return track

    def _publish(self, track: _Track, event: JobEvent) -> None:
        """Update the track from ``event`` and deliver it (under the lock)."""
        if track.terminal is not None:
            return  # exactly one terminal event, nothing after it
        if isinstance(event, JobQueued):
            track.state, track.position, track.progress = JobState.QUEUED, (event.position, event.eta_s), None
        elif isinstance(event, JobRequeued):
            track.state, track.worker, track.claim, track.progress = JobState.QUEUED, None, None, None
        elif isinstance(event, JobStarted):
            track.state, track.attempt, track.batch_size = JobState.RUNNING, event.attempt, event.batch_size
        elif isinstance(event, JobProgress):
            track.progress = event
        elif event.terminal:
            track.state = {JobDone: JobState.DONE, JobFailed: JobState.FAILED}.get(type(event), JobState.CANCELLED)
            track.terminal = event
            track.worker = track.claim = None
        self._deliver(track, event)
        if event.terminal:
            track.subscribers.clear()
            self._retire(track)

    def _deliver(self, track: _Track, event: JobEvent) -> None:
        for subscription in list(track.subscribers):
            if isinstance(event, JobProgress) and event.preview is not None and not subscription.previews:
                event_for = JobProgress(event.job_id, event.step, event.total, event.eta_s, detail=event.detail)
            else:
                event_for = event
            try:
                subscription.deliver(event_for)
            except Exception:  # e.g. its event loop is closed: that subscriber is gone
                log.debug("dropping a subscriber of job %s", track.job_id, exc_info=True)
                with contextlib.suppress(ValueError):
                    track.subscribers.remove(subscription)

    def _retire(self, track: _Track) -> None:
        """Keep a bounded number of finished jobs in memory (older ones are read from the store)."""
        self._finished[track.job_id] = None
        self._finished.move_to_end(track.job_id)
        while len(self._finished) > self.config.keep_finished:
            old, _ = self._finished.popitem(last=False)
            gone = self._tracks.get(old)
            if gone is not None and gone.terminal is not None:
                del self._tracks[old]

    # ================================================================== workers
    def add_worker(self, runner: Runner, *, device: str = "cpu", name: str | None = None) -> Worker:
        from generation.queue.worker import Worker

        worker = Worker(self, runner, device=device, name=name)
        with self._lock:
            self._workers.append(worker)
            if self._started:
                worker.start()
        return worker

    @property
    def workers(self) -> list[Worker]:
        return list(self._workers)

    @property
    def worker_failure(self) -> BrushworkError | None:
        """Why this process's workers stopped for good (a device that is not there), once every
        one of them has; None while one can run (or when there are none: a client queue)."""
        with self._lock:
            failures = [worker.failure for worker in self._workers]
        if not failures or any(failure is None for failure in failures):
            return None
        return failures[0]

    @property
    def started(self) -> bool:
        return self._started

    def start(self) -> None:
        """Recover what a crash left, rebuild the fair-share memory, load the queue, run.

        Jobs left running by a dead worker go back to the queue (or fail after
        ``max_attempts``), so a crash loses no job; completion is conditional on the claim,
        so none is recorded twice.
        """
        if self._started:
            return
        statuses = self.store.workers()
        for status in sorted(statuses, key=lambda s: s.heartbeat_at):
            self.rates.restore(status.stats)
        for worker in self._workers:
            self.store.heartbeat(worker.status())
        report = self._recover()
        if report.requeued or report.failed or report.cancelled:
            log.warning("recovered jobs left by a stopped worker: %d re-queued, %d failed (out of attempts), "
                        "%d cancelled", len(report.requeued), len(report.failed), len(report.cancelled))
        now = self.clock()
        for sample in self.store.recent_usage(now - self.config.usage_window_s):
            self.scheduler.charge(sample.owner, sample.guild, sample.seconds, sample.finished_at)
        queued = self.store.queued()
        with self._lock:
            self._started = True
            for spec in queued:
                track = self._track(spec.job_id, JobState.QUEUED)
                track.spec = spec
                self._schedule(track, spec)
                self._cursor = max(self._cursor, spec.seq)
            for worker in self._workers:
                worker.start()
        self._stopping.clear()
        self._monitor = threading.Thread(target=self._monitor_loop, name="brushwork-queue-monitor", daemon=True)
        self._monitor.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the workers: a running batch stops at its next step and goes back to the queue."""
        if not self._started:
            return
        with self._lock:
            for worker in self._workers:
                worker.stopping = True
            self._work.notify_all()
        self._stopping.set()
        for worker in self._workers:
            worker.join(timeout)
        if self._monitor is not None:
            self._monitor.join(timeout)
        for worker in self._workers:
            try:
                self.store.heartbeat(worker.status())
            except Exception:
                log.exception("could not record that worker %s stopped", worker.worker_id)
        with self._lock:
            self._started = False

    def _recover(self):
        now = self.clock()
        statuses = {status.worker_id: status for status in self.store.workers()}
        own = {worker.worker_id for worker in self._workers if not worker.stopping}

        def alive(worker_id: str | None) -> bool:
            if worker_id is None:
                return False
            if worker_id in own:
                return True
            status = statuses.get(worker_id)
            return status is not None and status.alive(now, self.config.stale_after_s)

        return self.store.recover(alive)

    def _schedule(self, track: _Track, spec: JobSpec) -> None:
        """Put a job in the local scheduler (under the lock) and wake a worker."""
        if track.worker is not None or track.terminal is not None:
            return
        if self.scheduler.add(spec):
            track.added_at = time.monotonic()
        self._work.notify()

    # -- the worker seam (generation.queue.worker.WorkerSeam): what workers call ---------
    def now(self) -> float:
        """The queue's clock (seconds since the epoch)."""
        return self.clock()

    def next_batch(self, worker: Worker) -> list[Claim]:
        """Block until there is work for ``worker`` (or it stops): the next fair batch, claimed
        for it.  The choice is made under the store's dispatch lock, on the GPU time every
        process has used and the jobs every process has queued (:meth:`JobStore.dispatch`)."""
        while not worker.stopping:
            self._fetch_external()
            with self._lock:
                if worker.stopping:
                    break
                if not len(self.scheduler):
                    self._work.wait(self.config.poll_interval_s)
                    continue
            claims = self.store.dispatch(
                worker.worker_id, lambda view, claim: self._dispatch(worker, view, claim),
                since=self.clock() - self.config.usage_window_s, after_seq=self._cursor)
            if claims:
                return claims
        return []

    def _dispatch(self, worker: Worker, view: DispatchView, claim: ClaimFor) -> list[Claim]:
        """Under the store's dispatch lock: catch up with every process, then pick and claim."""
        now = self.clock()
        with self._lock:
            self._absorb(view, now)
        taken: list[JobSpec] = []  # out of the scheduler, not (or not for sure) claimed
        refused: list[Exception] = []

        def limit(spec: JobSpec) -> int:
            try:
                return worker.batch_limit(spec)
            except Exception as error:  # e.g. the device is gone: the job goes back first
                refused.append(error)
                return spec.images

        try:
            while True:
                with self._lock:
                    taken = self.scheduler.next_batch(now, limit)
                if refused:
                    raise refused[0]
                if not taken:
                    return []
                first = claim([taken[0].job_id])
                if not first:  # taken elsewhere, or cancelled, since this process last looked
                    with self._lock:
                        self.scheduler.settle(taken[0].job_id, 0.0, now)
                        self._put_back(taken[1:], now)
                    taken = []
                    continue
                riders = claim([spec.job_id for spec in taken[1:]]) if len(taken) > 1 else []
                claims = first + riders
                won = {c.job_id for c in claims}
                lost, taken = [spec for spec in taken if spec.job_id not in won], []
                with self._lock:
                    for spec in lost:  # riders taken elsewhere: not charged here
                        self.scheduler.settle(spec.job_id, 0.0, now)
                return claims
        except BaseException:
            with self._lock:
                self._put_back(taken, now)
            raise

    def _put_back(self, specs: Sequence[JobSpec], now: float) -> None:
        """Jobs taken out of the scheduler but not claimed: back, uncharged (under the lock)."""
        for spec in specs:
            self.scheduler.settle(spec.job_id, 0.0, now)
            self.scheduler.add(spec)

    def _absorb(self, view: DispatchView, now: float) -> None:
        """What the store says every process did (under the lock): jobs queued elsewhere join
        the scheduler, running ones leave it, and everyone's usage is rebased on the store's."""
        for spec in view.fresh:
            self._cursor = max(self._cursor, spec.seq)
            track = self._track(spec.job_id, JobState.QUEUED)
            if track.spec is None:
                track.spec = spec
            self._schedule(track, spec)
        charges = [(sample.owner, sample.guild, sample.seconds, sample.finished_at) for sample in view.used]
        for snap in view.running:
            self.scheduler.remove(snap.job_id)
            charges.append((snap.owner, snap.guild, snap.gpu_seconds + self.rates.estimate(snap.as_spec()),
                            snap.started_at if snap.started_at is not None else now))
        self.scheduler.rebase(charges)

    def _fetch_external(self, *, force: bool = False) -> None:
        """Jobs submitted by other processes since we last looked (cheap, time-throttled)."""
        now = time.monotonic()
        if not force and now - self._fetched_at < self.config.poll_interval_s:
            return
        self._fetched_at = now
        try:
            fresh = self.store.queued(after_seq=self._cursor)
        except Exception:
            log.exception("could not read new jobs from the store")
            return
        with self._lock:
            for spec in fresh:
                self._cursor = max(self._cursor, spec.seq)
                track = self._track(spec.job_id, JobState.QUEUED)
                if track.spec is None:
                    track.spec = spec
                self._schedule(track, spec)

    def claimed(self, worker: Worker, batch: Sequence[JobSpec], claims: list[Claim]) -> list[Claim]:
        """After a claim: jobs lost to another process or a cancel are dropped from the view."""
        won = {claim.job_id: claim for claim in claims}
        with self._lock:
            for spec in batch:
                track = self._track(spec.job_id, JobState.QUEUED)
                claim = won.get(spec.job_id)
                if claim is None:
                    self.scheduler.settle(spec.job_id, 0.0, self.clock())
                    continue  # not ours any more; a refresh reads what happened
                track.worker, track.claim, track.spec = worker, claim, claim.spec
                self._publish(track, JobStarted(spec.job_id, claim.attempt, len(claims)))
        return claims

    def requeued(self, spec: JobSpec, reason: str) -> None:
        """A job queued again in the store (given back, or never claimed): follow it, schedule it."""
        with self._lock:
            track = self._track(spec.job_id, JobState.QUEUED)
            track.spec, track.cancel = spec, False
            self._publish(track, JobRequeued(spec.job_id, reason))
            if self._started and not all(w.stopping for w in self._workers):
                self._schedule(track, spec)

    def progress(self, job_ids: Sequence[str], step: int, total: int, eta: float | None,
                 preview: Callable[[str], Any] | None, detail: Mapping[str, Any] | None = None) -> None:
        """A step of a local run: publish it to each job's subscribers (previews to those who asked)."""
        with self._lock:
            for job_id in job_ids:
                track = self._tracks.get(job_id)
                if track is None or track.terminal is not None:
                    continue
                image = None
                if preview is not None and track.wants_previews:
                    try:
                        image = preview(job_id)
                    except Exception:  # a preview is a nicety: never fail a job for it
                        log.debug("preview of job %s failed", job_id, exc_info=True)
                self._publish(track, JobProgress(job_id, step, total, eta, image, detail))

    def finished(self, job_id: str, event: JobEvent) -> None:
        """A local run's job ended (recorded in the store): publish its terminal event."""
        with self._lock:
            self._publish(self._track(job_id, JobState.RUNNING), event)

    def lost(self, job_id: str) -> None:
        """A worker lost this job to another process: follow it through the store from now on."""
        with self._lock:
            track = self._tracks.get(job_id)
            if track is not None:
                track.worker = track.claim = None

    def cancel_asked(self, job_id: str) -> bool:
        """A cancel of this locally running job is pending."""
        track = self._tracks.get(job_id)  # a plain read of a bool: no lock needed
        return track is not None and track.cancel

    def mark_cancel(self, job_id: str) -> None:
        """A cancel read from the store (asked by another process): the worker acknowledges it."""
        with self._lock:
            track = self._tracks.get(job_id)
            if track is not None:
                track.cancel = True

    def settle(self, job_id: str, seconds: float) -> None:
        """Charge a finished run's real GPU time in place of its estimate."""
        with self._lock:
            self.scheduler.settle(job_id, seconds, self.clock())

    def has_waiting(self, job_class: JobClass) -> bool:
        """Whether a job of ``job_class`` waits in the local scheduler."""
        with self._lock:
            return self.scheduler.has_pending(job_class)

    def unusable(self, worker: Worker, error: BrushworkError) -> None:
        """A worker stopped for good (``worker.failure``); its jobs stay queued for others.  Its
        heartbeat says "stopped" at once, so no other process waits for it."""
        try:
            self.store.heartbeat(worker.status())
        except Exception:
            log.exception("could not record that worker %s stopped (%s)", worker.worker_id, error.code)
        with self._lock:
            self._work.notify_all()

    def _resync(self) -> None:
        """Re-queue dead workers' jobs; align the scheduler with what the store says is queued."""
        report = self._recover()
        if report.requeued or report.failed:
            log.warning("jobs of a dead worker: %d re-queued, %d failed", len(report.requeued), len(report.failed))
        started = time.monotonic()
        queued = {spec.job_id: spec for spec in self.store.queued()}
        with self._lock:
            for spec in queued.values():
                track = self._track(spec.job_id, JobState.QUEUED)
                if track.worker is None and track.terminal is None:
                    track.spec = track.spec or spec
                    if spec.job_id in report.requeued and track.state is JobState.RUNNING:
                        self._publish(track, JobRequeued(spec.job_id, "recovered"))
                    self._schedule(track, spec)
            for spec in list(self.scheduler.jobs()):
                track = self._tracks.get(spec.job_id)
                if spec.job_id not in queued and track is not None and track.added_at < started:
                    self.scheduler.remove(spec.job_id)  # cancelled or taken elsewhere: refresh tells
                    track.added_at = 0.0

    def _monitor_loop(self) -> None:
        """Heartbeats, hang reports and the periodic resync, on one background thread."""
        config = self.config
        next_resync = time.monotonic() + config.resync_interval_s
        while not self._stopping.wait(config.heartbeat_interval_s):
            for worker in list(self._workers):
                silent = worker.silent_for()
                newly_hung = silent is not None and silent > config.hang_timeout_s and not worker.hung
                if newly_hung:
                    worker.hung = True
                    log.error("worker %s on %s has not reported for %.1f s (jobs %s): it looks hung",
                              worker.worker_id, worker.device, silent, ", ".join(worker.running_ids()))
                try:
                    self.store.heartbeat(worker.status())  # "hung" is visible to other processes first
                except Exception:
                    log.exception("heartbeat of worker %s failed", worker.worker_id)
                if newly_hung and silent is not None:
                    with self._lock:
                        for job_id in worker.running_ids():
                            track = self._tracks.get(job_id)
                            if track is not None:
                                self._deliver(track, JobStalled(job_id, silent))
            if time.monotonic() >= next_resync:
                next_resync = time.monotonic() + config.resync_interval_s
                try:
                    self._resync()
                except Exception:
                    log.exception("resync with the job store failed")


def _terminal_event(snap: JobSnapshot, result: Any) -> JobEvent:
    if snap.state is JobState.DONE:
        return JobDone(snap.job_id, result)
    if snap.state is JobState.FAILED:
        error = snap.error or BrushworkError("queue.internal", error="no reason recorded")
        return JobFailed(snap.job_id, error)
    return JobCancelled(snap.job_id)


def _remote_progress(snap: JobSnapshot) -> JobProgress:
    """Progress read from the store: only a fraction is stored, shown as a percentage."""
    return JobProgress(snap.job_id, round(snap.progress * 100), 100, None)


__all__ = ["JobQueue", "QueueConfig"]


def _plus(counts: PendingCounts, submission: Submission, before: Sequence[Submission]) -> PendingCounts:
    """``counts`` (read from the store) with the jobs admitted ``before`` in the same batch added."""
    if not before:
        return counts
    guild = submission.guild
    same_guild = [s for s in before if guild is not None and s.guild == guild]
    return PendingCounts(user=counts.user + sum(1 for s in before if s.owner == submission.owner),
                         guild=counts.guild + len(same_guild), total=counts.total + len(before),
                         guild_images=counts.guild_images + sum(s.images for s in same_guild))

"""The job queue, wired to Brushwork: the SQL job store and the generation runner.

* :func:`plan_submission` turns a :class:`~bot.services.GenerationPlan` into a queue
  :class:`~generation.queue.Submission`: the plan is the payload (it survives restarts),
  the batch key groups plans that can share one pipeline call, ``work`` sizes it.
* :class:`SqlJobStore` is the queue's :class:`~generation.queue.JobStore` on the database
  (through the repositories; every race-prone change is a conditional update there).
* :class:`GenerationRunner` runs a batch of compatible jobs as ONE ``engine.generate`` call
  (fewer when the OOM back-off asks), encodes each job's PNGs in the worker thread, and
  hands them to the store, which writes the files, then inserts the image rows and marks
  the job done in one transaction.  A crash in between leaves orphan files at most; the
  retried job makes the same pixels again (seeds are fixed) under new image ids.

This is the composition layer: the only place where the queue (``generation``) meets the
database (``storage``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

from bot.services import ComparePlan, GenerationPlan, SavedImage, encode_png, new_image_row
from generation.batching import batch_key, hires_steps_run, work_units
from generation.errors import BrushworkError
from generation.queue import (
    Claim,
    DailyUsage,
    DispatchView,
    Failure,
    Finished,
    JobClass,
    JobSnapshot,
    JobSpec,
    JobState,
    LostClaim,
    Outcome,
    PendingCounts,
    Recovery,
    RunContext,
    Submission,
    UsageSample,
    WorkerState,
    WorkerStatus,
)
from generation.queue.store import ClaimFor
from generation.request import Request
from storage.archive import save_job_images
from storage.errors import NotFound, StaleState
from storage.files import ImageStore
from storage.records import JobClass as StoredJobClass
from storage.records import JobKind, JobRecord, JobStatus, NewImage, NewJob, Scope, coerce_enum
from storage.unit_of_work import UnitOfWork

if TYPE_CHECKING:
    from PIL import Image

    from generation.engine import Engine, StepInfo

log = logging.getLogger("brushwork.jobs")

#: Images per run when the device's memory cannot be asked (CPU, MPS): plenty of RAM.
DEFAULT_BATCH_MEGAPIXELS = 4.0
#: On CUDA, batch megapixels per GiB of device memory (SD1.5 at 512²: 8 images need ~8 GiB
#: with VAE slicing; SDXL at 1024² about 4× per image).  The OOM back-off corrects it.
MEGAPIXELS_PER_GIB = 0.35


# ---------------------------------------------------------------------- submitting


def plan_submission(plan: GenerationPlan, scope: Scope, *, channel_id: int | None = None,
                    reply_ref: Mapping[str, Any] | None = None, priority: int = 0,
                    job_id: str | None = None) -> Submission:
    """The queue submission for a plan: payload, batch key, images, work, cost group."""
    request = plan.request
    first = request.images()[0]
    from_image = plan.init_image_path is not None
    # Upscales start from a picture and cannot share a call with ones that do not.
    key_parts: list[Any] = [batch_key(first), from_image]
    if plan.loras:  # the files the names were resolved to: another server's `ink` never shares the call
        key_parts.append([[lora.name.casefold(), lora.sha256] for lora in plan.loras])
    key = json.dumps(key_parts, default=str, sort_keys=True)
    return Submission(
        kind=plan.kind,
        owner=scope.user_id,
        guild=scope.guild_id,
        payload={"plan": plan.to_dict()},
        job_class=JobClass.INTERACTIVE,
        priority=priority,
        batch_key=hashlib.sha256(key.encode("utf-8")).hexdigest()[:32],
        images=request.count,
        work=work_units(request, from_image=from_image),
        cost_group=request.model or "",
        channel=channel_id,
        reply_ref=reply_ref,
        job_id=job_id,
    )


def plan_of(spec: JobSpec) -> GenerationPlan:
    return GenerationPlan.from_dict(dict(spec.payload["plan"]))


# -- comparisons: one job, several incompatible requests ------------------------------------

#: The payload key of a comparison job (``{"compare": ComparePlan.to_dict()}``).  Its job kind
#: is ``generate``; the payload tells them apart.  (A kind of its own would now be one
#: ``storage.records.JobKind`` member: since migration 0005 the schema lists no kinds.)
COMPARE_KEY = "compare"


def compare_submission(plan: ComparePlan, scope: Scope, *, channel_id: int | None = None,
                       reply_ref: Mapping[str, Any] | None = None, priority: int = 0,
                       job_id: str | None = None) -> Submission:
    """The queue submission for a comparison: ONE job of ``len(cells)`` images that never shares
    a run with other jobs (no batch key; its cells are grouped into pipeline calls by the runner)."""
    requests = [cell.request for cell in plan.cells]
    return Submission(
        kind="generate",
        owner=scope.user_id,
        guild=scope.guild_id,
        payload={COMPARE_KEY: plan.to_dict()},
        job_class=JobClass.INTERACTIVE,
        priority=priority,
        batch_key=None,
        images=len(requests),
        work=sum(work_units(request) for request in requests),
        cost_group=plan.base.model or "",
        channel=channel_id,
        reply_ref=reply_ref,
        job_id=job_id,
    )


def compare_of(payload: Mapping[str, Any]) -> ComparePlan | None:
    """The comparison a job's payload holds, or None for any other job."""
    data = payload.get(COMPARE_KEY)
    return ComparePlan.from_dict(dict(data)) if data else None


# ---------------------------------------------------------------------- the store


def _epoch(moment: datetime | None) -> float | None:
    return moment.timestamp() if moment is not None else None


def _new_job(submission: Submission) -> NewJob:
    return NewJob(kind=coerce_enum(JobKind, submission.kind, "kind"), owner_id=submission.owner,
                  request=dict(submission.payload), guild_id=submission.guild, channel_id=submission.channel,
                  priority=submission.priority, max_attempts=submission.max_attempts, reply_ref=submission.reply_ref,
                  job_class=StoredJobClass(submission.job_class.value), batch_key=submission.batch_key,
                  images=submission.images, work=submission.work, cost_group=submission.cost_group)


def _spec(record: JobRecord) -> JobSpec:
    return JobSpec(
        job_id=record.public_id, seq=record.id, kind=record.kind.value, owner=record.owner_id,
        guild=record.guild_id, payload=record.request, job_class=JobClass(record.job_class.value),
        priority=record.priority, batch_key=record.batch_key, images=record.images, work=record.work,
        cost_group=record.cost_group, channel=record.channel_id, reply_ref=record.reply_ref,
        attempts=record.attempts, max_attempts=record.max_attempts, checkpoint=record.checkpoint,
        created_at=record.created_at.timestamp(),
    )


def _snapshot(record: JobRecord) -> JobSnapshot:
    return JobSnapshot(
        job_id=record.public_id, seq=record.id, kind=record.kind.value, state=JobState(record.status.value),
        owner=record.owner_id, guild=record.guild_id, job_class=JobClass(record.job_class.value),
        priority=record.priority, images=record.images, work=record.work, cost_group=record.cost_group,
        progress=record.progress, attempts=record.attempts, max_attempts=record.max_attempts,
        cancel_requested=record.cancel_requested, worker_id=record.worker_id, error_code=record.error_code,
        error_params=dict(record.error_params or {}), result_ids=tuple(record.result_image_ids),
        created_at=record.created_at.timestamp(), started_at=_epoch(record.started_at),
        finished_at=_epoch(record.finished_at), gpu_seconds=record.gpu_seconds,
    )


def _jsonable(params: Mapping[str, Any]) -> dict[str, Any]:
    """Error parameters as JSON values (nested errors and odd types become text)."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, str | int | float | bool) or value is None:
            out[key] = value
        elif isinstance(value, list | tuple):
            out[key] = [item if isinstance(item, str | int | float | bool) else str(item) for item in value]
        elif isinstance(value, BrushworkError):
            out[key] = value.message()
        else:
            out[key] = str(value)
    return out


@dataclass(frozen=True, slots=True)
class PreparedImage:
    """A generated image ready to store: its PNG bytes and its row."""

    data: bytes = field(repr=False)
    new: NewImage
    request: Request


T = TypeVar("T")


class SqlJobStore:
    """:class:`~generation.queue.JobStore` on the database; ``complete`` stores the images."""

    def __init__(self, uow_factory: Callable[[], UnitOfWork], images: ImageStore) -> None:
        self._uow = uow_factory
        self._images = images

    # -- submitting -----------------------------------------------------------------
    def add(self, submission: Submission) -> JobSpec:
        return self.add_many([submission])[0]

    def add_many(self, submissions: Sequence[Submission]) -> list[JobSpec]:
        with self._uow() as uow:
            records = uow.jobs.add_many([(_new_job(submission), submission.job_id) for submission in submissions])
            uow.commit()
        return [_spec(record) for record in records]

    def pending_counts(self, owner: int, guild: int | None) -> PendingCounts:
        with self._uow() as uow:
            counts = uow.jobs.counts(owner, guild)
        return PendingCounts(user=counts.user, guild=counts.guild, total=counts.total,
                             guild_images=counts.guild_images)

    def pending_counts_many(self, keys: Sequence[tuple[int, int | None]]) -> dict[tuple[int, int | None],
                                                                                   PendingCounts]:
        with self._uow() as uow:
            counts = uow.jobs.counts_many(keys)
        return {key: PendingCounts(user=c.user, guild=c.guild, total=c.total, guild_images=c.guild_images)
                for key, c in counts.items()}

    def daily_usage(self, guild: int, day: str) -> DailyUsage:
        with self._uow() as uow:
            usage = uow.usage.get(guild, date.fromisoformat(day))
        return DailyUsage(images=usage.images, gpu_seconds=usage.gpu_seconds)

    # -- what waits --------------------------------------------------------------------
    def queued(self, after_seq: int = 0) -> list[JobSpec]:
        with self._uow() as uow:
            return [_spec(record) for record in uow.jobs.queued(after_id=after_seq)]

    def recent_usage(self, since: float) -> list[UsageSample]:
        with self._uow() as uow:
            rows = uow.jobs.finished_usage(datetime.fromtimestamp(since, UTC))
        return [UsageSample(row.owner_id, row.guild_id, row.gpu_seconds, row.finished_at.timestamp()) for row in rows]

    # -- running -----------------------------------------------------------------------
    def claim(self, job_ids: Sequence[str], worker_id: str) -> list[Claim]:
        with self._uow() as uow:
            records = uow.jobs.claim(job_ids, worker_id)
            uow.commit()
        return [Claim(_spec(record), worker_id, record.attempts) for record in records]

    def dispatch(self, worker_id: str, choose: Callable[[DispatchView, ClaimFor], T], *, since: float,
                 after_seq: int) -> T:
        with self._uow() as uow:
            uow.jobs.lock_dispatch()  # first: the reads below then see every process's commits
            used = uow.jobs.finished_usage(datetime.fromtimestamp(since, UTC))
            view = DispatchView(
                used=tuple(UsageSample(row.owner_id, row.guild_id, row.gpu_seconds, row.finished_at.timestamp())
                           for row in used),
                running=tuple(_snapshot(record) for record in uow.jobs.running()),
                fresh=tuple(_spec(record) for record in uow.jobs.queued(after_id=after_seq)))

            def claim(job_ids: Sequence[str]) -> list[Claim]:
                return [Claim(_spec(record), worker_id, record.attempts)
                        for record in uow.jobs.claim(job_ids, worker_id)]

            chosen = choose(view, claim)
            uow.commit()
        return chosen

    def save_progress(self, progress: Mapping[str, float]) -> None:
        with self._uow() as uow:
            uow.jobs.save_progress(progress)
            uow.commit()

    def cancel_requested(self, job_ids: Iterable[str]) -> set[str]:
        with self._uow() as uow:
            return uow.jobs.cancel_requested(job_ids)

    def complete(self, claim: Claim, output: Any, gpu_seconds: float) -> Any:
        record = getattr(output, "record_completion", None)
        if record is not None:  # a long job's own result (a trained LoRA) records itself with the job
            try:
                return record(self._uow, claim, gpu_seconds)
            except StaleState:
                raise LostClaim(claim.job_id) from None
        prepared: list[PreparedImage] = list(output)
        try:
            _job, records = save_job_images(
                self._uow, self._images, [(item.data, item.new) for item in prepared], job_public_id=claim.job_id,
                worker_id=claim.worker_id, attempt=claim.attempt, gpu_seconds=gpu_seconds,
                usage_guild_id=claim.spec.guild)
        except StaleState:
            raise LostClaim(claim.job_id) from None
        return [SavedImage(record=record, path=self._images.absolute(record.file_path), request=item.request)
                for record, item in zip(records, prepared, strict=True)]

    def _end(self, claim: Claim, status: JobStatus, gpu_seconds: float, error: BrushworkError | None = None) -> None:
        try:
            with self._uow() as uow:
                uow.jobs.finish(claim.job_id, worker_id=claim.worker_id, attempt=claim.attempt, status=status,
                                gpu_seconds=gpu_seconds,
                                error=error.message() if error else None,
                                error_code=error.code if error else None,
                                error_params=_jsonable(error.params) if error else None)
                if claim.spec.guild is not None and gpu_seconds > 0:
                    uow.usage.add(claim.spec.guild, datetime.now(UTC).date(), gpu_seconds=gpu_seconds)
                uow.commit()
        except StaleState:
            raise LostClaim(claim.job_id) from None

    def fail(self, claim: Claim, error: BrushworkError, gpu_seconds: float) -> None:
        self._end(claim, JobStatus.FAILED, gpu_seconds, error)

    def finish_cancelled(self, claim: Claim, gpu_seconds: float) -> None:
        self._end(claim, JobStatus.CANCELLED, gpu_seconds)

    def requeue(self, claim: Claim, *, refund_attempt: bool, gpu_seconds: float,
                checkpoint: Mapping[str, Any] | None = None) -> JobSpec:
        try:
            with self._uow() as uow:
                record = uow.jobs.requeue(claim.job_id, worker_id=claim.worker_id, attempt=claim.attempt,
                                          refund_attempt=refund_attempt, gpu_seconds=gpu_seconds,
                                          checkpoint=checkpoint)
                if claim.spec.guild is not None and gpu_seconds > 0:  # a training chunk's GPU time counts today
                    uow.usage.add(claim.spec.guild, datetime.now(UTC).date(), gpu_seconds=gpu_seconds)
                uow.commit()
        except StaleState:
            raise LostClaim(claim.job_id) from None
        return _spec(record)

    # -- anyone ------------------------------------------------------------------------
    def cancel(self, job_id: str) -> JobState | None:
        with self._uow() as uow:
            status = uow.jobs.request_cancel(job_id)
            uow.commit()
        return JobState(status.value) if status is not None else None

    def snapshot(self, job_id: str) -> JobSnapshot | None:
        try:
            with self._uow() as uow:
                return _snapshot(uow.jobs.get(job_id, Scope.local_operator()))
        except NotFound:
            return None

    def active(self) -> list[JobSnapshot]:
        with self._uow() as uow:
            return [_snapshot(record) for record in uow.jobs.active()]

    def result(self, job_id: str) -> Any:
        operator = Scope.local_operator()
        with self._uow() as uow:
            job = uow.jobs.get(job_id, operator)
            if job.kind is JobKind.TRAIN:  # its result is a LoRA, not images
                from bot.training_jobs import training_result

                return training_result(uow, job)
            records = [uow.images.get(public_id, operator, include_deleted=True) for public_id in job.result_image_ids]
        return [SavedImage(record=record, path=self._images.absolute(record.file_path),
                           request=Request.from_dict(record.request)) for record in records]

    # -- workers ----------------------------------------------------------------------
    def heartbeat(self, status: WorkerStatus) -> None:
        with self._uow() as uow:
            uow.workers.beat(status.worker_id, device=status.device, host=status.host, pid=status.pid,
                             state=status.state, running=status.running, stats=status.stats,
                             started_at=datetime.fromtimestamp(status.started_at, UTC),
                             now=datetime.fromtimestamp(status.heartbeat_at, UTC))
            uow.commit()

    def workers(self) -> list[WorkerStatus]:
        with self._uow() as uow:
            rows = uow.workers.all()
        return [WorkerStatus(worker_id=row.worker_id, device=row.device, host=row.host, pid=row.pid,
                             state=WorkerState(row.state.value), heartbeat_at=row.heartbeat_at.timestamp(),
                             started_at=row.started_at.timestamp(), running=tuple(row.running), stats=row.stats)
                for row in rows]

    def recover(self, alive: Callable[[str | None], bool]) -> Recovery:
        crashed = BrushworkError("queue.crashed", attempts="several").message()
        with self._uow() as uow:
            report = uow.jobs.recover(alive, crashed_error=crashed)
            uow.commit()
        return Recovery(report.requeued, report.failed, report.cancelled)

    def prune_workers(self, older_than_s: float = 24 * 3600.0) -> int:
        """Forget worker rows silent for a day: every command-line worker leaves one."""
        with self._uow() as uow:
            count = uow.workers.prune(datetime.fromtimestamp(time.time() - older_than_s, UTC))
            uow.commit()
        return count


# ---------------------------------------------------------------------- the runner


@dataclass
class _Item:
    """One image of a run: which job it belongs to and how to make it."""

    job_id: str
    index: int  # its place among its job's images
    request: Request
    init: Image.Image | None = None


class GenerationRunner:
    """:class:`~generation.queue.Runner` for generate/reroll/tweak/upscale/vary jobs."""

    def __init__(self, engine: Callable[[], Engine], *, batch_megapixels: float | None = None) -> None:
        self._engine = engine  # a provider: the model loads in the worker thread, not at start
        self._batch_megapixels = batch_megapixels
        self._limits: dict[str | None, int] = {}

    def warm_up(self) -> None:
        """In the worker thread, before the first job: create the engine (imports torch) and
        size batches for this device's memory."""
        self._budget()

    def batch_limit(self, spec: JobSpec) -> int:
        """Images per run that fit this device's memory (megapixels of output per image)."""
        if COMPARE_KEY in spec.payload:  # runs alone: its own cells, in calls the runner sizes
            return max(1, spec.images)
        cached = self._limits.get(spec.batch_key)
        if cached is not None:
            return cached
        request = plan_of(spec).request
        width, height = request.output_size or request.size or (512, 512)
        limit = max(1, int(self._budget() / max(width * height / 1e6, 1e-6)))
        self._limits[spec.batch_key] = limit
        return limit

    def _budget(self) -> float:
        if self._batch_megapixels is not None:
            return self._batch_megapixels
        engine = self._engine()
        device = engine.device
        if device.type == "cuda":
            import torch

            total = torch.cuda.get_device_properties(device).total_memory / 2**30
            self._batch_megapixels = max(0.3, total * MEGAPIXELS_PER_GIB)
        else:
            self._batch_megapixels = DEFAULT_BATCH_MEGAPIXELS
        return self._batch_megapixels

    def run(self, jobs: Sequence[JobSpec], context: RunContext) -> dict[str, Outcome]:
        if any(COMPARE_KEY in spec.payload for spec in jobs):
            return self._run_with_comparisons(jobs, context)
        outcomes: dict[str, Outcome] = {}
        items: list[_Item] = []
        plans: dict[str, GenerationPlan] = {}
        for spec in jobs:
            try:
                plan = plans[spec.job_id] = plan_of(spec)
                init = _load_rgb(Path(plan.init_image_path)) if plan.init_image_path else None
            except BrushworkError as error:  # this job's input is unusable: the others go on
                outcomes[spec.job_id] = Failure(error)
                continue
            items.extend(_Item(spec.job_id, index, request, init) for index, request in enumerate(plan.request.images()))
        if not items:
            return outcomes
        # One batch key means one set of LoRA files (their hashes are in the key): any plan's resolver serves.
        generated = self._generate(items, context, plans[items[0].job_id].lora_resolver())
        by_job: dict[str, list[tuple[_Item, Any]]] = {}
        for item, image in zip(items, generated, strict=True):
            by_job.setdefault(item.job_id, []).append((item, image))
        for spec in jobs:
            if spec.job_id in outcomes or context.is_cancelled(spec.job_id):
                continue  # a cancelled job's images are dropped, not encoded
            plan = plans[spec.job_id]
            prepared = [PreparedImage(data=encode_png(image), request=image.request,
                                      new=new_image_row(plan, image, item.index, owner_id=spec.owner,
                                                        guild_id=spec.guild, channel_id=spec.channel,
                                                        job_public_id=spec.job_id))
                        for item, image in by_job.get(spec.job_id, [])]
            outcomes[spec.job_id] = Finished(prepared)
        return outcomes

    def _generate(self, items: list[_Item], context: RunContext, lora_resolver: Any = None) -> list[Any]:
        """All items in as few engine calls as memory allows (one when it can)."""
        engine = self._engine()
        size = max(1, context.max_images_per_call)
        chunks = [items[start:start + size] for start in range(0, len(items), size)]
        results: list[Any] = []
        for number, chunk in enumerate(chunks):
            on_step = _ProgressRelay(context, chunk, number, len(chunks))
            # all or none of a chunk start from a picture ("starts from an image" is in the batch key)
            inits = cast("list[Image.Image]", [item.init for item in chunk]) if chunk[0].init is not None else None
            results.extend(engine.generate([item.request for item in chunk], init_images=inits, on_step=on_step,
                                           should_abort=context.should_abort,
                                           vae_tiling=True if context.low_memory else None,
                                           lora_resolver=lora_resolver))
        return results


    # -- comparisons ---------------------------------------------------------------------
    def _run_with_comparisons(self, jobs: Sequence[JobSpec], context: RunContext) -> dict[str, Outcome]:
        """Comparisons never share a run (they have no batch key); if one ever does, each runs
        on its own and the other jobs as usual."""
        outcomes: dict[str, Outcome] = {}
        others = [spec for spec in jobs if COMPARE_KEY not in spec.payload]
        for spec in jobs:
            if COMPARE_KEY in spec.payload:
                outcome = self._run_compare(spec, context)
                if outcome is not None:
                    outcomes[spec.job_id] = outcome
        if others:
            outcomes.update(self.run(others, context))
        return outcomes

    def _run_compare(self, spec: JobSpec, context: RunContext) -> Outcome | None:
        """A comparison's cells: those that can share a pipeline call (same ``batch_key`` and LoRA
        files) in one call — fewer images per call if the OOM back-off asks — the others in
        further calls, with progress over all of them.  None when the job was cancelled."""
        try:
            plan = compare_of(spec.payload)
            assert plan is not None
        except (BrushworkError, KeyError, TypeError, ValueError) as error:
            detail = error if isinstance(error, BrushworkError) else BrushworkError(
                "queue.internal", error=f"unreadable comparison: {error}")
            return Failure(detail)
        groups: dict[str, list[int]] = {}
        for index, cell in enumerate(plan.cells):
            key = [batch_key(cell.request), [[lora.name.casefold(), lora.sha256] for lora in cell.loras]]
            groups.setdefault(json.dumps(key, default=str, sort_keys=True), []).append(index)
        # As many images per call as this device's memory takes (the largest cell decides), and no
        # more than the OOM back-off allows: the job has no batch key, so the worker cannot know.
        pixels = max(w * h for w, h in (c.request.output_size or c.request.size or (512, 512) for c in plan.cells))
        memory = max(1, int(self._budget() / max(pixels / 1e6, 1e-6)))
        size = max(1, min(context.max_images_per_call, memory))
        calls = [indices[start:start + size] for indices in groups.values() for start in range(0, len(indices), size)]
        weights = [_steps_of(plan.cells[indices[0]].request) for indices in calls]
        total = sum(weights)
        engine = self._engine()
        images: dict[int, Any] = {}
        done = 0
        for indices, weight in zip(calls, weights, strict=True):
            first = plan.cells[indices[0]]
            relay = _CompareProgress(context, done, weight, total)
            generated = engine.generate([plan.cells[i].request for i in indices], on_step=relay,
                                        should_abort=context.should_abort,
                                        vae_tiling=True if context.low_memory else None,
                                        lora_resolver=first.lora_resolver())
            images.update(zip(indices, generated, strict=True))
            done += weight
        if context.is_cancelled(spec.job_id):
            return None  # dropped, not encoded
        prepared = []
        for index, cell in enumerate(plan.cells):
            image = images[index]
            prepared.append(PreparedImage(data=encode_png(image), request=image.request,
                                          new=new_image_row(cell, image, index, owner_id=spec.owner,
                                                            guild_id=spec.guild, channel_id=spec.channel,
                                                            job_public_id=spec.job_id)))
        return Finished(prepared)


def _steps_of(request: Request) -> int:
    """Denoising steps one call of this request runs (base pass plus the hires pass)."""
    return max(1, (request.steps or 1) + hires_steps_run(request))


class _CompareProgress:
    """One call of a comparison → the job's progress over all its calls (and its preview)."""

    def __init__(self, context: RunContext, done: int, weight: int, total: int) -> None:
        self._context, self._done, self._weight, self._total = context, done, weight, total

    def __call__(self, info: StepInfo) -> None:
        fraction = info.overall_step / max(1, info.overall_total)
        step = min(self._done + round(fraction * self._weight), self._total)
        self._context.report_progress(step, self._total, lambda _job_id: info.preview())


class _ProgressRelay:
    """Engine steps → the run's progress; a job's preview shows only that job's images."""

    def __init__(self, context: RunContext, chunk: list[_Item], number: int, count: int) -> None:
        self._context = context
        self._number, self._count = number, count
        self._positions: dict[str, list[int]] = {}
        for position, item in enumerate(chunk):
            self._positions.setdefault(item.job_id, []).append(position)

    def __call__(self, info: StepInfo) -> None:
        per_call = info.overall_total
        step = self._number * per_call + info.overall_step
        positions = self._positions

        def preview(job_id: str) -> Any:
            own = positions.get(job_id)
            return info.preview(only=own) if own else None

        self._context.report_progress(step, per_call * self._count, preview)


def _load_rgb(path: Path) -> Image.Image:
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except OSError as exc:
        raise BrushworkError("image.unreadable", path=str(path), reason=str(exc)) from None


__all__ = ["COMPARE_KEY", "GenerationRunner", "PreparedImage", "SqlJobStore", "compare_of", "compare_submission",
           "plan_of", "plan_submission"]

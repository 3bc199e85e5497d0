"""LoRA training on the shared job queue: the payload, the runner, the result.

A training job is a ``train`` job of class ``LONG``: the scheduler starts it only when no
interactive job waits, and :class:`TrainingRunner` runs it **one chunk per turn**:

1. ``LoraTrainer.from_engine`` on the job's workdir (``$BRUSHWORK_HOME/training/<lora id>``,
   which holds a snapshot of the dataset taken at submission, the checkpoint and the
   samples).  A workdir with a checkpoint resumes there — after a chunk, a shutdown, or a
   crash and restart — so nothing is retrained.
2. ``run_chunk(max_seconds=…, should_abort=…)``: ``should_abort`` is true as soon as an
   interactive job waits (or the job is cancelled, or the worker stops), so a generation
   submitted during training starts after at most one more training step.  The trainer is
   closed (model copies and optimizer freed) when something else runs next; when nothing
   waits, it stays prepared for the job's next chunk (:class:`KindRouter` releases it
   before any other kind of job runs), so uninterrupted training does not rebuild it.  Progress
   events carry step, loss and ETA, and every ``sample_every`` steps a sample image drawn
   from a fixed prompt and seed (its path in ``detail["sample_path"]``).
3. Not done: ``Continue(checkpoint)`` — the job goes back to the queue, interactive jobs
   go first, then the next chunk.  Cancelled: the workdir is removed and the LoRA marked
   failed (nothing half-registered).  Done: the LoRA is exported to a ``.safetensors``
   (diffusers keys, metadata: base model and hash, rank, steps, dataset size, trigger
   words), and :class:`TrainedLora` records it **with** the job: the file is moved into
   the LoRA store first, then in one transaction the ``loras`` row becomes ``ready`` (with
   its hashes), the job ``done`` (conditional on the worker's claim) and the server's
   GPU-seconds counted.  The result (``JobDone.result``) is a :class:`TrainingResult`: the
   LoRA and the before/after samples.

:class:`KindRouter` lets one worker run both kinds: it hands ``train`` jobs to the
training runner and everything else to the generation runner.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from generation.errors import BrushworkError
from generation.queue import (
    Claim,
    Continue,
    Failure,
    Finished,
    JobClass,
    JobSpec,
    Outcome,
    RunContext,
    Runner,
    Submission,
)
from storage.assets import AssetStore, lora_file_path
from storage.errors import NotFound, StaleState
from storage.records import JobRecord, JobStatus, LoraRecord, LoraStatus, Scope
from storage.unit_of_work import UnitOfWork

if TYPE_CHECKING:
    from generation.engine import Engine
    from generation.training import LoraTrainer, TrainingProgress

log = logging.getLogger("brushwork.training")

TRAIN_KIND = "train"
DATASET_DIR = "dataset"
SAMPLES_DIR = "samples"
EXPORT_FILE = "export.safetensors"


# ---------------------------------------------------------------------- the job


@dataclass(frozen=True, slots=True)
class TrainingPayload:
    """What a training job stores: enough to (re)build its trainer after any restart."""

    lora_id: str
    name: str
    model: str
    config: Mapping[str, Any]
    items: tuple[tuple[str, str | None], ...]  # (file in the workdir's dataset/ folder, caption)
    dataset_id: str | None = None
    dataset_name: str | None = None
    workdir: str | None = None  # absolute, for readers in other processes (the runner uses its own setting)

    def to_dict(self) -> dict[str, Any]:
        return {"lora_id": self.lora_id, "name": self.name, "model": self.model, "config": dict(self.config),
                "items": [[file, caption] for file, caption in self.items], "dataset_id": self.dataset_id,
                "dataset_name": self.dataset_name, "workdir": self.workdir}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainingPayload:
        return cls(lora_id=data["lora_id"], name=data["name"], model=data["model"], config=dict(data["config"]),
                   items=tuple((str(file), caption) for file, caption in data["items"]),
                   dataset_id=data.get("dataset_id"), dataset_name=data.get("dataset_name"),
                   workdir=data.get("workdir"))


def training_submission(payload: TrainingPayload, scope: Scope, *, channel_id: int | None = None,
                        reply_ref: Mapping[str, Any] | None = None) -> Submission:
    """A long job: alone in its runs (no batch key), sized in megapixel-steps like generation
    (a training step, forward and backward, costs about three sampling steps)."""
    steps = int(payload.config.get("steps", 1))
    resolution = int(payload.config.get("resolution", 512))
    return Submission(kind=TRAIN_KIND, owner=scope.user_id, guild=scope.guild_id, payload={"training": payload.to_dict()},
                      job_class=JobClass.LONG, batch_key=None, images=1,
                      work=3.0 * steps * resolution * resolution / 1e6, cost_group=f"train:{payload.model}",
                      channel=channel_id, reply_ref=reply_ref)


def snapshot_dataset(items: Sequence[tuple[Path, str | None]], workdir: Path) -> list[tuple[str, str | None]]:
    """Copy (hard-link when possible) the dataset's images into ``workdir/dataset``: the run
    trains on what the dataset held at submission, whatever is added or removed later, and
    resumes on exactly that (the trainer refuses a checkpoint made on other images)."""
    folder = workdir / DATASET_DIR
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for index, (source, caption) in enumerate(items, start=1):
        name = f"{index:04d}.png"
        target = folder / name
        target.unlink(missing_ok=True)
        try:
            os.link(source, target)
        except OSError:
            shutil.copyfile(source, target)
        out.append((name, caption))
    return out


def sample_paths(workdir: Path) -> list[Path]:
    """A run's samples in step order (``step_000000.png`` is drawn before training)."""
    folder = workdir / SAMPLES_DIR
    if not folder.is_dir():
        return []
    return sorted(path for path in folder.glob("step_*.png") if path.is_file())


@dataclass(frozen=True, slots=True)
class TrainingResult:
    """A finished training: the LoRA, and its samples (before = step 0, after = the last)."""

    lora: LoraRecord
    before: Path | None
    after: Path | None
    samples: tuple[Path, ...] = ()


def _result_for(lora: LoraRecord, workdir: Path) -> TrainingResult:
    samples = tuple(sample_paths(workdir))
    before = samples[0] if samples and samples[0].name == "step_000000.png" else None
    after = samples[-1] if samples and samples[-1] != before else None
    return TrainingResult(lora=lora, before=before, after=after, samples=samples)


def training_result(uow: UnitOfWork, job: JobRecord) -> TrainingResult | None:
    """The result of a finished ``train`` job, read from the database (another process ran it)."""
    payload = (job.request or {}).get("training")
    if not payload:
        return None
    try:
        lora = uow.loras.get_by_id(payload["lora_id"])
    except NotFound:
        return None
    return _result_for(lora, Path(payload["workdir"]) if payload.get("workdir") else Path("/nonexistent"))


@dataclass
class TrainedLora:
    """A finished run's output: the exported file, recorded with the job by the job store."""

    payload: TrainingPayload
    exported: Path
    workdir: Path
    files: AssetStore
    steps: int
    settings: Mapping[str, Any] = field(default_factory=dict)
    base_model_hash: str | None = None

    def record_completion(self, uow_factory: Callable[[], UnitOfWork], claim: Claim,
                          gpu_seconds: float) -> TrainingResult:
        """File first (moved into the LoRA store), then one transaction: the LoRA ``ready``, the
        job ``done`` (only if this worker's claim holds: else ``StaleState``, and the file goes
        again), the server's GPU-seconds.  A LoRA deleted meanwhile fails the job."""
        from generation.models.hashing import FileHasher

        relative = lora_file_path(self.payload.lora_id)
        with contextlib.suppress(OSError):
            self.files.delete(relative)  # an earlier attempt's file whose row was never written
        stored = self.files.adopt(relative, self.exported)
        try:
            short_hash = FileHasher(None).lora_hash(self.files.absolute(relative))
            with uow_factory() as uow:
                try:
                    lora = uow.loras.finish_training(
                        self.payload.lora_id, file_path=relative, sha256=stored.sha256, short_hash=short_hash,
                        size_bytes=stored.size, steps=self.steps, base_model_hash=self.base_model_hash,
                        settings=self.settings)
                except (StaleState, NotFound):
                    from bot.lora_services import ServerLoraError

                    raise ServerLoraError("server_lora.training_gone", name=self.payload.name) from None
                now = datetime.now(UTC)
                uow.jobs.finish(claim.job_id, worker_id=claim.worker_id, attempt=claim.attempt,
                                status=JobStatus.DONE, gpu_seconds=gpu_seconds, now=now)
                if claim.spec.guild is not None and gpu_seconds > 0:
                    uow.usage.add(claim.spec.guild, now.date(), gpu_seconds=gpu_seconds)
                uow.commit()
        except BaseException:
            with contextlib.suppress(OSError):
                self.files.delete(relative)
            raise
        _tidy(self.workdir)
        return _result_for(lora, self.workdir)


def _tidy(workdir: Path) -> None:
    """After success keep only the samples (``info`` and the announcement show them)."""
    for name in ("checkpoint.safetensors", EXPORT_FILE):
        with contextlib.suppress(OSError):
            (workdir / name).unlink(missing_ok=True)
    shutil.rmtree(workdir / DATASET_DIR, ignore_errors=True)


def _remove(workdir: Path) -> None:
    if workdir.is_dir() and not workdir.is_symlink():
        shutil.rmtree(workdir, ignore_errors=True)


# ---------------------------------------------------------------------- the runner


class TrainingRunner:
    """:class:`~generation.queue.Runner` for ``train`` jobs (see the module docstring)."""

    def __init__(self, engine: Callable[[], Engine], *, uow_factory: Callable[[], UnitOfWork], files: AssetStore,
                 training_dir: Path, chunk_seconds: float = 20.0, chunk_steps: int | None = None) -> None:
        self._engine = engine
        self._uow = uow_factory
        self._files = files
        self._training_dir = Path(training_dir)
        self.chunk_seconds = chunk_seconds
        self.chunk_steps = chunk_steps
        self._trainers: dict[str, LoraTrainer] = {}  # kept between chunks (closed: no model memory held)

    def batch_limit(self, spec: JobSpec) -> int:
        return 1

    def run(self, jobs: Sequence[JobSpec], context: RunContext) -> dict[str, Outcome]:
        outcomes: dict[str, Outcome] = {}
        for spec in jobs:  # long jobs run alone; a loop for safety
            outcome = self._run(spec, context)
            if outcome is not None:
                outcomes[spec.job_id] = outcome
        return outcomes

    def _run(self, spec: JobSpec, context: RunContext) -> Outcome | None:
        from bot.lora_services import ServerLoraError

        payload = TrainingPayload.from_dict(spec.payload["training"])
        workdir = self._training_dir / payload.lora_id
        with self._uow() as uow:
            try:
                lora = uow.loras.get_by_id(payload.lora_id)
            except NotFound:
                lora = None
        if lora is None or lora.status is not LoraStatus.TRAINING:
            self._forget(spec.job_id)
            _remove(workdir)
            return Failure(ServerLoraError("server_lora.training_gone", name=payload.name))
        try:
            trainer = self._trainer(spec, payload, workdir)
        except BrushworkError as error:
            return Failure(error)

        def stop() -> bool:
            return context.should_abort() or context.interactive_waiting() or context.is_cancelled(spec.job_id)

        def progress(report: TrainingProgress) -> None:
            detail = {"kind": TRAIN_KIND, "lora": payload.name, "loss": report.loss, "loss_ema": report.loss_ema,
                      "eta_s": report.eta_seconds, "seconds_per_step": report.seconds_per_step,
                      "sample_path": str(report.sample_path) if report.sample_path else None}
            image = report.sample
            preview = (lambda _job_id: image) if image is not None else None
            context.report_progress(report.step, report.total, preview, detail)

        try:
            result = trainer.run_chunk(max_steps=self.chunk_steps, max_seconds=self.chunk_seconds,
                                       should_abort=stop, on_progress=progress)
        except BaseException as error:
            self._forget(spec.job_id)
            if _is_out_of_memory(error):
                return self._out_of_memory(payload, trainer)
            raise
        if result.done or stop():
            # Something else runs next: free the model copies and the optimizer (the checkpoint is
            # on disk).  Otherwise this job is next again and keeps them for its next chunk.
            with contextlib.suppress(Exception):
                trainer.close()
        if context.is_cancelled(spec.job_id):
            self._forget(spec.job_id)
            _remove(workdir)
            with self._uow() as uow:
                uow.loras.mark_failed(payload.lora_id)
                uow.commit()
            return None  # recorded as cancelled by the worker
        if not result.done:
            return Continue({"step": result.step, "total": result.total, "loss": result.loss,
                             "samples": [path.name for path in sample_paths(workdir)]})
        from generation.training import export_lora

        exported = export_lora(trainer, workdir / EXPORT_FILE, {
            "brushwork.name": payload.name, "brushwork.dataset_name": payload.dataset_name,
            "ss_output_name": payload.name})
        self._forget(spec.job_id)
        settings = {"training": dict(payload.config), "sample_prompt": trainer.sample_prompt}
        return Finished(TrainedLora(payload=payload, exported=exported, workdir=workdir, files=self._files,
                                    steps=result.step, settings=settings, base_model_hash=trainer.model_hash))

    def release(self) -> None:
        """Free every kept trainer's model copies (another kind of job is about to run)."""
        for trainer in self._trainers.values():
            with contextlib.suppress(Exception):
                trainer.close()

    def _trainer(self, spec: JobSpec, payload: TrainingPayload, workdir: Path) -> LoraTrainer:
        trainer = self._trainers.get(spec.job_id)
        if trainer is not None and trainer.step == int((spec.checkpoint or {}).get("step", 0)):
            return trainer
        self._forget(spec.job_id)  # none yet, or another worker trained it since: start from the checkpoint
        from PIL import Image

        from generation.training import LoraTrainer, TrainingConfig

        for other in list(self._trainers):  # one run at a time keeps its images in memory
            self._forget(other)
        items = []
        for name, caption in payload.items:
            with Image.open(workdir / DATASET_DIR / name, formats=["PNG"]) as image:
                items.append((image.convert("RGB"), caption))
        config = TrainingConfig.from_dict(dict(payload.config))
        trainer = LoraTrainer.from_engine(self._engine(), payload.model, items, config, workdir)
        self._trainers[spec.job_id] = trainer
        return trainer

    def _forget(self, job_id: str) -> None:
        trainer = self._trainers.pop(job_id, None)
        if trainer is not None:
            with contextlib.suppress(Exception):
                trainer.close()

    def _out_of_memory(self, payload: TrainingPayload, trainer: LoraTrainer) -> Failure:
        from bot.lora_services import ServerLoraError
        from generation.models.cache import free_accelerator_memory

        free_accelerator_memory()
        config = trainer.config
        return Failure(ServerLoraError("server_lora.out_of_memory", name=payload.name, step=trainer.step + 1,
                                       resolution=config.resolution, rank=config.rank))


def _is_out_of_memory(error: BaseException) -> bool:
    """CUDA's OutOfMemoryError (the trainer lets it through raw), or another backend's RuntimeError."""
    name = type(error).__name__
    return name in ("OutOfMemoryError",) or (isinstance(error, RuntimeError) and "out of memory" in str(error).lower())


# ---------------------------------------------------------------------- one worker, two kinds


class KindRouter:
    """One worker's runner: each batch goes to the runner for its jobs' kind (a batch never
    mixes kinds: training jobs have no batch key, so they run alone)."""

    def __init__(self, default: Runner, routes: Mapping[str, Runner]) -> None:
        self._default = default
        self._routes = dict(routes)

    def _for(self, spec: JobSpec) -> Runner:
        return self._routes.get(spec.kind, self._default)

    def warm_up(self) -> None:
        for runner in (self._default, *self._routes.values()):
            warm_up = getattr(runner, "warm_up", None)
            if warm_up is not None:
                warm_up()

    def batch_limit(self, spec: JobSpec) -> int:
        return self._for(spec).batch_limit(spec)

    def run(self, jobs: Sequence[JobSpec], context: RunContext) -> Mapping[str, Outcome]:
        runner = self._for(jobs[0])
        for other in (self._default, *self._routes.values()):
            release = getattr(other, "release", None)
            if other is not runner and release is not None:
                release()  # e.g. a paused training's model copies make room for a generation
        return runner.run(jobs, context)


__all__ = [
    "KindRouter", "TRAIN_KIND", "TrainedLora", "TrainingPayload", "TrainingResult", "TrainingRunner",
    "sample_paths", "snapshot_dataset", "training_result", "training_submission",
]

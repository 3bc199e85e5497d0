"""What runs a batch of jobs: the :class:`Runner` protocol and its narrow :class:`RunContext`.

A runner gets the jobs (all compatible: one ``batch_key``, or one job alone) and a context
with only what work needs — report progress, ask whether to stop, whether memory is tight —
never the queue or the application (procrastinate's job context, arq's ``ctx``).  It returns
one :data:`Outcome` per job:

* :class:`Finished` — the output, which the store records with the job (atomically);
* :class:`Failure` — this job cannot be done (its input is unreadable…), the others go on;
* :class:`Continue` — a long job ran one chunk: store the checkpoint, put it back in the
  queue so interactive jobs can go first, and call the runner again with it later.

Exceptions are the queue's business: :class:`~generation.errors.OutOfMemoryError` makes the
worker retry with fewer images per call, then with ``low_memory``; any other exception
from a run of several jobs makes it run them one by one, so it fails only the job that
raises it; :class:`~generation.errors.Cancelled` means ``should_abort`` was obeyed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from generation.errors import BrushworkError
from generation.queue.jobs import JobSpec


@dataclass(frozen=True, slots=True)
class Finished:
    output: Any = field(repr=False)


@dataclass(frozen=True, slots=True)
class Failure:
    error: BrushworkError


@dataclass(frozen=True, slots=True)
class Continue:
    checkpoint: Mapping[str, Any]


Outcome = Finished | Failure | Continue

#: ``preview(job_id)``: a small image of that job's own pictures now (None if it has none yet).
PreviewSource = Callable[[str], Any]


class RunContext(Protocol):
    #: Most images one pipeline call may hold (the OOM back-off lowers it; the runner splits).
    max_images_per_call: int
    #: Memory is tight: use the slow, frugal path (VAE tiling).
    low_memory: bool

    def report_progress(self, step: int, total: int, preview: PreviewSource | None = None,
                        detail: Mapping[str, Any] | None = None) -> None:
        """Steps done of the whole run; ``preview`` is called only if someone watches.
        ``detail`` travels with the progress event (training: loss, sample path); an
        ``eta_s`` in it replaces the ETA the worker measures (a trainer knows better)."""
        ...

    def should_abort(self) -> bool:
        """True when the run must stop now (every job cancelled, or the worker is stopping);
        the engine then raises :class:`~generation.errors.Cancelled` at its next step."""
        ...

    def is_cancelled(self, job_id: str) -> bool:
        """This job was cancelled: its output will be dropped (the run goes on for the others)."""
        ...

    def interactive_waiting(self) -> bool:
        """Interactive jobs wait: a long job should finish its chunk and return :class:`Continue`."""
        ...


class Runner(Protocol):
    def run(self, jobs: Sequence[JobSpec], context: RunContext) -> Mapping[str, Outcome]:
        """Run ``jobs`` (one batch) and return an outcome per job id."""
        ...

    def batch_limit(self, spec: JobSpec) -> int:
        """How many images a run starting with ``spec`` may hold on this device (memory).

        Called while the queue's lock is held: keep it cheap.  A runner may also define
        ``warm_up()``, called once in the worker thread before the first job (load a
        library, measure the device), so that slow work happens outside that lock.
        """
        ...


__all__ = ["Continue", "Failure", "Finished", "Outcome", "PreviewSource", "RunContext", "Runner"]

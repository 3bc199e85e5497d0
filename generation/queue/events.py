"""What a job handle reports, in order: queued → started → progress… → done | failed | cancelled.

A stream may also carry ``JobStalled`` (the worker stopped reporting for longer than the
hang timeout) and ``JobRequeued`` (the job goes back to the queue: a long job between two
chunks, a worker that shut down).  Exactly one terminal event ends every stream.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from generation.errors import BrushworkError


@dataclass(frozen=True, slots=True)
class JobEvent:
    job_id: str

    @property
    def terminal(self) -> bool:
        return False


@dataclass(frozen=True, slots=True)
class JobQueued(JobEvent):
    position: int  # jobs that start before this one (0: next)
    eta_s: float | None  # seconds until it is done


@dataclass(frozen=True, slots=True)
class JobStarted(JobEvent):
    attempt: int
    batch_size: int  # jobs sharing the run (1: alone)


@dataclass(frozen=True, slots=True)
class JobProgress(JobEvent):
    step: int
    total: int
    eta_s: float | None = None
    preview: Any = field(default=None, repr=False, compare=False)  # a small PIL image, every few steps
    # What else the job reports with a step (training: loss, loss_ema, sample_path), JSON values.
    detail: Mapping[str, Any] | None = field(default=None, compare=False)

    @property
    def fraction(self) -> float:
        return self.step / self.total if self.total else 0.0


@dataclass(frozen=True, slots=True)
class JobStalled(JobEvent):
    seconds: float  # since the worker last reported


@dataclass(frozen=True, slots=True)
class JobRequeued(JobEvent):
    reason: str  # "chunk" (a long job yields), "shutdown", "recovered"


@dataclass(frozen=True, slots=True)
class JobDone(JobEvent):
    result: Any = field(repr=False)

    @property
    def terminal(self) -> bool:
        return True


@dataclass(frozen=True, slots=True)
class JobFailed(JobEvent):
    error: BrushworkError

    @property
    def terminal(self) -> bool:
        return True


@dataclass(frozen=True, slots=True)
class JobCancelled(JobEvent):
    @property
    def terminal(self) -> bool:
        return True


__all__ = [
    "JobCancelled", "JobDone", "JobEvent", "JobFailed", "JobProgress", "JobQueued", "JobRequeued", "JobStalled",
    "JobStarted",
]

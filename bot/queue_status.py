"""``/queue``: the caller's waiting and running jobs (place, ETA, progress) and, for server
managers, the server's totals and today's use against its quotas.

Discord-free (the cog renders it).  Visibility is the queue's own rule
(:class:`~generation.queue.Requester`): from a server, the caller's jobs *of that server*; from
direct messages, their direct-message jobs — never another server's.
Reads the store: call it through ``asyncio.to_thread``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from generation.queue import JobState, JobView, Requester, utc_day
from storage.errors import NotFound
from storage.records import Scope
from storage.unit_of_work import UnitOfWork

if TYPE_CHECKING:
    from generation.queue import DailyUsage, JobQueue, QueueLimits

MAX_LISTED = 10  # jobs listed (each with a cancel button: Discord allows 25 components)


@dataclass(frozen=True, slots=True)
class ServerTotals:
    """What a server manager sees: the server's share of the queue and today's use."""

    queued: int
    running: int
    images: int
    members: int  # distinct users with jobs waiting or running
    queue_total: int  # jobs waiting or running in the whole queue (every server)
    used_images: int
    used_gpu_seconds: float
    limits: QueueLimits


@dataclass(frozen=True, slots=True)
class QueueOverview:
    mine: tuple[JobView, ...]  # running first, then in start order
    more: int  # the caller's jobs not listed (beyond MAX_LISTED)
    ahead_total: int  # jobs waiting or running in the whole queue
    workers_alive: int
    server: ServerTotals | None = None


@dataclass(frozen=True, slots=True)
class JobLabel:
    """What a job is, for a listing: its kind as the user knows it, and its prompt."""

    kind: str  # generate, reroll, tweak, upscale, vary, compare, train
    prompt: str


def describe_jobs(uow_factory: Callable[[], UnitOfWork], job_ids: Sequence[str], scope: Scope) -> dict[str, JobLabel]:
    """Kind and prompt of each job the scope may see (a comparison is ``compare``; unknown payloads
    keep the job's kind and no prompt)."""
    labels: dict[str, JobLabel] = {}
    with uow_factory() as uow:
        for job_id in job_ids:
            try:
                record = uow.jobs.get(job_id, scope)
            except NotFound:
                continue
            payload = record.request or {}
            kind, prompt = record.kind.value, ""
            try:
                if "compare" in payload:
                    kind, prompt = "compare", payload["compare"]["cells"][0]["request"]["prompt"]
                elif "plan" in payload:
                    prompt = payload["plan"]["request"]["prompt"]
            except (KeyError, IndexError, TypeError):
                prompt = ""
            labels[job_id] = JobLabel(kind=kind, prompt=str(prompt))
    return labels


def overview(queue: JobQueue, requester: Requester, *, manager: bool = False,
             usage: Callable[[int, str], DailyUsage] | None = None,
             limits: Callable[[int | None], QueueLimits] | None = None) -> QueueOverview:
    """The caller's jobs in their scope; with ``manager`` (Manage Server, checked by the caller)
    also the server's totals (``usage``: the store's daily usage; ``limits``: the server's limits)."""
    views = queue.jobs()
    mine = [view for view in views if view.owner == requester.user and requester.can_see(view.owner, view.guild)]
    alive = sum(1 for _status, is_alive in queue.workers_status() if is_alive)
    server = None
    guild = requester.guild
    if manager and guild is not None:
        own = [view for view in views if view.guild == guild]
        day = usage(guild, utc_day(time.time())) if usage is not None else None
        server = ServerTotals(
            queued=sum(1 for v in own if v.state is JobState.QUEUED),
            running=sum(1 for v in own if v.state is JobState.RUNNING),
            images=sum(v.images for v in own),
            members=len({v.owner for v in own}),
            queue_total=len(views),
            used_images=day.images if day is not None else 0,
            used_gpu_seconds=day.gpu_seconds if day is not None else 0.0,
            limits=limits(guild) if limits is not None else queue.config.limits,
        )
    return QueueOverview(mine=tuple(mine[:MAX_LISTED]), more=max(0, len(mine) - MAX_LISTED), ahead_total=len(views),
                         workers_alive=alive, server=server)


__all__ = ["MAX_LISTED", "JobLabel", "QueueOverview", "ServerTotals", "describe_jobs", "overview"]

"""Admission: per-user, per-server and global caps on waiting jobs; daily server quotas.

A refusal is a :class:`~generation.errors.QueueError` that says what the limit is and how
long the queue is ("queue full — 12 jobs ahead, about 3 min"), so the user knows whether to
wait or to cancel one of their own jobs.  Counts come from the store (the database is the
truth when several processes submit); two submissions racing for the last seat may both
get in — the caps are a service level, not a security boundary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from generation.errors import QueueError
from generation.queue.jobs import DailyUsage, PendingCounts, Submission


@dataclass(frozen=True, slots=True)
class QueueLimits:
    """``None`` means "no limit".  Daily quotas apply to servers only (days are UTC)."""

    per_user: int | None = 5
    per_guild: int | None = 50
    total: int | None = 1000
    daily_images: int | None = None
    daily_gpu_seconds: float | None = None

    def merged(self, overrides: dict[str, Any] | None) -> QueueLimits:
        """These limits with a server's own settings over them (unknown keys are ignored).

        Keys, as stored in a server's settings: ``queued_per_user``, ``queued_per_guild``,
        ``daily_images``, ``daily_gpu_seconds``.
        """
        if not overrides:
            return self
        names = {"queued_per_user": "per_user", "queued_per_guild": "per_guild",
                 "daily_images": "daily_images", "daily_gpu_seconds": "daily_gpu_seconds"}
        changes = {names[key]: value for key, value in overrides.items() if key in names}
        return replace(self, **changes) if changes else self


def minutes(seconds: float | None) -> int:
    """Whole minutes for a message, at least 1 (nobody wants to read "about 0 min")."""
    if seconds is None or seconds <= 0:
        return 1
    return max(1, math.ceil(seconds / 60))


def hours_until_midnight_utc(now: float) -> int:
    moment = datetime.fromtimestamp(now, UTC)
    midnight = (moment + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return max(1, math.ceil((midnight - moment).total_seconds() / 3600))


def check_admission(
    submission: Submission,
    limits: QueueLimits,
    counts: PendingCounts,
    usage: DailyUsage | None,
    *,
    queue_eta_s: float | None,
    now: float,
) -> None:
    """Raise :class:`QueueError` if ``submission`` may not join the queue now.

    ``queue_eta_s``: how long until everything waiting now is done (for the message).
    """
    ahead, wait = counts.total, minutes(queue_eta_s)
    if limits.per_user is not None and counts.user >= limits.per_user:
        raise QueueError("queue.user_full", count=counts.user, limit=limits.per_user, ahead=ahead, minutes=wait)
    if submission.guild is not None and limits.per_guild is not None and counts.guild >= limits.per_guild:
        raise QueueError("queue.guild_full", count=counts.guild, limit=limits.per_guild, ahead=ahead,
                         minutes=wait)
    if limits.total is not None and counts.total >= limits.total:
        raise QueueError("queue.full", limit=limits.total, ahead=ahead, minutes=wait)
    if submission.guild is None or usage is None:
        return
    hours = hours_until_midnight_utc(now)
    if limits.daily_images is not None:
        planned = usage.images + counts.guild_images + submission.images
        if planned > limits.daily_images:
            raise QueueError("queue.quota_images", limit=limits.daily_images, used=usage.images,
                             waiting=counts.guild_images, asked=submission.images, hours=hours)
    if limits.daily_gpu_seconds is not None and usage.gpu_seconds >= limits.daily_gpu_seconds:
        raise QueueError("queue.quota_gpu", limit=round(limits.daily_gpu_seconds),
                         used=round(usage.gpu_seconds), hours=hours)


__all__ = ["QueueLimits", "check_admission", "hours_until_midnight_utc", "minutes"]

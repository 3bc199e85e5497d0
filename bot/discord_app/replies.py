"""How each kind of job is answered in Discord, in one table: its acknowledgement's text and the
follower that shows its progress and result.  Keyed by the plan's type (what the front desk
prepared); a new kind of job adds one line here and its follower subclass."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bot.discord_app.compare_follow import CompareFollower
from bot.discord_app.compare_follow import ack_for as compare_ack
from bot.discord_app.delivery import ack_text
from bot.discord_app.follow import JobFollower
from bot.services import ComparePlan, GenerationPlan

if TYPE_CHECKING:
    from bot.chat import Prepared


@dataclass(frozen=True, slots=True)
class Reply:
    ack: Callable[..., str]  # (prepared, locale, *, mention=None) -> the acknowledgement's text
    follower: type[JobFollower]


REPLIES: dict[type, Reply] = {
    GenerationPlan: Reply(ack_text, JobFollower),
    ComparePlan: Reply(compare_ack, CompareFollower),
}


def reply_for(plan: Any) -> Reply:
    """The reply of ``plan``'s kind (a job whose plan could not be read is followed as an image job)."""
    return REPLIES.get(type(plan), REPLIES[GenerationPlan])


def acknowledgement(prepared: Prepared, locale: str, *, mention: str | None = None) -> str:
    return reply_for(prepared.plan).ack(prepared, locale, mention=mention)

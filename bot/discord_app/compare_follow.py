"""How a ``/compare`` job is answered: its acknowledgement, and a follower that shows the labelled
grid instead of the images — everything else (where answers go, status edits, Cancel, errors,
retries, the token's expiry, direct messages, restarts) is :class:`~bot.discord_app.follow.JobFollower`'s.

The cells are ordinary stored images (``/info``, ``/tweak`` and the history know them); the grid
is derived from their files (:func:`bot.services.compare_grid`) and never stored.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from bot.attachments import fit_image
from bot.discord_app.cogs.queue import shorten
from bot.discord_app.delivery import clip, waiting_line
from bot.discord_app.follow import JobFollower
from bot.services import ComparePlan, compare_grid
from generation.i18n import translate
from storage.records import Scope

if TYPE_CHECKING:
    from bot.chat import Prepared
    from bot.services import SavedImage

MAX_CONTENT = 2000


def axis_label(flag: str, value: str) -> str:
    return f"--{flag} {value}"


def compare_ack_text(plan: ComparePlan, locale: str, *, mention: str | None = None) -> str:
    """"🧪 Comparing `--cfg` 3 · 7 · 12 on **…** — seed 42 · 3 images", and the plan's notes."""
    base = plan.base
    axes = f"`--{plan.x.flag}` {' · '.join(plan.x.values)}"
    if plan.y is not None:
        axes += f" × `--{plan.y.flag}` {' · '.join(plan.y.values)}"
    lines = [translate("compare_cmd.ack", locale, prompt=shorten(base.prompt, 200), axes=axes, seed=base.seed,
                       count=len(plan.cells))]
    lines += [f"ℹ️ {note.message(locale)}" for note in plan.notes]
    text = "\n".join(lines)
    return (f"{mention} {text}" if mention else text)[:MAX_CONTENT]


def compare_result_text(plan: ComparePlan, saved: list[SavedImage], withheld: set[int], locale: str) -> str:
    """The grid's caption: the shared settings, then each cell's label → its image id."""
    base = plan.base
    size = base.output_size or base.size or (0, 0)
    lines = [translate("compare_cmd.result", locale, prompt=shorten(base.prompt, 200), seed=base.seed,
                       size=f"{size[0]}×{size[1]}", model=base.model)]
    labels = plan.labels()
    columns = plan.columns
    for start in range(0, len(saved), columns):
        cells = []
        for index in range(start, min(start + columns, len(saved))):
            _, x_value = labels[index]
            shown = "🛡️" if index in withheld else f"`{saved[index].record.public_id}`"
            cells.append(f"`{axis_label(plan.x.flag, x_value)}` → {shown}")
        row_label = labels[start][0]
        prefix = f"**{axis_label(plan.y.flag, row_label)}**: " if plan.y is not None and row_label else ""
        lines.append(prefix + " · ".join(cells))
    if withheld:
        lines.append(translate("compare_cmd.withheld", locale, count=len(withheld)))
    lines.append(translate("compare_cmd.hint", locale, id=saved[0].record.public_id if saved else "…"))
    return "\n".join(lines)[:MAX_CONTENT]


def ack_for(prepared: Prepared, locale: str, *, mention: str | None = None) -> str:
    """The acknowledgement: the comparison, then how much waits before it."""
    assert isinstance(prepared.plan, ComparePlan)
    return clip(f"{compare_ack_text(prepared.plan, locale, mention=mention)}\n{waiting_line(prepared, locale)}")


class CompareFollower(JobFollower):
    """A comparison's follower: the acknowledgement's text above its status; the grid at the end."""

    plan: ComparePlan  # type: ignore[assignment]
    previews = False  # one cell's preview says little about a grid, and costs the worker a decode

    def head(self) -> str:
        mention = self.ref.mention if self.ref.via == "channel" else None
        return compare_ack_text(self.plan, self.ref.locale, mention=mention)

    async def deliver(self, saved: list[SavedImage]) -> None:
        """The labelled grid (cells the server's classifier withholds drawn blank), edited into the
        status message — or posted, by the same rules as any result — and each cell linked to it."""
        ref, chat, plan = self.ref, self.chat, self.plan
        if self._result is None:
            verdicts = await asyncio.to_thread(chat.screen, saved, ref.to_dict())
            withheld = {i for i, verdict in enumerate(verdicts) if not verdict.allowed}
            paths = [None if i in withheld else item.path for i, item in enumerate(saved)]
            grid = await asyncio.to_thread(compare_grid, plan, paths)
            upload = await asyncio.to_thread(fit_image, f"compare-{self.job_id}.png", grid, ref.limit)
            shown = [item.record for i, item in enumerate(saved) if i not in withheld]
            self._result = ([[upload]], compare_result_text(plan, saved, withheld, ref.locale), shown)
        groups, content, shown = self._result
        if self._sent == 0:
            self._where = await self._first_message(content, groups[0], None)
            self._sent = 1
        if self._where is not None and shown:
            channel_id, message_id = self._where
            placements = [(record.public_id, channel_id or 0, message_id) for record in shown]
            await asyncio.to_thread(chat.attach_messages, placements, Scope(user_id=ref.user, guild_id=ref.guild))
        await self._finished(message=self._where[1] if self._where else None)


__all__ = ["CompareFollower", "ack_for", "compare_ack_text", "compare_result_text"]

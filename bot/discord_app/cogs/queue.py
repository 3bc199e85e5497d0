"""``/queue``: your waiting and running jobs here — place, ETA, progress — each with a cancel button;
members with Manage Server also see the server's totals and today's use against its quotas.

Ephemeral.  Buttons are ``DynamicItem``s (restart-proof, ids visible to clients, so every click
is re-checked by the queue against the clicking user and the server the click comes from):

* ``bwq1:c:<job>:l`` — cancel that job and refresh the list it is on;
* ``bwq1:c:<job>:s`` — cancel that job from a job's status message (``/compare``), answered apart;
* ``bwq1:r`` — refresh the list.
"""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.discord_app.context import caller, report_error, send
from bot.discord_app.translator import text
from bot.queue_status import JobLabel, QueueOverview, describe_jobs, overview
from bot.texts import duration, progress_bar
from bot.texts import shorten as one_line
from generation.queue import JobState, Requester
from generation.request import format_number

if TYPE_CHECKING:
    from bot.discord_app.client import BrushworkBot
    from bot.discord_app.context import Caller
    from generation.queue import JobView

PREFIX = "bwq1"
PROMPT_SHOWN = 60


# ---------------------------------------------------------------------- small texts (shared with /compare)


def bar(fraction: float, width: int = 10) -> str:
    return progress_bar(fraction, 1, width)


def shorten(value: str, limit: int = PROMPT_SHOWN) -> str:
    """A prompt on one line, without backticks (it is shown inside code spans)."""
    return one_line(value.replace("`", "'"), limit)


def requester_of(who: Caller) -> Requester:
    """Who asks the queue: their own jobs, or any of this server's with Manage Server."""
    return Requester(user=who.user_id, guild=who.guild_id, can_manage=who.manage_guild)


# ---------------------------------------------------------------------- rendering


def job_text(who: Caller, number: int, view: JobView, label: JobLabel | None) -> str:
    kind = who.t(f"queue_cmd.kind.{label.kind if label else view.kind}")
    head = f"**{number}.** `{view.job_id}` · {kind}"
    if label and label.prompt:
        head += f" · {shorten(label.prompt)}"
    if view.cancel_requested:
        state = who.t("queue_cmd.state.stopping")
    elif view.state is JobState.RUNNING:
        state = who.t("queue_cmd.state.running", percent=round(view.progress * 100), bar=bar(view.progress),
                      eta=duration(view.eta_s, who.locale))
    else:
        position = (view.position or 0) + 1
        state = who.t("queue_cmd.state.queued", position=position, eta=duration(view.eta_s, who.locale))
    return f"{head}\n{state}"


def overview_embed(who: Caller, data: QueueOverview, labels: dict[str, JobLabel],
                   notice: str | None = None) -> discord.Embed:
    title = who.t("queue_cmd.title.dm" if who.in_dm else "queue_cmd.title.server")
    lines = [notice] if notice else []
    if data.mine:
        lines += [job_text(who, i + 1, view, labels.get(view.job_id)) for i, view in enumerate(data.mine)]
        if data.more:
            lines.append(who.t("queue_cmd.more", count=data.more))
    else:
        lines.append(who.t("queue_cmd.empty"))
    if data.workers_alive == 0 and data.ahead_total:
        lines.append(who.t("queue_cmd.no_worker"))
    embed = discord.Embed(title=title, description="\n\n".join(lines)[:4096], colour=discord.Colour.blurple())
    server = data.server
    if server is not None:
        limits = server.limits

        def cap(value: float | None) -> str:
            return who.t("queue_cmd.unlimited") if value is None else format_number(value)

        embed.add_field(name=who.t("queue_cmd.server.title"), value=who.t(
            "queue_cmd.server.totals", queued=server.queued, running=server.running, images=server.images,
            members=server.members, total=server.queue_total, per_user=cap(limits.per_user),
            per_guild=cap(limits.per_guild)), inline=False)
        embed.add_field(name=who.t("queue_cmd.server.today"), value=who.t(
            "queue_cmd.server.usage", images=server.used_images, images_limit=cap(limits.daily_images),
            seconds=round(server.used_gpu_seconds), seconds_limit=cap(limits.daily_gpu_seconds)), inline=False)
    embed.set_footer(text=who.t("queue_cmd.footer", total=data.ahead_total))
    return embed


def overview_view(who: Caller, data: QueueOverview) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    for number, job in enumerate(data.mine[:20], start=1):
        view.add_item(CancelButton(job.job_id, "l", label=who.t("queue_cmd.cancel", number=number),
                                   disabled=job.cancel_requested))
    view.add_item(RefreshButton(label=who.t("queue_cmd.refresh")))
    return view


async def render(interaction: discord.Interaction, who: Caller,
                 notice: str | None = None) -> tuple[discord.Embed, discord.ui.View]:
    container = interaction.client.container  # type: ignore[attr-defined]

    def read() -> tuple[QueueOverview, dict[str, JobLabel]]:
        data = overview(container.queue, requester_of(who), manager=who.manage_guild,
                        usage=container.job_store.daily_usage, limits=container.limits_for)
        labels = describe_jobs(container.unit_of_work, [v.job_id for v in data.mine], who.scope)
        return data, labels

    data, labels = await asyncio.to_thread(read)
    return overview_embed(who, data, labels, notice), overview_view(who, data)


def cancelled_notice(who: Caller, job_id: str, state: JobState) -> str:
    code = {JobState.CANCELLED: "queue_cmd.cancelled", JobState.RUNNING: "queue_cmd.stopping"}.get(
        state, "queue_cmd.already_finished")
    return who.t(code, id=job_id)


# ---------------------------------------------------------------------- buttons


class CancelButton(discord.ui.DynamicItem[discord.ui.Button],
                   template=rf"{PREFIX}:c:(?P<job>[0-9a-z]{{8}}):(?P<mode>[ls])"):
    def __init__(self, job_id: str, mode: str, *, label: str | None = None, disabled: bool = False) -> None:
        super().__init__(discord.ui.Button(label=label, emoji="✖️", style=discord.ButtonStyle.secondary,
                                           disabled=disabled, custom_id=f"{PREFIX}:c:{job_id}:{mode}"))
        self.job_id, self.mode = job_id, mode

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button,
                             match: re.Match[str], /) -> CancelButton:
        return cls(match["job"], match["mode"], label=item.label)

    async def callback(self, interaction: discord.Interaction) -> None:  # type: ignore[override]
        who = caller(interaction)
        chat = interaction.client.container.chat  # type: ignore[attr-defined]
        try:  # the one rule of ✖ everywhere: the job's owner, or Manage Messages in its server
            state = await asyncio.to_thread(chat.cancel, who.origin, self.job_id)
            notice = cancelled_notice(who, self.job_id, state)
            if self.mode == "l":
                embed, view = await render(interaction, who, notice)
                await interaction.response.edit_message(embed=embed, view=view)
            else:
                await send(interaction, notice)
        except Exception as error:  # noqa: BLE001 - a refusal (not yours, not found) or a fault: always answered
            await report_error(interaction, error)


class RefreshButton(discord.ui.DynamicItem[discord.ui.Button], template=rf"{PREFIX}:r"):
    def __init__(self, *, label: str | None = None) -> None:
        super().__init__(discord.ui.Button(label=label, emoji="🔄", style=discord.ButtonStyle.secondary,
                                           custom_id=f"{PREFIX}:r"))

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button,
                             match: re.Match[str], /) -> RefreshButton:
        return cls(label=item.label)

    async def callback(self, interaction: discord.Interaction) -> None:  # type: ignore[override]
        who = caller(interaction)
        try:
            embed, view = await render(interaction, who)
            await interaction.response.edit_message(embed=embed, view=view)
        except Exception as error:  # noqa: BLE001 - answer, never "interaction failed"
            await report_error(interaction, error)


# ---------------------------------------------------------------------- the command


class Queue(commands.Cog):
    def __init__(self, bot: BrushworkBot) -> None:
        self.bot = bot

    @app_commands.command(name="queue", description=text("Your waiting and running jobs: place, ETA, cancel",
                                                         "queue_cmd.cmd"))
    async def queue(self, interaction: discord.Interaction) -> None:
        who = caller(interaction)
        embed, view = await render(interaction, who)
        await send(interaction, embed=embed, view=view)


async def setup(bot: BrushworkBot) -> None:
    bot.add_dynamic_items(CancelButton, RefreshButton)
    await bot.add_cog(Queue(bot))

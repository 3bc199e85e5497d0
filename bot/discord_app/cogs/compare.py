"""``/compare prompt vary values [vary2 values2]``: one fixed seed, one parameter (or two) varied,
a labelled X/Y grid — so people *see* what CFG, steps or a sampler do.

Flow (its own small delivery, apart from ``/imagine``'s): check (channel allow-list, the
server's models and safety policy, the request, the axes, the queue's admission) — a mistake is
an ephemeral answer saying what is allowed — then a public acknowledgement, then ONE job in the
shared queue (:func:`bot.jobs.compare_submission`), whose progress edits the acknowledgement,
which finally shows the labelled grid and each cell's image id (each cell is an ordinary stored
image: ``/info``, ``/tweak`` and the history know it; the grid is derived and not stored).

Where the answers go is the job's reply reference (``v`` ``compare1``: the interaction's
webhook, message and token, the user, channel and language), so a comparison still waiting when
the bot stops is followed again at the next start (:meth:`Compare.resume`).  After about 14
minutes the token is too old to edit with: the result is then posted in the channel, mentioning
the user.  Once answered, the token is dropped from the job's row.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import time
from functools import partial
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.attachments import fit_image
from bot.discord_app.cogs.queue import CancelButton, bar, duration, shorten
from bot.discord_app.context import Caller, caller, send
from bot.discord_app.translator import text
from bot.guild_policy import check_channel, guard_request, safety_policy
from bot.jobs import compare_of, compare_submission
from bot.services import ComparePlan, compare_grid
from generation.errors import BrushworkError
from generation.queue import JobCancelled, JobDone, JobFailed, JobProgress, JobQueued, JobRequeued, JobStarted

if TYPE_CHECKING:
    from bot.discord_app.client import BrushworkBot
    from bot.services import SavedImage
    from generation.queue import JobHandle

log = logging.getLogger("brushwork.discord.compare")

#: Parameters offered as axes (any other is refused with the list): value → English choice name.
AXES = {
    "cfg": "CFG scale (--cfg)",
    "steps": "Steps (--steps)",
    "sampler": "Sampler (--sampler)",
    "seed": "Seed (--seed)",
    "hires": "Hires scale (--hires)",
    "strength": "Hires strength (--strength)",
    "hires-steps": "Hires steps (--hires-steps)",
    "clip-skip": "CLIP skip (--clip-skip)",
    "lora": "LoRA and weight (--lora)",
    "vary-strength": "Variation strength (--vary-strength)",
    "vary-seed": "Variation seed (--vary-seed)",
}
#: Good first lists of values, offered while typing ``values`` (any list may be typed).
STARTERS = {
    "cfg": ("3, 7, 12", "4, 6, 8, 10", "5, 7"),
    "steps": ("10, 20, 30", "15, 25, 40", "20, 30"),
    "seed": ("1, 2, 3, 4", "42, 43"),
    "hires": ("1.5, 2", "1.25, 1.5, 2"),
    "strength": ("0.3, 0.5, 0.7", "0.4, 0.6"),
    "hires-steps": ("10, 20", "8, 15, 30"),
    "clip-skip": ("1, 2", "1, 2, 3"),
    "vary-strength": ("0.1, 0.3, 0.6", "0.05, 0.15"),
    "vary-seed": ("1, 2, 3", "7, 8"),
}
AXIS_CHOICES = [app_commands.Choice(name=text(name, f"compare_cmd.axis.{value}"), value=value)
                for value, name in AXES.items()]
REF_VERSION = "compare1"  # the reply reference's kind (the /imagine follower only takes its own, v 1)
TOKEN_USABLE_S = 14 * 60.0  # an interaction token lives 15 minutes; keep a margin
MAX_CONTENT = 2000
NO_PINGS = discord.AllowedMentions(everyone=False, roles=False, users=False)


def axis_label(flag: str, value: str) -> str:
    return f"--{flag} {value}"


def ack_text(who: Caller, plan: ComparePlan) -> str:
    base = plan.base
    axes = f"`--{plan.x.flag}` {' · '.join(plan.x.values)}"
    if plan.y is not None:
        axes += f" × `--{plan.y.flag}` {' · '.join(plan.y.values)}"
    lines = [who.t("compare_cmd.ack", prompt=shorten(base.prompt, 200), axes=axes, seed=base.seed,
                   count=len(plan.cells))]
    lines += [f"ℹ️ {note.message(who.locale)}" for note in plan.notes]
    return "\n".join(lines)[:MAX_CONTENT]


def result_text(who: Caller, plan: ComparePlan, saved: list[SavedImage], withheld: set[int]) -> str:
    base = plan.base
    size = base.output_size or base.size or (0, 0)
    lines = [who.t("compare_cmd.result", prompt=shorten(base.prompt, 200), seed=base.seed,
                   size=f"{size[0]}×{size[1]}", model=base.model)]
    labels = plan.labels()
    columns = plan.columns
    for start in range(0, len(saved), columns):
        cells = []
        for index in range(start, min(start + columns, len(saved))):
            y_value, x_value = labels[index]
            shown = "🛡️" if index in withheld else f"`{saved[index].record.public_id}`"
            cells.append(f"`{axis_label(plan.x.flag, x_value)}` → {shown}")
        row_label = labels[start][0]
        prefix = f"**{axis_label(plan.y.flag, row_label)}**: " if plan.y is not None and row_label else ""
        lines.append(prefix + " · ".join(cells))
    if withheld:
        lines.append(who.t("compare_cmd.withheld", count=len(withheld)))
    lines.append(who.t("compare_cmd.hint", id=saved[0].record.public_id if saved else "…"))
    return "\n".join(lines)[:MAX_CONTENT]


class Compare(commands.Cog):
    def __init__(self, bot: BrushworkBot) -> None:
        self.bot = bot
        self._followers: set[asyncio.Task[Any]] = set()

    async def cog_load(self) -> None:
        if getattr(self.bot, "resume_jobs", True):
            await self.resume()

    async def cog_unload(self) -> None:
        for task in list(self._followers):
            task.cancel()

    @app_commands.command(name="compare", description=text("One seed, a parameter varied: see what it does, in a grid",
                                                           "compare_cmd.cmd"))
    @app_commands.describe(
        prompt=text("The prompt and its flags, e.g. a lighthouse at dusk --seed 42", "compare_cmd.cmd.prompt"),
        vary=text("The parameter that changes across the columns", "compare_cmd.cmd.vary"),
        values=text("Its values, separated by commas (| if a value has commas): 3, 7, 12",
                    "compare_cmd.cmd.values"),
        vary2=text("Optional: a second parameter, across the rows", "compare_cmd.cmd.vary2"),
        values2=text("The second parameter's values, e.g. 20, 40", "compare_cmd.cmd.values2"),
    )
    @app_commands.choices(vary=AXIS_CHOICES, vary2=AXIS_CHOICES)
    async def compare(
        self,
        interaction: discord.Interaction,
        prompt: app_commands.Range[str, 1, 4000],
        vary: app_commands.Choice[str],
        values: app_commands.Range[str, 1, 1000],
        vary2: app_commands.Choice[str] | None = None,
        values2: app_commands.Range[str, 1, 1000] | None = None,
    ) -> None:
        who = caller(interaction)
        container = self.bot.container
        channel = interaction.channel
        parent_id = channel.parent_id if isinstance(channel, discord.Thread) else None

        def prepare() -> tuple[ComparePlan, bool]:
            record = container.preferences.guild_settings(who.guild_id) if who.guild_id is not None else None
            check_channel(record, who.channel_id, parent_id=parent_id)
            plan = container.images.plan_compare(
                prompt, vary.value, values, who.scope, vary2=vary2.value if vary2 else None, values2=values2,
                guard=partial(guard_request, record, age_restricted=who.age_restricted))
            admit = getattr(container.queue, "admit", None)  # the queue's limits, checked before answering
            if admit is not None:
                admit(compare_submission(plan, who.scope, channel_id=who.channel_id))
            screened = record is not None and not who.age_restricted and safety_policy(record).classify_images
            return plan, screened

        try:
            plan, screened = await asyncio.to_thread(prepare)
        except BrushworkError as error:
            await send(interaction, error.message(who.locale))
            return
        response = await interaction.response.send_message(ack_text(who, plan), allowed_mentions=NO_PINGS)
        message_id = response.message_id or (await interaction.original_response()).id
        reply_ref = {"v": REF_VERSION, "user": who.user_id, "guild": who.guild_id, "channel": who.channel_id,
                     "locale": who.locale, "screened": screened, "app": interaction.application_id,
                     "token": interaction.token, "message": message_id,
                     "created": interaction.created_at.timestamp(), "limit": interaction.filesize_limit}
        try:
            handle = await asyncio.to_thread(
                container.queue.submit, compare_submission(plan, who.scope, channel_id=who.channel_id,
                                                           reply_ref=reply_ref))
        except BrushworkError as error:  # the queue filled up between the check and now
            with contextlib.suppress(discord.HTTPException):
                await interaction.delete_original_response()
            await interaction.followup.send(error.message(who.locale), ephemeral=True)
            return
        self._start(handle, reply_ref, plan)

    @compare.autocomplete("values")
    async def _values(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return await self._suggest(interaction, getattr(interaction.namespace, "vary", None), current)

    @compare.autocomplete("values2")
    async def _values2(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return await self._suggest(interaction, getattr(interaction.namespace, "vary2", None), current)

    async def _suggest(self, interaction: discord.Interaction, flag: str | None,
                       current: str) -> list[app_commands.Choice[str]]:
        """Samplers (and LoRAs) complete the last item of the list; other parameters get a good
        starting list (what was typed stays the first choice)."""
        typed = (current or "").strip()
        if flag in ("sampler", "lora"):
            chat = self.bot.container.chat
            names = chat.sampler_names() if flag == "sampler" else await asyncio.to_thread(
                chat.lora_names, caller(interaction).origin)
            head, _, last = typed.rpartition(",")
            prefix = f"{head.strip()}, " if head.strip() else ""
            chosen = {part.strip().casefold() for part in head.split(",")}
            wanted = last.strip().casefold()
            values = [f"{prefix}{name}" for name in names
                      if wanted in name.casefold() and name.casefold() not in chosen]
        else:
            values = [typed] if typed else []
            values += [example for example in STARTERS.get(flag or "", ()) if example != typed]
        return [app_commands.Choice(name=value[:100], value=value[:100]) for value in values[:25]]

    def _start(self, handle: JobHandle, reply_ref: dict[str, Any], plan: ComparePlan) -> None:
        task = asyncio.get_running_loop().create_task(self._follow(handle, reply_ref, plan))
        self._followers.add(task)
        task.add_done_callback(self._followers.discard)

    async def resume(self) -> int:
        """Follow again the comparisons whose answer is owed (waiting, running, or finished while the bot was down)."""
        container = self.bot.container

        def unfinished() -> list[tuple[str, dict[str, Any], ComparePlan]]:
            found = []
            for record in container.chat.owed_jobs(REF_VERSION):
                ref = record.reply_ref
                try:
                    plan = compare_of(record.request)
                except (BrushworkError, KeyError, TypeError, ValueError):
                    plan = None
                if plan is not None:
                    found.append((record.public_id, dict(ref), plan))
            return found

        jobs = await asyncio.to_thread(unfinished)
        for job_id, ref, plan in jobs:
            self._start(container.queue.handle(job_id), ref, plan)
        if jobs:
            log.info("following %d unfinished comparison(s) again", len(jobs))
        return len(jobs)

    # ------------------------------------------------------------------ following the job
    async def _follow(self, handle: JobHandle, ref: dict[str, Any], plan: ComparePlan) -> None:
        reply = _Reply(self.bot, ref)
        who = reply.who
        cancel = discord.ui.View(timeout=None)
        cancel.add_item(CancelButton(handle.job_id, "s", label=who.t("compare_cmd.cancel")))
        head = ack_text(who, plan)
        interval = float(getattr(self.bot, "edit_interval", 1.5))
        last_edit = 0.0
        try:
            async for event in handle.events():
                status = None
                if isinstance(event, JobQueued):
                    status = who.t("compare_cmd.status.queued", position=event.position + 1,
                                   eta=duration(event.eta_s, who.locale))
                elif isinstance(event, JobStarted):
                    status = who.t("compare_cmd.status.started")
                elif isinstance(event, JobRequeued):
                    status = who.t("compare_cmd.status.requeued")
                elif isinstance(event, JobProgress):
                    if time.monotonic() - last_edit < interval and event.step < event.total:
                        continue
                    fraction = event.step / max(1, event.total)
                    status = who.t("compare_cmd.status.progress", bar=bar(fraction), percent=round(fraction * 100),
                                   eta=duration(event.eta_s, who.locale))
                elif isinstance(event, JobDone):
                    await self._deliver(reply, plan, handle.job_id, list(event.result))
                    break
                elif isinstance(event, JobFailed):
                    await reply.edit(f"{head}\n❌ {event.error.message(who.locale)}"[:MAX_CONTENT], view=None)
                    break
                elif isinstance(event, JobCancelled):
                    await reply.edit(f"{head}\n{who.t('compare_cmd.status.cancelled')}"[:MAX_CONTENT], view=None)
                    break
                if status is not None:
                    last_edit = time.monotonic()
                    await reply.edit(f"{head}\n{status}"[:MAX_CONTENT], view=cancel)
            # answered: the interaction token leaves the job's row
            await asyncio.to_thread(self.bot.container.chat.finish_reply, handle.job_id, ref)
        except asyncio.CancelledError:
            raise
        except Exception:  # a follower must never take the bot down; the job itself is safe in the queue
            log.exception("following comparison %s failed", handle.job_id)

    async def _deliver(self, reply: _Reply, plan: ComparePlan, job_id: str, saved: list[SavedImage]) -> None:
        container = self.bot.container
        who = reply.who
        withheld: set[int] = set()
        if reply.ref.get("screened") and saved:
            verdicts = await asyncio.to_thread(container.chat.screen, saved, {"guild": who.guild_id, "screened": True})
            withheld = {i for i, verdict in enumerate(verdicts) if not verdict.allowed}
        paths = [None if i in withheld else item.path for i, item in enumerate(saved)]
        grid = await asyncio.to_thread(compare_grid, plan, paths)
        upload = await asyncio.to_thread(fit_image, f"compare-{job_id}.png", grid, reply.filesize_limit)
        message = await reply.edit(result_text(who, plan, saved, withheld), view=None,
                                   file=discord.File(io.BytesIO(upload.data), upload.filename))
        if message is not None and who.channel_id is not None:
            placements = [(item.record.public_id, who.channel_id, message.id)
                          for i, item in enumerate(saved) if i not in withheld]
            await asyncio.to_thread(container.chat.attach_messages, placements, who.scope)


class _Reply:
    """Where a comparison's answers go, from its reply reference (so it works after a restart too):
    the acknowledgement, edited through the interaction's webhook while the token lives (15
    minutes, with a margin), else a new channel message mentioning the user."""

    def __init__(self, bot: BrushworkBot, ref: dict[str, Any]) -> None:
        self.bot = bot
        self.ref = ref
        self.who = Caller(user_id=int(ref["user"]), guild_id=_int(ref.get("guild")), channel_id=_int(ref.get("channel")),
                          locale=str(ref.get("locale") or "en"), age_restricted=False, manage_guild=False,
                          manage_messages=False)
        self.filesize_limit = int(ref.get("limit") or 10 * 1024 * 1024)
        self._fallback: discord.Message | None = None

    def _token_usable(self) -> bool:
        ref = self.ref
        return bool(ref.get("token") and ref.get("app") and ref.get("message")) and \
            time.time() - float(ref.get("created") or 0.0) < TOKEN_USABLE_S

    async def edit(self, content: str, *, view: discord.ui.View | None,
                   file: discord.File | None = None) -> discord.Message | None:
        if self._fallback is None and self._token_usable():
            webhook = discord.Webhook.partial(int(self.ref["app"]), str(self.ref["token"]), client=self.bot)
            extra: dict[str, Any] = {"attachments": [file]} if file is not None else {}
            try:
                return await webhook.edit_message(int(self.ref["message"]), content=content, view=view,
                                                  allowed_mentions=NO_PINGS, **extra)
            except discord.NotFound:
                return None  # the message was deleted: nobody is waiting for it
            except discord.HTTPException as error:
                if error.status not in (401, 403):
                    raise
        if file is None or self.who.channel_id is None:
            return None  # progress is not worth a channel message
        channel = self.bot.get_channel(self.who.channel_id) or self.bot.get_partial_messageable(self.who.channel_id)
        mention = f"<@{self.who.user_id}> "
        self._fallback = await channel.send(  # type: ignore[union-attr]
            (mention + content)[:MAX_CONTENT], file=file,
            allowed_mentions=discord.AllowedMentions(users=[discord.Object(self.who.user_id)], everyone=False,
                                                     roles=False))
        return self._fallback


def _int(value: Any) -> int | None:
    return int(value) if value is not None else None


async def setup(bot: BrushworkBot) -> None:
    await bot.add_cog(Compare(bot))

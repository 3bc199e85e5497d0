"""``/lora …``: a server's own LoRA styles — datasets, training with live progress, use, files.

Thin by design: every command reads who asks (:func:`~bot.discord_app.context.caller`, plus the
member's roles for the trainer role), calls ONE method of :class:`~bot.lora_services.DatasetService`
or :class:`~bot.lora_services.LoraService` in a thread, and answers in the user's language
(``bot/locales/*/lora_cmd.json``).  Mistakes and refusals are the services' localized errors,
answered ephemerally by the tree's error handler.

==================================  =========================================================
command                             does
==================================  =========================================================
``dataset create|list``             a new, empty dataset / this server's datasets
``dataset add name images …``       up to 10 attachments (images, or zips with same-named
                                    ``.txt`` captions): announced sizes are checked BEFORE
                                    anything is downloaded; what is refused is listed with why
``dataset show``                    the numbered contact sheet and the captions, ✏️ buttons
``dataset caption|remove``          one image's caption (a form when no text is given) / out
``dataset delete``                  after a confirmation (Manage Server or the trainer role)
``train``                           a long job on the shared queue: a public message edited
                                    with step, loss, ETA and the newest sample image, a cancel
                                    button, then the LoRA announced with a before/after pair
``cancel|list|info|delete``         the server's LoRAs (delete asks for a confirmation)
``export``                          the ``.safetensors`` as an attachment (``kohya`` keys too)
``import``                          a ``.safetensors`` attachment, checked (size before the
                                    download, pickles refused, keys and shapes)
``config``                          Manage Server: the trainer role, folder LoRAs on/off
==================================  =========================================================

**Rights** are read on every call: ``interaction.permissions`` (Manage Server) and the member's
roles, turned into ``can_manage`` by :meth:`LoraService.may_manage`; hiding a command is only
Discord's default, so nothing relies on it.

**Buttons** are ``DynamicItem``s with short versioned ids (``bwl1:…``, see the table below),
so they work on messages sent before a restart.  The ids are visible to clients: a click
re-reads the clicking member's server, user and rights, and the target is looked up again in
that server's own namespace by its public id (another server's id is simply not there).

==============================  ==============================================================
``bwl1:c:<lora>``               ✖ cancel a training (its starter, or a manager)
``bwl1:dl:<lora>:<user>``       confirm deleting a LoRA (only the member who asked; rights)
``bwl1:dd:<dataset>:<user>``    confirm deleting a dataset
``bwl1:k:<user>``               keep (dismiss a confirmation)
``bwl1:e:<dataset>:<image>``    ✏️ edit a caption: opens the caption form
``bwl1:m:<dataset>:<image>``    the caption form's submission (an ``on_interaction``
                                listener: forms cannot be templates, and this one must work
                                after a restart too)
==============================  ==============================================================

**A training's message** is followed like an ``/imagine`` job (:class:`TrainingFollower`): the
job's reply reference (``v`` ``lora1``: the interaction webhook, message and token, user,
channel, language) is stored with the job, so a training still waiting or running when the bot
stops is followed again at the next start; edits go through the delivery helpers
(:class:`~bot.discord_app.follow.Outbox`: the webhook while the token lives, then the channel),
throttled (:class:`~bot.discord_app.delivery.ThrottledEditor`, the bot's edit interval, 1.5 s),
and the announcement after the token expired is a new channel message that mentions the user.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.attachments import fit_image
from bot.discord_app.components import modal_values
from bot.discord_app.context import (
    Caller,
    caller,
    missing_permissions,
    missing_permissions_text,
    report_error,
    send,
)
from bot.discord_app.delivery import ReplyRef, ThrottledEditor, duration, progress_bar
from bot.discord_app.follow import NO_MENTIONS, FollowerTasks, Outbox, follow_events
from bot.discord_app.translator import text
from bot.lora_services import (
    MAX_CAPTION_CHARS,
    AddResult,
    Refusal,
    ServerLoraError,
    TrainOptions,
    Upload,
    UploadRefused,
    before_after_png,
    may_manage,
)
from bot.preferences import check_manage_guild
from generation.errors import BrushworkError
from generation.i18n import translate
from generation.queue import JobCancelled, JobDone, JobFailed, JobProgress, JobQueued, JobRequeued, JobStarted
from storage.ids import ALPHABET, is_public_id, normalize_public_id
from storage.records import LoraStatus

if TYPE_CHECKING:
    from bot.discord_app.client import BrushworkBot
    from bot.lora_services import DatasetService, DatasetSheet, LoraDetails, LoraService, TrainingStarted
    from storage.records import DatasetImageRecord, DatasetRecord, LoraRecord

log = logging.getLogger("brushwork.discord.lora")

PREFIX = "bwl1"  # custom ids of this cog's buttons and form (≤ 100 characters)
REF_VERSION = "lora1"  # a training's reply reference (the /imagine follower only takes its own, v 1)
_ID = f"[{ALPHABET}]{{8}}"
CAPTION_MODAL = re.compile(rf"{PREFIX}:m:(?P<dataset>{_ID}):(?P<image>{_ID})")
CAPTION_INPUT_ID = f"{PREFIX}:m:caption"
MAX_CONTENT = 2000
MAX_EMBED = 4096
CAPTION_BUTTONS = 20  # ✏️ buttons under a contact sheet (4 rows of 5; more images: /lora dataset caption)
CHOICES = 25  # Discord's autocomplete limit
MAX_CAPTION = MAX_CAPTION_CHARS  # what the service accepts, enforced by Discord's client too

# ---------------------------------------------------------------------- who may do what


def member_role_ids(interaction: discord.Interaction) -> tuple[int, ...]:
    """The member's role ids, from the interaction itself (its member object carries them)."""
    user = interaction.user
    if not isinstance(user, discord.Member):
        return ()
    ids = {role.id for role in user.roles}
    ids.update(int(role_id) for role_id in getattr(user, "_roles", ()))  # roles not in the cache yet
    return tuple(sorted(ids))


async def can_manage(interaction: discord.Interaction, who: Caller) -> bool:
    """Manage Server (``interaction.permissions``) or the server's trainer role, read now."""
    loras: LoraService = interaction.client.container.loras  # type: ignore[attr-defined]
    return await asyncio.to_thread(loras.may_manage, who.guild_id, manage_guild=who.manage_guild,
                                   role_ids=member_role_ids(interaction))


# ---------------------------------------------------------------------- small texts


def clip(value: str, limit: int = MAX_CONTENT) -> str:
    return value if len(value) <= limit else value[: limit - 1] + "…"


def plain(value: str | None, limit: int = 200) -> str:
    """User text shown in a message: one line, no markdown, no pings."""
    value = discord.utils.escape_markdown(" ".join((value or "").split()))
    value = value.replace("@", "@\u200b")
    return value if len(value) <= limit else value[: limit - 1] + "…"


def code(value: str | None, limit: int = 80) -> str:
    value = (value or "").replace("`", "'").replace("\n", " ")
    return f"`{value[:limit]}`"


def size_text(size: int) -> str:
    if size >= 1024 * 1024:
        return f"{size / (1024 * 1024):.1f} MB"
    return f"{max(1, round(size / 1024))} KB"


def status_label(who: Caller, status: LoraStatus) -> str:
    return who.t(f"lora_cmd.status.{status.value}")


def lora_line(who: Caller, record: LoraRecord) -> str:
    return who.t("lora_cmd.list.line", name=code(record.name), status=status_label(who, record.status),
                 model=record.base_model, rank=record.rank, steps=record.steps,
                 hash=code(record.short_hash) if record.short_hash else "—")


def list_embed(who: Caller, records: Sequence[LoraRecord], folder: Sequence[str]) -> discord.Embed:
    lines = [lora_line(who, record) for record in records] or [who.t("lora_cmd.list.empty")]
    if folder:
        lines.append(who.t("lora_cmd.list.folder", names=", ".join(code(name) for name in folder)))
    lines.append(who.t("lora_cmd.list.hint"))
    title = who.t("lora_cmd.list.title_dm" if who.in_dm else "lora_cmd.list.title")
    return discord.Embed(title=title, description=clip("\n".join(lines), MAX_EMBED), colour=discord.Colour.blurple())


def usage_hint(who: Caller, record: LoraRecord) -> str:
    trigger = record.trigger_words[0] if record.trigger_words else who.t("lora_cmd.use.subject")
    return who.t("lora_cmd.use", trigger=plain(trigger, 64), name=record.name)


def info_embed(who: Caller, details: LoraDetails, image_name: str | None) -> discord.Embed:
    lora = details.lora
    t = who.t
    embed = discord.Embed(title=t("lora_cmd.info.title", name=lora.name), colour=discord.Colour.blurple())
    embed.add_field(name=t("lora_cmd.info.status"), value=status_label(who, lora.status))
    embed.add_field(name=t("lora_cmd.info.source"), value=t(f"lora_cmd.source.{lora.source.value}"))
    model = lora.base_model if lora.family == lora.base_model else f"{lora.base_model} ({lora.family})"
    embed.add_field(name=t("lora_cmd.info.model"), value=model)
    embed.add_field(name=t("lora_cmd.info.size"), value=t("lora_cmd.info.rank", rank=lora.rank,
                                                           alpha=f"{lora.alpha:g}", steps=lora.steps))
    if lora.dataset_name or lora.dataset_size:
        embed.add_field(name=t("lora_cmd.info.dataset"), value=t("lora_cmd.info.dataset_value", name=lora.dataset_name
                                                                  or "—", count=lora.dataset_size))
    embed.add_field(name=t("lora_cmd.info.trigger"), value=", ".join(code(w) for w in lora.trigger_words) or "—")
    if lora.short_hash:
        embed.add_field(name=t("lora_cmd.info.hash"), value=f"{code(lora.short_hash)} · {size_text(lora.size_bytes)}")
    embed.add_field(name=t("lora_cmd.info.created"), value=discord.utils.format_dt(lora.created_at, "f"))
    progress = details.progress
    if progress is not None:
        loss = "" if progress.loss is None else t("lora_cmd.info.loss", loss=f"{progress.loss:.4f}")
        embed.add_field(name=t("lora_cmd.info.progress"), inline=False, value=t(
            "lora_cmd.info.progress_value", state=t(f"lora_cmd.info.state.{progress.state}"), step=progress.step,
            total=progress.total, bar=progress_bar(progress.step, progress.total), loss=loss,
            eta=duration(progress.eta_s, who.locale)))
    if lora.ready:
        embed.add_field(name=t("lora_cmd.info.use"), value=usage_hint(who, lora), inline=False)
    if image_name is not None:
        embed.set_image(url=f"attachment://{image_name}")
        embed.set_footer(text=t("lora_cmd.info.before_after"))
    return embed


def dataset_list_embed(who: Caller, records: Sequence[DatasetRecord]) -> discord.Embed:
    lines = [who.t("lora_cmd.dataset.list.line", name=code(r.name), count=r.image_count, size=size_text(r.total_bytes),
                   owner=f"<@{r.owner_id}>") for r in records] or [who.t("lora_cmd.dataset.list.empty")]
    return discord.Embed(title=who.t("lora_cmd.dataset.list.title"), description=clip("\n".join(lines), MAX_EMBED),
                         colour=discord.Colour.blurple())


def caption_text(who: Caller, caption: str | None, limit: int = 150) -> str:
    return plain(caption, limit) if caption else who.t("lora_cmd.dataset.no_caption")


def sheet_embed(who: Caller, sheet: DatasetSheet, image_name: str) -> discord.Embed:
    lines: list[str] = []
    used = 0
    for number, image in enumerate(sheet.images, start=1):
        line = f"`#{number}` {code(image.original_name or image.public_id, 40)} — {caption_text(who, image.caption)}"
        if used + len(line) + 1 > MAX_EMBED - 200:
            lines.append(who.t("lora_cmd.dataset.show.more", count=len(sheet.images) - number + 1))
            break
        lines.append(line)
        used += len(line) + 1
    embed = discord.Embed(title=who.t("lora_cmd.dataset.show.title", name=sheet.dataset.name,
                                      count=len(sheet.images)), description="\n".join(lines),
                          colour=discord.Colour.blurple())
    embed.set_image(url=f"attachment://{image_name}")
    embed.set_footer(text=who.t("lora_cmd.dataset.show.footer", shown=min(len(sheet.images), CAPTION_BUTTONS)))
    return embed


@dataclass
class AddOutcome:
    """What ``dataset add`` did: the dataset afterwards, the images added, each refusal."""

    dataset: DatasetRecord | None = None
    added: list[DatasetImageRecord] = field(default_factory=list)
    refused: list[Refusal] = field(default_factory=list)

    def take(self, result: AddResult) -> None:
        self.dataset = result.dataset
        self.added.extend(result.added)
        self.refused.extend(result.refused)


def add_text(who: Caller, name: str, outcome: AddOutcome) -> str:
    lines: list[str] = []
    if outcome.added and outcome.dataset is not None:
        total = outcome.dataset.image_count
        lines.append(who.t("lora_cmd.dataset.added", count=len(outcome.added), name=outcome.dataset.name,
                           total=total))
        first = total - len(outcome.added) + 1
        for number, image in enumerate(outcome.added, start=first):
            lines.append(f"`#{number}` {code(image.original_name, 60)} — {caption_text(who, image.caption, 100)}")
    if outcome.refused:
        lines.append(who.t("lora_cmd.dataset.refused" if outcome.added else "lora_cmd.dataset.nothing_added",
                           count=len(outcome.refused), name=name))
        lines.extend(f"• {refusal.error.message(who.locale)}" for refusal in outcome.refused)
    if outcome.added:
        lines.append(who.t("lora_cmd.dataset.added_hint", name=outcome.dataset.name if outcome.dataset else name))
    return clip("\n".join(lines))


def find_image(images: Sequence[DatasetImageRecord], ref: str) -> tuple[int, DatasetImageRecord] | None:
    """An image by its number on the sheet (``3``, ``#3``) or its id, with its number."""
    value = str(ref).strip().lstrip("#")
    if value.isdigit() and 1 <= int(value) <= len(images):
        return int(value), images[int(value) - 1]
    ident = normalize_public_id(value)
    if is_public_id(ident):
        for number, image in enumerate(images, start=1):
            if image.public_id == ident:
                return number, image
    return None


def choices(names: Sequence[str], typed: str) -> list[app_commands.Choice[str]]:
    """Names starting with what was typed, then names containing it (case-insensitive), at most 25."""
    wanted = (typed or "").strip().casefold()
    starts = [n for n in names if n.casefold().startswith(wanted)]
    contains = [n for n in names if wanted and wanted in n.casefold() and n not in starts]
    return [app_commands.Choice(name=n[:100], value=n[:100]) for n in (starts + contains)[:CHOICES]]


# ---------------------------------------------------------------------- buttons and the caption form


class CancelTrainingButton(discord.ui.DynamicItem[discord.ui.Button], template=rf"{PREFIX}:c:(?P<lora>{_ID})"):
    """✖ on a training's message: its starter or a manager may cancel it."""

    def __init__(self, lora_id: str, *, label: str | None = None) -> None:
        super().__init__(discord.ui.Button(label=label, emoji="✖️", style=discord.ButtonStyle.secondary,
                                           custom_id=f"{PREFIX}:c:{lora_id}"))
        self.lora_id = lora_id

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button,
                             match: re.Match[str], /) -> CancelTrainingButton:
        return cls(match["lora"], label=item.label)

    async def callback(self, interaction: discord.Interaction) -> None:  # type: ignore[override]
        await _cog(interaction).cancel_clicked(interaction, self.lora_id)


class ConfirmDeleteButton(discord.ui.DynamicItem[discord.ui.Button],
                          template=rf"{PREFIX}:d(?P<kind>[ld]):(?P<ref>{_ID}):(?P<user>[0-9]{{1,20}})"):
    """🗑 on a confirmation: ``l`` a LoRA, ``d`` a dataset; only for the member who asked."""

    def __init__(self, kind: str, ref: str, user_id: int, *, label: str | None = None) -> None:
        super().__init__(discord.ui.Button(label=label, emoji="🗑️", style=discord.ButtonStyle.danger,
                                           custom_id=f"{PREFIX}:d{kind}:{ref}:{user_id}"))
        self.kind, self.ref, self.user_id = kind, ref, user_id

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button,
                             match: re.Match[str], /) -> ConfirmDeleteButton:
        return cls(match["kind"], match["ref"], int(match["user"]), label=item.label)

    async def callback(self, interaction: discord.Interaction) -> None:  # type: ignore[override]
        await _cog(interaction).delete_confirmed(interaction, self.kind, self.ref, self.user_id)


class KeepButton(discord.ui.DynamicItem[discord.ui.Button], template=rf"{PREFIX}:k:(?P<user>[0-9]{{1,20}})"):
    def __init__(self, user_id: int, *, label: str | None = None) -> None:
        super().__init__(discord.ui.Button(label=label, style=discord.ButtonStyle.secondary,
                                           custom_id=f"{PREFIX}:k:{user_id}"))
        self.user_id = user_id

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button,
                             match: re.Match[str], /) -> KeepButton:
        return cls(int(match["user"]), label=item.label)

    async def callback(self, interaction: discord.Interaction) -> None:  # type: ignore[override]
        who = caller(interaction)
        if who.user_id != self.user_id:
            await send(interaction, who.t("lora_cmd.not_your_button"))
            return
        await interaction.response.edit_message(content=who.t("lora_cmd.kept"), view=None)


class CaptionButton(discord.ui.DynamicItem[discord.ui.Button],
                    template=rf"{PREFIX}:e:(?P<dataset>{_ID}):(?P<image>{_ID})"):
    """✏️ under a contact sheet: the caption form of one image."""

    def __init__(self, dataset_id: str, image_id: str, *, label: str | None = None, row: int | None = None) -> None:
        super().__init__(discord.ui.Button(label=label, emoji="✏️", style=discord.ButtonStyle.secondary,
                                           custom_id=f"{PREFIX}:e:{dataset_id}:{image_id}", row=row))
        self.dataset_id, self.image_id = dataset_id, image_id

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button,
                             match: re.Match[str], /) -> CaptionButton:
        return cls(match["dataset"], match["image"], label=item.label)

    async def callback(self, interaction: discord.Interaction) -> None:  # type: ignore[override]
        await _cog(interaction).caption_clicked(interaction, self.dataset_id, self.image_id)


class CaptionModal(discord.ui.Modal):
    """One image's caption.  ``interaction_check`` refuses on purpose: every submission — this
    process's or one sent before a restart — is handled by :meth:`Lora.on_interaction`."""

    def __init__(self, who: Caller, dataset: DatasetRecord, number: int, image: DatasetImageRecord) -> None:
        super().__init__(title=who.t("lora_cmd.caption.title", number=number, name=dataset.name)[:45],
                         custom_id=f"{PREFIX}:m:{dataset.public_id}:{image.public_id}", timeout=15 * 60)
        self.add_item(discord.ui.TextInput(label=who.t("lora_cmd.caption.label")[:45], custom_id=CAPTION_INPUT_ID,
                                           style=discord.TextStyle.paragraph, default=(image.caption or "")[:MAX_CAPTION]
                                           or None, max_length=MAX_CAPTION, required=False))

    async def interaction_check(self, interaction: discord.Interaction, /) -> bool:
        return False


def confirm_view(who: Caller, kind: str, ref: str) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(ConfirmDeleteButton(kind, ref, who.user_id, label=who.t("lora_cmd.button.delete")))
    view.add_item(KeepButton(who.user_id, label=who.t("lora_cmd.button.keep")))
    return view


def cancel_view(lora_id: str, locale: str) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(CancelTrainingButton(lora_id, label=translate("lora_cmd.button.cancel", locale)))
    return view


def caption_view(sheet: DatasetSheet) -> discord.ui.View | None:
    if not sheet.images:
        return None
    view = discord.ui.View(timeout=None)
    for index, image in enumerate(sheet.images[:CAPTION_BUTTONS]):
        view.add_item(CaptionButton(sheet.dataset.public_id, image.public_id, label=str(index + 1), row=index // 5))
    return view


def _cog(interaction: discord.Interaction) -> Lora:
    cog = interaction.client.get_cog(Lora.__cog_name__)  # type: ignore[attr-defined]
    assert isinstance(cog, Lora)
    return cog


# ---------------------------------------------------------------------- following a training


@dataclass(frozen=True, slots=True)
class TrainingHead:
    """The first line of a training's message: what is trained, on what, by whom."""

    name: str
    lora_id: str
    dataset: str
    images: int
    model: str
    steps: int
    rank: int
    resolution: int

    @classmethod
    def of_started(cls, started: TrainingStarted) -> TrainingHead:
        lora, config = started.lora, started.config
        return cls(name=lora.name, lora_id=lora.public_id, dataset=lora.dataset_name or "—",
                   images=lora.dataset_size, model=lora.base_model, steps=config.steps, rank=config.rank,
                   resolution=config.resolution)

    @classmethod
    def of_payload(cls, payload: dict[str, Any]) -> TrainingHead:
        """From a stored training job (``jobs.request["training"]``), after a restart."""
        config = dict(payload.get("config") or {})
        return cls(name=str(payload["name"]), lora_id=str(payload["lora_id"]),
                   dataset=str(payload.get("dataset_name") or "—"), images=len(payload.get("items") or ()),
                   model=str(payload.get("model") or "?"), steps=int(config.get("steps") or 0),
                   rank=int(config.get("rank") or 0), resolution=int(config.get("resolution") or 0))

    def text(self, locale: str, user: int) -> str:
        return translate("lora_cmd.train.head", locale, name=self.name, dataset=self.dataset, images=self.images,
                         model=self.model, steps=self.steps, rank=self.rank, resolution=self.resolution,
                         user=f"<@{user}>")


@dataclass(frozen=True, slots=True)
class Sample:
    """The newest sample image: a file the trainer wrote, or the image it reported."""

    step: int
    path: str | None
    image: Any = field(default=None, compare=False, repr=False)

    def png(self) -> bytes | None:
        if self.path:
            with contextlib.suppress(OSError):
                return Path(self.path).read_bytes()
        if self.image is not None:
            buffer = io.BytesIO()
            self.image.save(buffer, format="PNG")
            return buffer.getvalue()
        return None


@dataclass(frozen=True, slots=True)
class TrainingStatus:
    line: str
    sample: Sample | None = None


def progress_line(event: JobProgress, locale: str) -> str:
    detail = dict(event.detail or {})
    loss = detail.get("loss_ema", detail.get("loss"))
    eta = event.eta_s if event.eta_s is not None else detail.get("eta_s")
    return translate("lora_cmd.train.progress", locale, step=event.step, total=event.total,
                     bar=progress_bar(event.step, event.total),
                     loss=f"{loss:.4f}" if isinstance(loss, (int, float)) else "—", eta=duration(eta, locale))


class TrainingFollower:
    """Follows one training job: its message edited (throttled) with the queue position, then step,
    loss, ETA and the newest sample image, with ✖ Cancel; then the announcement, the error, or
    "cancelled".  Answers go through :class:`~bot.discord_app.follow.Outbox` (webhook, then channel)."""

    def __init__(self, bot: BrushworkBot, job_id: str, ref: dict[str, Any], head: TrainingHead, *,
                 fresh: bool = False) -> None:
        self.bot = bot
        self.job_id = job_id
        self.ref_data = ref
        self.ref = ReplyRef.from_dict(ref)
        self.head = head
        self.fresh = fresh
        self.outbox = Outbox(bot, self.ref)
        self.delivering = False
        self._shown_sample: int | None = None
        self._sample: Sample | None = None
        self._progressed = False

    @property
    def locale(self) -> str:
        return self.ref.locale

    def t(self, key: str, **params: Any) -> str:
        return translate(key, self.locale, **params)

    def content(self, *lines: str | None) -> str:
        return clip("\n".join([self.head.text(self.locale, self.ref.user), *[line for line in lines if line]]))

    async def run(self) -> None:
        handle = self.bot.container.queue.handle(self.job_id)
        editor: ThrottledEditor[TrainingStatus] = ThrottledEditor(self._show, self.bot.edit_interval,
                                                                  wait_first=self.fresh)
        terminal = await follow_events(handle, editor, self._status)
        self.delivering = True
        if isinstance(terminal, JobDone):
            await self.announce(terminal.result)
        elif isinstance(terminal, JobFailed):
            await self._final(self.content(self.t("lora_cmd.train.failed", name=self.head.name,
                                                  error=terminal.error.message(self.locale))))
        elif isinstance(terminal, JobCancelled):
            await self._final(self.content(self.t("lora_cmd.train.cancelled", name=self.head.name)))
        with contextlib.suppress(Exception):  # the interaction token leaves the job's row
            await asyncio.to_thread(self.bot.container.chat.finish_reply, self.job_id, self.ref_data)

    def _status(self, event: Any) -> TrainingStatus | None:
        if isinstance(event, JobProgress):
            self._progressed = True
            detail = dict(event.detail or {})
            if detail.get("sample_path") or event.preview is not None:
                self._sample = Sample(event.step, detail.get("sample_path"), event.preview)
            return TrainingStatus(progress_line(event, self.locale), self._sample)
        if self._progressed and isinstance(event, (JobQueued, JobStarted)):
            return None  # between two chunks: the progress line stays
        if isinstance(event, JobQueued):
            code = "lora_cmd.train.next" if event.position <= 0 else "lora_cmd.train.queued"
            return TrainingStatus(self.t(code, position=event.position + 1, eta=duration(event.eta_s, self.locale)))
        if isinstance(event, JobStarted):
            return TrainingStatus(self.t("lora_cmd.train.started"))
        if isinstance(event, JobRequeued) and event.reason != "chunk":
            return TrainingStatus(self.t("lora_cmd.train.requeued"), self._sample)
        return None

    async def _show(self, status: TrainingStatus) -> None:
        sample = status.sample
        sample_line = self.t("lora_cmd.train.sample", step=sample.step) if sample is not None else None
        fields: dict[str, Any] = {"content": self.content(status.line, sample_line), "allowed_mentions": NO_MENTIONS,
                                  "view": cancel_view(self.head.lora_id, self.locale)}
        if sample is not None and sample.step != self._shown_sample:
            data = await asyncio.to_thread(sample.png)
            if data is not None:
                fields["attachments"] = [discord.File(io.BytesIO(data), filename=f"sample-{sample.step:06d}.png")]
        await self.outbox.edit(self.ref.message, **fields)
        if "attachments" in fields and sample is not None:
            self._shown_sample = sample.step

    async def announce(self, result: Any) -> None:
        """The LoRA is ready: its numbers, how to use it, and the before/after pair."""
        if result is None or not hasattr(result, "lora"):
            result = await asyncio.to_thread(self.bot.container.loras.result, self.job_id)
        if result is None:  # the LoRA was deleted meanwhile
            await self._final(self.content(self.t("lora_cmd.train.gone", name=self.head.name)))
            return
        lora = result.lora
        t = self.t
        lines = [t("lora_cmd.train.done", name=lora.name, steps=lora.steps, rank=lora.rank, model=lora.base_model,
                   hash=lora.short_hash or "—"),
                 translate("lora_cmd.use", self.locale, trigger=plain((lora.trigger_words or [""])[0], 64)
                           or t("lora_cmd.use.subject"), name=lora.name)]
        files: list[discord.File] = []
        if result.before is not None and result.after is not None:
            labels = (t("lora_cmd.before"), t("lora_cmd.after"))
            try:
                data = await asyncio.to_thread(before_after_png, result.before, result.after, labels=labels)
                upload = await asyncio.to_thread(fit_image, f"{lora.name}-before-after.png", data, self.ref.limit)
                files.append(discord.File(io.BytesIO(upload.data), filename=upload.filename))
                lines.append(t("lora_cmd.train.before_after"))
            except (OSError, ValueError):
                log.warning("no before/after picture for LoRA %s", lora.public_id, exc_info=True)
        await self._final(self.content(*lines), files)

    async def _final(self, content: str, files: list[discord.File] | None = None) -> None:
        """Edit the training's message into its end; after the token expired (or if the message is
        gone), say so on the old message and post a channel message that mentions the user."""
        fields: dict[str, Any] = {"content": content, "view": None, "allowed_mentions": NO_MENTIONS,
                                  "attachments": list(files or [])}
        try:
            if await self.outbox.edit(self.ref.message, fallback=False, **fields):
                return
        except discord.NotFound:
            pass
        except discord.HTTPException as error:
            log.info("could not edit the message of training job %s: %s", self.job_id, error)
        with contextlib.suppress(discord.HTTPException, RuntimeError):
            await self.outbox.edit(self.ref.message, content=self.content(self.t("lora_cmd.train.see_below")),
                                   view=None, attachments=[], allowed_mentions=NO_MENTIONS)
        for file in files or ():
            file.reset()
        extra: dict[str, Any] = {"files": list(files)} if files else {}
        await self.outbox.post(content=content[:1900], **extra)


# ---------------------------------------------------------------------- the cog


class Lora(commands.Cog):
    lora = app_commands.Group(name="lora", description=text("Train and use this server's own LoRA styles",
                                                            "lora_cmd.cmd"))
    dataset = app_commands.Group(name="dataset", parent=lora,
                                 description=text("Training images: create, add, show, caption, remove",
                                                  "lora_cmd.cmd.dataset"))

    def __init__(self, bot: BrushworkBot) -> None:
        self.bot = bot
        self.trainings = FollowerTasks("train")

    @property
    def datasets(self) -> DatasetService:
        return self.bot.container.datasets

    @property
    def loras(self) -> LoraService:
        return self.bot.container.loras

    async def cog_load(self) -> None:
        if getattr(self.bot, "resume_jobs", True):
            await self.resume()

    async def cog_unload(self) -> None:
        await self.trainings.close()

    # ================================================================== datasets
    @dataset.command(name="create", description=text("Create an empty dataset", "lora_cmd.cmd.dataset.create"))
    @app_commands.describe(name=text("Its name: letters, digits, . _ -", "lora_cmd.cmd.new_name"))
    async def dataset_create(self, interaction: discord.Interaction, name: app_commands.Range[str, 1, 64]) -> None:
        who = caller(interaction)
        record = await asyncio.to_thread(self.datasets.create, who.scope, name)
        await send(interaction, who.t("lora_cmd.dataset.created", name=record.name))

    @dataset.command(name="list", description=text("This server's datasets", "lora_cmd.cmd.dataset.list"))
    async def dataset_list(self, interaction: discord.Interaction) -> None:
        who = caller(interaction)
        records = await asyncio.to_thread(self.datasets.list, who.scope)
        await send(interaction, embed=dataset_list_embed(who, records), allowed_mentions=NO_MENTIONS)

    @dataset.command(name="add", description=text("Add images, or a zip of images with .txt captions",
                                                  "lora_cmd.cmd.dataset.add"))
    @app_commands.describe(
        name=text("The dataset", "lora_cmd.cmd.dataset_name"),
        images=text("A PNG, JPEG or WebP image, or a zip", "lora_cmd.cmd.dataset.add.images"),
        image2=text("Another image or zip", "lora_cmd.cmd.dataset.add.more"),
        image3=text("Another image or zip", "lora_cmd.cmd.dataset.add.more"),
        image4=text("Another image or zip", "lora_cmd.cmd.dataset.add.more"),
        image5=text("Another image or zip", "lora_cmd.cmd.dataset.add.more"),
        image6=text("Another image or zip", "lora_cmd.cmd.dataset.add.more"),
        image7=text("Another image or zip", "lora_cmd.cmd.dataset.add.more"),
        image8=text("Another image or zip", "lora_cmd.cmd.dataset.add.more"),
        image9=text("Another image or zip", "lora_cmd.cmd.dataset.add.more"),
        image10=text("Another image or zip", "lora_cmd.cmd.dataset.add.more"),
        caption=text("Caption for images that bring none", "lora_cmd.cmd.dataset.add.caption"),
    )
    async def dataset_add(
        self,
        interaction: discord.Interaction,
        name: app_commands.Range[str, 1, 64],
        images: discord.Attachment,
        image2: discord.Attachment | None = None,
        image3: discord.Attachment | None = None,
        image4: discord.Attachment | None = None,
        image5: discord.Attachment | None = None,
        image6: discord.Attachment | None = None,
        image7: discord.Attachment | None = None,
        image8: discord.Attachment | None = None,
        image9: discord.Attachment | None = None,
        image10: discord.Attachment | None = None,
        caption: app_commands.Range[str, 1, MAX_CAPTION] | None = None,
    ) -> None:
        who = caller(interaction)
        files = [a for a in (images, image2, image3, image4, image5, image6, image7, image8, image9, image10)
                 if a is not None]
        # Sizes as Discord announces them, before a byte is downloaded: only the files that pass
        # are fetched; the others are listed with their reasons beside what was added.
        checked = await asyncio.to_thread(self.datasets.check_upload, who.scope, name,
                                          [(a.filename, a.size) for a in files])
        await interaction.response.defer(ephemeral=True, thinking=True)
        wanted = [files[index] for index in checked.accepted]
        contents = await asyncio.gather(*(a.read() for a in wanted))
        uploads = [Upload(a.filename, data) for a, data in zip(wanted, contents, strict=True)]
        outcome = await asyncio.to_thread(self._add, who, name, uploads, caption, checked.refused)
        await interaction.followup.send(add_text(who, name, outcome), ephemeral=True, allowed_mentions=NO_MENTIONS)

    def _add(self, who: Caller, name: str, uploads: list[Upload], caption: str | None,
             before: Sequence[Refusal]) -> AddOutcome:
        outcome = AddOutcome()
        try:
            outcome.take(self.datasets.add_images(who.scope, name, uploads, caption=caption, before=before))
        except UploadRefused as error:  # every file refused: list each one's reason
            outcome.refused.extend(error.refusals)
        return outcome

    @dataset.command(name="show", description=text("The contact sheet: every image numbered, with its caption",
                                                   "lora_cmd.cmd.dataset.show"))
    @app_commands.describe(name=text("The dataset", "lora_cmd.cmd.dataset_name"))
    async def dataset_show(self, interaction: discord.Interaction, name: app_commands.Range[str, 1, 64]) -> None:
        who = caller(interaction)
        await interaction.response.defer(ephemeral=True, thinking=True)
        sheet = await asyncio.to_thread(self.datasets.show, who.scope, name)
        upload = await asyncio.to_thread(fit_image, f"{sheet.dataset.name}-sheet.png", sheet.png,
                                         interaction.filesize_limit)
        fields: dict[str, Any] = {"embed": sheet_embed(who, sheet, upload.filename),
                                  "file": discord.File(io.BytesIO(upload.data), filename=upload.filename)}
        view = caption_view(sheet)
        if view is not None:
            fields["view"] = view
        await interaction.followup.send(ephemeral=True, allowed_mentions=NO_MENTIONS, **fields)

    @dataset.command(name="caption", description=text("Set one image's caption (no text: a form)",
                                                      "lora_cmd.cmd.dataset.caption"))
    @app_commands.describe(
        name=text("The dataset", "lora_cmd.cmd.dataset_name"),
        image=text("Its number on the contact sheet, or its id", "lora_cmd.cmd.image"),
        text_=text("The new caption; leave it out to edit it in a form", "lora_cmd.cmd.dataset.caption.text"),
    )
    @app_commands.rename(text_="text")
    async def dataset_caption(self, interaction: discord.Interaction, name: app_commands.Range[str, 1, 64],
                              image: app_commands.Range[str, 1, 40],
                              text_: app_commands.Range[str, 1, MAX_CAPTION] | None = None) -> None:
        who = caller(interaction)
        manage = await can_manage(interaction, who)
        if text_ is None:  # a form must be the first answer: find the image, then open it
            dataset, number, target = await asyncio.to_thread(self._caption_target, who, manage, name, image)
            await interaction.response.send_modal(CaptionModal(who, dataset, number, target))
            return
        answer = await asyncio.to_thread(self._set_caption, who, manage, name, image, text_)
        await send(interaction, answer, allowed_mentions=NO_MENTIONS)

    def _caption_target(self, who: Caller, manage: bool, name: str,
                        ref: str) -> tuple[DatasetRecord, int, DatasetImageRecord]:
        dataset = self.datasets.get(who.scope, name)
        if not (may_manage(who.scope, manage) or dataset.owner_id == who.user_id):
            raise ServerLoraError("server_dataset.not_yours", name=dataset.name)
        images = self.datasets.images(who.scope, dataset.name)
        found = find_image(images, ref)
        if found is None:
            raise ServerLoraError("server_dataset.image_not_found", name=dataset.name, image=ref[:40],
                                  count=len(images))
        return dataset, found[0], found[1]

    def _set_caption(self, who: Caller, manage: bool, name: str, ref: str, caption: str | None) -> str:
        record = self.datasets.set_caption(who.scope, name, ref, caption, can_manage=manage)
        images = self.datasets.images(who.scope, name)
        number = next((i for i, image in enumerate(images, start=1) if image.public_id == record.public_id), "?")
        if record.caption:
            return who.t("lora_cmd.caption.saved", number=number, name=name, caption=plain(record.caption, 1500))
        return who.t("lora_cmd.caption.cleared", number=number, name=name)

    @dataset.command(name="remove", description=text("Take one image out of a dataset", "lora_cmd.cmd.dataset.remove"))
    @app_commands.describe(name=text("The dataset", "lora_cmd.cmd.dataset_name"),
                           image=text("Its number on the contact sheet, or its id", "lora_cmd.cmd.image"))
    async def dataset_remove(self, interaction: discord.Interaction, name: app_commands.Range[str, 1, 64],
                             image: app_commands.Range[str, 1, 40]) -> None:
        who = caller(interaction)
        manage = await can_manage(interaction, who)
        record = await asyncio.to_thread(self.datasets.remove_image, who.scope, name, image, can_manage=manage)
        await send(interaction, who.t("lora_cmd.dataset.removed", file=code(record.original_name or record.public_id),
                                      id=record.public_id, name=name), allowed_mentions=NO_MENTIONS)

    @dataset.command(name="delete", description=text("Delete a dataset and its images (asks first)",
                                                     "lora_cmd.cmd.dataset.delete"))
    @app_commands.describe(name=text("The dataset", "lora_cmd.cmd.dataset_name"))
    async def dataset_delete(self, interaction: discord.Interaction, name: app_commands.Range[str, 1, 64]) -> None:
        who = caller(interaction)
        if not await can_manage(interaction, who):
            raise ServerLoraError("server_lora.not_allowed")
        record = await asyncio.to_thread(self.datasets.get, who.scope, name)
        await send(interaction, who.t("lora_cmd.dataset.confirm_delete", name=record.name, count=record.image_count),
                   view=confirm_view(who, "d", record.public_id))

    # ================================================================== training
    @lora.command(name="train", description=text("Train a LoRA on a dataset (a long job on the shared queue)",
                                                 "lora_cmd.cmd.train"))
    @app_commands.describe(
        name=text("The LoRA's name, used as --lora NAME", "lora_cmd.cmd.train.name"),
        dataset=text("The dataset to train on", "lora_cmd.cmd.train.dataset"),
        trigger_word=text("A word put before every caption, e.g. inkwash", "lora_cmd.cmd.train.trigger_word"),
        steps=text("Training steps (default: the device's)", "lora_cmd.cmd.train.steps"),
        rank=text("LoRA rank: its size, 4-32 is usual", "lora_cmd.cmd.train.rank"),
        learning_rate=text("Learning rate, e.g. 0.0001", "lora_cmd.cmd.train.learning_rate"),
        resolution=text("Training size in pixels, a multiple of 64", "lora_cmd.cmd.train.resolution"),
        base_model=text("The model it is trained for", "lora_cmd.cmd.base_model"),
    )
    async def train(
        self,
        interaction: discord.Interaction,
        name: app_commands.Range[str, 1, 64],
        dataset: app_commands.Range[str, 1, 64],
        trigger_word: app_commands.Range[str, 1, 64] | None = None,
        steps: app_commands.Range[int, 1, 100_000] | None = None,
        rank: app_commands.Range[int, 1, 128] | None = None,
        learning_rate: float | None = None,
        resolution: app_commands.Range[int, 64, 2048] | None = None,
        base_model: app_commands.Range[str, 1, 64] | None = None,
    ) -> None:
        who = caller(interaction)
        if not who.in_dm:  # its announcement may have to be posted in the channel
            missing = missing_permissions(interaction.app_permissions, interaction.channel)
            if missing:
                await send(interaction, missing_permissions_text(missing, who.channel_id, who.locale))
                return
        manage = await can_manage(interaction, who)
        if not may_manage(who.scope, manage):
            raise ServerLoraError("server_lora.not_allowed")
        options = TrainOptions(name=name, dataset=dataset, trigger_word=trigger_word, steps=steps, rank=rank,
                               learning_rate=learning_rate, resolution=resolution, model=base_model)
        # The refusals that only read come first, privately (a public "thinking…" can only turn
        # into a public answer); snapshotting and queueing may take longer than Discord's 3 s,
        # so the public acknowledgement (it becomes the training's message) comes before them.
        await asyncio.to_thread(self.loras.check_training, who.scope, options, can_manage=manage)
        response = await interaction.response.defer(thinking=True)
        message_id = getattr(response, "message_id", None)
        if message_id is None:
            with contextlib.suppress(discord.HTTPException):
                message_id = (await interaction.original_response()).id
        ref = {"v": REF_VERSION, "user": who.user_id, "guild": who.guild_id, "channel": who.channel_id,
               "locale": who.locale, "via": "interaction", "app": interaction.application_id,
               "token": interaction.token, "message": message_id, "created": interaction.created_at.timestamp(),
               "limit": interaction.filesize_limit}
        try:
            started = await asyncio.to_thread(self.loras.train, who.scope, options, can_manage=manage,
                                              channel_id=who.channel_id, reply_ref=ref)
        except Exception as error:  # noqa: BLE001 - a late refusal (the dataset changed meanwhile, the
            await report_error(interaction, error)  # queue filled up) replaces the public "thinking…"
            return
        head = TrainingHead.of_started(started)
        self.follow(started.job_id, ref, head, fresh=True)  # first: the job is queued whatever happens below
        try:
            await interaction.edit_original_response(
                content=clip(f"{head.text(who.locale, who.user_id)}\n{who.t('lora_cmd.train.submitted')}"),
                view=cancel_view(head.lora_id, who.locale), allowed_mentions=NO_MENTIONS)
        except discord.HTTPException as error:  # an expired token: the follower edits through the channel
            log.info("could not edit the acknowledgement of training job %s: %s", started.job_id, error)

    def follow(self, job_id: str, ref: dict[str, Any], head: TrainingHead, *, fresh: bool = False) -> asyncio.Task[None]:
        return self.trainings.start(TrainingFollower(self.bot, job_id, ref, head, fresh=fresh))

    async def resume(self) -> int:
        """Follow again the trainings whose answer is owed (waiting, running, or finished while the bot was down)."""
        container = self.bot.container

        def unfinished() -> list[tuple[str, dict[str, Any], TrainingHead]]:
            found = []
            for record in container.chat.owed_jobs(REF_VERSION):
                ref = record.reply_ref
                payload = (record.request or {}).get("training")
                if not payload or ref is None:  # owed jobs have a reply ref; the check is for the type checker
                    continue
                try:
                    found.append((record.public_id, dict(ref), TrainingHead.of_payload(payload)))
                except (KeyError, TypeError, ValueError):
                    log.warning("training job %s has an unreadable payload; not following it", record.public_id)
            return found

        jobs = await asyncio.to_thread(unfinished)
        for job_id, ref, head in jobs:
            self.follow(job_id, ref, head)
        if jobs:
            log.info("following %d unfinished training(s) again", len(jobs))
        return len(jobs)

    async def wait_followers(self, timeout: float | None = None) -> None:
        """Until every followed training's answer is written (tests)."""
        await self.trainings.wait(timeout)

    @lora.command(name="cancel", description=text("Stop a training", "lora_cmd.cmd.cancel"))
    @app_commands.describe(name=text("The LoRA being trained", "lora_cmd.cmd.lora_name"))
    async def cancel(self, interaction: discord.Interaction, name: app_commands.Range[str, 1, 64]) -> None:
        who = caller(interaction)
        manage = await can_manage(interaction, who)
        record = await asyncio.to_thread(self.loras.cancel, who.scope, name, can_manage=manage)
        await send(interaction, who.t("lora_cmd.cancelled", name=record.name))

    async def cancel_clicked(self, interaction: discord.Interaction, lora_id: str) -> None:
        who = caller(interaction)
        try:
            manage = await can_manage(interaction, who)

            def cancel() -> LoraRecord | None:
                record = self._lora_by_id(who, lora_id)
                return None if record is None else self.loras.cancel(who.scope, record.name, can_manage=manage)

            record = await asyncio.to_thread(cancel)
            if record is None:
                await send(interaction, who.t("lora_cmd.stale"))
            else:
                await send(interaction, who.t("lora_cmd.cancelled", name=record.name))
        except Exception as error:  # noqa: BLE001 - a refusal (not yours, not training) or a fault: answered
            await report_error(interaction, error)

    def _lora_by_id(self, who: Caller, lora_id: str) -> LoraRecord | None:
        """A LoRA of the CLICKING member's namespace, by its public id (another server's is not there)."""
        return next((r for r in self.loras.list(who.scope) if r.public_id == lora_id), None)

    def _dataset_by_id(self, who: Caller, dataset_id: str) -> DatasetRecord | None:
        return next((d for d in self.datasets.list(who.scope) if d.public_id == dataset_id), None)

    # ================================================================== looking
    @lora.command(name="list", description=text("This server's LoRAs", "lora_cmd.cmd.list"))
    async def list_(self, interaction: discord.Interaction) -> None:
        who = caller(interaction)

        def read() -> tuple[list[LoraRecord], list[str]]:
            records = self.loras.list(who.scope)
            own = {r.name.casefold() for r in records}
            folder = [n for n in self.loras.names(who.scope, limit=100) if n.casefold() not in own]
            return records, folder

        records, folder = await asyncio.to_thread(read)
        await send(interaction, embed=list_embed(who, records, folder))

    @lora.command(name="info", description=text("A LoRA's settings, progress and before/after samples",
                                                "lora_cmd.cmd.info"))
    @app_commands.describe(name=text("The LoRA", "lora_cmd.cmd.lora_name"))
    async def info(self, interaction: discord.Interaction, name: app_commands.Range[str, 1, 64]) -> None:
        who = caller(interaction)
        details = await asyncio.to_thread(self.loras.info, who.scope, name)
        fields: dict[str, Any] = {}
        image_name = None
        if details.before is not None and details.after is not None:
            labels = (who.t("lora_cmd.before"), who.t("lora_cmd.after"))
            with contextlib.suppress(OSError, ValueError):
                data = await asyncio.to_thread(before_after_png, details.before, details.after, labels=labels)
                upload = await asyncio.to_thread(fit_image, f"{details.lora.name}-before-after.png", data,
                                                 interaction.filesize_limit)
                image_name = upload.filename
                fields["file"] = discord.File(io.BytesIO(upload.data), filename=upload.filename)
        await send(interaction, embed=info_embed(who, details, image_name), **fields)

    # ================================================================== deleting
    @lora.command(name="delete", description=text("Delete a LoRA of this server (asks first)", "lora_cmd.cmd.delete"))
    @app_commands.describe(name=text("The LoRA", "lora_cmd.cmd.lora_name"))
    async def delete(self, interaction: discord.Interaction, name: app_commands.Range[str, 1, 64]) -> None:
        who = caller(interaction)
        if not may_manage(who.scope, await can_manage(interaction, who)):
            raise ServerLoraError("server_lora.not_allowed")
        record = await asyncio.to_thread(self.loras.get, who.scope, name)
        await send(interaction, who.t("lora_cmd.confirm_delete", name=record.name,
                                      status=status_label(who, record.status)),
                   view=confirm_view(who, "l", record.public_id))

    async def delete_confirmed(self, interaction: discord.Interaction, kind: str, ref: str, user_id: int) -> None:
        who = caller(interaction)
        if who.user_id != user_id:
            await send(interaction, who.t("lora_cmd.not_your_button"))
            return
        try:
            manage = await can_manage(interaction, who)

            def delete() -> str | None:
                if kind == "l":
                    lora = self._lora_by_id(who, ref)
                    if lora is None:
                        return None
                    self.loras.delete(who.scope, lora.name, can_manage=manage)
                    return who.t("lora_cmd.deleted", name=lora.name)
                dataset = self._dataset_by_id(who, ref)
                if dataset is None:
                    return None
                deleted = self.datasets.delete(who.scope, dataset.name, can_manage=manage)
                return who.t("lora_cmd.dataset.deleted", name=deleted.name, count=deleted.image_count)

            answer = await asyncio.to_thread(delete)
            await interaction.response.edit_message(content=answer or who.t("lora_cmd.stale"), view=None)
        except Exception as error:  # noqa: BLE001 - a refusal (rights) or a fault: answered
            await report_error(interaction, error)

    # ================================================================== files
    @lora.command(name="export", description=text("Download a LoRA's .safetensors file", "lora_cmd.cmd.export"))
    @app_commands.describe(name=text("The LoRA", "lora_cmd.cmd.lora_name"),
                           kohya=text("kohya key names, for AUTOMATIC1111 and ComfyUI", "lora_cmd.cmd.export.kohya"))
    async def export(self, interaction: discord.Interaction, name: app_commands.Range[str, 1, 64],
                     kohya: bool = False) -> None:
        who = caller(interaction)
        await interaction.response.defer(ephemeral=True, thinking=True)
        export = await asyncio.to_thread(self.loras.export, who.scope, name, kohya=kohya)
        limit = interaction.filesize_limit
        if export.size > limit:
            await interaction.followup.send(who.t("lora_cmd.export.too_large", filename=export.filename,
                                                  size=size_text(export.size), limit=size_text(limit), name=name),
                                            ephemeral=True)
            return
        await interaction.followup.send(
            who.t("lora_cmd.export.done", filename=export.filename, size=size_text(export.size),
                  format=who.t("lora_cmd.export.kohya" if export.format == "kohya"
                               else "lora_cmd.export.diffusers")),
            file=discord.File(export.path, filename=export.filename), ephemeral=True)

    @lora.command(name="import", description=text("Add an existing .safetensors LoRA", "lora_cmd.cmd.import"))
    @app_commands.describe(
        file=text("The LoRA's .safetensors file (pickles are refused)", "lora_cmd.cmd.import.file"),
        name=text("Its name here (default: the file's)", "lora_cmd.cmd.import.name"),
        base_model=text("The model it is trained for", "lora_cmd.cmd.base_model"),
    )
    async def import_(self, interaction: discord.Interaction, file: discord.Attachment,
                      name: app_commands.Range[str, 1, 64] | None = None,
                      base_model: app_commands.Range[str, 1, 64] | None = None) -> None:
        who = caller(interaction)
        manage = await can_manage(interaction, who)
        if not may_manage(who.scope, manage):
            raise ServerLoraError("server_lora.not_allowed")
        # The name and the announced size, before a byte is downloaded.
        await asyncio.to_thread(self.loras.check_import_size, file.filename, file.size)
        await interaction.response.defer(ephemeral=True, thinking=True)
        data = await file.read()
        record = await asyncio.to_thread(self.loras.import_lora, who.scope, file.filename, data, name=name,
                                         model=base_model, can_manage=manage)
        await interaction.followup.send(
            "\n".join([who.t("lora_cmd.imported", name=record.name, rank=record.rank, model=record.base_model,
                             hash=record.short_hash or "—"), usage_hint(who, record)]), ephemeral=True)

    # ================================================================== the server's settings
    @lora.command(name="config", description=text("Manage Server: who may train, and folder LoRAs",
                                                  "lora_cmd.cmd.config"))
    @app_commands.describe(
        trainer_role=text("Members with this role may train, import and delete", "lora_cmd.cmd.config.trainer_role"),
        no_trainer_role=text("Remove the trainer role (Manage Server only)", "lora_cmd.cmd.config.no_trainer_role"),
        folder_loras=text("Allow the bot's own LoRA files here", "lora_cmd.cmd.config.folder_loras"),
    )
    async def config(self, interaction: discord.Interaction, trainer_role: discord.Role | None = None,
                     no_trainer_role: bool = False, folder_loras: bool | None = None) -> None:
        who = caller(interaction)
        guild = check_manage_guild(who.manage_guild, who.guild_id)  # checked on every call
        loras, preferences = self.loras, self.bot.container.preferences

        def save() -> str:
            if no_trainer_role:
                loras.set_trainer_role(guild, None)
            elif trainer_role is not None:
                loras.set_trainer_role(guild, trainer_role.id)
            if folder_loras is not None:
                loras.set_folder_loras(guild, folder_loras)
            record = preferences.guild_settings(guild)
            changed = no_trainer_role or trainer_role is not None or folder_loras is not None
            role = who.t("lora_cmd.config.role", role=f"<@&{record.trainer_role_id}>") if record.trainer_role_id \
                else who.t("lora_cmd.config.no_role")
            folder = who.t("lora_cmd.config.folder_on" if record.folder_loras else "lora_cmd.config.folder_off")
            heading = who.t("lora_cmd.config.saved" if changed else "lora_cmd.config.title")
            return "\n".join([heading, role, folder])

        await send(interaction, await asyncio.to_thread(save), allowed_mentions=NO_MENTIONS)

    # ================================================================== buttons and the form
    async def caption_clicked(self, interaction: discord.Interaction, dataset_id: str, image_id: str) -> None:
        who = caller(interaction)
        try:
            manage = await can_manage(interaction, who)

            def target() -> tuple[DatasetRecord, int, DatasetImageRecord] | None:
                dataset = self._dataset_by_id(who, dataset_id)
                if dataset is None:
                    return None
                return self._caption_target(who, manage, dataset.name, image_id)

            found = await asyncio.to_thread(target)
            if found is None:
                await send(interaction, who.t("lora_cmd.stale"))
                return
            await interaction.response.send_modal(CaptionModal(who, *found))
        except Exception as error:  # noqa: BLE001 - not yours, image gone, or a fault: answered
            await report_error(interaction, error)

    @commands.Cog.listener()
    async def on_interaction(self, interaction: discord.Interaction) -> None:
        if interaction.type is not discord.InteractionType.modal_submit:
            return
        match = CAPTION_MODAL.fullmatch(str((interaction.data or {}).get("custom_id", "")))
        if match is None:
            return
        who = caller(interaction)
        try:
            manage = await can_manage(interaction, who)
            caption = modal_values(interaction.data).get(CAPTION_INPUT_ID, "").strip() or None

            def save() -> str | None:
                dataset = self._dataset_by_id(who, match["dataset"])
                if dataset is None:
                    return None
                return self._set_caption(who, manage, dataset.name, match["image"], caption)

            answer = await asyncio.to_thread(save)
            await send(interaction, answer or who.t("lora_cmd.stale"), allowed_mentions=NO_MENTIONS)
        except Exception as error:  # noqa: BLE001 - answered, never "interaction failed"
            await report_error(interaction, error)

    # ================================================================== autocomplete
    async def _dataset_names(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        who = caller(interaction)
        try:
            records = await asyncio.to_thread(self.datasets.list, who.scope)
        except BrushworkError:
            return []
        return choices([r.name for r in records], current)

    async def _lora_names(self, interaction: discord.Interaction, current: str,
                          statuses: tuple[LoraStatus, ...] | None = None) -> list[app_commands.Choice[str]]:
        """This namespace's own LoRAs (what can be inspected, exported, cancelled or deleted here)."""
        who = caller(interaction)
        records = await asyncio.to_thread(self.loras.list, who.scope)
        return choices([r.name for r in records if statuses is None or r.status in statuses], current)

    async def _image_refs(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        """``#3 · cat.png — a cat on a roof`` for the dataset named in the same command."""
        who = caller(interaction)
        name = str(getattr(interaction.namespace, "name", "") or "")
        try:
            images = await asyncio.to_thread(self.datasets.images, who.scope, name)
        except BrushworkError:
            return []
        typed = (current or "").strip().lstrip("#").casefold()
        out = []
        for number, image in enumerate(images, start=1):
            label = f"#{number} · {image.original_name} — {image.caption or ''}".strip(" —")
            if not typed or str(number).startswith(typed) or typed in label.casefold():
                out.append(app_commands.Choice(name=label[:100], value=str(number)))
        return out[:CHOICES]

    async def _model_names(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return choices(self.bot.container.registry.names(), current)

    @dataset_add.autocomplete("name")
    async def _add_name(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return await self._dataset_names(interaction, current)

    @dataset_show.autocomplete("name")
    async def _show_name(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return await self._dataset_names(interaction, current)

    @dataset_caption.autocomplete("name")
    async def _caption_name(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return await self._dataset_names(interaction, current)

    @dataset_caption.autocomplete("image")
    async def _caption_image(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return await self._image_refs(interaction, current)

    @dataset_remove.autocomplete("name")
    async def _remove_name(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return await self._dataset_names(interaction, current)

    @dataset_remove.autocomplete("image")
    async def _remove_image(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return await self._image_refs(interaction, current)

    @dataset_delete.autocomplete("name")
    async def _delete_dataset_name(self, interaction: discord.Interaction,
                                   current: str) -> list[app_commands.Choice[str]]:
        return await self._dataset_names(interaction, current)

    @train.autocomplete("dataset")
    async def _train_dataset(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return await self._dataset_names(interaction, current)

    @train.autocomplete("base_model")
    async def _train_model(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return await self._model_names(interaction, current)

    @import_.autocomplete("base_model")
    async def _import_model(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return await self._model_names(interaction, current)

    @cancel.autocomplete("name")
    async def _cancel_name(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return await self._lora_names(interaction, current, (LoraStatus.TRAINING,))

    @info.autocomplete("name")
    async def _info_name(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return await self._lora_names(interaction, current)

    @delete.autocomplete("name")
    async def _delete_name(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return await self._lora_names(interaction, current)

    @export.autocomplete("name")
    async def _export_name(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return await self._lora_names(interaction, current, (LoraStatus.READY,))


async def setup(bot: BrushworkBot) -> None:
    bot.add_dynamic_items(CancelTrainingButton, ConfirmDeleteButton, KeepButton, CaptionButton)
    await bot.add_cog(Lora(bot))

"""Following a training: its message edited with the queue position, then step, loss, ETA and
the newest sample image, then the announcement (or the error, or "cancelled")."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import discord

from bot.attachments import fit_image
from bot.discord_app.cogs.lora.texts import MAX_CONTENT, TrainingHead, plain, progress_line
from bot.discord_app.cogs.lora.views import cancel_view
from bot.discord_app.delivery import ReplyRef, ThrottledEditor
from bot.discord_app.follow import NO_MENTIONS, Outbox, follow_events
from bot.lora_services import before_after_png
from bot.texts import clip, duration
from generation.i18n import translate
from generation.queue import JobCancelled, JobDone, JobFailed, JobProgress, JobQueued, JobRequeued, JobStarted

if TYPE_CHECKING:
    from bot.discord_app.client import BrushworkBot


log = logging.getLogger("brushwork.discord.lora")
REF_VERSION = "lora1"  # a training's reply reference (the /imagine follower only takes its own, v 1)


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
        return clip("\n".join([self.head.text(self.locale, self.ref.user), *[line for line in lines if line]]), MAX_CONTENT)

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

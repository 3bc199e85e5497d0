"""The ``/lora`` messages: texts and embeds in the user's language, built from records (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands

from bot.discord_app.context import Caller
from bot.lora_services import AddResult, Refusal
from bot.texts import clip, complete, duration, progress_bar
from generation.i18n import translate
from generation.queue import JobProgress
from storage.ids import is_public_id, normalize_public_id
from storage.records import LoraStatus

if TYPE_CHECKING:
    from bot.lora_services import DatasetSheet, LoraDetails, TrainingStarted
    from storage.records import DatasetImageRecord, DatasetRecord, LoraRecord


MAX_CONTENT = 2000
MAX_EMBED = 4096
CAPTION_BUTTONS = 20  # ✏️ buttons under a contact sheet (4 rows of 5; more images: /lora dataset caption)
CHOICES = 25  # Discord's autocomplete limit




def plain(value: str | None, limit: int = 200) -> str:
    """User text shown in a message: one line, no markdown, no pings."""
    value = discord.utils.escape_markdown(" ".join((value or "").split()))
    value = value.replace("@", "@\u200b")
    return clip(value, limit)


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
    return clip("\n".join(lines), MAX_CONTENT)


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
    return [app_commands.Choice(name=n[:100], value=n[:100]) for n in complete(names, typed, limit=CHOICES)]

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
def progress_line(event: JobProgress, locale: str) -> str:
    detail = dict(event.detail or {})
    loss = detail.get("loss_ema", detail.get("loss"))
    eta = event.eta_s if event.eta_s is not None else detail.get("eta_s")
    return translate("lora_cmd.train.progress", locale, step=event.step, total=event.total,
                     bar=progress_bar(event.step, event.total),
                     loss=f"{loss:.4f}" if isinstance(loss, (int, float)) else "—", eta=duration(eta, locale))

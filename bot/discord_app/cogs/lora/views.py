"""The ``/lora`` buttons (``DynamicItem``s: they work on messages from before a restart), the caption
form and the views that carry them; a click hands over to one method of the cog."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import discord

from bot.discord_app.cogs.lora.texts import CAPTION_BUTTONS
from bot.discord_app.context import Caller, caller, send
from bot.lora_services import MAX_CAPTION_CHARS
from generation.i18n import translate
from storage.ids import ALPHABET

if TYPE_CHECKING:
    from bot.discord_app.cogs.lora.cog import Lora
    from bot.lora_services import DatasetSheet
    from storage.records import DatasetImageRecord, DatasetRecord


PREFIX = "bwl1"  # custom ids of this cog's buttons and form (≤ 100 characters)
_ID = f"[{ALPHABET}]{{8}}"
CAPTION_MODAL = re.compile(rf"{PREFIX}:m:(?P<dataset>{_ID}):(?P<image>{_ID})")
CAPTION_INPUT_ID = f"{PREFIX}:m:caption"
MAX_CAPTION = MAX_CAPTION_CHARS  # what the service accepts, enforced by Discord's client too


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
    from bot.discord_app.cogs.lora.cog import Lora

    cog = interaction.client.get_cog(Lora.__cog_name__)  # type: ignore[attr-defined]
    assert isinstance(cog, Lora)
    return cog

"""Buttons and the Remix modal that survive restarts.

Every button is a :class:`ResultButton`: a ``DynamicItem`` whose short, versioned custom id
carries what it acts on — ``bw1:<action>:<id>`` — so it works on any message, before or after a
restart, with nothing kept in memory.  The ids are visible to clients: every callback goes
through :class:`~bot.discord_app.actions.Actions`, which re-checks the caller's server and user
through the services.

=======  ==========  =========================================================
action   id          does
=======  ==========  =========================================================
``u``    image       U1–U4: upscale that image
``v``    image       V1–V4: vary it
``r``    job         🔁 reroll the job (same settings, new seeds, as many)
``x``    job         ✏️ Remix: a modal with the prompt and flags (seed kept)
``i``    job         ℹ️ Info: the full settings, A1111 infotext and Python code
``c``    job         ✖ cancel while queued or running
``d``    job         🗑 delete (the requester, or Manage Messages)
=======  ==========  =========================================================

The Remix modal's custom id is ``bw1:m:<image>``; its submission is handled by the bot's
``on_interaction`` listener (modals cannot be templates), so that works after a restart too.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import discord

from generation.i18n import translate
from generation.request import IMAGE_SCALE

if TYPE_CHECKING:
    from bot.chat import RemixForm
    from storage.records import ImageRecord

VERSION = "bw1"
ACTIONS = "uvrxicd"
REMIX_MODAL = re.compile(rf"{VERSION}:m:(?P<image>[0-9a-z]{{8}})")
REMIX_PROMPT_ID = f"{VERSION}:m:prompt"
REMIX_FLAGS_ID = f"{VERSION}:m:flags"


def custom_id(action: str, ref: str) -> str:
    return f"{VERSION}:{action}:{ref}"


class ResultButton(discord.ui.DynamicItem[discord.ui.Button], template=rf"{VERSION}:(?P<action>[{ACTIONS}]):(?P<ref>[0-9a-z]{{8}})"):
    def __init__(self, action: str, ref: str, *, label: str | None = None, emoji: str | None = None,
                 style: discord.ButtonStyle = discord.ButtonStyle.secondary, row: int | None = None) -> None:
        super().__init__(discord.ui.Button(label=label, emoji=emoji, style=style, custom_id=custom_id(action, ref),
                                           row=row))
        self.action = action
        self.ref = ref

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button,
                             match: re.Match[str], /) -> ResultButton:
        return cls(match["action"], match["ref"], label=item.label, emoji=str(item.emoji) if item.emoji else None,
                   style=item.style)

    async def callback(self, interaction: discord.Interaction) -> None:  # type: ignore[override]
        await interaction.client.actions.button(interaction, self.action, self.ref)  # type: ignore[attr-defined]


def status_view(job_id: str, locale: str) -> discord.ui.View:
    """While a job waits or runs: ✖ Cancel."""
    view = discord.ui.View(timeout=None)
    view.add_item(ResultButton("c", job_id, label=translate("imagine.button.cancel", locale), emoji="✖️"))
    return view


def result_view(job_id: str, records: Sequence[ImageRecord], locale: str) -> discord.ui.View:
    """Under the images: U1–U4 (not on upscaled ones), V1–V4 (not on ones that started from a
    picture: a variation seed shapes noise the picture replaced), then 🔁 ✏️ ℹ️ 🗑."""
    view = discord.ui.View(timeout=None)
    upscalable = [(i, r) for i, r in enumerate(records) if _upscalable(r.request or {})]
    for index, record in upscalable:
        view.add_item(ResultButton("u", record.public_id, label=f"U{index + 1}", row=0))
    variable = [(i, r) for i, r in enumerate(records) if not (r.request or {}).get("image")]
    for index, record in variable:
        view.add_item(ResultButton("v", record.public_id, label=f"V{index + 1}", row=1 if upscalable else 0))
    row = sum(1 for buttons in (upscalable, variable) if buttons)

    def t(code: str) -> str:
        return translate(f"imagine.button.{code}", locale)

    view.add_item(ResultButton("r", job_id, label=t("reroll"), emoji="🔁", style=discord.ButtonStyle.primary, row=row))
    view.add_item(ResultButton("x", job_id, label=t("remix"), emoji="✏️", row=row))
    view.add_item(ResultButton("i", job_id, label=t("info"), emoji="ℹ️", row=row))
    view.add_item(ResultButton("d", job_id, label=t("delete"), emoji="🗑️", style=discord.ButtonStyle.danger, row=row))
    return view


def _upscalable(request: dict[str, Any]) -> bool:
    """Not upscaled yet: no hires pass, or only the same-size refine pass of ``--image``."""
    hires = request.get("hires")
    return not hires or (request.get("image") is not None and hires.get("scale") == IMAGE_SCALE)


class RemixModal(discord.ui.Modal):
    """✏️ Remix: the prompt and the flags as they are, the seed kept.

    ``interaction_check`` refuses on purpose: every submission — this process's or one sent
    before a restart — is handled by the same ``on_interaction`` listener (``bw1:m:<image>``).
    """

    def __init__(self, form: RemixForm, locale: str) -> None:
        super().__init__(title=translate("imagine.remix.title", locale)[:45], custom_id=f"{VERSION}:m:{form.image_id}",
                         timeout=15 * 60)
        self.add_item(discord.ui.TextInput(label=translate("imagine.remix.prompt", locale)[:45],
                                           style=discord.TextStyle.paragraph, custom_id=REMIX_PROMPT_ID,
                                           default=form.prompt[:4000], max_length=4000, required=True))
        self.add_item(discord.ui.TextInput(label=translate("imagine.remix.flags", locale)[:45],
                                           style=discord.TextStyle.paragraph, custom_id=REMIX_FLAGS_ID,
                                           default=form.flags[:1000] or None, max_length=1000, required=False))

    async def interaction_check(self, interaction: discord.Interaction, /) -> bool:
        return False


def modal_values(data: Any) -> dict[str, str]:
    """``custom_id -> value`` of a modal submission's text inputs (action rows or labels)."""
    values: dict[str, str] = {}

    def walk(components: Any) -> None:
        for component in components or ():
            if not isinstance(component, dict):
                continue
            if "value" in component and "custom_id" in component:
                values[str(component["custom_id"])] = str(component["value"] or "")
            walk(component.get("components"))
            if isinstance(component.get("component"), dict):
                walk([component["component"]])

    walk((data or {}).get("components"))
    return values


__all__ = ["REMIX_MODAL", "RemixModal", "ResultButton", "custom_id", "modal_values", "result_view", "status_view"]

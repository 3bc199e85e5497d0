"""``/history``: your own images in this server (or in direct messages), newest first, 5 a page.

Ephemeral.  The ◀/▶ buttons are :class:`HistoryButton` ``DynamicItem``s whose custom id carries
the page — ``bwh1:<user>:<anchor image>:<page>`` (see :mod:`bot.history`) — so they work after
a restart.  The ids are visible to clients: a click is re-checked (only the user in the id may
turn its pages) and the scope always comes from the interaction, never from the id.
"""

from __future__ import annotations

import asyncio
import io
import re
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.discord_app.context import caller, report_error, send
from bot.discord_app.translator import text
from bot.history import HistoryPage, HistoryService, message_link
from bot.texts import clip

if TYPE_CHECKING:
    from bot.discord_app.client import BrushworkBot
    from bot.discord_app.context import Caller
    from storage.records import ImageRecord

PREFIX = "bwh1"
PROMPT_SHOWN = 80
STRIP_NAME = "history.jpg"


def custom_id(user_id: int, anchor: str, page: int) -> str:
    return f"{PREFIX}:{user_id}:{anchor}:{page}"


def entry_text(who: Caller, number: int, record: ImageRecord) -> str:
    prompt = clip(record.prompt.replace("\n", " ").replace("`", "'"), PROMPT_SHOWN)
    when = f"<t:{int(record.created_at.timestamp())}:R>"
    link = message_link(record)
    details = who.t("history.entry.details", seed=record.seed, size=f"{record.width}×{record.height}",
                    model=record.model)
    line = f"**{number}.** `{record.public_id}` · {when}\n> {prompt or '—'}\n{details}"
    if link:
        line += f" · [{who.t('history.entry.link')}]({link})"
    return line


async def page_reply(history: HistoryService, who: Caller, page: HistoryPage) -> dict[str, Any]:
    """The page as message fields: the embed (with the page's contact strip as its image when
    there are images), the ◀/▶ view, and the strip's file (``attachments``: an edit replaces
    the previous page's strip)."""
    strip = await asyncio.to_thread(history.strip, page)
    embed = page_embed(who, page)
    files = []
    if strip is not None:
        files.append(discord.File(io.BytesIO(strip), filename=STRIP_NAME))
        embed.set_image(url=f"attachment://{STRIP_NAME}")
    return {"embed": embed, "view": page_view(who, page), "attachments": files}


def page_embed(who: Caller, page: HistoryPage) -> discord.Embed:
    title = who.t("history.title.dm" if who.in_dm else "history.title.server")
    if not page.entries:
        return discord.Embed(title=title, description=who.t("history.empty"), colour=discord.Colour.blurple())
    lines = [entry_text(who, page.first_number + i, record) for i, record in enumerate(page.entries)]
    if page.restarted:
        lines.insert(0, who.t("history.restarted"))
    embed = discord.Embed(title=title, description="\n\n".join(lines)[:4096], colour=discord.Colour.blurple())
    embed.set_footer(text=who.t("history.footer", page=page.page + 1))
    return embed


def page_view(who: Caller, page: HistoryPage) -> discord.ui.View | None:
    if page.anchor is None or not (page.has_prev or page.has_next):
        return None
    view = discord.ui.View(timeout=None)
    view.add_item(HistoryButton(who.user_id, page.anchor, max(0, page.page - 1), label=who.t("history.prev"),
                                disabled=not page.has_prev))
    view.add_item(HistoryButton(who.user_id, page.anchor, page.page + 1, label=who.t("history.next"),
                                disabled=not page.has_next))
    return view


class HistoryButton(discord.ui.DynamicItem[discord.ui.Button],
                    template=rf"{PREFIX}:(?P<user>[0-9]{{1,20}}):(?P<anchor>[0-9a-z]{{8}}):(?P<page>[0-9]{{1,5}})"):
    def __init__(self, user_id: int, anchor: str, page: int, *, label: str | None = None,
                 disabled: bool = False) -> None:
        super().__init__(discord.ui.Button(label=label, style=discord.ButtonStyle.secondary, disabled=disabled,
                                           custom_id=custom_id(user_id, anchor, page)))
        self.user_id, self.anchor, self.page = user_id, anchor, page

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button,
                             match: re.Match[str], /) -> HistoryButton:
        return cls(int(match["user"]), match["anchor"], int(match["page"]), label=item.label)

    async def callback(self, interaction: discord.Interaction) -> None:  # type: ignore[override]
        who = caller(interaction)
        try:
            if who.user_id != self.user_id:
                await send(interaction, who.t("history.not_yours"))
                return
            history = interaction.client.container.history  # type: ignore[attr-defined]
            page = await asyncio.to_thread(history.page, who.scope, anchor=self.anchor, page=self.page)
            await interaction.response.edit_message(**await page_reply(history, who, page))
        except Exception as error:  # noqa: BLE001 - the one place that answers: never "interaction failed"
            await report_error(interaction, error)


class History(commands.Cog):
    def __init__(self, bot: BrushworkBot) -> None:
        self.bot = bot

    @app_commands.command(name="history", description=text("Your recent images here, newest first",
                                                           "history.cmd"))
    async def history(self, interaction: discord.Interaction) -> None:
        who = caller(interaction)
        history = self.bot.container.history
        page = await asyncio.to_thread(history.page, who.scope)
        reply = await page_reply(history, who, page)
        fields: dict[str, Any] = {"embed": reply["embed"]}
        if reply["attachments"]:
            fields["files"] = reply["attachments"]
        if reply["view"] is not None:
            fields["view"] = reply["view"]
        await send(interaction, **fields)


async def setup(bot: BrushworkBot) -> None:
    bot.add_dynamic_items(HistoryButton)
    await bot.add_cog(History(bot))

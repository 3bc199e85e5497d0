"""Reactions on result messages: 🔁 reroll, ⬆️ upscale, 🔀 vary; 1️⃣–4️⃣ pick the image of a multi-image
result.  Raw events (``on_raw_reaction_add``) need no message content intent and work on
messages that are not cached (older ones, or posted before a restart)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord.ext import commands

if TYPE_CHECKING:
    from bot.discord_app.client import BrushworkBot


class Reactions(commands.Cog):
    def __init__(self, bot: BrushworkBot) -> None:
        self.bot = bot

    @commands.Cog.listener()
    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        await self.bot.actions.reaction(payload)


async def setup(bot: BrushworkBot) -> None:
    await bot.add_cog(Reactions(bot))

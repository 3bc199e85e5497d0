"""``/compare prompt vary values [vary2 values2]``: one fixed seed, one parameter (or two) varied,
a labelled X/Y grid — so people *see* what CFG, steps or a sampler do.

The cog only parses: :meth:`bot.chat.ChatService.prepare_compare` plans and checks it (the
channel allow-list, the server's models and safety policy, the request, the axes, the queue's
admission), and :meth:`bot.discord_app.actions.Actions.start` does the rest exactly as for
``/imagine`` — the permission check, the acknowledgement thread pool, the job stored before its
public acknowledgement, ONE job in the shared queue (:func:`bot.jobs.compare_submission`), and
its follower (:class:`bot.discord_app.compare_follow.CompareFollower`: status edits with ✖
Cancel, the labelled grid at the end, the channel and then a direct message when the token has
expired or the channel refuses, restarts).  Each cell is an ordinary stored image (``/info``,
``/tweak`` and the history know it); the grid is derived and not stored.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.discord_app.context import caller
from bot.discord_app.translator import text

if TYPE_CHECKING:
    from bot.discord_app.client import BrushworkBot

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


class Compare(commands.Cog):
    def __init__(self, bot: BrushworkBot) -> None:
        self.bot = bot

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
        chat = self.bot.container.chat
        await self.bot.actions.start(interaction, lambda origin: chat.prepare_compare(
            origin, prompt, vary.value, values, vary2=vary2.value if vary2 else None, values2=values2))

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


async def setup(bot: BrushworkBot) -> None:
    await bot.add_cog(Compare(bot))

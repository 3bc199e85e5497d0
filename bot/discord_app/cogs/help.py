"""``/help [topic]``: the tutorial — what each parameter does, good ranges, examples — in the
user's language.  Without a topic: the introduction, the topics, quick examples and every flag.
The texts are :mod:`bot.help_text`'s (``bot/locales/*/help.json`` and ``help_cmd.json``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot import help_text
from bot.discord_app.context import caller, send
from bot.discord_app.translator import text

if TYPE_CHECKING:
    from bot.discord_app.client import BrushworkBot

#: English choice names (the catalogue gives the others: ``help_cmd.choice.<topic>``).
CHOICE_NAMES = {
    "prompt": "Prompt",
    "negative": "Negative prompt (--no)",
    "sampler": "Sampler (--sampler)",
    "steps": "Steps (--steps)",
    "cfg": "CFG scale (--cfg)",
    "seed": "Seed (--seed)",
    "size": "Size and aspect ratio (--ar, --size)",
    "hires": "Hires fix (--hires, --strength)",
    "image": "Start from an image (--image)",
    "variation": "Variations (--vary-seed, --chaos)",
    "lora": "LoRA styles (--lora)",
    "examples": "Examples",
    "code": "The code behind it",
    "flags": "Every flag, with its range",
    "compare": "See what a parameter does (/compare)",
}
TOPIC_CHOICES = [app_commands.Choice(name=text(CHOICE_NAMES[topic], f"help_cmd.choice.{topic}"), value=topic)
                 for topic in help_text.TOPICS]


def section_embed(section: help_text.Section) -> discord.Embed:
    embed = discord.Embed(title=section.title, description=section.description, colour=discord.Colour.blurple())
    for name, value in section.fields:
        embed.add_field(name=name, value=value, inline=False)
    if section.footer:
        embed.set_footer(text=section.footer)
    return embed


class Help(commands.Cog):
    def __init__(self, bot: BrushworkBot) -> None:
        self.bot = bot

    @app_commands.command(name="help", description=text("How to get the image you want: parameters, ranges, examples",
                                                        "help_cmd.cmd"))
    @app_commands.describe(topic=text("One parameter or subject, explained with examples", "help_cmd.cmd.topic"))
    @app_commands.choices(topic=TOPIC_CHOICES)
    async def help(self, interaction: discord.Interaction, topic: app_commands.Choice[str] | None = None) -> None:
        who = caller(interaction)
        section = help_text.topic(topic.value, who.locale) if topic is not None else help_text.overview(who.locale)
        await send(interaction, embed=section_embed(section))


async def setup(bot: BrushworkBot) -> None:
    await bot.add_cog(Help(bot))

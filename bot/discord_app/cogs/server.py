"""``/server settings …``: a server's Brushwork settings, for members with Manage Server.

``default_member_permissions`` (Manage Server) only hides the commands by default — server
admins can change who sees them — so every call checks the caller's Manage Server permission
again (:func:`bot.preferences.check_manage_guild`), in the server the interaction comes from:
ids typed or carried by the interaction never select another server.  Every change answers,
ephemerally, with what was saved.

==============  ==================================================================
subcommand      what it sets
==============  ==================================================================
``show``        everything below, at once
``defaults``    default flags for everyone here (under each member's own /settings)
``models``      the models allowed here (comma-separated; ``all`` = every model)
``limits``      queued jobs per member / per server, daily images / GPU-seconds
``channels``    the channels where images may be made (none listed = every channel)
``safety``      banned words, a forced negative prompt, the image classifier
==============  ==================================================================
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.discord_app.context import caller, send
from bot.discord_app.translator import text
from bot.guild_policy import allowed_channels, channel_mentions, safety_policy
from bot.preferences import LIMIT_OPTIONS, MAX_DEFAULTS_LENGTH, LimitValue, check_manage_guild
from bot.texts import clip, complete_last
from generation.request import format_number

if TYPE_CHECKING:
    from bot.discord_app.client import BrushworkBot
    from bot.discord_app.context import Caller
    from bot.preferences import PreferencesService
    from generation.safety import SafetyPolicy
    from storage.records import GuildSettingsRecord

Translate = Callable[..., str]
FIELD_LIMIT = 1024
WORDS_SHOWN = 60


def render_defaults(t: Translate, record: GuildSettingsRecord) -> str:
    return f"`{record.defaults}`" if record.defaults else t("server.show.no_defaults")


def render_models(t: Translate, record: GuildSettingsRecord) -> str:
    if record.allowed_models is None:
        return t("server.show.all_models")
    return ", ".join(f"`{name}`" for name in record.allowed_models) or t("server.show.no_models")


def _amount(value: int | float | None, t: Translate) -> str:
    return t("server.show.unlimited") if value is None else format_number(value)


def render_limits(t: Translate, values: list[LimitValue]) -> str:
    lines = []
    for value in values:
        name = f"`{LIMIT_OPTIONS[value.key]}`"
        if value.own is not None:
            lines.append(t("server.show.limit_own", name=name, value=_amount(value.own, t),
                           operator=_amount(value.operator, t)))
        else:
            lines.append(t("server.show.limit_default", name=name, value=_amount(value.operator, t)))
    return "\n".join(lines)


def render_channels(t: Translate, record: GuildSettingsRecord) -> str:
    ids = allowed_channels(record)
    return ", ".join(channel_mentions(ids)) if ids else t("server.show.all_channels")


def render_safety(t: Translate, policy: SafetyPolicy, classifier_configured: bool) -> str:
    words = policy.banned_words
    if words:
        shown = ", ".join(f"`{w}`" for w in words[:WORDS_SHOWN])
        more = t("server.show.more", count=len(words) - WORDS_SHOWN) if len(words) > WORDS_SHOWN else ""
        banned = t("server.show.banned", count=len(words), words=shown + more)
    else:
        banned = t("server.show.no_banned")
    negative = (t("server.show.negative", negative=f"`{policy.forced_negative}`") if policy.forced_negative
                else t("server.show.no_negative"))
    if policy.classify_images:
        classifier = t("server.show.classifier_on" if classifier_configured else "server.show.classifier_missing")
    else:
        classifier = t("server.show.classifier_off")
    return clip("\n".join([banned, negative, classifier, t("server.show.safety_scope")]), FIELD_LIMIT)


def settings_embed(who: Caller, record: GuildSettingsRecord, preferences: PreferencesService) -> discord.Embed:
    t = who.t
    embed = discord.Embed(title=t("server.show.title"), colour=discord.Colour.blurple())
    limits = render_limits(t, preferences.limit_values(record))
    embed.add_field(name=t("server.show.defaults"), value=clip(render_defaults(t, record), FIELD_LIMIT),
                    inline=False)
    embed.add_field(name=t("server.show.models"), value=clip(render_models(t, record), FIELD_LIMIT), inline=False)
    embed.add_field(name=t("server.show.limits"), value=clip(limits, FIELD_LIMIT), inline=False)
    embed.add_field(name=t("server.show.channels"), value=clip(render_channels(t, record), FIELD_LIMIT),
                    inline=False)
    embed.add_field(name=t("server.show.safety"),
                    value=render_safety(t, safety_policy(record), preferences.classifier_configured), inline=False)
    embed.set_footer(text=t("server.show.footer"))
    return embed


class Server(commands.Cog):
    server = app_commands.Group(name="server", description=text("This server's Brushwork settings", "server.cmd"),
                                guild_only=True, default_permissions=discord.Permissions(manage_guild=True))
    settings = app_commands.Group(name="settings", parent=server,
                                  description=text("View and change this server's Brushwork settings",
                                                   "server.cmd.settings"))

    def __init__(self, bot: BrushworkBot) -> None:
        self.bot = bot

    @property
    def preferences(self) -> PreferencesService:
        return self.bot.container.preferences

    @staticmethod
    def _manager(interaction: discord.Interaction) -> tuple[Caller, int]:
        """The caller and the server, if they may manage it (checked on every call)."""
        who = caller(interaction)
        return who, check_manage_guild(who.manage_guild, who.guild_id)

    async def _saved(self, interaction: discord.Interaction, who: Caller, heading: str, body: str) -> None:
        await send(interaction, clip(f"✅ {who.t(heading)}\n{body}", 2000))

    # ------------------------------------------------------------------ show
    @settings.command(name="show", description=text("Show every Brushwork setting of this server",
                                                    "server.cmd.show"))
    async def show(self, interaction: discord.Interaction) -> None:
        who, guild = self._manager(interaction)
        preferences = self.preferences
        record = await asyncio.to_thread(preferences.guild_settings, guild)
        await send(interaction, embed=settings_embed(who, record, preferences))

    # ------------------------------------------------------------------ defaults
    @settings.command(name="defaults", description=text("Default flags for everyone in this server",
                                                        "server.cmd.defaults"))
    @app_commands.describe(flags=text("Flags only, e.g. --steps 28 --no blurry; 'none' removes them",
                                      "server.cmd.defaults.flags"))
    async def defaults(self, interaction: discord.Interaction,
                       flags: app_commands.Range[str, 1, MAX_DEFAULTS_LENGTH]) -> None:
        who, guild = self._manager(interaction)
        record = await asyncio.to_thread(self.preferences.set_guild_defaults, guild, flags)
        await self._saved(interaction, who, "server.saved.defaults", render_defaults(who.t, record))

    # ------------------------------------------------------------------ models
    @settings.command(name="models", description=text("The models this server may use", "server.cmd.models"))
    @app_commands.describe(names=text("Model names separated by commas, or 'all' for every model",
                                      "server.cmd.models.names"))
    async def models(self, interaction: discord.Interaction, names: app_commands.Range[str, 1, 1000]) -> None:
        who, guild = self._manager(interaction)
        record = await asyncio.to_thread(self.preferences.set_guild_models, guild, names)
        await self._saved(interaction, who, "server.saved.models", render_models(who.t, record))

    @models.autocomplete("names")
    async def _model_names(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        """Completes the last name of a comma-separated list from the model registry."""
        names = ["all", *self.bot.container.registry.names()]
        values = complete_last(current, names, exclusive=("all",))
        return [app_commands.Choice(name=value, value=value) for value in values]

    # ------------------------------------------------------------------ limits
    @settings.command(name="limits", description=text("Queue caps and daily quotas for this server",
                                                      "server.cmd.limits"))
    @app_commands.describe(
        per_user=text("Jobs one member may have waiting or running", "server.cmd.limits.per_user"),
        per_server=text("Jobs this server may have waiting or running", "server.cmd.limits.per_server"),
        daily_images=text("Images per UTC day for this server; 0 removes the server's quota",
                          "server.cmd.limits.daily_images"),
        daily_gpu_seconds=text("GPU-seconds per UTC day for this server; 0 removes the server's quota",
                               "server.cmd.limits.daily_gpu_seconds"),
        reset=text("Forget this server's own limits (the bot's defaults apply)", "server.cmd.limits.reset"),
    )
    async def limits(
        self,
        interaction: discord.Interaction,
        per_user: app_commands.Range[int, 1, 1_000] | None = None,
        per_server: app_commands.Range[int, 1, 10_000] | None = None,
        daily_images: app_commands.Range[int, 0, 1_000_000] | None = None,
        daily_gpu_seconds: app_commands.Range[int, 0, 10_000_000] | None = None,
        reset: bool = False,
    ) -> None:
        who, guild = self._manager(interaction)
        preferences = self.preferences

        def save() -> str:
            record = preferences.set_guild_limits(guild, queued_per_user=per_user, queued_per_guild=per_server,
                                                  daily_images=daily_images, daily_gpu_seconds=daily_gpu_seconds,
                                                  reset=reset)
            return render_limits(who.t, preferences.limit_values(record))

        await self._saved(interaction, who, "server.saved.limits", await asyncio.to_thread(save))

    # ------------------------------------------------------------------ channels
    @settings.command(name="channels", description=text("Where images may be made here (none listed: everywhere)",
                                                        "server.cmd.channels"))
    @app_commands.describe(
        add=text("Allow generation in this channel", "server.cmd.channels.add"),
        remove=text("Take this channel off the list", "server.cmd.channels.remove"),
        clear=text("Empty the list: images may be made in every channel", "server.cmd.channels.clear"),
    )
    async def channels(self, interaction: discord.Interaction, add: discord.TextChannel | None = None,
                       remove: discord.TextChannel | None = None, clear: bool = False) -> None:
        who, guild = self._manager(interaction)
        record = await asyncio.to_thread(self.preferences.set_guild_channels, guild,
                                         add=[add.id] if add else [], remove=[remove.id] if remove else [],
                                         clear=clear)
        await self._saved(interaction, who, "server.saved.channels", render_channels(who.t, record))

    # ------------------------------------------------------------------ safety
    @settings.command(name="safety", description=text("Banned words, a forced negative prompt, image screening",
                                                      "server.cmd.safety"))
    @app_commands.describe(
        add_words=text("Words to refuse in prompts, separated by commas", "server.cmd.safety.add_words"),
        remove_words=text("Words to take off the list, separated by commas", "server.cmd.safety.remove_words"),
        clear_words=text("Empty the banned-word list", "server.cmd.safety.clear_words"),
        forced_negative=text("Always added to the negative prompt; 'none' removes it",
                             "server.cmd.safety.forced_negative"),
        classifier=text("Screen results with the image classifier (if the bot has one)",
                        "server.cmd.safety.classifier"),
    )
    async def safety(
        self,
        interaction: discord.Interaction,
        add_words: app_commands.Range[str, 1, 2000] | None = None,
        remove_words: app_commands.Range[str, 1, 2000] | None = None,
        clear_words: bool = False,
        forced_negative: app_commands.Range[str, 1, 500] | None = None,
        classifier: bool | None = None,
    ) -> None:
        who, guild = self._manager(interaction)
        preferences = self.preferences
        record = await asyncio.to_thread(preferences.set_guild_safety, guild, add_words=add_words,
                                         remove_words=remove_words, forced_negative=forced_negative,
                                         classifier=classifier, clear_words=clear_words)
        body = render_safety(who.t, safety_policy(record), preferences.classifier_configured)
        await self._saved(interaction, who, "server.saved.safety", body)


async def setup(bot: BrushworkBot) -> None:
    await bot.add_cog(Server(bot))

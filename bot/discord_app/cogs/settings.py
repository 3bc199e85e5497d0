"""``/settings show|set|reset``: your own default flags, applied under every ``/imagine`` you write.

The defaults are a flag string (``--steps 30 --sampler euler_a --no blurry``) checked like a
request (:meth:`bot.preferences.PreferencesService.check_defaults`) and saved in canonical form.
Order of precedence when you generate: the flags you type, then your defaults, then the
server's (``/server settings defaults``), then the model's.  Every answer is ephemeral.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.discord_app.context import caller, send
from bot.discord_app.translator import text
from bot.preferences import MAX_DEFAULTS_LENGTH

if TYPE_CHECKING:
    from bot.discord_app.client import BrushworkBot
    from bot.discord_app.context import Caller


def describe_defaults(who: Caller, user_defaults: str, server_defaults: str | None) -> str:
    """The ``/settings show`` text: yours, the server's (in a server), and how they combine."""
    none = who.t("settings.none")
    lines = [who.t("settings.show.yours", flags=f"`{user_defaults}`" if user_defaults else none)]
    if server_defaults is not None:
        lines.append(who.t("settings.show.server", flags=f"`{server_defaults}`" if server_defaults else none))
    lines.append(who.t("settings.show.order"))
    lines.append(who.t("settings.show.how"))
    return "\n".join(lines)


class Settings(commands.Cog):
    group = app_commands.Group(name="settings", description=text("Your default flags for /imagine", "settings.cmd"))

    def __init__(self, bot: BrushworkBot) -> None:
        self.bot = bot

    @property
    def preferences(self):
        return self.bot.container.preferences

    async def _show(self, interaction: discord.Interaction, who: Caller, saved: str | None = None) -> None:
        preferences = self.preferences

        def read() -> tuple[str, str | None]:
            user = preferences.user_settings(who.user_id).defaults
            server = preferences.guild_settings(who.guild_id).defaults if who.guild_id is not None else None
            return user, server

        user, server = await asyncio.to_thread(read)
        body = describe_defaults(who, user, server)
        await send(interaction, f"{saved}\n{body}" if saved else body)

    @group.command(name="show", description=text("Show your default flags (and this server's)", "settings.cmd.show"))
    async def show(self, interaction: discord.Interaction) -> None:
        await self._show(interaction, caller(interaction))

    @group.command(name="set", description=text("Set your default flags, e.g. --steps 30 --sampler euler_a",
                                                 "settings.cmd.set"))
    @app_commands.describe(flags=text("Flags only, e.g. --steps 30 --cfg 6 --no blurry (see /help flags)",
                                      "settings.cmd.set.flags"))
    async def set_defaults(self, interaction: discord.Interaction,
                           flags: app_commands.Range[str, 1, MAX_DEFAULTS_LENGTH]) -> None:
        who = caller(interaction)
        record = await asyncio.to_thread(self.preferences.set_user_defaults, who.user_id, flags)
        await self._show(interaction, who, saved=who.t("settings.saved", flags=f"`{record.defaults}`"))

    @group.command(name="reset", description=text("Remove your default flags", "settings.cmd.reset"))
    async def reset(self, interaction: discord.Interaction) -> None:
        who = caller(interaction)
        await asyncio.to_thread(self.preferences.reset_user_defaults, who.user_id)
        await self._show(interaction, who, saved=who.t("settings.reset_done"))


async def setup(bot: BrushworkBot) -> None:
    await bot.add_cog(Settings(bot))

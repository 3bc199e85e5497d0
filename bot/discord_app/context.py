"""Who is asking, from where, in which language, with which rights — read once per interaction.

Every command and button starts with :func:`caller`; ids taken from buttons, links or options
are then checked against ``caller.scope`` by the services (an image of another server is
"not found", exactly like a missing one).
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from typing import Any

import discord

from bot.chat import Origin
from generation.errors import BrushworkError
from generation.i18n import normalize_locale, translate
from storage.records import Scope

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Caller:
    user_id: int
    guild_id: int | None
    channel_id: int | None
    locale: str  # catalogue locale: "en" or "zh-CN"
    age_restricted: bool  # the channel (or a thread's parent) is marked NSFW
    manage_guild: bool
    manage_messages: bool
    parent_channel_id: int | None = None  # the channel a thread belongs to

    @property
    def scope(self) -> Scope:
        return Scope(user_id=self.user_id, guild_id=self.guild_id)

    @property
    def in_dm(self) -> bool:
        return self.guild_id is None

    def t(self, code: str, /, **params: Any) -> str:
        return translate(code, self.locale, **params)

    @property
    def origin(self) -> Origin:
        """The same, as the Discord-free services take it."""
        return Origin(user_id=self.user_id, guild_id=self.guild_id, channel_id=self.channel_id, locale=self.locale,
                      age_restricted=self.age_restricted, manage_messages=self.manage_messages,
                      manage_guild=self.manage_guild, parent_channel_id=self.parent_channel_id)


def channel_is_age_restricted(channel: Any) -> bool:
    if channel is None:
        return False
    if isinstance(channel, discord.Thread):
        channel = channel.parent
    is_nsfw = getattr(channel, "is_nsfw", None)
    return bool(is_nsfw()) if callable(is_nsfw) else False


def caller(interaction: discord.Interaction) -> Caller:
    permissions = interaction.permissions
    return Caller(
        user_id=interaction.user.id,
        guild_id=interaction.guild_id,
        channel_id=interaction.channel_id,
        locale=normalize_locale(str(interaction.locale)),
        age_restricted=channel_is_age_restricted(interaction.channel),
        manage_guild=interaction.guild_id is not None and permissions.manage_guild,
        manage_messages=interaction.guild_id is not None and permissions.manage_messages,
        parent_channel_id=getattr(interaction.channel, "parent_id", None)
        if isinstance(interaction.channel, discord.Thread) else None,
    )


#: What the bot needs in a channel to answer there: (attribute of discord.Permissions, catalogue code).
POSTING_PERMISSIONS = (
    ("view_channel", "bot.permission.view_channel"),
    ("send_messages", "bot.permission.send_messages"),
    ("attach_files", "bot.permission.attach_files"),
)


def missing_permissions(permissions: discord.Permissions, channel: Any = None) -> list[str]:
    """Catalogue codes of the posting permissions the bot lacks (threads need Send Messages in Threads)."""
    missing = []
    for name, code in POSTING_PERMISSIONS:
        if name == "send_messages" and isinstance(channel, discord.Thread):
            name, code = "send_messages_in_threads", "bot.permission.send_messages_in_threads"
        if not getattr(permissions, name):
            missing.append(code)
    return missing


def missing_permissions_text(missing: list[str], channel_id: int | None, locale: str) -> str:
    names = [translate(code, locale) for code in missing]
    return translate("bot.missing_permissions", locale, channel=f"<#{channel_id}>" if channel_id else "",
                     permissions=names)


async def send(interaction: discord.Interaction, content: str | None = None, *, ephemeral: bool = True,
               **kwargs: Any) -> None:
    """Answer whether or not the interaction was already acknowledged."""
    if interaction.response.is_done():
        if content is not None:
            kwargs["content"] = content
        await interaction.followup.send(ephemeral=ephemeral, **kwargs)
    else:
        await interaction.response.send_message(content, ephemeral=ephemeral, **kwargs)


async def report_error(interaction: discord.Interaction, error: BaseException) -> None:
    """The one place that turns an exception into what the user reads (never a traceback).

    User mistakes (:class:`BrushworkError`) are explained in the user's language; anything
    else is logged with an incident id that the user can quote to the operator.
    """
    locale = normalize_locale(str(interaction.locale))
    if isinstance(error, BrushworkError):
        message = error.message(locale)
    else:
        incident = secrets.token_hex(4)
        log.error("incident %s in %s", incident, _describe(interaction), exc_info=error)
        message = translate("bot.internal_error", locale, incident=incident)
    try:
        await send(interaction, message, ephemeral=True)
    except discord.HTTPException:
        log.warning("could not tell the user about an error in %s", _describe(interaction), exc_info=True)


def _describe(interaction: discord.Interaction) -> str:
    name = interaction.command.qualified_name if interaction.command else (interaction.data or {}).get("custom_id")
    return f"interaction {interaction.id} ({name}) by {interaction.user.id} in guild {interaction.guild_id}"

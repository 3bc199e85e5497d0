"""Building and reading the world: the bot's identity, guilds, channels, threads, roles, users,
members, overwrites, DM channels; permissions, registered commands and the request log."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from . import payloads, permissions
from .errors import FakeDiscordUsageError
from .gateway import GUILD_MEMBERS, PRIVILEGED_APP_FLAGS, PRIVILEGED_INTENTS
from .models import (
    DM,
    PUBLIC_THREAD,
    TEXT,
    FakeChannel,
    FakeGuild,
    FakeInteraction,
    FakeMember,
    FakeMessage,
    FakeRole,
    FakeUser,
    Overwrite,
    RequestRecord,
)
from .state import FakeState


class WorldMixin(FakeState):
    """Guilds, channels, users and what can be read about them."""

    # ==== the bot's identity ===================================================================
    def configure_bot(
        self,
        *,
        token: str | None = None,
        app_id: int | None = None,
        name: str | None = None,
        privileged_intents: Iterable[str] | None = None,
    ) -> FakeUser:
        """Set the token the fake accepts, the application id, the bot's name and the privileged
        intents enabled "in the developer portal" (``"members"``, ``"presences"``, ``"message_content"``)."""
        if token is not None:
            self.token = token
        if app_id is not None:
            self.app_id = app_id
        if name is not None:
            self.bot.username = name
        if privileged_intents is not None:
            wanted = set(privileged_intents)
            unknown = wanted - set(PRIVILEGED_INTENTS)
            if unknown:
                raise FakeDiscordUsageError(
                    f"unknown privileged intents {sorted(unknown)}; use {sorted(PRIVILEGED_INTENTS)}"
                )
            self.privileged_intents = wanted
        return self.bot

    @property
    def application_flags(self) -> int:
        value = 1 << 23  # APPLICATION_COMMAND_BADGE
        for name in self.privileged_intents:
            value |= PRIVILEGED_APP_FLAGS[name]
        return value

    # ==== building the world ===================================================================
    def add_guild(
        self,
        name: str = "Test Server",
        *,
        locale: str = "en-US",
        owner: FakeUser | None = None,
        premium_tier: int = 0,
        attachment_size_limit: int | None = None,
        everyone_permissions: int = permissions.DEFAULT_EVERYONE,
        bot_permissions: int = permissions.DEFAULT_BOT,
        features: Sequence[str] = (),
    ) -> FakeGuild:
        """A guild the bot is in: @everyone (id = guild id), the bot's managed role, the bot's member."""
        owner = owner or self.add_user(f"{name.lower().replace(' ', '-')}-owner")
        guild = FakeGuild(
            id=self.ids.new(),
            name=name,
            owner_id=owner.id,
            preferred_locale=locale,
            premium_tier=premium_tier,
            attachment_size_limit=attachment_size_limit,
            features=list(features),
        )
        guild.roles[guild.id] = FakeRole(guild.id, guild.id, "@everyone", everyone_permissions, position=0)
        bot_role = FakeRole(
            self.ids.new(), guild.id, self.bot.username, bot_permissions, 1, managed=True, bot_id=self.bot.id
        )
        guild.roles[bot_role.id] = bot_role
        guild.members[self.bot.id] = FakeMember(self.bot, guild.id, [bot_role.id])
        guild.members[owner.id] = FakeMember(owner, guild.id, [])
        self.guilds[guild.id] = guild
        if self._gateway_up():
            self._dispatch_each_session(
                "GUILD_CREATE", lambda intents: self._guild_create_payload(guild, intents)
            )
        return guild

    def add_channel(
        self,
        guild: FakeGuild,
        name: str = "general",
        *,
        nsfw: bool = False,
        topic: str | None = None,
        type: int = TEXT,
        category: FakeChannel | None = None,
    ) -> FakeChannel:
        channel = FakeChannel(
            id=self.ids.new(),
            guild_id=guild.id,
            name=name,
            type=type,
            nsfw=nsfw,
            position=len(guild.channels),
            parent_id=category.id if category else None,
            topic=topic,
        )
        guild.channels[channel.id] = channel
        self.channels[channel.id] = channel
        self._dispatch_soon("CHANNEL_CREATE", payloads.channel_payload(channel))
        return channel

    def add_thread(self, parent: FakeChannel, name: str, *, owner: FakeUser | None = None) -> FakeChannel:
        """A public thread; like on Discord it has no ``nsfw`` of its own (it inherits the parent's)."""
        if parent.guild_id is None:
            raise FakeDiscordUsageError("threads live in guild channels")
        guild = self.guilds[parent.guild_id]
        thread = FakeChannel(
            id=self.ids.new(),
            guild_id=guild.id,
            name=name,
            type=PUBLIC_THREAD,
            parent_id=parent.id,
            owner_id=(owner or self.bot).id,
        )
        guild.channels[thread.id] = thread
        self.channels[thread.id] = thread
        self._dispatch_soon("THREAD_CREATE", {**payloads.channel_payload(thread), "newly_created": True})
        return thread

    def add_role(self, guild: FakeGuild, name: str, *, permissions: int = 0, color: int = 0) -> FakeRole:
        role = FakeRole(self.ids.new(), guild.id, name, permissions, position=len(guild.roles), color=color)
        guild.roles[role.id] = role
        self._dispatch_soon(
            "GUILD_ROLE_CREATE", {"guild_id": str(guild.id), "role": payloads.role_payload(role)}
        )
        return role

    def add_user(
        self,
        name: str,
        *,
        locale: str = "en-US",
        global_name: str | None = None,
        bot: bool = False,
        guild: FakeGuild | None = None,
        roles: Sequence[FakeRole] = (),
        nick: str | None = None,
    ) -> FakeUser:
        """A user with a client ``locale`` (sent as ``interaction.locale``); with ``guild``, also a member."""
        user = FakeUser(self.ids.new(), name, global_name=global_name, locale=locale, bot=bot)
        self.users[user.id] = user
        if guild is not None:
            self.add_member(guild, user, roles=roles, nick=nick)
        return user

    def add_member(
        self, guild: FakeGuild, user: FakeUser, *, roles: Sequence[FakeRole] = (), nick: str | None = None
    ) -> FakeMember:
        member = FakeMember(user, guild.id, [r.id for r in roles], nick=nick)
        guild.members[user.id] = member
        self._dispatch_soon(
            "GUILD_MEMBER_ADD", {**payloads.member_payload(member), "guild_id": str(guild.id)}
        )
        return member

    def set_roles(self, guild: FakeGuild, user: FakeUser, roles: Sequence[FakeRole]) -> FakeMember:
        member = self._member(guild, user)
        member.role_ids = [r.id for r in roles]
        self._dispatch_soon(
            "GUILD_MEMBER_UPDATE", {**payloads.member_payload(member), "guild_id": str(guild.id)}
        )
        return member

    def set_permission_overwrite(
        self, channel: FakeChannel, target: FakeRole | FakeUser | FakeGuild, *, allow: int = 0, deny: int = 0
    ) -> None:
        """A channel overwrite for a role, a member, or @everyone (pass the guild)."""
        kind = 1 if isinstance(target, FakeUser) else 0
        channel.overwrites[target.id] = Overwrite(target.id, kind, allow, deny)
        self._dispatch_soon("CHANNEL_UPDATE", payloads.channel_payload(channel))

    def add_standard_world(self) -> StandardWorld:
        """One server with #general, an age-restricted #nsfw-art, a member role, an admin, and users in
        English and Simplified Chinese: what most bot tests need."""
        guild = self.add_guild("Brushwork Test Server")
        general = self.add_channel(guild, "general")
        nsfw = self.add_channel(guild, "nsfw-art", nsfw=True)
        admin_role = self.add_role(guild, "Admin", permissions=permissions.ADMINISTRATOR)
        alice = self.add_user("alice", locale="en-US", guild=guild)
        wei = self.add_user("wei", global_name="张伟", locale="zh-CN", guild=guild)
        admin = self.add_user("root", locale="en-US", guild=guild, roles=[admin_role])
        return StandardWorld(guild, general, nsfw, alice, wei, admin, admin_role)

    # ==== reading the world ===================================================================
    def bot_guilds(self) -> list[FakeGuild]:
        return [g for g in self.guilds.values() if self.bot.id in g.members]

    def bot_permissions(self, channel: FakeChannel) -> int:
        if channel.guild_id is None:
            return permissions.ALL & ~permissions.ADMINISTRATOR
        guild = self.guilds[channel.guild_id]
        return permissions.channel_permissions(guild, guild.members[self.bot.id], channel)

    def member_permissions(self, user: FakeUser, channel: FakeChannel) -> int:
        if channel.guild_id is None:
            return permissions.ALL & ~permissions.ADMINISTRATOR
        guild = self.guilds[channel.guild_id]
        return permissions.channel_permissions(guild, self._member(guild, user), channel)

    def filesize_limit(self, channel: FakeChannel) -> int:
        if channel.guild_id is None:
            return 10 * 1024 * 1024
        return self.guilds[channel.guild_id].filesize_limit

    def channel_messages(self, channel: FakeChannel, *, include_ephemeral: bool = False) -> list[FakeMessage]:
        """The channel's live messages, oldest first."""
        return [
            m
            for m in self.messages
            if m.channel_id == channel.id and not m.deleted and (include_ephemeral or not m.ephemeral)
        ]

    def message(self, message_id: int) -> FakeMessage:
        return self.messages_by_id[int(message_id)]

    def interaction(self, interaction_id: int) -> FakeInteraction:
        return self._interactions_by_id[int(interaction_id)]

    def commands_for(self, guild: FakeGuild | int | None = None) -> list[dict[str, Any]]:
        """The commands currently registered globally (None) or for a guild."""
        scope = guild.id if isinstance(guild, FakeGuild) else guild
        return self._commands.get(scope, [])

    def command(self, name: str, *, guild: FakeGuild | None = None, type: int = 1) -> dict[str, Any] | None:
        """A registered command by name: the guild's first, then the global one (like the client shows)."""
        scopes = ([guild.id] if guild is not None else []) + [None]
        for scope in scopes:
            for command in self._commands.get(scope, []):
                if command["name"] == name and command.get("type", 1) == type:
                    return command
        return None

    @property
    def sync_count(self) -> int:
        """How many bulk overwrites (``tree.sync()``) the bot made."""
        return len(self.sync_calls)

    def requests_to(self, method: str | None = None, route: str | None = None) -> list[RequestRecord]:
        """Logged requests, optionally filtered by method and route template (``"/channels/{channel_id}/messages"``)."""
        return [
            r
            for r in self.requests
            if (method is None or r.method == method) and (route is None or r.route == route)
        ]

    @property
    def identify_count(self) -> int:
        return len(self.gateway.sessions)

    @property
    def resume_count(self) -> int:
        return sum(s.resumes for s in self.gateway.sessions.values())

    def _guild_create_payload(self, guild: FakeGuild, intents: int) -> dict[str, Any]:
        members = list(guild.members.values()) if intents & GUILD_MEMBERS else [guild.members[self.bot.id]]
        payload = payloads.guild_payload(guild, full=True, members=members)
        payload["joined_at"] = payloads.iso(guild.members[self.bot.id].joined_at)  # when the *bot* joined
        return payload

    def _member(self, guild: FakeGuild, user: FakeUser) -> FakeMember:
        member = guild.members.get(user.id)
        if member is None:
            raise FakeDiscordUsageError(f"{user.username} is not a member of {guild.name}")
        return member

    def dm_channel(self, user: FakeUser) -> FakeChannel:
        """The DM channel between the bot and ``user`` (created on first use, like ``POST /users/@me/channels``)."""
        for channel in self.channels.values():
            if channel.type == DM and channel.recipient_ids == [user.id]:
                return channel
        channel = FakeChannel(id=self.ids.new(), guild_id=None, name="", type=DM, recipient_ids=[user.id])
        self.channels[channel.id] = channel
        return channel


class StandardWorld:
    """What :meth:`FakeDiscord.add_standard_world` builds."""

    def __init__(
        self,
        guild: FakeGuild,
        general: FakeChannel,
        nsfw: FakeChannel,
        alice: FakeUser,
        wei: FakeUser,
        admin: FakeUser,
        admin_role: FakeRole,
    ) -> None:
        self.guild = guild
        self.general = general
        self.nsfw = nsfw
        self.alice = alice  # en-US
        self.wei = wei  # zh-CN
        self.admin = admin  # has the Administrator role
        self.admin_role = admin_role

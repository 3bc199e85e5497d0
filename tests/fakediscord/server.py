"""``FakeDiscord``: a loopback Discord (REST + gateway + CDN) for end-to-end tests of a discord.py bot.

A test builds a small world (guilds, channels, users), points discord.py at the fake (see
:mod:`.discordpy`), then acts as users — slash commands, clicks, modals, reactions — and
inspects what the bot did: messages with their attachment bytes, every interaction response
with its delay, edit histories, synced commands and the request log.  Faults (429, 5xx, 403,
gateway drops, expired tokens) are injected per route.
"""

from __future__ import annotations

import asyncio
import copy
import re
import secrets
import socket
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import quote

from aiohttp import web

from . import payloads, permissions
from .errors import APIError, FakeDiscordUsageError, WaitTimeout, invalid_form_body
from .gateway import GUILD_MEMBERS, GUILDS, PRIVILEGED_APP_FLAGS, PRIVILEGED_INTENTS, Gateway
from .models import (
    APPLICATION_COMMAND,
    AUTOCOMPLETE,
    DM,
    MESSAGE_COMPONENT,
    MODAL_SUBMIT,
    PUBLIC_THREAD,
    TEXT,
    TOKEN_LIFETIME,
    FakeAttachment,
    FakeChannel,
    FakeGuild,
    FakeInteraction,
    FakeMember,
    FakeMessage,
    FakeRole,
    FakeUser,
    Fault,
    InteractionResponse,
    MessageRevision,
    Overwrite,
    RequestRecord,
    SyncCall,
    Upload,
)
from .rest import API_PREFIX, RestApi, guess_content_type
from .snowflakes import SnowflakeFactory
from .validation import check_commands

T = TypeVar("T")

DEFAULT_TOKEN = "ZmFrZS1ib3Q.fakediscord.bot-token-for-tests"
MAX_UPLOAD = 256 * 1024 * 1024

# Option types.
SUB_COMMAND, SUB_COMMAND_GROUP = 1, 2
STRING, INTEGER, BOOLEAN, USER, CHANNEL, ROLE, MENTIONABLE, NUMBER, ATTACHMENT = 3, 4, 5, 6, 7, 8, 9, 10, 11

UploadLike = Upload | tuple[str, bytes] | tuple[str, bytes, str | None]


def _as_upload(value: Any) -> Upload | None:
    if isinstance(value, Upload):
        return value
    if isinstance(value, tuple) and len(value) in (2, 3) and isinstance(value[1], bytes | bytearray):
        return Upload(value[0], bytes(value[1]), value[2] if len(value) == 3 else None)
    return None


class FakeDiscord:
    """A fake Discord on ``127.0.0.1``; ``async with FakeDiscord() as fake`` or ``start()``/``stop()``.

    ``ack_deadline``: seconds the bot has to answer an interaction (Discord: 3) before the
    callback gets 404 / 10062.  ``strict``: requests to routes the fake does not implement are
    collected in :attr:`unhandled_requests` and :meth:`assert_healthy` fails on them.
    ``first_followup_edits_deferred``: Discord turns the first followup after a "thinking"
    defer into an edit of the loading message (same id, the defer's ephemerality).
    """

    def __init__(
        self,
        *,
        token: str = DEFAULT_TOKEN,
        bot_name: str = "Brushwork",
        ack_deadline: float = 3.0,
        heartbeat_interval: float = 41.25,
        strict: bool = True,
        first_followup_edits_deferred: bool = True,
        daily_command_creates: int = 200,
    ) -> None:
        self.ids = SnowflakeFactory()
        self.token = token
        self.bot = FakeUser(self.ids.new(), bot_name, bot=True)
        self.app_id = self.bot.id
        self.owner = FakeUser(self.ids.new(), "app-owner")
        self.privileged_intents: set[str] = set()
        self.ack_deadline = ack_deadline
        self.heartbeat_interval = heartbeat_interval
        self.strict = strict
        self.first_followup_edits_deferred = first_followup_edits_deferred
        self.daily_command_creates = daily_command_creates

        self.users: dict[int, FakeUser] = {self.bot.id: self.bot, self.owner.id: self.owner}
        self.guilds: dict[int, FakeGuild] = {}
        self.channels: dict[int, FakeChannel] = {}
        self.messages: list[FakeMessage] = []
        self.messages_by_id: dict[int, FakeMessage] = {}
        self.attachments: dict[int, FakeAttachment] = {}
        self.interactions: list[FakeInteraction] = []
        self._interactions_by_id: dict[int, FakeInteraction] = {}
        self._interactions_by_token: dict[str, FakeInteraction] = {}
        self._commands: dict[int | None, list[dict[str, Any]]] = {}
        self._command_creates: dict[int | None, int] = {}
        self._stable_ids: dict[str, int] = {}
        self.sync_calls: list[SyncCall] = []
        self.requests: list[RequestRecord] = []
        self.unhandled_requests: list[RequestRecord] = []
        self.internal_errors: list[str] = []
        self.faults: list[Fault] = []
        self.presence_updates: list[Any] = []
        self.typing: list[tuple[int, float]] = []
        self.cdn_downloads: list[int] = []

        self.gateway = Gateway(self)
        self.rest = RestApi(self)
        self._changed = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    # ==== lifecycle ==========================================================================
    async def start(self) -> FakeDiscord:
        app = web.Application(client_max_size=MAX_UPLOAD, middlewares=[self.rest.middleware])
        app.router.add_get("/gateway", self.gateway.handle)
        app.router.add_get("/gateway-resume", self.gateway.handle)
        self.rest.install(app)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self._port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()
        return self

    async def stop(self) -> None:
        await self.gateway.close_all()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeDiscord:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        if self._port is None:
            raise FakeDiscordUsageError("FakeDiscord is not started: await fake.start() first")
        return self._port

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_base(self) -> str:
        """What ``discord.http.Route.BASE`` must be set to."""
        return self.base_url + API_PREFIX

    @property
    def gateway_url(self) -> str:
        """What ``DiscordWebSocket.DEFAULT_GATEWAY`` must be set to."""
        return f"ws://127.0.0.1:{self.port}/gateway"

    @property
    def resume_gateway_url(self) -> str:
        """Sent in READY; a distinct path, so tests can see the client resumed where it was told to."""
        return f"ws://127.0.0.1:{self.port}/gateway-resume"

    def assert_healthy(self) -> None:
        """Fail if the fake itself crashed, or (strict) the bot called a route the fake lacks."""
        problems = list(self.internal_errors)
        if self.strict:
            problems += [
                f"{r.method} {r.path} is not implemented by tests/fakediscord (answered 404)"
                for r in self.unhandled_requests
            ]
        if problems:
            raise AssertionError("fake Discord problems:\n" + "\n".join(problems))

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

    # ==== acting as users =======================================================================
    async def slash(
        self,
        user: FakeUser,
        channel: FakeChannel,
        command: str,
        options: Mapping[str, Any] | None = None,
        *,
        attachments: Sequence[UploadLike] = (),
        locale: str | None = None,
        expired: bool = False,
        bypass_visibility: bool = False,
    ) -> FakeInteraction:
        """``/command`` as ``user`` in ``channel``; ``command`` may be a path (``"lora dataset add"``).

        Option values: str/int/float/bool, FakeUser, FakeChannel, FakeRole, or an upload
        ``(filename, bytes[, content_type])`` for attachment options; ``attachments=`` fills the
        command's attachment options in order.  With the command registered (synced), values are
        checked and typed from its schema like Discord's client does; otherwise types are inferred.
        ``expired=True`` backdates the interaction id by 16 minutes: the bot can still ack it
        within ``ack_deadline`` (simulating a job that outlived the token), but followups and
        @original edits then answer 401 / 50027.  ``bypass_visibility`` simulates an admin
        override of ``default_member_permissions``/``nsfw`` hiding.
        """
        data = self._command_data(
            user,
            channel,
            command,
            dict(options or {}),
            attachments=attachments,
            bypass_visibility=bypass_visibility,
        )
        return await self._interact(APPLICATION_COMMAND, user, channel, data, locale=locale, expired=expired)

    async def autocomplete(
        self,
        user: FakeUser,
        channel: FakeChannel,
        command: str,
        options: Mapping[str, Any],
        *,
        focused: str,
        locale: str | None = None,
        timeout: float = 5.0,
    ) -> list[dict[str, Any]]:
        """Type into option ``focused`` (its current text is ``options[focused]``); returns the bot's choices."""
        data = self._command_data(
            user, channel, command, dict(options), focused=focused, bypass_visibility=True
        )
        interaction = await self._interact(AUTOCOMPLETE, user, channel, data, locale=locale)
        response = await self.wait_for_response(interaction, timeout=timeout)
        if response.type != 8:
            raise AssertionError(f"autocomplete answered with callback type {response.type}, not 8")
        return list((response.data or {}).get("choices", []))

    async def click(
        self, user: FakeUser, message: FakeMessage, custom_id: str, *, locale: str | None = None
    ) -> FakeInteraction:
        """Press the button ``custom_id`` on ``message`` (it must be there, enabled, and not a link)."""
        component = self._component(message, custom_id)
        if component.get("type") != 2:
            raise FakeDiscordUsageError(
                f"{custom_id!r} is a component of type {component.get('type')}, not a button"
            )
        data = {"custom_id": custom_id, "component_type": 2}
        if component.get("id") is not None:
            data["id"] = component["id"]
        return await self._interact(
            MESSAGE_COMPONENT, user, self._channel_of(message), data, message=message, locale=locale
        )

    async def select(
        self,
        user: FakeUser,
        message: FakeMessage,
        custom_id: str,
        values: Sequence[Any],
        *,
        locale: str | None = None,
    ) -> FakeInteraction:
        """Pick ``values`` in the select menu ``custom_id`` (strings, or users/roles/channels for entity selects)."""
        component = self._component(message, custom_id)
        kind = component.get("type")
        if kind not in (3, 5, 6, 7, 8):
            raise FakeDiscordUsageError(f"{custom_id!r} is a component of type {kind}, not a select menu")
        channel = self._channel_of(message)
        resolved: dict[str, dict[str, Any]] = {}
        data: dict[str, Any] = {
            "custom_id": custom_id,
            "component_type": kind,
            "values": self._select_values(component, values, resolved, channel),
        }
        if resolved:
            data["resolved"] = resolved
        return await self._interact(MESSAGE_COMPONENT, user, channel, data, message=message, locale=locale)

    async def submit_modal(
        self,
        origin: FakeInteraction,
        values: Mapping[str, Any],
        *,
        user: FakeUser | None = None,
        locale: str | None = None,
    ) -> FakeInteraction:
        """Fill and submit the modal the bot answered ``origin`` with: ``{custom_id: value}``.

        Text inputs take strings (checked against ``required``/``min_length``/``max_length``),
        selects take lists, file uploads take uploads.  Unset text inputs keep their prefilled value.
        """
        modal = origin.modal
        if modal is None:
            raise FakeDiscordUsageError(f"{origin!r} was not answered with a modal (callback type 9)")
        channel = self.channels[origin.channel_id] if origin.channel_id else None
        if channel is None:
            raise FakeDiscordUsageError("modals outside channels are not simulated")
        resolved: dict[str, dict[str, Any]] = {}
        components = self._modal_answers(modal, dict(values), resolved, channel)
        data: dict[str, Any] = {"custom_id": modal["custom_id"], "components": components}
        if resolved:
            data["resolved"] = resolved
        return await self._interact(
            MODAL_SUBMIT,
            user or origin.user,
            channel,
            data,
            message=origin.message,
            origin=origin,
            locale=locale,
        )

    async def user_command(
        self, user: FakeUser, channel: FakeChannel, name: str, target: FakeUser, *, locale: str | None = None
    ) -> FakeInteraction:
        """The user context-menu command ``name`` on ``target``."""
        resolved: dict[str, dict[str, Any]] = {}
        self._resolve_user(target, resolved, channel)
        data = self._context_menu_data(name, 2, channel, target.id, resolved)
        return await self._interact(APPLICATION_COMMAND, user, channel, data, locale=locale)

    async def message_command(
        self,
        user: FakeUser,
        channel: FakeChannel,
        name: str,
        target: FakeMessage,
        *,
        locale: str | None = None,
    ) -> FakeInteraction:
        """The message context-menu command ``name`` on ``target``."""
        resolved = {"messages": {str(target.id): self._message_json(target)}}
        data = self._context_menu_data(name, 3, channel, target.id, resolved)
        return await self._interact(APPLICATION_COMMAND, user, channel, data, locale=locale)

    async def react(self, user: FakeUser, message: FakeMessage, emoji: str) -> None:
        """``user`` adds ``emoji`` ("🔁", or "name:id" for a custom one): MESSAGE_REACTION_ADD."""
        channel = self._channel_of(message)
        if message.ephemeral or message.deleted:
            raise FakeDiscordUsageError("nobody can react to an ephemeral or deleted message")
        needed = permissions.VIEW_CHANNEL | permissions.READ_MESSAGE_HISTORY
        if not message.reactions.get(emoji):
            needed |= permissions.ADD_REACTIONS
        if self.member_permissions(user, channel) & needed != needed:
            raise FakeDiscordUsageError(f"{user.username} may not add reactions in #{channel.name}")
        self._add_reaction(user, message, emoji)

    async def unreact(self, user: FakeUser, message: FakeMessage, emoji: str) -> None:
        self._remove_reaction(user, message, emoji)

    async def post_message(
        self,
        user: FakeUser,
        channel: FakeChannel,
        content: str = "",
        *,
        attachments: Sequence[UploadLike] = (),
        reply_to: FakeMessage | None = None,
    ) -> FakeMessage:
        """A plain message by ``user`` (MESSAGE_CREATE).  A bot without the Message Content
        intent receives it with empty content and attachments, unless it is mentioned."""
        if self.member_permissions(user, channel) & permissions.SEND_MESSAGES == 0:
            raise FakeDiscordUsageError(f"{user.username} may not send messages in #{channel.name}")
        files = []
        for item in attachments:
            upload = _as_upload(item)
            if upload is None:
                raise FakeDiscordUsageError(f"not an upload: {item!r}")
            files.append(self._new_attachment(channel.id, upload.filename, upload.data, upload.content_type))
        loop = asyncio.get_running_loop()
        mentions = [self.users[int(i)] for i in re.findall(r"<@!?(\d+)>", content) if int(i) in self.users]
        message = FakeMessage(
            id=self.ids.new(),
            channel_id=channel.id,
            guild_id=channel.guild_id,
            author=user,
            revisions=[MessageRevision(content, [], [], files, 0, loop.time(), "user")],
            type=19 if reply_to else 0,
            mentions=mentions,
            message_reference=(
                {"type": 0, "message_id": str(reply_to.id), "channel_id": str(reply_to.channel_id)}
                if reply_to
                else None
            ),
        )
        return self._store_message(message)

    def dispatch(self, event: str, data: dict[str, Any]) -> int:
        """Send any gateway event to the bot (filtered by its intents); returns the sessions reached."""
        return self.gateway.dispatch(event, data)[0]

    # ==== waiting ==============================================================================
    async def wait_until(
        self,
        check: Callable[[], T],
        *,
        timeout: float = 5.0,
        description: str | Callable[[], str] = "a condition",
    ) -> T:
        """Re-evaluate ``check`` after every change the fake sees until it returns something truthy."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            result = check()
            if result:
                return result
            remaining = deadline - loop.time()
            if remaining <= 0:
                what = description() if callable(description) else description
                raise WaitTimeout(f"timed out after {timeout}s waiting for {what}\n{self.describe_recent()}")
            event = self._changed
            try:
                await asyncio.wait_for(event.wait(), min(remaining, 0.02))  # also polls bot-side state
            except TimeoutError:
                pass

    async def wait_ready(self, *, timeout: float = 10.0) -> None:
        """Until a gateway session got READY and its GUILD_CREATEs (the client's own ``on_ready``
        follows ``guild_ready_timeout`` later)."""
        await self.wait_until(
            lambda: any(s.ready_sent and s.connected for s in self.gateway.live_sessions),
            timeout=timeout,
            description="a gateway session to be READY",
        )

    async def wait_for_message(
        self,
        predicate: Callable[[FakeMessage], bool] | None = None,
        *,
        channel: FakeChannel | None = None,
        author: FakeUser | None = None,
        timeout: float = 5.0,
    ) -> FakeMessage:
        """The first live message (oldest first, ephemeral included) matching all the filters."""

        def find() -> FakeMessage | None:
            for message in self.messages:
                if message.deleted or (channel is not None and message.channel_id != channel.id):
                    continue
                if author is not None and message.author is not author:
                    continue
                if predicate is None or predicate(message):
                    return message
            return None

        return await self.wait_until(find, timeout=timeout, description="a matching message")

    async def wait_for_response(
        self, interaction: FakeInteraction, *, timeout: float = 5.0
    ) -> InteractionResponse:
        """The bot's accepted initial response.  A refused one (the fake answered 4xx, e.g. a broken
        limit or a late ack) fails at once with the error Discord would have given."""

        def settled() -> InteractionResponse | bool | None:
            return interaction.response or any(not r.accepted and r.status for r in interaction.responses)

        await self.wait_until(settled, timeout=timeout, description=f"a response to {interaction!r}")
        if interaction.response is None:
            refused = [f"callback type {r.type} -> {r.status} {r.error}" for r in interaction.responses]
            raise AssertionError(f"the fake refused the bot's response to {interaction!r}: {refused}")
        return interaction.response

    async def wait_for_followup(
        self, interaction: FakeInteraction, *, count: int = 1, timeout: float = 5.0
    ) -> FakeMessage:
        """The ``count``-th followup message (1-based)."""
        await self.wait_until(
            lambda: len(interaction.followups) >= count,
            timeout=timeout,
            description=f"followup #{count} for {interaction!r}",
        )
        return interaction.followups[count - 1]

    async def wait_for_edit(
        self,
        message: FakeMessage,
        predicate: Callable[[FakeMessage], bool] | None = None,
        *,
        count: int = 1,
        timeout: float = 5.0,
    ) -> MessageRevision:
        """Until ``message`` has at least ``count`` edits (and ``predicate`` holds); its current revision."""
        await self.wait_until(
            lambda: len(message.edits) >= count and (predicate is None or predicate(message)),
            timeout=timeout,
            description=f"edit #{count} of {message!r}",
        )
        return message.current

    async def wait_for_reaction(
        self, message: FakeMessage, emoji: str, *, user: FakeUser | None = None, timeout: float = 5.0
    ) -> None:
        who = (user or self.bot).id
        await self.wait_until(
            lambda: who in message.reactions.get(emoji, []),
            timeout=timeout,
            description=f"reaction {emoji} on {message!r}",
        )

    async def wait_for_sync(self, *, count: int = 1, timeout: float = 5.0) -> SyncCall:
        await self.wait_until(
            lambda: len(self.sync_calls) >= count, timeout=timeout, description=f"command sync #{count}"
        )
        return self.sync_calls[count - 1]

    async def wait_resumed(self, *, count: int = 1, timeout: float = 10.0) -> None:
        await self.wait_until(
            lambda: self.resume_count >= count and any(s.connected for s in self.gateway.live_sessions),
            timeout=timeout,
            description=f"RESUME #{count}",
        )

    def describe_recent(self, n: int = 10) -> str:
        lines = ["recent requests:"]
        lines += [
            f"  {r.method} {r.path} -> {r.status}{' (fault)' if r.fault else ''}" for r in self.requests[-n:]
        ]
        lines.append("recent messages:")
        lines += [f"  {m!r}" for m in self.messages[-5:]]
        if self.internal_errors:
            lines.append("fake internal errors:")
            lines += [f"  {e.splitlines()[0]}" for e in self.internal_errors[-3:]]
        return "\n".join(lines)

    # ==== faults ===============================================================================
    def inject_fault(
        self,
        method: str | None,
        route: str | None,
        *,
        status: int,
        count: int | None = 1,
        match: Mapping[str, Any] | None = None,
        code: int = 0,
        message: str | None = None,
        retry_after: float = 0.05,
        is_global: bool = False,
    ) -> Fault:
        """Answer the next ``count`` requests (None: all) to ``method route`` with ``status``.

        ``route`` is the template discord.py uses, e.g. ``"/channels/{channel_id}/messages"`` or
        ``"/webhooks/{webhook_id}/{webhook_token}/messages/@original"``; ``match`` narrows it by
        path parameters (``{"channel_id": channel.id}``).  Faulted requests have no effect.
        """
        if route is not None:
            route = route.removeprefix(API_PREFIX)
            template = route.replace("/@original", "/{message_id}")
            if not self.rest.known_route(method, template):
                raise FakeDiscordUsageError(
                    f"no route {method or '*'} {route}; known: {sorted({t for _, t in self.rest.routes})}"
                )
        default_messages = {
            429: "You are being rate limited.",
            403: "Missing Permissions",
            404: "Not Found",
            500: "500: Internal Server Error",
            502: "Bad Gateway",
            503: "Service Unavailable",
            504: "Gateway Timeout",
        }
        fault = Fault(
            method=method,
            route=route,
            status=status,
            remaining=count,
            match={k: str(getattr(v, "id", v)) for k, v in (match or {}).items()},
            code=code,
            message=message or default_messages.get(status, f"{status}"),
            retry_after=retry_after,
            is_global=is_global,
        )
        self.faults.append(fault)
        return fault

    def rate_limit(
        self,
        method: str,
        route: str,
        *,
        count: int = 1,
        retry_after: float = 0.05,
        is_global: bool = False,
        match: Mapping[str, Any] | None = None,
    ) -> Fault:
        """429 with ``Via``, JSON ``retry_after`` and X-RateLimit-* headers: discord.py sleeps and retries."""
        return self.inject_fault(
            method, route, status=429, count=count, retry_after=retry_after, is_global=is_global, match=match
        )

    def server_error(
        self,
        method: str,
        route: str,
        *,
        status: int = 500,
        count: int = 1,
        match: Mapping[str, Any] | None = None,
    ) -> Fault:
        """500 (JSON) or 502/504 (Cloudflare HTML): discord.py retries after 1 s, 3 s, 5 s, 7 s."""
        return self.inject_fault(method, route, status=status, count=count, match=match)

    def forbid_channel(
        self, channel: FakeChannel, *, method: str | None = None, route: str | None = None
    ) -> Fault:
        """Every bot request about ``channel`` answers 403 / 50013 Missing Permissions until cleared.
        (For the real mechanism, deny permissions with :meth:`set_permission_overwrite`.)"""
        return self.inject_fault(
            method, route, status=403, count=None, code=50013, match={"channel_id": channel.id}
        )

    def clear_faults(self) -> None:
        self.faults.clear()

    def expire_token(self, interaction: FakeInteraction) -> None:
        """From now on the interaction's token answers 401 / 50027 (as after 15 minutes)."""
        interaction.token_revoked = True

    async def drop_gateway(self, code: int = 4000) -> int:
        """Close every gateway connection with ``code`` (4000: resumable); returns how many."""
        return await self.gateway.drop(code)

    async def request_reconnect(self) -> int:
        """Op 7 RECONNECT: the client closes and resumes."""
        return self.gateway.send_op(7, None)

    async def invalidate_session(self, *, resumable: bool = False) -> int:
        """Op 9 INVALID_SESSION; non-resumable ones make the client IDENTIFY afresh."""
        if not resumable:
            for session in self.gateway.live_sessions:
                if session.connected:
                    session.invalidated = True
        return self.gateway.send_op(9, resumable)

    # ==== internals shared with rest.py and gateway.py ===========================================
    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _internal_error(self, text: str) -> None:
        self.internal_errors.append(text)

    def _take_fault(self, method: str, route: str, params: Mapping[str, str]) -> Fault | None:
        for fault in self.faults:
            if fault.matches(method, route, params):
                fault.hits += 1
                if fault.remaining is not None:
                    fault.remaining -= 1
                return fault
        return None

    def _gateway_up(self) -> bool:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return False
        return bool(self.gateway.live_sessions)

    def _dispatch_soon(self, event: str, data: dict[str, Any]) -> None:
        if self._gateway_up():
            self.gateway.dispatch(event, data)

    def _dispatch_each_session(self, event: str, build: Callable[[int], dict[str, Any]]) -> None:
        for session in self.gateway.live_sessions:
            if session.intents & GUILDS:
                session.dispatch(event, build(session.intents))

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

    def _channel_of(self, message: FakeMessage) -> FakeChannel:
        return self.channels[message.channel_id]

    def _message_json(self, message: FakeMessage, *, with_member: bool = False) -> dict[str, Any]:
        member = None
        if with_member and message.guild_id is not None and message.webhook_id is None:
            guild_member = self.guilds[message.guild_id].members.get(message.author.id)
            if guild_member is not None:
                member = payloads.member_payload(guild_member, with_user=False)
        payload = payloads.message_payload(message, me_id=self.bot.id, member=member)
        payload["mentions"] = [payloads.user_payload(u) for u in message.mentions]
        return payload

    def _new_attachment(
        self,
        channel_id: int,
        filename: str,
        data: bytes,
        content_type: str | None,
        *,
        description: str | None = None,
        ephemeral: bool = False,
    ) -> FakeAttachment:
        attachment_id = self.ids.new()
        size = payloads.png_size(data)
        attachment = FakeAttachment(
            id=attachment_id,
            filename=filename,
            data=data,
            content_type=guess_content_type(filename, content_type),
            url=f"{self.base_url}/attachments/{channel_id}/{attachment_id}/{quote(filename)}",
            description=description,
            ephemeral=ephemeral,
            width=size[0] if size else None,
            height=size[1] if size else None,
        )
        self.attachments[attachment_id] = attachment
        return attachment

    def _store_message(self, message: FakeMessage) -> FakeMessage:
        self.messages.append(message)
        self.messages_by_id[message.id] = message
        self._dispatch_message_event("MESSAGE_CREATE", message)
        self._notify()
        return message

    def _interaction_message(self, interaction: FakeInteraction, revision: MessageRevision) -> FakeMessage:
        if interaction.type == APPLICATION_COMMAND:
            kind = 20 if interaction.data.get("type", 1) == 1 else 23
        else:
            kind = 0
        return self._store_message(
            FakeMessage(
                id=self.ids.new(),
                channel_id=interaction.channel_id or 0,
                guild_id=interaction.guild_id,
                author=self.bot,
                revisions=[revision],
                type=kind,
                webhook_id=self.app_id,
                application_id=self.app_id,
                interaction=interaction,
            )
        )

    def _dispatch_message_event(self, event: str, message: FakeMessage) -> None:
        if message.ephemeral or not self._gateway_up():
            return
        self.gateway.dispatch(event, self._message_json(message, with_member=True))

    def _delete_message(self, message: FakeMessage) -> None:
        message.deleted = True
        if not message.ephemeral and self._gateway_up():
            data = {"id": str(message.id), "channel_id": str(message.channel_id)}
            if message.guild_id is not None:
                data["guild_id"] = str(message.guild_id)
            self.gateway.dispatch("MESSAGE_DELETE", data)
        self._notify()

    def _reaction_event(self, user: FakeUser, message: FakeMessage, emoji: str) -> dict[str, Any]:
        data: dict[str, Any] = {
            "user_id": str(user.id),
            "channel_id": str(message.channel_id),
            "message_id": str(message.id),
            "emoji": payloads.emoji_payload(emoji),
            "burst": False,
            "burst_colors": [],
            "type": 0,
        }
        if message.guild_id is not None:
            data["guild_id"] = str(message.guild_id)
            member = self.guilds[message.guild_id].members.get(user.id)
            if member is not None:
                data["member"] = payloads.member_payload(member)
        return data

    def _add_reaction(self, user: FakeUser, message: FakeMessage, emoji: str) -> None:
        users = message.reactions.setdefault(emoji, [])
        if user.id in users:
            return
        users.append(user.id)
        if self._gateway_up():
            data = self._reaction_event(user, message, emoji)
            data["message_author_id"] = str(message.author.id)
            self.gateway.dispatch("MESSAGE_REACTION_ADD", data)
        self._notify()

    def _remove_reaction(self, user: FakeUser, message: FakeMessage, emoji: str) -> None:
        users = message.reactions.get(emoji, [])
        if user.id not in users:
            return
        users.remove(user.id)
        if self._gateway_up():
            data = self._reaction_event(user, message, emoji)
            data.pop("member", None)
            self.gateway.dispatch("MESSAGE_REACTION_REMOVE", data)
        self._notify()

    # -- application commands ------------------------------------------------------------------
    def _replace_commands(
        self, scope: int | None, commands: list[dict[str, Any]], *, record: bool = True
    ) -> list[dict[str, Any]]:
        """Bulk overwrite like Discord: same (type, name) keeps its id; changed ones get a new version."""
        problems = check_commands(commands)
        if problems:
            raise invalid_form_body(problems)
        volatile = ("id", "application_id", "version", "guild_id")
        old = {(c.get("type", 1), c["name"]): c for c in self._commands.get(scope, [])}
        result: list[dict[str, Any]] = []
        creates = 0
        for command in commands:
            key = (command.get("type", 1), command["name"])
            body = {k: v for k, v in command.items() if k not in volatile}
            normalized = {
                "type": 1,
                "description": "",
                "default_member_permissions": None,
                "nsfw": False,
                **body,
            }
            previous = old.get(key)
            if previous is None:
                creates += 1
                command_id = version = self.ids.new()
            else:
                command_id = int(previous["id"])
                same = {k: v for k, v in previous.items() if k not in volatile} == normalized
                version = int(previous["version"]) if same else self.ids.new()
            entry = {
                **normalized,
                "id": str(command_id),
                "application_id": str(self.app_id),
                "version": str(version),
            }
            if scope is not None:
                entry["guild_id"] = str(scope)
            result.append(entry)
        if self._command_creates.get(scope, 0) + creates > self.daily_command_creates:
            # No ``Via`` header, deliberately: real Discord sends one, and discord.py would then sleep
            # for retry_after (hours).  Here the bot gets an HTTPException(429) at once.
            raise APIError(
                429,
                30034,
                f"Max number of daily application command creates has been reached ({self.daily_command_creates})",
                extra={"retry_after": 3600.0, "global": False},
            )
        self._command_creates[scope] = self._command_creates.get(scope, 0) + creates
        self._commands[scope] = result
        if record:
            self.sync_calls.append(SyncCall(scope, copy.deepcopy(result), asyncio.get_running_loop().time()))
        self._notify()
        return copy.deepcopy(result)

    def _command_data(
        self,
        user: FakeUser,
        channel: FakeChannel,
        command: str,
        options: dict[str, Any],
        *,
        attachments: Sequence[UploadLike] = (),
        focused: str | None = None,
        bypass_visibility: bool = False,
    ) -> dict[str, Any]:
        path = command.strip().lstrip("/").split()
        if not path:
            raise FakeDiscordUsageError("empty command name")
        guild = self.guilds.get(channel.guild_id) if channel.guild_id else None
        schema = self.command(path[0], guild=guild)
        if schema is not None and not bypass_visibility:
            self._check_visible(user, channel, guild, schema)
        resolved: dict[str, dict[str, Any]] = {}
        top: list[dict[str, Any]] = []
        container = top
        level = schema.get("options", []) if schema else None
        for depth, part in enumerate(path[1:]):
            if level is not None:
                spec = next(
                    (o for o in level if o["name"] == part and o["type"] in (SUB_COMMAND, SUB_COMMAND_GROUP)),
                    None,
                )
                if spec is None:
                    raise FakeDiscordUsageError(f"/{' '.join(path[: depth + 1])} has no subcommand {part!r}")
                kind, level = spec["type"], spec.get("options", [])
            else:
                kind = SUB_COMMAND_GROUP if depth < len(path) - 2 else SUB_COMMAND
            node: dict[str, Any] = {"type": kind, "name": part, "options": []}
            container.append(node)
            container = node["options"]
        if level is not None and any(o["type"] in (SUB_COMMAND, SUB_COMMAND_GROUP) for o in level):
            raise FakeDiscordUsageError(f"/{command} is a group: name a subcommand")
        pending = [u for u in (_as_upload(a) for a in attachments)]
        if None in pending:
            raise FakeDiscordUsageError(
                "attachments= takes (filename, bytes[, content_type]) tuples or Upload"
            )
        if pending:
            if level is None:
                raise FakeDiscordUsageError(
                    "attachments= needs the command's schema: sync the commands first"
                )
            for spec in level:
                if spec["type"] == ATTACHMENT and spec["name"] not in options and pending:
                    options[spec["name"]] = pending.pop(0)
            if pending:
                raise FakeDiscordUsageError(f"/{command} has fewer attachment options than attachments given")
        specs = {o["name"]: o for o in level} if level is not None else {}
        for name, value in options.items():
            spec = specs.get(name)
            if level is not None and spec is None:
                raise FakeDiscordUsageError(f"/{command} has no option {name!r}; it has {sorted(specs)}")
            container.append(
                self._option(user, name, value, spec, resolved, channel, focused=(name == focused))
            )
        if level is not None and focused is None:
            missing = [o["name"] for o in level if o.get("required") and o["name"] not in options]
            if missing:
                raise FakeDiscordUsageError(f"/{command}: required options missing: {missing}")
        if focused is not None and focused not in options:
            raise FakeDiscordUsageError(f"the focused option {focused!r} needs a (partial) value in options")
        data: dict[str, Any] = {
            "id": schema["id"] if schema else str(self._stable_id(f"cmd:{path[0]}")),
            "name": path[0],
            "type": 1,
            "options": top,
        }
        if schema is not None and schema.get("guild_id"):
            data["guild_id"] = schema["guild_id"]
        if resolved:
            data["resolved"] = resolved
        return data

    def _stable_id(self, key: str) -> int:
        """An id that stays the same for an unsynced command name (like a registered command's)."""
        if key not in self._stable_ids:
            self._stable_ids[key] = self.ids.new()
        return self._stable_ids[key]

    def _check_visible(
        self, user: FakeUser, channel: FakeChannel, guild: FakeGuild | None, schema: dict[str, Any]
    ) -> None:
        name = schema["name"]
        hint = " (pass bypass_visibility=True to simulate an admin's override)"
        perms = self.member_permissions(user, channel)
        if guild is not None and perms & permissions.USE_APPLICATION_COMMANDS == 0:
            raise FakeDiscordUsageError(
                f"{user.username} may not use application commands in #{channel.name}"
            )
        if schema.get("nsfw"):
            source = (
                self.channels.get(channel.parent_id) if channel.is_thread and channel.parent_id else channel
            )
            if guild is not None and not (source and source.nsfw):
                raise FakeDiscordUsageError(
                    f"/{name} is age-restricted: Discord hides it in #{channel.name}{hint}"
                )
        required = schema.get("default_member_permissions")
        if required is not None and guild is not None:
            required = int(required)
            base = permissions.base_permissions(guild, self._member(guild, user))
            if (required == 0 and not base & permissions.ADMINISTRATOR) or base & required != required:
                raise FakeDiscordUsageError(
                    f"{user.username} lacks default_member_permissions of /{name}{hint}"
                )
        if guild is None and schema.get("dm_permission") is False:
            raise FakeDiscordUsageError(f"/{name} has dm_permission=False: Discord hides it in DMs")
        contexts = schema.get("contexts")
        if contexts is not None and (0 if guild is not None else 1) not in contexts:
            raise FakeDiscordUsageError(f"/{name} is not available in this context (contexts={contexts})")

    def _option(
        self,
        user: FakeUser,
        name: str,
        value: Any,
        spec: dict[str, Any] | None,
        resolved: dict[str, dict[str, Any]],
        channel: FakeChannel,
        *,
        focused: bool,
    ) -> dict[str, Any]:
        kind = spec["type"] if spec is not None else self._infer_type(value)
        if focused:
            return {
                "name": name,
                "type": kind,
                "value": value if isinstance(value, str) else str(value),
                "focused": True,
            }
        if kind == STRING:
            if not isinstance(value, str):
                raise FakeDiscordUsageError(f"option {name!r} is a string option, got {value!r}")
            self._check_range(name, len(value), spec, "min_length", "max_length")
        elif kind == INTEGER:
            if isinstance(value, bool) or not isinstance(value, int):
                raise FakeDiscordUsageError(f"option {name!r} is an integer option, got {value!r}")
            self._check_range(name, value, spec, "min_value", "max_value")
        elif kind == NUMBER:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise FakeDiscordUsageError(f"option {name!r} is a number option, got {value!r}")
            self._check_range(name, value, spec, "min_value", "max_value")
        elif kind == BOOLEAN:
            if not isinstance(value, bool):
                raise FakeDiscordUsageError(f"option {name!r} is a boolean option, got {value!r}")
        elif kind in (USER, MENTIONABLE) and isinstance(value, FakeUser):
            self._resolve_user(value, resolved, channel)
            value = str(value.id)
        elif kind in (ROLE, MENTIONABLE) and isinstance(value, FakeRole):
            resolved.setdefault("roles", {})[str(value.id)] = payloads.role_payload(value)
            value = str(value.id)
        elif kind == CHANNEL and isinstance(value, FakeChannel):
            allowed = (spec or {}).get("channel_types")
            if allowed and value.type not in allowed:
                raise FakeDiscordUsageError(
                    f"option {name!r} accepts channel types {allowed}, not {value.type}"
                )
            resolved.setdefault("channels", {})[str(value.id)] = payloads.channel_payload(
                value, permissions=self.member_permissions(user, value)
            )
            value = str(value.id)
        elif kind == ATTACHMENT:
            upload = _as_upload(value)
            if upload is None:
                raise FakeDiscordUsageError(
                    f"option {name!r} takes an upload (filename, bytes[, content_type])"
                )
            attachment = self._new_attachment(
                channel.id, upload.filename, upload.data, upload.content_type, ephemeral=True
            )
            resolved.setdefault("attachments", {})[str(attachment.id)] = payloads.attachment_payload(
                attachment
            )
            value = str(attachment.id)
        else:
            raise FakeDiscordUsageError(f"option {name!r} (type {kind}) cannot take {value!r}")
        choices = (spec or {}).get("choices")
        if choices and value not in [c["value"] for c in choices]:
            raise FakeDiscordUsageError(
                f"option {name!r} must be one of {[c['value'] for c in choices]}, got {value!r}"
            )
        return {"name": name, "type": kind, "value": value}

    @staticmethod
    def _infer_type(value: Any) -> int:
        if isinstance(value, bool):
            return BOOLEAN
        if isinstance(value, int):
            return INTEGER
        if isinstance(value, float):
            return NUMBER
        if isinstance(value, str):
            return STRING
        if isinstance(value, FakeUser):
            return USER
        if isinstance(value, FakeRole):
            return ROLE
        if isinstance(value, FakeChannel):
            return CHANNEL
        if _as_upload(value) is not None:
            return ATTACHMENT
        raise FakeDiscordUsageError(f"cannot send {value!r} as an option value")

    @staticmethod
    def _check_range(name: str, amount: float, spec: dict[str, Any] | None, low: str, high: str) -> None:
        if spec is None:
            return
        if spec.get(low) is not None and amount < spec[low]:
            raise FakeDiscordUsageError(f"option {name!r}: {amount} is below {low}={spec[low]}")
        if spec.get(high) is not None and amount > spec[high]:
            raise FakeDiscordUsageError(f"option {name!r}: {amount} is above {high}={spec[high]}")

    def _resolve_user(
        self, user: FakeUser, resolved: dict[str, dict[str, Any]], channel: FakeChannel
    ) -> None:
        resolved.setdefault("users", {})[str(user.id)] = payloads.user_payload(user)
        if channel.guild_id is not None:
            member = self.guilds[channel.guild_id].members.get(user.id)
            if member is not None:
                resolved.setdefault("members", {})[str(user.id)] = payloads.member_payload(
                    member, with_user=False, permissions=self.member_permissions(user, channel)
                )

    def _context_menu_data(
        self, name: str, kind: int, channel: FakeChannel, target_id: int, resolved: dict[str, Any]
    ) -> dict[str, Any]:
        guild = self.guilds.get(channel.guild_id) if channel.guild_id else None
        schema = self.command(name, guild=guild, type=kind)
        data: dict[str, Any] = {
            "id": schema["id"] if schema else str(self._stable_id(f"ctx{kind}:{name}")),
            "name": name,
            "type": kind,
            "target_id": str(target_id),
            "resolved": resolved,
        }
        if schema is not None and schema.get("guild_id"):
            data["guild_id"] = schema["guild_id"]
        return data

    # -- components and modals ---------------------------------------------------------------------
    def _component(self, message: FakeMessage, custom_id: str) -> dict[str, Any]:
        if message.deleted:
            raise FakeDiscordUsageError(f"{message!r} was deleted")
        component = message.find_component(custom_id)
        if component is None:
            raise FakeDiscordUsageError(
                f"{message!r} has no component {custom_id!r}; it has {message.custom_ids}"
            )
        if component.get("disabled"):
            raise FakeDiscordUsageError(f"component {custom_id!r} is disabled")
        return component

    def _select_values(
        self,
        component: dict[str, Any],
        values: Sequence[Any],
        resolved: dict[str, dict[str, Any]],
        channel: FakeChannel,
    ) -> list[str]:
        kind = component.get("type")
        low, high = component.get("min_values", 1), component.get("max_values", 1)
        if not low <= len(values) <= high:
            raise FakeDiscordUsageError(
                f"{component.get('custom_id')!r} takes {low}..{high} values, got {len(values)}"
            )
        out: list[str] = []
        for value in values:
            if kind == 3:
                allowed = [o["value"] for o in component.get("options", [])]
                if value not in allowed:
                    raise FakeDiscordUsageError(
                        f"{value!r} is not an option of {component.get('custom_id')!r}: {allowed}"
                    )
                out.append(str(value))
            elif isinstance(value, FakeUser):
                self._resolve_user(value, resolved, channel)
                out.append(str(value.id))
            elif isinstance(value, FakeRole):
                resolved.setdefault("roles", {})[str(value.id)] = payloads.role_payload(value)
                out.append(str(value.id))
            elif isinstance(value, FakeChannel):
                resolved.setdefault("channels", {})[str(value.id)] = payloads.channel_payload(
                    value, permissions=0
                )
                out.append(str(value.id))
            else:
                raise FakeDiscordUsageError(f"select {component.get('custom_id')!r} cannot take {value!r}")
        return out

    def _modal_answers(
        self,
        modal: dict[str, Any],
        values: dict[str, Any],
        resolved: dict[str, dict[str, Any]],
        channel: FakeChannel,
    ) -> list[dict[str, Any]]:
        def answer(component: dict[str, Any]) -> dict[str, Any]:
            kind = component.get("type")
            custom_id = component.get("custom_id")
            out: dict[str, Any] = {"type": kind}
            if component.get("id") is not None:
                out["id"] = component["id"]
            if kind == 4:
                text = values.pop(custom_id, component.get("value") or "")
                if not isinstance(text, str):
                    raise FakeDiscordUsageError(f"text input {custom_id!r} takes a string")
                if component.get("required", True) and not text:
                    raise FakeDiscordUsageError(f"text input {custom_id!r} is required")
                if text:
                    low, high = component.get("min_length") or 0, component.get("max_length") or 4000
                    if not low <= len(text) <= high:
                        raise FakeDiscordUsageError(
                            f"text input {custom_id!r} takes {low}..{high} characters"
                        )
                out.update(custom_id=custom_id, value=text)
            elif kind in (3, 5, 6, 7, 8):
                chosen = values.pop(custom_id, [])
                out.update(
                    custom_id=custom_id, values=self._select_values(component, chosen, resolved, channel)
                )
            elif kind == 19:
                items = list(values.pop(custom_id, []))
                low = component.get("min_values") or (1 if component.get("required", True) else 0)
                high = component.get("max_values") or 10
                if not low <= len(items) <= high:
                    raise FakeDiscordUsageError(
                        f"file upload {custom_id!r} takes {low}..{high} files, got {len(items)}"
                    )
                ids = []
                for item in items:
                    upload = _as_upload(item)
                    if upload is None:
                        raise FakeDiscordUsageError(f"file upload {custom_id!r} takes uploads")
                    attachment = self._new_attachment(
                        channel.id, upload.filename, upload.data, upload.content_type, ephemeral=True
                    )
                    resolved.setdefault("attachments", {})[str(attachment.id)] = payloads.attachment_payload(
                        attachment
                    )
                    ids.append(str(attachment.id))
                out.update(custom_id=custom_id, values=ids)
            return out

        answers: list[dict[str, Any]] = []
        for top in modal.get("components", []):
            if top.get("type") == 1:
                row: dict[str, Any] = {
                    "type": 1,
                    "components": [answer(c) for c in top.get("components", [])],
                }
                if top.get("id") is not None:
                    row["id"] = top["id"]
                answers.append(row)
            elif top.get("type") == 18:
                label: dict[str, Any] = {"type": 18, "component": answer(top["component"])}
                if top.get("id") is not None:
                    label["id"] = top["id"]
                answers.append(label)
            else:
                answers.append(answer(top))
        if values:
            raise FakeDiscordUsageError(f"the modal has no inputs {sorted(values)}")
        return answers

    # -- interactions ----------------------------------------------------------------------------
    async def _interact(
        self,
        kind: int,
        user: FakeUser,
        channel: FakeChannel,
        data: dict[str, Any],
        *,
        message: FakeMessage | None = None,
        origin: FakeInteraction | None = None,
        locale: str | None = None,
        expired: bool = False,
    ) -> FakeInteraction:
        interaction = self._new_interaction(
            kind, user, channel, data, message=message, locale=locale, expired=expired
        )
        interaction.origin = origin
        loop = asyncio.get_running_loop()
        sent: asyncio.Future[None] = loop.create_future()

        def on_sent() -> None:
            if interaction.dispatched_at is None:
                interaction.dispatched_at = loop.time()
            if not sent.done():
                sent.set_result(None)
            self._notify()

        interaction.sent = sent
        reached, live = self.gateway.dispatch("INTERACTION_CREATE", interaction.payload, on_sent)
        if not reached:
            raise FakeDiscordUsageError(
                "no bot is connected to the fake gateway (start the client and wait for READY)"
            )
        if live:
            await asyncio.wait_for(asyncio.shield(sent), 5.0)
        return interaction

    def _new_interaction(
        self,
        kind: int,
        user: FakeUser,
        channel: FakeChannel,
        data: dict[str, Any],
        *,
        message: FakeMessage | None,
        locale: str | None,
        expired: bool,
    ) -> FakeInteraction:
        created = time.time() - (TOKEN_LIFETIME + 60 if expired else 0)
        interaction_id = self.ids.new(at=created)
        token = "aW50ZXJhY3Rpb246" + secrets.token_urlsafe(96)
        guild = self.guilds.get(channel.guild_id) if channel.guild_id else None
        user_permissions = self.member_permissions(user, channel)
        payload: dict[str, Any] = {
            "id": str(interaction_id),
            "application_id": str(self.app_id),
            "type": kind,
            "data": data,
            "token": token,
            "version": 1,
            "locale": locale or user.locale,
            "entitlements": [],
            "entitlement_sku_ids": [],
            "attachment_size_limit": self.filesize_limit(channel),
            "app_permissions": str(self.bot_permissions(channel)),
            "channel_id": str(channel.id),
            "channel": payloads.channel_payload(
                channel,
                permissions=user_permissions,
                recipients=[self.users[u] for u in channel.recipient_ids if u in self.users],
            ),
        }
        if guild is not None:
            member = self._member(guild, user)
            payload.update(
                guild_id=str(guild.id),
                guild={
                    "id": str(guild.id),
                    "locale": guild.preferred_locale,
                    "features": list(guild.features),
                },
                guild_locale=guild.preferred_locale,
                member=payloads.member_payload(member, permissions=user_permissions),
                authorizing_integration_owners={"0": str(guild.id)},
                context=0,
            )
        else:
            payload.update(
                user=payloads.user_payload(user), authorizing_integration_owners={"0": "0"}, context=1
            )
        if message is not None:
            payload["message"] = self._message_json(message)
        interaction = FakeInteraction(
            id=interaction_id,
            token=token,
            type=kind,
            user=user,
            guild_id=guild.id if guild else None,
            channel_id=channel.id,
            payload=payload,
            message=message,
        )
        self.interactions.append(interaction)
        self._interactions_by_id[interaction.id] = interaction
        self._interactions_by_token[token] = interaction
        return interaction


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

"""The fake's state, as plain objects tests read: users, guilds, channels, messages, interactions, requests.

Everything here is data; the server mutates it and tests inspect it.  Times named ``at`` are
``loop.time()`` readings (monotonic seconds); ``created_at`` values are UNIX seconds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from .snowflakes import snowflake_time

# Channel types (Discord's numbers).
TEXT = 0
DM = 1
CATEGORY = 4
NEWS = 5
PUBLIC_THREAD = 11
PRIVATE_THREAD = 12
FORUM = 15

# Message flags.
FLAG_SUPPRESS_EMBEDS = 1 << 2
FLAG_EPHEMERAL = 1 << 6
FLAG_LOADING = 1 << 7
FLAG_SUPPRESS_NOTIFICATIONS = 1 << 12
FLAG_IS_COMPONENTS_V2 = 1 << 15

# Interaction types.
APPLICATION_COMMAND = 2
MESSAGE_COMPONENT = 3
AUTOCOMPLETE = 4
MODAL_SUBMIT = 5

# Interaction callback types.
CHANNEL_MESSAGE = 4
DEFERRED_CHANNEL_MESSAGE = 5
DEFERRED_UPDATE_MESSAGE = 6
UPDATE_MESSAGE = 7
AUTOCOMPLETE_RESULT = 8
MODAL = 9

TOKEN_LIFETIME = 15 * 60.0


class Upload(NamedTuple):
    """A file a fake user attaches (to a slash-command option or a plain message)."""

    filename: str
    data: bytes
    content_type: str | None = None


@dataclass(eq=False)
class FakeUser:
    id: int
    username: str
    global_name: str | None = None
    locale: str = "en-US"
    bot: bool = False
    avatar: str | None = None

    @property
    def mention(self) -> str:
        return f"<@{self.id}>"


@dataclass(eq=False)
class FakeRole:
    id: int
    guild_id: int
    name: str
    permissions: int = 0
    position: int = 0
    color: int = 0
    managed: bool = False
    bot_id: int | None = None


@dataclass(eq=False)
class FakeMember:
    user: FakeUser
    guild_id: int
    role_ids: list[int] = field(default_factory=list)
    nick: str | None = None
    joined_at: float = field(default_factory=time.time)


@dataclass(eq=False)
class Overwrite:
    id: int
    kind: int  # 0 role, 1 member
    allow: int = 0
    deny: int = 0


@dataclass(eq=False)
class FakeChannel:
    id: int
    guild_id: int | None
    name: str
    type: int = TEXT
    nsfw: bool = False
    position: int = 0
    parent_id: int | None = None
    topic: str | None = None
    owner_id: int | None = None  # threads
    recipient_ids: list[int] = field(default_factory=list)  # DMs
    overwrites: dict[int, Overwrite] = field(default_factory=dict)

    @property
    def is_thread(self) -> bool:
        return self.type in (PUBLIC_THREAD, PRIVATE_THREAD)

    @property
    def mention(self) -> str:
        return f"<#{self.id}>"


@dataclass(eq=False)
class FakeGuild:
    id: int
    name: str
    owner_id: int
    preferred_locale: str = "en-US"
    premium_tier: int = 0
    attachment_size_limit: int | None = None
    features: list[str] = field(default_factory=list)
    roles: dict[int, FakeRole] = field(default_factory=dict)
    channels: dict[int, FakeChannel] = field(default_factory=dict)
    members: dict[int, FakeMember] = field(default_factory=dict)

    @property
    def everyone(self) -> FakeRole:
        return self.roles[self.id]

    @property
    def filesize_limit(self) -> int:
        """Per-file upload limit: the explicit override, else by boost tier like Discord."""
        if self.attachment_size_limit is not None:
            return self.attachment_size_limit
        return {2: 50 * 1024 * 1024, 3: 100 * 1024 * 1024}.get(self.premium_tier, 10 * 1024 * 1024)


@dataclass(eq=False)
class FakeAttachment:
    id: int
    filename: str
    data: bytes
    content_type: str | None
    url: str
    description: str | None = None
    ephemeral: bool = False
    width: int | None = None
    height: int | None = None

    @property
    def size(self) -> int:
        return len(self.data)


@dataclass(eq=False)
class MessageRevision:
    """One state of a message: index 0 is how it was created, later ones are edits."""

    content: str
    embeds: list[dict[str, Any]]
    components: list[dict[str, Any]]
    attachments: list[FakeAttachment]
    flags: int
    at: float
    via: str  # e.g. "POST /channels/{channel_id}/messages", "callback 7", "PATCH @original"


@dataclass(eq=False)
class FakeMessage:
    id: int
    channel_id: int
    guild_id: int | None
    author: FakeUser
    revisions: list[MessageRevision]
    type: int = 0
    tts: bool = False
    webhook_id: int | None = None
    application_id: int | None = None
    interaction: FakeInteraction | None = None
    message_reference: dict[str, Any] | None = None
    mentions: list[FakeUser] = field(default_factory=list)
    reactions: dict[str, list[int]] = field(default_factory=dict)  # emoji -> user ids, in order
    deleted: bool = False
    created_at: float = field(default_factory=time.time)
    edited_at: float | None = None

    # The current state, from the last revision.
    @property
    def current(self) -> MessageRevision:
        return self.revisions[-1]

    @property
    def content(self) -> str:
        return self.current.content

    @property
    def embeds(self) -> list[dict[str, Any]]:
        return self.current.embeds

    @property
    def components(self) -> list[dict[str, Any]]:
        return self.current.components

    @property
    def attachments(self) -> list[FakeAttachment]:
        return self.current.attachments

    @property
    def flags(self) -> int:
        return self.current.flags

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & FLAG_EPHEMERAL)

    @property
    def loading(self) -> bool:
        return bool(self.flags & FLAG_LOADING)

    @property
    def edits(self) -> list[MessageRevision]:
        return self.revisions[1:]

    @property
    def files(self) -> dict[str, bytes]:
        """Filename -> bytes of the current attachments."""
        return {a.filename: a.data for a in self.attachments}

    def iter_components(self) -> Iterator[dict[str, Any]]:
        """Every component, depth first (rows, sections, containers and their children)."""
        yield from walk_components(self.components)

    @property
    def custom_ids(self) -> list[str]:
        return [c["custom_id"] for c in self.iter_components() if "custom_id" in c]

    def find_component(self, custom_id: str) -> dict[str, Any] | None:
        return next((c for c in self.iter_components() if c.get("custom_id") == custom_id), None)

    def __repr__(self) -> str:
        flags = " ephemeral" if self.ephemeral else ""
        return f"<FakeMessage id={self.id} channel={self.channel_id}{flags} content={self.content[:60]!r} files={list(self.files)}>"


def walk_components(components: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for component in components:
        yield component
        if "components" in component:
            yield from walk_components(component["components"])
        for key in ("accessory", "component"):
            if isinstance(component.get(key), dict):
                yield from walk_components([component[key]])


@dataclass(eq=False)
class InteractionResponse:
    """One callback the bot made (accepted or refused) for an interaction."""

    type: int
    data: dict[str, Any] | None
    files: list[FakeAttachment]
    at: float
    delay: float | None  # seconds since the interaction was dispatched
    status: int
    error: dict[str, Any] | None = None

    @property
    def accepted(self) -> bool:
        return 200 <= self.status < 300

    @property
    def ephemeral(self) -> bool:
        return bool((self.data or {}).get("flags", 0) & FLAG_EPHEMERAL)


@dataclass(eq=False)
class FakeInteraction:
    id: int
    token: str
    type: int
    user: FakeUser
    guild_id: int | None
    channel_id: int | None
    payload: dict[str, Any]
    message: FakeMessage | None = None  # the message a component/modal belonged to
    origin: FakeInteraction | None = None  # the interaction whose modal this submit answers
    dispatched_at: float | None = None
    responses: list[InteractionResponse] = field(default_factory=list)
    original: FakeMessage | None = None  # what @original resolves to
    followups: list[FakeMessage] = field(default_factory=list)
    token_revoked: bool = False
    sent: asyncio.Future[None] | None = None

    @property
    def data(self) -> dict[str, Any]:
        return self.payload.get("data", {})

    @property
    def created_at(self) -> float:
        return snowflake_time(self.id)

    @property
    def expires_at(self) -> float:
        return self.created_at + TOKEN_LIFETIME

    def token_expired(self) -> bool:
        return self.token_revoked or time.time() >= self.expires_at

    @property
    def response(self) -> InteractionResponse | None:
        """The accepted initial response, if any."""
        return next((r for r in self.responses if r.accepted), None)

    @property
    def acknowledged(self) -> bool:
        return self.response is not None

    @property
    def modal(self) -> dict[str, Any] | None:
        response = self.response
        return response.data if response is not None and response.type == MODAL else None

    @property
    def choices(self) -> list[dict[str, Any]] | None:
        response = self.response
        if response is None or response.type != AUTOCOMPLETE_RESULT:
            return None
        return (response.data or {}).get("choices", [])

    @property
    def messages(self) -> list[FakeMessage]:
        """Messages this interaction's token produced: @original (if it made one) then followups."""
        result: list[FakeMessage] = []
        if self.original is not None and self.original is not self.message:
            result.append(self.original)
        result.extend(m for m in self.followups if m not in result)
        return result

    def __repr__(self) -> str:
        name = self.data.get("name") or self.data.get("custom_id")
        return f"<FakeInteraction id={self.id} type={self.type} {name!r} responses={[r.type for r in self.responses]}>"


@dataclass(frozen=True)
class RequestRecord:
    method: str
    path: str
    route: str | None  # the template, e.g. "/channels/{channel_id}/messages" (None if unknown)
    params: Mapping[str, str]
    query: Mapping[str, str]
    status: int
    at: float
    json: Any = None  # the JSON body, or the multipart payload_json
    filenames: tuple[str, ...] = ()
    fault: bool = False  # answered by an injected fault


@dataclass(frozen=True)
class SyncCall:
    guild_id: int | None
    commands: list[dict[str, Any]]
    at: float


@dataclass(eq=False)
class Fault:
    """An injected failure: answers ``remaining`` matching requests (forever when None) with ``status``."""

    method: str | None
    route: str | None
    status: int
    remaining: int | None
    match: dict[str, str]
    code: int
    message: str
    retry_after: float = 0.0
    is_global: bool = False
    hits: int = 0

    def matches(self, method: str, route: str | None, params: Mapping[str, str]) -> bool:
        if self.remaining is not None and self.remaining <= 0:
            return False
        if self.method is not None and self.method != method:
            return False
        if self.route is not None and self.route != route:
            return False
        return all(params.get(k) == v for k, v in self.match.items())

    @property
    def exhausted(self) -> bool:
        return self.remaining is not None and self.remaining <= 0

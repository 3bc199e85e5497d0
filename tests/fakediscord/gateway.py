"""The fake gateway: HELLO, heartbeats, IDENTIFY/READY/GUILD_CREATE, RESUME with replay, dispatch by intent.

A *session* (``session_id``) outlives its websocket *connection*: when a connection drops,
dispatches are buffered on the session and replayed on RESUME, as on Discord.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from . import payloads

if TYPE_CHECKING:
    from .server import FakeDiscord

_log = logging.getLogger(__name__)

# Intent bits.
GUILDS = 1 << 0
GUILD_MEMBERS = 1 << 1
GUILD_PRESENCES = 1 << 8
GUILD_MESSAGES = 1 << 9
GUILD_MESSAGE_REACTIONS = 1 << 10
DIRECT_MESSAGES = 1 << 12
DIRECT_MESSAGE_REACTIONS = 1 << 13
MESSAGE_CONTENT = 1 << 15

PRIVILEGED_INTENTS = {
    "members": GUILD_MEMBERS,
    "presences": GUILD_PRESENCES,
    "message_content": MESSAGE_CONTENT,
}
# Application flags that mark a privileged intent as enabled in the developer portal.
PRIVILEGED_APP_FLAGS = {"presences": 1 << 12, "members": 1 << 14, "message_content": 1 << 18}

# Which intent an event needs: (in a guild, in a DM).  Events not listed are always sent.
EVENT_INTENTS: dict[str, tuple[int, int]] = {
    "GUILD_CREATE": (GUILDS, GUILDS),
    "GUILD_UPDATE": (GUILDS, GUILDS),
    "GUILD_DELETE": (GUILDS, GUILDS),
    "GUILD_ROLE_CREATE": (GUILDS, GUILDS),
    "GUILD_ROLE_UPDATE": (GUILDS, GUILDS),
    "CHANNEL_CREATE": (GUILDS, GUILDS),
    "CHANNEL_UPDATE": (GUILDS, GUILDS),
    "CHANNEL_DELETE": (GUILDS, GUILDS),
    "THREAD_CREATE": (GUILDS, GUILDS),
    "GUILD_MEMBER_ADD": (GUILD_MEMBERS, GUILD_MEMBERS),
    "GUILD_MEMBER_UPDATE": (GUILD_MEMBERS, GUILD_MEMBERS),
    "GUILD_MEMBER_REMOVE": (GUILD_MEMBERS, GUILD_MEMBERS),
    "MESSAGE_CREATE": (GUILD_MESSAGES, DIRECT_MESSAGES),
    "MESSAGE_UPDATE": (GUILD_MESSAGES, DIRECT_MESSAGES),
    "MESSAGE_DELETE": (GUILD_MESSAGES, DIRECT_MESSAGES),
    "MESSAGE_REACTION_ADD": (GUILD_MESSAGE_REACTIONS, DIRECT_MESSAGE_REACTIONS),
    "MESSAGE_REACTION_REMOVE": (GUILD_MESSAGE_REACTIONS, DIRECT_MESSAGE_REACTIONS),
}

# Close codes after which Discord will not accept a RESUME of the session.
NON_RESUMABLE_CLOSE_CODES = {4004, 4007, 4009, 4010, 4011, 4012, 4013, 4014}

OnSent = Callable[[], None]


class GatewayConnection:
    """One websocket; frames go out through a queue so dispatch order is kept and callers need not await."""

    def __init__(self, ws: web.WebSocketResponse, path: str, query: dict[str, str]) -> None:
        self.ws = ws
        self.path = path
        self.query = query
        self.session: GatewaySession | None = None
        self.heartbeats = 0
        self.replayed = 0  # frames re-sent on RESUME
        self.server_close_code: int | None = None
        self._outbox: asyncio.Queue[tuple[str, OnSent | None]] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._writer = asyncio.get_running_loop().create_task(
            self._write(), name="fakediscord-gateway-writer"
        )

    @property
    def open(self) -> bool:
        return not self.ws.closed and self.server_close_code is None

    def send(self, frame: dict[str, Any], on_sent: OnSent | None = None) -> None:
        self._outbox.put_nowait((json.dumps(frame, ensure_ascii=False), on_sent))

    async def _write(self) -> None:
        while True:
            text, on_sent = await self._outbox.get()
            if self.ws.closed:
                continue
            try:
                await self.ws.send_str(text)
            except (ConnectionError, RuntimeError):
                continue
            if on_sent is not None:
                on_sent()

    async def close(self, code: int, message: str = "") -> None:
        self.server_close_code = code
        await self.ws.close(code=code, message=message.encode())

    async def stop(self) -> None:
        if self._writer is not None:
            self._writer.cancel()
            try:
                await self._writer
            except asyncio.CancelledError:
                pass


@dataclass(eq=False)
class GatewaySession:
    id: str
    intents: int
    shard: list[int] | None
    seq: int = 0
    connection: GatewayConnection | None = None
    buffer: list[tuple[dict[str, Any], OnSent | None]] = field(default_factory=list)
    invalidated: bool = False
    ready_sent: bool = False
    resumes: int = 0

    @property
    def connected(self) -> bool:
        return self.connection is not None and self.connection.open

    def dispatch(self, event: str, data: dict[str, Any], on_sent: OnSent | None = None) -> bool:
        """Sequence and send (or buffer for replay); True when it went out on a live connection."""
        self.seq += 1
        frame = {"op": 0, "t": event, "s": self.seq, "d": data}
        self.buffer.append((frame, on_sent))
        if self.connected:
            assert self.connection is not None
            self.connection.send(frame, on_sent)
            return True
        return False


class Gateway:
    def __init__(self, fake: FakeDiscord) -> None:
        self.fake = fake
        self.sessions: dict[str, GatewaySession] = {}
        self.connections: list[GatewayConnection] = []

    # -- what tests read -------------------------------------------------------------------
    @property
    def live_sessions(self) -> list[GatewaySession]:
        return [s for s in self.sessions.values() if not s.invalidated]

    @property
    def open_connections(self) -> list[GatewayConnection]:
        return [c for c in self.connections if c.open]

    # -- dispatch ------------------------------------------------------------------------
    def dispatch(self, event: str, data: dict[str, Any], on_sent: OnSent | None = None) -> tuple[int, int]:
        """Send ``event`` to every live session whose intents allow it: (sessions reached, sent live)."""
        reached = live = 0
        for session in self.live_sessions:
            shaped = self._shape(session, event, data)
            if shaped is None:
                continue
            reached += 1
            live += session.dispatch(event, shaped, on_sent)
        return reached, live

    def _shape(self, session: GatewaySession, event: str, data: dict[str, Any]) -> dict[str, Any] | None:
        needed = EVENT_INTENTS.get(event)
        if needed is not None:
            bit = needed[0] if "guild_id" in data or event.startswith("GUILD_") else needed[1]
            if not session.intents & bit:
                return None
        if event in ("MESSAGE_CREATE", "MESSAGE_UPDATE") and not session.intents & MESSAGE_CONTENT:
            author = (data.get("author") or {}).get("id")
            mentioned = any(m.get("id") == str(self.fake.bot.id) for m in data.get("mentions", []))
            if "guild_id" in data and author != str(self.fake.bot.id) and not mentioned:
                # Without the Message Content intent a bot sees other people's guild messages empty.
                data = {**data, "content": "", "embeds": [], "attachments": [], "components": []}
        return data

    # -- the websocket endpoint -------------------------------------------------------------
    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True, max_msg_size=0)
        await ws.prepare(request)
        connection = GatewayConnection(ws, request.path, dict(request.query))
        self.connections.append(connection)
        connection.start()
        connection.send(
            {
                "op": 10,
                "d": {"heartbeat_interval": int(self.fake.heartbeat_interval * 1000)},
                "s": None,
                "t": None,
            }
        )
        try:
            async for message in ws:
                if message.type == WSMsgType.TEXT:
                    await self._on_frame(connection, json.loads(message.data))
                elif message.type == WSMsgType.BINARY:
                    await connection.close(4002, "Error while decoding payload.")
        except Exception as exc:  # a bug in the fake: make it visible, never silent
            self.fake._internal_error(f"gateway: {exc!r}")
            raise
        finally:
            await connection.stop()
            session = connection.session
            if session is not None and session.connection is connection:
                session.connection = None
                client_closed_cleanly = connection.server_close_code is None and ws.close_code in (1000, 1001)
                if client_closed_cleanly or connection.server_close_code in NON_RESUMABLE_CLOSE_CODES:
                    session.invalidated = True
            self.fake._notify()
        return ws

    async def _on_frame(self, connection: GatewayConnection, frame: dict[str, Any]) -> None:
        op, data = frame.get("op"), frame.get("d")
        if op == 1:
            connection.heartbeats += 1
            connection.send({"op": 11, "d": None, "s": None, "t": None})
            return
        if op == 2:
            await self._identify(connection, data or {})
        elif op == 6:
            await self._resume(connection, data or {})
        elif connection.session is None:
            await connection.close(4003, "Not authenticated.")
        elif op == 3:
            self.fake.presence_updates.append(data)
        elif op == 8:
            self._request_members(connection, data or {})
        elif op == 4:
            pass  # voice state: not simulated
        else:
            await connection.close(4001, "Unknown opcode.")
        self.fake._notify()

    async def _identify(self, connection: GatewayConnection, data: dict[str, Any]) -> None:
        fake = self.fake
        if connection.session is not None:
            await connection.close(4005, "Already authenticated.")
            return
        if data.get("token") != fake.token:
            await connection.close(4004, "Authentication failed.")
            return
        intents = data.get("intents")
        if not isinstance(intents, int):
            await connection.close(4013, "Invalid intent(s).")
            return
        for name, bit in PRIVILEGED_INTENTS.items():
            if intents & bit and name not in fake.privileged_intents:
                await connection.close(4014, "Disallowed intent(s).")
                return
        session = GatewaySession(id=uuid.uuid4().hex, intents=intents, shard=data.get("shard"))
        self.sessions[session.id] = session
        session.connection = connection
        connection.session = session
        ready: dict[str, Any] = {
            "v": 10,
            "user": {
                **payloads.user_payload(fake.bot),
                "verified": True,
                "mfa_enabled": False,
                "email": None,
            },
            "guilds": [{"id": str(g.id), "unavailable": True} for g in fake.bot_guilds()],
            "session_id": session.id,
            "session_type": "normal",
            "resume_gateway_url": fake.resume_gateway_url,
            "application": {"id": str(fake.app_id), "flags": fake.application_flags},
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "guild_join_requests": [],
            "geo_ordered_rtc_regions": [],
            "user_settings": {},
            "auth": {},
            "_trace": ["fakediscord"],
        }
        if session.shard is not None:
            ready["shard"] = session.shard
        session.dispatch("READY", ready)
        if intents & GUILDS:
            for guild in fake.bot_guilds():
                session.dispatch("GUILD_CREATE", fake._guild_create_payload(guild, intents))
        session.ready_sent = True

    async def _resume(self, connection: GatewayConnection, data: dict[str, Any]) -> None:
        if data.get("token") != self.fake.token:
            await connection.close(4004, "Authentication failed.")
            return
        session = self.sessions.get(str(data.get("session_id")))
        if session is None or session.invalidated:
            connection.send({"op": 9, "d": False, "s": None, "t": None})
            return
        if session.connection is not None and session.connection is not connection:
            session.connection.session = None
        session.connection = connection
        connection.session = session
        session.resumes += 1
        last_seen = int(data.get("seq") or 0)
        for frame, on_sent in session.buffer:
            if frame["s"] > last_seen:
                connection.send(frame, on_sent)
                connection.replayed += 1
        session.dispatch("RESUMED", {"_trace": ["fakediscord"]})

    def _request_members(self, connection: GatewayConnection, data: dict[str, Any]) -> None:
        assert connection.session is not None
        guild = self.fake.guilds.get(int(data.get("guild_id") or 0))
        if guild is None:
            return
        query = str(data.get("query") or "").lower()
        wanted = {int(u) for u in data.get("user_ids") or []}
        members = [
            payloads.member_payload(m)
            for m in guild.members.values()
            if (not wanted or m.user.id in wanted) and m.user.username.lower().startswith(query)
        ]
        limit = int(data.get("limit") or 0)
        if limit:
            members = members[:limit]
        chunk: dict[str, Any] = {
            "guild_id": str(guild.id),
            "members": members,
            "chunk_index": 0,
            "chunk_count": 1,
            "not_found": [],
        }
        if data.get("nonce") is not None:
            chunk["nonce"] = data["nonce"]
        connection.session.dispatch("GUILD_MEMBERS_CHUNK", chunk)

    # -- fault injection ---------------------------------------------------------------------
    async def drop(self, code: int) -> int:
        connections = self.open_connections
        for connection in connections:
            await connection.close(code, "fakediscord: connection dropped")
        return len(connections)

    def send_op(self, op: int, data: Any) -> int:
        connections = [c for c in self.open_connections if c.session is not None]
        for connection in connections:
            connection.send({"op": op, "d": data, "s": None, "t": None})
        return len(connections)

    async def close_all(self) -> None:
        for connection in list(self.open_connections):
            try:
                await connection.close(1001, "fakediscord stopping")
            except Exception:  # already gone
                _log.debug("closing a gateway connection failed", exc_info=True)

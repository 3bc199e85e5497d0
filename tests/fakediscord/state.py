"""The fake's state: what exists (users, guilds, channels, messages, interactions, commands), what the
bot did (requests, syncs, CDN downloads), its addresses, and the change signal every wait listens to.

The bottom layer of :class:`~.server.FakeDiscord`; ``rest.py`` and ``gateway.py`` use the internals here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from aiohttp import web

from .errors import FakeDiscordUsageError
from .gateway import GUILDS, Gateway
from .models import (
    FakeAttachment,
    FakeChannel,
    FakeGuild,
    FakeInteraction,
    FakeMessage,
    FakeUser,
    Fault,
    RequestRecord,
    SyncCall,
)
from .rest import API_PREFIX, RestApi
from .snowflakes import SnowflakeFactory

if TYPE_CHECKING:
    from .server import FakeDiscord

DEFAULT_TOKEN = "ZmFrZS1ib3Q.fakediscord.bot-token-for-tests"


class FakeState:
    """The fake's data and addresses; see :class:`~.server.FakeDiscord` for the knobs."""

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

        whole = cast("FakeDiscord", self)  # the class that stacks every layer on this one
        self.gateway = Gateway(whole)
        self.rest = RestApi(whole)
        self._changed = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

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

    # ==== internals shared with rest.py and gateway.py ===========================================
    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _internal_error(self, text: str) -> None:
        self.internal_errors.append(text)

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

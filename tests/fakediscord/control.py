"""The test-facing controls: waiting for what the bot does, injecting faults (429, 5xx, 403),
expiring tokens, dropping or steering the gateway, and sending raw gateway events."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from .errors import FakeDiscordUsageError, WaitTimeout
from .messages import MessagesMixin
from .models import (
    FakeChannel,
    FakeInteraction,
    FakeMessage,
    FakeUser,
    Fault,
    InteractionResponse,
    MessageRevision,
    SyncCall,
)
from .rest import API_PREFIX

T = TypeVar("T")


class ControlMixin(MessagesMixin):
    """Waiting helpers and fault injection."""

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

    def dispatch(self, event: str, data: dict[str, Any]) -> int:
        """Send any gateway event to the bot (filtered by its intents); returns the sessions reached."""
        return self.gateway.dispatch(event, data)[0]

    def _take_fault(self, method: str, route: str, params: Mapping[str, str]) -> Fault | None:
        for fault in self.faults:
            if fault.matches(method, route, params):
                fault.hits += 1
                if fault.remaining is not None:
                    fault.remaining -= 1
                return fault
        return None

"""``FakeDiscord``: a loopback Discord (REST + gateway + CDN) for end-to-end tests of a discord.py bot.

A test builds a small world (guilds, channels, users), points discord.py at the fake (see
:mod:`.discordpy`), then acts as users — slash commands, clicks, modals, reactions — and
inspects what the bot did: messages with their attachment bytes, every interaction response
with its delay, edit histories, synced commands and the request log.  Faults (429, 5xx, 403,
gateway drops, expired tokens) are injected per route.

The class is layered, each module building on the one before: ``state`` (data, addresses) ->
``world`` (guilds, channels, users) -> ``messages`` -> ``control`` (waiting, faults) -> ``commands``
(synced schemas) -> ``interactions`` (acting as users) -> here (lifecycle).
"""

from __future__ import annotations

import socket

from aiohttp import web

from .interactions import InteractionsMixin
from .state import DEFAULT_TOKEN
from .world import StandardWorld

MAX_UPLOAD = 256 * 1024 * 1024

__all__ = ["DEFAULT_TOKEN", "FakeDiscord", "StandardWorld"]


class FakeDiscord(InteractionsMixin):
    """A fake Discord on ``127.0.0.1``; ``async with FakeDiscord() as fake`` or ``start()``/``stop()``.

    ``ack_deadline``: seconds the bot has to answer an interaction (Discord: 3) before the
    callback gets 404 / 10062.  ``strict``: requests to routes the fake does not implement are
    collected in :attr:`unhandled_requests` and :meth:`assert_healthy` fails on them.
    ``first_followup_edits_deferred``: Discord turns the first followup after a "thinking"
    defer into an edit of the loading message (same id, the defer's ephemerality).
    """

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

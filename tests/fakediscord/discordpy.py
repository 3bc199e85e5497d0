"""Glue for discord.py 2.x: point it at a :class:`FakeDiscord` and run a client against it.

The only module of the fake that imports discord.  Two class attributes redirect everything:
``discord.http.Route.BASE`` (REST, interaction callbacks, followups) and
``DiscordWebSocket.DEFAULT_GATEWAY``; ``Asset.BASE`` is redirected too so avatar URLs stay local.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from typing import TypeVar

import aiohttp
import discord
import yarl
from discord.gateway import DiscordWebSocket
from discord.http import Route

from .server import FakeDiscord

ClientT = TypeVar("ClientT", bound=discord.Client)


@contextmanager
def pointed_at(fake: FakeDiscord) -> Iterator[None]:
    """Redirect discord.py to ``fake`` inside the block, restoring the real URLs after."""
    saved = (Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY, discord.Asset.BASE)
    Route.BASE = fake.api_base
    DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(fake.gateway_url)
    discord.Asset.BASE = fake.base_url + "/cdn"
    try:
        yield
    finally:
        Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY, discord.Asset.BASE = saved


def _trace_outside(fake: FakeDiscord, outside: list[str]) -> aiohttp.TraceConfig:
    allowed = (fake.base_url, fake.gateway_url.rsplit("/", 1)[0])

    async def on_request_start(
        session: object, context: object, params: aiohttp.TraceRequestStartParams
    ) -> None:
        url = str(params.url)
        if not url.startswith(allowed):
            outside.append(f"{params.method} {url}")

    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(on_request_start)
    return trace


@asynccontextmanager
async def running(
    client: ClientT,
    fake: FakeDiscord,
    *,
    token: str | None = None,
    ready_timeout: float = 10.0,
    fast_ready: bool = True,
) -> AsyncIterator[ClientT]:
    """Start ``client`` against ``fake`` (already :func:`pointed_at`), yield once it is ready, close it after.

    Login/identify failures (``LoginFailure``, ``PrivilegedIntentsRequired``, ...) are raised
    from the ``async with``.  ``fast_ready`` lowers ``guild_ready_timeout`` (2 s by default, it
    delays ``on_ready``) to 0.05 s.  Requests that leave loopback fail the block at exit.
    """
    if fast_ready:
        # Internal attribute: the constructor argument guild_ready_timeout= ends up here.
        client._connection.guild_ready_timeout = min(client._connection.guild_ready_timeout, 0.05)
    outside: list[str] = []
    if client.http.http_trace is None:
        client.http.http_trace = _trace_outside(fake, outside)
    task = asyncio.create_task(
        client.start(token if token is not None else fake.token), name="fakediscord-client"
    )
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ready_timeout
    try:
        while not client.is_ready():
            if task.done():
                task.result()  # raises the login / gateway error
                raise RuntimeError("the client stopped before it was ready")
            if loop.time() > deadline:
                raise TimeoutError(f"client not ready after {ready_timeout}s\n{fake.describe_recent()}")
            await asyncio.sleep(0.01)
    except BaseException:
        await client.close()
        with suppress(BaseException):
            await task
        raise
    try:
        yield client
    finally:
        await client.close()
        try:
            await asyncio.wait_for(task, 5.0)
        except (asyncio.CancelledError, discord.ConnectionClosed):
            pass
    if outside:  # only when the block itself succeeded, so a real failure is never masked
        raise AssertionError(f"requests left the fake Discord: {outside}")

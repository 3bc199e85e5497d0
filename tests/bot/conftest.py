"""Fixtures for bot tests: a fake Discord on loopback, with discord.py pointed at it.

``fake_discord``: a started :class:`~tests.fakediscord.FakeDiscord`; ``discord.http.Route.BASE``,
``DiscordWebSocket.DEFAULT_GATEWAY`` and ``Asset.BASE`` point at it for the test and are restored
after.  At teardown the fake must be healthy: no crash of its own and (strict) no request to a
route it does not implement.

``run_client``: ``async with run_client(client) as client:`` starts a ``discord.Client`` /
``commands.Bot`` against it (token = ``fake_discord.token``), waits until it is ready (with a
0.05 s ``guild_ready_timeout``) and closes it after.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import discord
import pytest

from tests.fakediscord import FakeDiscord
from tests.fakediscord.discordpy import pointed_at, running


@pytest.fixture
async def fake_discord() -> AsyncIterator[FakeDiscord]:
    fake = FakeDiscord()
    await fake.start()
    try:
        with pointed_at(fake):
            yield fake
    finally:
        await fake.stop()
    fake.assert_healthy()


@pytest.fixture
def run_client(
    fake_discord: FakeDiscord,
) -> Callable[..., AbstractAsyncContextManager[discord.Client]]:
    def start(client: discord.Client, **kwargs: Any) -> AbstractAsyncContextManager[discord.Client]:
        return running(client, fake_discord, **kwargs)

    return start

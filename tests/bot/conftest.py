"""Fixtures for bot tests: a fake Discord on loopback, with discord.py pointed at it.

``fake_discord``: a started :class:`~tests.fakediscord.FakeDiscord`; ``discord.http.Route.BASE``,
``DiscordWebSocket.DEFAULT_GATEWAY`` and ``Asset.BASE`` point at it for the test and are restored
after.  At teardown the fake must be healthy: no crash of its own and (strict) no request to a
route it does not implement.

``run_client``: ``async with run_client(client) as client:`` starts a ``discord.Client`` /
``commands.Bot`` against it (token = ``fake_discord.token``), waits until it is ready (with a
0.05 s ``guild_ready_timeout``) and closes it after.

``brushwork_bot``: the whole Brushwork bot (container, queue worker on the tiny model, the real
``BrushworkBot``) on a tmp home against ``fake_discord``: see :mod:`tests.bot.harness`.
Settings overrides come from the ``bot_settings`` fixture (override it in a module).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import discord
import pytest

from tests.bot.harness import BotHarness
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


# ---------------------------------------------------------------------- the Brushwork bot, end to end


@pytest.fixture
def bot_settings() -> dict[str, Any]:
    """Settings overrides for ``brushwork_bot`` (override this fixture, or mutate it, in a test module)."""
    return {}


@pytest.fixture
async def brushwork_bot(fake_discord: FakeDiscord, tmp_path, tiny_engine, bot_settings) -> AsyncIterator[BotHarness]:
    """The real Brushwork process stack on a tmp home against the fake Discord, started and ready.

    Yields a :class:`tests.bot.harness.BotHarness`: ``.fake``, ``.world`` (the standard world:
    guild, #general, age-restricted #nsfw-art, alice (en-US), wei (zh-CN), admin), ``.container``,
    ``.bot``, ``.engine`` (the tiny engine behind a gate: ``with h.engine.held(): …``),
    ``imagine(...)``, ``wait_for_result(...)``, ``restart()`` (same home and database).
    Everything is closed at teardown (the bot, the queue's worker, the database).
    """
    harness = BotHarness(fake_discord, fake_discord.add_standard_world(), tmp_path / "home", tiny_engine,
                         settings=bot_settings)
    await harness.start()
    try:
        yield harness
    finally:
        await harness.stop()

"""Fixtures for bot tests: a fake Discord on loopback, with discord.py pointed at it.

``fake_discord``: a started :class:`~tests.fakediscord.FakeDiscord`; ``discord.http.Route.BASE``,
``DiscordWebSocket.DEFAULT_GATEWAY`` and ``Asset.BASE`` point at it for the test and are restored
after.  At teardown the fake must be healthy: no crash of its own and (strict) no request to a
route it does not implement.

``run_client``: ``async with run_client(client) as client:`` starts a ``discord.Client`` /
``commands.Bot`` against it (token = ``fake_discord.token``), waits until it is ready (with a
0.05 s ``guild_ready_timeout``) and closes it after.

``make_container``: the one way tests get a composition root (``bot/container.py``):
``make_container(engine=tiny_engine, queue_max_per_user=5)`` builds one on ``tmp_path / "home"``
(or ``home=``), migrated, with those settings; ``engine=`` is used instead of building one (the
session's tiny engine: no second model build).  Every container made is closed at teardown.

``brushwork_bot``: the whole Brushwork bot (container, queue worker on the tiny model, the real
``BrushworkBot``) on a tmp home against ``fake_discord``: see :mod:`tests.bot.harness`.
Settings overrides come from the ``bot_settings`` fixture (override it in a module).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import discord
import pytest

from tests.bot.harness import BotHarness
from tests.fakediscord import FakeDiscord
from tests.fakediscord.discordpy import pointed_at, running

if TYPE_CHECKING:
    from bot.container import Container


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


# ---------------------------------------------------------------------- the composition root


class ContainerFactory:
    """Builds the composition root (``bot/container.py``) for tests, the one way they get one, and
    closes every container it built at teardown (closing twice is harmless: a test may close its own)."""

    def __init__(self, default_home: Path) -> None:
        self.default_home = default_home
        self.made: list[Container] = []

    def __call__(self, *, home: Path | None = None, engine: Any = None, migrate: bool = True,
                 **settings: Any) -> Container:
        """A container on ``home`` with ``load_settings(**settings)``; ``engine``: used instead of
        building one (pass the session's ``tiny_engine``: no second model build)."""
        from bot.container import build_container
        from bot.settings import load_settings

        container = build_container(load_settings(home=home or self.default_home, **settings),
                                    migrate=migrate, engine=engine)
        self.made.append(container)
        return container

    def close_all(self) -> None:
        for container in reversed(self.made):
            container.close()


@pytest.fixture
def make_container(tmp_path) -> Iterator[ContainerFactory]:
    """``make_container(engine=tiny_engine, **settings)``: a container on ``tmp_path / "home"``."""
    factory = ContainerFactory(tmp_path / "home")
    yield factory
    factory.close_all()


@pytest.fixture(scope="module")
def make_module_container(tmp_path_factory) -> Iterator[ContainerFactory]:
    """The same for module-scoped fixtures; closed when the module's tests are done."""
    factory = ContainerFactory(tmp_path_factory.mktemp("containers") / "home")
    yield factory
    factory.close_all()


# ---------------------------------------------------------------------- the Brushwork bot, end to end


@pytest.fixture
def bot_settings() -> dict[str, Any]:
    """Settings overrides for ``brushwork_bot`` (override this fixture, or mutate it, in a test module)."""
    return {}


@pytest.fixture
async def brushwork_bot(fake_discord: FakeDiscord, tmp_path, tiny_engine, bot_settings,
                        make_container) -> AsyncIterator[BotHarness]:
    """The real Brushwork process stack on a tmp home against the fake Discord, started and ready.

    Yields a :class:`tests.bot.harness.BotHarness`: ``.fake``, ``.world`` (the standard world:
    guild, #general, age-restricted #nsfw-art, alice (en-US), wei (zh-CN), admin), ``.container``,
    ``.bot``, ``.engine`` (the tiny engine behind a gate: ``with h.engine.held(): …``),
    ``imagine(...)``, ``wait_for_result(...)``, ``restart()`` (same home and database).
    Everything is closed at teardown (the bot, the queue's worker, the database).
    """
    harness = BotHarness(fake_discord, fake_discord.add_standard_world(), tmp_path / "home", tiny_engine,
                         settings=bot_settings, make_container=make_container)
    await harness.start()
    try:
        yield harness
    finally:
        await harness.stop()

"""A fake Discord on loopback (REST, gateway, CDN) for end-to-end tests of a discord.py bot.

Quick start (the ``fake_discord`` fixture in ``tests/bot/conftest.py`` does the first two)::

    fake = await FakeDiscord().start()
    with pointed_at(fake):                       # Route.BASE + DEFAULT_GATEWAY -> fake
        world = fake.add_standard_world()
        async with running(build_my_bot(), fake) as bot:
            interaction = await fake.slash(world.alice, world.general, "imagine", {"prompt": "a cat"})
            await fake.wait_for_response(interaction)
            message = await fake.wait_for_followup(interaction)
            assert message.attachments[0].data.startswith(b"\\x89PNG")
    await fake.stop()

``server`` (and the layers it stacks, see README.md), ``rest`` and ``gateway`` import aiohttp only;
``discordpy`` holds the discord.py glue.
"""

from .errors import APIError, FakeDiscordUsageError, WaitTimeout
from .models import (
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
    RequestRecord,
    SyncCall,
    Upload,
)
from .server import DEFAULT_TOKEN, FakeDiscord, StandardWorld

__all__ = [
    "DEFAULT_TOKEN",
    "APIError",
    "FakeAttachment",
    "FakeChannel",
    "FakeDiscord",
    "FakeDiscordUsageError",
    "FakeGuild",
    "FakeInteraction",
    "FakeMember",
    "FakeMessage",
    "FakeRole",
    "FakeUser",
    "Fault",
    "InteractionResponse",
    "MessageRevision",
    "RequestRecord",
    "StandardWorld",
    "SyncCall",
    "Upload",
    "WaitTimeout",
]

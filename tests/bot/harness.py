"""The Brushwork bot, end to end, against the fake Discord: what the ``brushwork_bot`` fixture yields.

A :class:`BotHarness` owns one Brushwork home (database, images, LoRAs) on ``tmp_path`` and runs
the real process stack on it: :class:`~bot.container.Container` (with the session's tiny engine
behind a :class:`GatedEngine`), the job queue with its worker thread, and a
:class:`~bot.discord_app.client.BrushworkBot` logged into the fake Discord.

    async def test_something(brushwork_bot):
        h = brushwork_bot
        interaction = await h.slash(h.world.alice, h.world.general, "imagine", {"prompt": "a fox --seed 3"})
        message = await h.wait_for_result(interaction)        # the images are attached
        assert message.attachments[0].data.startswith(b"\\x89PNG")

        with h.engine.held():                               # the worker blocks at its next run
            ...                                             # jobs queue up behind it
        await h.restart()                                   # same home and database, a new process stack

Prompts should stay tiny: :data:`TINY` (``--size 64x64 --steps 3``) is appended by :meth:`imagine`.

The engine is the session's tiny engine behind a :class:`GatedEngine`: ``held()`` (the worker waits
before its next engine call; ``entered`` says one is waiting), ``pause_at_step(k)``/``resume()``
(a run stops after reporting step ``k``, so its progress message can be inspected),
``fail_next(error)`` (the next call raises: the job fails).  ``h.bot.followers.wait()`` waits
until every followed job's answer is written; ``h.store_rows()`` is a unit of work on the
database.  The bot runs with status edits every :data:`TEST_EDIT_INTERVAL` seconds;
``h.start(**options)``/``h.restart(**options)`` pass other ``BrushworkBot`` options.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.fakediscord import FakeDiscord, StandardWorld
from tests.fakediscord.discordpy import running
from tests.fakediscord.models import FakeInteraction, FakeMessage, FakeUser

if TYPE_CHECKING:
    from bot.container import Container
    from bot.discord_app.client import BrushworkBot

#: Flags that keep a tiny-model job fast (well under a second on a CPU); 3 steps so that an upscale
#: (a hires pass at strength 0.4 over the same steps) still runs one.
TINY = "--size 64x64 --steps 3"
#: Generous: the first job of a session builds nothing (the tiny engine is shared) but CI is slow.
RESULT_TIMEOUT = 60.0
#: Status edits at most this often in tests (the bot's default is 1.5 s): quicker, same logic.
TEST_EDIT_INTERVAL = 0.25


class GatedEngine:
    """The shared tiny engine behind a gate, so tests can hold the worker mid-queue.

    Everything but ``generate`` (and ``lora_resolver``) is the wrapped engine's.  While
    :meth:`held`, a call to ``generate`` waits (in the worker thread) until released; ``entered``
    is set as soon as a call is waiting, so a test knows the worker is busy.
    """

    def __init__(self, engine: Any, lora_resolver: Any = None) -> None:
        self._engine = engine
        self.lora_resolver = lora_resolver
        self._open = threading.Event()
        self._open.set()
        self.entered = threading.Event()
        self.calls: list[int] = []  # images per engine call
        self._failures: list[BaseException] = []
        self._pause_step: int | None = None
        self.paused = threading.Event()  # set while a run waits at the step given to pause_at_step
        self._resume = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    def generate(self, requests, **kwargs):
        self.calls.append(len(requests))
        self.entered.set()
        if not self._open.wait(timeout=120):
            raise TimeoutError("GatedEngine: held for more than 120 s (a test forgot to release it)")
        self.entered.clear()
        if self._failures:
            raise self._failures.pop(0)
        if self._pause_step is not None and kwargs.get("on_step") is not None:
            kwargs["on_step"] = self._pausing(kwargs["on_step"], self._pause_step)
        return self._engine.generate(requests, **kwargs)

    def _pausing(self, on_step, step: int):
        def relay(info) -> None:
            on_step(info)  # the progress event (and its preview) goes out first
            if info.overall_step == step and self._pause_step is not None:
                self._pause_step = None
                self.paused.set()
                self._resume.wait(timeout=120)
                self.paused.clear()

        return relay

    def pause_at_step(self, step: int) -> None:
        """The next run stops after reporting ``step`` (its progress is out) until :meth:`resume`."""
        self._resume.clear()
        self._pause_step = step

    def resume(self) -> None:
        self._resume.set()

    def fail_next(self, error: BaseException) -> None:
        """The next engine call raises ``error`` (the job fails with it)."""
        self._failures.append(error)

    def hold(self) -> None:
        self._open.clear()

    def release(self) -> None:
        self._open.set()
        self._resume.set()

    @contextlib.contextmanager
    def held(self) -> Iterator[GatedEngine]:
        self.hold()
        try:
            yield self
        finally:
            self.release()


class BotHarness:
    """One Brushwork home, its queue worker and a logged-in bot; :meth:`restart` keeps the home."""

    def __init__(self, fake: FakeDiscord, world: StandardWorld, home: Path, tiny_engine: Any,
                 settings: Mapping[str, Any] | None = None, *,
                 make_container: Callable[..., Container]) -> None:
        self.fake = fake
        self._make_container = make_container  # the ``make_container`` fixture (tests/bot/conftest.py)
        self.world = world
        self.home = home
        self.settings_overrides = dict(settings or {})
        self.engine = GatedEngine(tiny_engine)
        self.container: Container | None = None
        self.bot: BrushworkBot | None = None
        self._stack: contextlib.AsyncExitStack | None = None
        self.generation = 0  # how many times the stack was started

    # ------------------------------------------------------------------ lifecycle
    def build_container(self) -> Container:
        from generation.engine import FolderLoraResolver

        # the session's tiny engine: no second model build
        container = self._make_container(home=self.home, engine=self.engine, discord_token=self.fake.token,
                                         **self.settings_overrides)
        settings = container.settings
        if self.engine.lora_resolver is None:
            self.engine.lora_resolver = FolderLoraResolver(settings.loras_dir, cache_dir=settings.cache_dir)
        return container

    async def start(self, **bot_options: Any) -> BrushworkBot:
        """Build the container, start the queue's worker, log a new bot in; returns the bot."""
        from bot.discord_app.client import BrushworkBot

        assert self._stack is None, "already started"
        bot_options.setdefault("edit_interval", TEST_EDIT_INTERVAL)
        stack = contextlib.AsyncExitStack()
        container = self.build_container()
        stack.callback(container.close)
        stack.callback(self.engine.release)  # a held worker must not block the queue's stop
        try:
            container.start_workers()
            bot = BrushworkBot(container, **bot_options)
            await stack.enter_async_context(running(bot, self.fake))
        except BaseException:
            await stack.aclose()
            raise
        self._stack, self.container, self.bot = stack, container, bot
        self.generation += 1
        return bot

    async def stop(self) -> None:
        """Close the bot, then stop the queue (a running job goes back to the queue) and the database."""
        stack, self._stack = self._stack, None
        self.bot = None
        if stack is not None:
            await stack.aclose()
        self.container = None

    async def restart(self, **bot_options: Any) -> BrushworkBot:
        """Stop everything and start again on the same home: what `brushwork run` does after a crash
        or an upgrade (the fake Discord and its messages stay)."""
        await self.stop()
        return await self.start(**bot_options)

    # ------------------------------------------------------------------ acting
    async def slash(self, user: FakeUser, channel: Any, command: str, options: Mapping[str, Any] | None = None,
                    **kwargs: Any) -> FakeInteraction:
        return await self.fake.slash(user, channel, command, options, **kwargs)

    async def imagine(self, user: FakeUser, channel: Any, prompt: str, *, tiny: bool = True,
                      **options: Any) -> FakeInteraction:
        """``/imagine prompt:<prompt> [TINY]`` with typed options."""
        text = f"{prompt} {TINY}" if tiny else prompt
        return await self.fake.slash(user, channel, "imagine", {"prompt": text, **options})

    # ------------------------------------------------------------------ waiting
    async def wait_for_result(self, interaction: FakeInteraction, *, timeout: float = RESULT_TIMEOUT) -> FakeMessage:
        """The message that shows the job's images: the interaction's original response once it
        has attachments, or a channel message mentioning the user (the expired-token fallback)."""

        def find() -> FakeMessage | None:
            original = interaction.original
            if original is not None and not original.deleted and _has_images(original):
                return original
            if original is not None and "❌" in original.content:
                raise AssertionError(f"the job failed: {original.content}")
            response = interaction.response
            if response is not None and response.ephemeral:
                raise AssertionError(f"answered privately instead: {(response.data or {}).get('content')!r}")
            for message in self.fake.messages:
                if (message.channel_id == interaction.channel_id and not message.deleted and message.interaction
                        is None and interaction.user.mention in message.content and _has_images(message)
                        and message.created_at >= interaction.created_at):
                    return message
            return None

        return await self.fake.wait_until(find, timeout=timeout, description=f"the images of {interaction!r}")

    async def wait_idle(self, timeout: float = RESULT_TIMEOUT) -> None:
        """Until no job waits or runs (the queue is empty)."""
        import asyncio

        assert self.container is not None
        container = self.container

        async def active() -> int:
            return len(await asyncio.to_thread(container.job_store.active))

        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while await active():
            if loop.time() > deadline:
                raise TimeoutError("jobs still active")
            await asyncio.sleep(0.05)

    def store_rows(self) -> Any:
        """A unit of work on the database (``with h.store_rows() as uow: uow.images…``)."""
        assert self.container is not None
        return self.container.unit_of_work()


def _has_images(message: FakeMessage) -> bool:
    return any(a.filename.endswith((".png", ".webp", ".jpg")) and not a.filename.startswith("preview")
               for a in message.attachments)


__all__ = ["RESULT_TIMEOUT", "TINY", "BotHarness", "GatedEngine"]

"""The bot process: intents, cogs, persistent buttons, command sync, job followers, logging.

:func:`serve` runs it on a container that ``brushwork run`` built (settings → database → queue →
worker → bot: the composition root).  No privileged intent is needed: slash commands, buttons
and modals arrive as interactions, and reactions through the (non-privileged) reaction intents.

Buttons are ``DynamicItem`` templates registered in :meth:`BrushworkBot.setup_hook`, so those on
messages sent before a restart keep working; unfinished jobs that a chat message waits for are
followed again at start (:meth:`~bot.discord_app.follow.Followers.resume`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.discord_app.actions import Actions
from bot.discord_app.components import ResultButton
from bot.discord_app.context import report_error
from bot.discord_app.follow import Followers
from bot.discord_app.translator import CatalogueTranslator
from generation.i18n import register_catalogue

if TYPE_CHECKING:
    from bot.container import Container

log = logging.getLogger(__name__)

# Feature modules, loaded in this order (each defines ``async def setup(bot)``).
COGS: tuple[str, ...] = (
    "bot.discord_app.cogs.imagine",
    "bot.discord_app.cogs.reactions",
    "bot.discord_app.cogs.history",
    "bot.discord_app.cogs.settings",
    "bot.discord_app.cogs.server",
    "bot.discord_app.cogs.queue",
    "bot.discord_app.cogs.help",
    "bot.discord_app.cogs.compare",
    "bot.discord_app.cogs.lora",
)

#: Seconds between two edits of a job's status message, and between two preview images.
EDIT_INTERVAL_S = 1.5
PREVIEW_INTERVAL_S = 4.0


def intents() -> discord.Intents:
    value = discord.Intents.none()
    value.guilds = True  # channels (NSFW flags), permissions, guild locale
    value.guild_reactions = True  # 🔁 ⬆️ 🔀 on result messages
    value.dm_reactions = True
    return value


class BrushworkBot(commands.Bot):
    """The Discord client.  ``container``: the process's composition root (its queue should have
    workers, or another process's); ``force_sync``: sync the commands even when unchanged;
    ``edit_interval``/``preview_interval``: how often a job's status message may change."""

    def __init__(self, container: Container, *, sync_commands: bool = True, force_sync: bool = False,
                 edit_interval: float = EDIT_INTERVAL_S, preview_interval: float = PREVIEW_INTERVAL_S,
                 resume_jobs: bool = True, **options: Any) -> None:
        options.setdefault("max_ratelimit_timeout", 60.0)  # never sleep for hours inside a sync
        super().__init__(command_prefix=commands.when_mentioned, intents=intents(), help_command=None,
                         **options)
        self.container = container
        self.sync_on_start = sync_commands
        self.force_sync = force_sync
        self.edit_interval = edit_interval
        self.preview_interval = preview_interval
        self.resume_jobs = resume_jobs
        self.actions = Actions(self)
        self.followers = Followers(self)
        self.tree.on_error = self._on_tree_error

    async def setup_hook(self) -> None:
        register_catalogue("bot")
        await self.tree.set_translator(CatalogueTranslator())
        self.add_dynamic_items(ResultButton)  # buttons work on messages from before a restart
        for module in COGS:
            await self.load_extension(module)
        if self.sync_on_start:
            await self.sync_commands(force=self.force_sync)
        if self.resume_jobs:
            await self.followers.resume()

    async def close(self) -> None:
        await self.followers.close()
        await super().close()
        self.actions.close()

    # ------------------------------------------------------------------ command sync
    def _sync_marker(self) -> Path:
        return self.container.settings.cache_dir / f"discord-commands-{self.application_id}.sha256"

    async def command_payload_digest(self) -> str:
        translator = self.tree.translator
        payload = []
        for command in self.tree.get_commands():
            if translator is not None:
                payload.append(await command.get_translated_payload(self.tree, translator))
            else:
                payload.append(command.to_dict(self.tree))
        blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, default=str).encode("utf-8")
        return hashlib.sha256(blob).hexdigest()

    async def sync_commands(self, *, force: bool = False) -> bool:
        """Sync the global commands only when they changed since the last sync (Discord allows
        200 command creations a day); returns whether a sync happened."""
        digest = await self.command_payload_digest()
        marker = self._sync_marker()
        if not force and marker.is_file() and marker.read_text("ascii").strip() == digest:
            log.info("application commands unchanged; not syncing")
            return False
        synced = await self.tree.sync()
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(digest, "ascii")
        log.info("synced %d application commands", len(synced))
        return True

    # ------------------------------------------------------------------ errors
    async def _on_tree_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        original = error.original if isinstance(error, app_commands.CommandInvokeError) else error
        await report_error(interaction, original)

    async def on_error(self, event_method: str, /, *args: Any, **kwargs: Any) -> None:
        log.exception("error in %s", event_method)


#: Interaction tokens in URLs (``/webhooks/<app>/<token>``, ``/interactions/<id>/<token>/callback``):
#: valid for 15 minutes, enough to post as the bot in that channel.  discord.py logs them at DEBUG.
INTERACTION_TOKEN = re.compile(r"(/(?:webhooks|interactions)/\d+/)([A-Za-z0-9_\-.]{20,})")
#: ``"token": "…"`` in logged payloads (an interaction's JSON).
TOKEN_FIELD = re.compile(r"""(["']token["']\s*:\s*["'])([^"']{20,})(["'])""")


class SecretFilter(logging.Filter):
    """Replaces secrets in every log record — the bot token anywhere, interaction tokens in URLs and
    payloads — in the message and in the formatted traceback: they never reach a log file."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "[redacted]")
        text = INTERACTION_TOKEN.sub(r"\1[redacted]", text)
        return TOKEN_FIELD.sub(r"\1[redacted]\3", text)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = self.redact(message)
        if redacted != message:
            record.msg, record.args = redacted, ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True


def configure_logging(level: str | int, secrets: list[str], *, stream: Any = None,
                      replace: bool = False) -> logging.Handler:
    """One handler on the root logger, with the :class:`SecretFilter` on it (a filter on a handler
    sees every record that reaches it, whichever logger made it).  ``replace``: remove every other
    root handler first (``brushwork run``: none may write unfiltered).  Returns the handler."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(SecretFilter(secrets))
    root = logging.getLogger()
    for old in [h for h in root.handlers if replace or getattr(h, "_brushwork", False)]:
        root.removeHandler(old)
    handler._brushwork = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level if isinstance(level, int) else str(level).upper())
    return handler


async def serve(container: Container, token: str, *, force_sync: bool = False) -> None:
    """Run the bot until it is closed (Ctrl-C, or the gateway gives up).  The caller owns the
    container: it started the queue's workers and closes them after."""
    bot = BrushworkBot(container, force_sync=force_sync)
    async with bot:
        await bot.start(token)

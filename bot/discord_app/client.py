"""The bot process: intents, cogs, persistent buttons, command sync, error handling.

Built by :func:`run_bot` from the container (settings → database → queue → worker → bot),
the composition root.  No privileged intent is needed: slash commands, buttons and modals
arrive as interactions, and reactions through the (non-privileged) reaction intents.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.discord_app.context import report_error
from bot.discord_app.translator import CatalogueTranslator
from generation.i18n import register_catalogue

if TYPE_CHECKING:
    from bot.container import Container

log = logging.getLogger(__name__)

# Feature modules, loaded in this order (each defines ``async def setup(bot)``).
COGS: tuple[str, ...] = ()


def intents() -> discord.Intents:
    value = discord.Intents.none()
    value.guilds = True  # channels (NSFW flags), permissions, guild locale
    value.guild_reactions = True  # 🔁 ⬆️ 🔀 on result messages
    value.dm_reactions = True
    return value


class BrushworkBot(commands.Bot):
    def __init__(self, container: Container, *, sync_commands: bool = True, **options: Any) -> None:
        options.setdefault("max_ratelimit_timeout", 60.0)  # never sleep for hours inside a sync
        super().__init__(command_prefix=commands.when_mentioned, intents=intents(), help_command=None,
                         **options)
        self.container = container
        self.sync_on_start = sync_commands
        self.tree.on_error = self._on_tree_error

    async def setup_hook(self) -> None:
        register_catalogue("bot")
        await self.tree.set_translator(CatalogueTranslator())
        for module in COGS:
            await self.load_extension(module)
        if self.sync_on_start:
            await self.sync_commands()

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


class SecretFilter(logging.Filter):
    """Replaces secrets (the bot token) in every log record: they never reach a log file."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if any(secret in message for secret in self.secrets):
            for secret in self.secrets:
                message = message.replace(secret, "[redacted]")
            record.msg, record.args = message, ()
        return True

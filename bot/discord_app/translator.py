"""Command names stay English (``/imagine`` everywhere, like Midjourney); descriptions, option
descriptions and choice names are shown in the user's Discord language.

Every user-facing string of a command is a :class:`discord.app_commands.locale_str` whose
``key`` extra names a catalogue code (``cmd.*`` in ``bot/locales/*/<area>.json``); English is the
string itself, other locales come from the catalogue.
"""

from __future__ import annotations

import discord
from discord import app_commands

from generation.i18n import normalize_locale, translate


def text(english: str, key: str) -> app_commands.locale_str:
    """A command string with its catalogue key: ``text("Make images", "cmd.imagine")``."""
    return app_commands.locale_str(english, key=key)


class CatalogueTranslator(app_commands.Translator):
    async def translate(
        self, string: app_commands.locale_str, locale: discord.Locale, context: app_commands.TranslationContextTypes
    ) -> str | None:
        key = string.extras.get("key")
        target = normalize_locale(locale.value)
        if key is None or target == "en":
            return None  # Discord shows the default (English) string
        result = translate(key, target)
        return None if result == key else result

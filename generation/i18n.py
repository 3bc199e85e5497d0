"""Message catalogue: English and Simplified Chinese.

Messages live in ``<package>/locales/<locale>/*.json`` (one file per area: request,
grammar, engine…) as ``code -> template`` with ``str.format`` fields.  The engine's own
catalogue is ``generation/locales``; an outer layer adds its texts (the Discord bot's
replies) with :func:`register_catalogue`, so the engine never needs to know about it.
Discord locales (``en-US``, ``en-GB``, ``zh-CN``, ``zh-TW``…) map to the closest
catalogue; anything unknown falls back to English, and a code missing in a catalogue falls
back to the English template.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

SUPPORTED_LOCALES = ("en", "zh-CN")


def normalize_locale(locale: str | None) -> str:
    if not locale:
        return "en"
    lowered = str(locale).lower().replace("_", "-")
    if lowered.startswith("zh"):
        return "zh-CN"
    return "en"


_packages: list[str] = ["generation"]


def register_catalogue(package: str) -> None:
    """Add ``<package>/locales/<locale>/*.json`` to the catalogue (idempotent)."""
    if package not in _packages:
        _packages.append(package)
        _catalogue.cache_clear()


@cache
def _catalogue(locale: str) -> dict[str, str]:
    merged: dict[str, str] = {}
    for package in _packages:
        folder = resources.files(package).joinpath("locales").joinpath(locale)
        if not folder.is_dir():
            continue
        for entry in sorted(folder.iterdir(), key=lambda e: e.name):
            if entry.name.endswith(".json"):
                for code, template in json.loads(entry.read_text("utf-8")).items():
                    if code in merged:
                        raise RuntimeError(f"message code {code!r} defined twice in {package}/locales/{locale}")
                    merged[code] = template
    return merged


class _Lenient(dict):
    def __missing__(self, key: str) -> str:  # a missing field never turns into a KeyError for the user
        return "{" + key + "}"


def translate(code: str, locale: str | None = "en", /, **params: Any) -> str:
    loc = normalize_locale(locale)
    template = _catalogue(loc).get(code) or _catalogue("en").get(code)
    if template is None:
        template = code + ("" if not params else ": " + ", ".join(f"{k}={v}" for k, v in params.items()))
        return template
    return template.format_map(_Lenient({k: _render(v, loc) for k, v in params.items()}))


def _render(value: Any, locale: str) -> Any:
    if callable(getattr(value, "message", None)):  # a nested error renders in the same language
        return value.message(locale)
    if isinstance(value, (list, tuple)):
        sep = "、" if locale == "zh-CN" else ", "
        return sep.join(str(v) for v in value)
    return value

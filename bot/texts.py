"""The small texts every front end prints the same way: a shortened line, a duration in the user's
language, a progress bar, and completing the last item of a comma-separated list.

Pure functions (no Discord, no database), used by the ``/queue`` (and through it ``/compare``),
``/lora``, ``/server`` and ``/history`` cogs and by ``/help``'s text instead of their own copies.
"""

from __future__ import annotations

from collections.abc import Sequence

from generation.i18n import translate

ELLIPSIS = "…"


def clip(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, the last of them ``…`` when it was cut."""
    return text if len(text) <= limit else text[: limit - 1] + ELLIPSIS


def shorten(text: str, limit: int) -> str:
    """One line (runs of white space become one space), then :func:`clip`."""
    return clip(" ".join(text.split()), limit)


def duration(seconds: float | None, locale: str) -> str:
    """"12 s", "3 min", or "a moment" when unknown, in ``locale``."""
    if seconds is None:
        return translate("imagine.duration.unknown", locale)
    if seconds < 90:
        return translate("imagine.duration.seconds", locale, n=max(1, round(seconds)))
    return translate("imagine.duration.minutes", locale, n=round(seconds / 60))


def progress_bar(done: float, total: float = 1.0, width: int = 12) -> str:
    """``▰▰▰▱▱▱``: ``done`` of ``total`` (a fraction when ``total`` is left at 1) in ``width`` cells."""
    filled = 0 if total <= 0 else min(width, max(0, round(width * done / total)))
    return "▰" * filled + "▱" * (width - filled)


def complete(names: Sequence[str], typed: str | None, *, limit: int = 25) -> list[str]:
    """Autocomplete for one name: names starting with what was typed first, then names containing
    it (case-insensitive); everything when nothing was typed; at most ``limit``."""
    wanted = (typed or "").strip().casefold()
    if not wanted:
        return list(names)[:limit]
    starts = [n for n in names if n.casefold().startswith(wanted)]
    contains = [n for n in names if wanted in n.casefold() and n not in starts]
    return (starts + contains)[:limit]


def complete_last(current: str | None, names: Sequence[str], *, limit: int = 25,
                  exclusive: Sequence[str] = ()) -> list[str]:
    """Autocomplete for a comma-separated list: the typed list with its LAST item completed from
    ``names`` (names starting with it first, then containing it; case-insensitive), leaving out
    the names already in the list and, after the first item, the ``exclusive`` ones (``all``).
    Each value fits Discord's 100 characters; at most ``limit`` values."""
    head, _, last = (current or "").rpartition(",")
    prefix = f"{head.strip()}, " if head.strip() else ""
    typed = last.strip().casefold()
    already = {part.strip().casefold() for part in head.split(",")}
    matches = [n for n in names if n.casefold().startswith(typed) and n.casefold() not in already]
    matches += [n for n in names if typed in n.casefold() and n not in matches and n.casefold() not in already]
    values = [f"{prefix}{name}"[:100] for name in matches if not (prefix and name in exclusive)]
    return values[:limit]

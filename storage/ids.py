"""Short public ids: what users see, type and paste (``/show k3x9fq2a``).

Lowercase letters and digits without the look-alikes 0/o, 1/l/i: 31 symbols, so 8 of
them give about 8.5e11 ids.  Internal integer keys never leave :mod:`storage`.
"""

from __future__ import annotations

import secrets

ALPHABET = "23456789abcdefghjkmnpqrstuvwxyz"
LENGTH = 8
_ALLOWED = frozenset(ALPHABET)


def new_public_id(length: int = LENGTH) -> str:
    """A random id from a cryptographic source (ids must not be guessable across servers)."""
    return "".join(secrets.choice(ALPHABET) for _ in range(length))


def normalize_public_id(text: str) -> str:
    """The id as stored, from what a user typed: surrounding spaces dropped, lowercased."""
    return text.strip().lower()


def is_public_id(text: str, length: int = LENGTH) -> bool:
    """True when ``text`` is exactly a well-formed id (no normalisation)."""
    return len(text) == length and all(ch in _ALLOWED for ch in text)

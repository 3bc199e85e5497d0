"""AUTOMATIC1111's attention syntax: which parts of a prompt weigh more or less.

``(word)`` multiplies the weight of ``word`` by 1.1, ``[word]`` divides it by 1.1,
``(word:1.3)`` multiplies it by 1.3, and brackets nest (``((word))`` is 1.21).  A backslash
makes a bracket, a colon-less ``\\\\`` or the backslash itself literal: ``\\(`` ``\\)`` ``\\[``
``\\]`` ``\\\\``.  ``BREAK`` (a whole word, in capitals) ends the current 75-token chunk
and is returned as its own marker entry ``("BREAK", -1.0)``.

Brackets that do not balance are handled as A1111 handles them: a ``(`` that is never
closed still weighs the rest of the prompt, and a stray ``)`` or ``]`` is plain text.
The parser never raises; every string has a reading.

Where A1111 itself would fail or do something no one meant, this module picks the
harmless reading and says so here:

* ``(word:1.2.3)`` — A1111 raises on the weight; here ``:1.2.3`` is text and the ``)``
  closes the bracket with the usual 1.1.  Weights that are not finite numbers
  (``(word:99…9)`` overflowing to infinity) are treated the same way.
* A ``BREAK`` inside brackets keeps the marker weight -1.0 (A1111 multiplies it too).
* Empty runs are dropped and ``BREAK`` markers never merge with each other.
"""

from __future__ import annotations

import math
import re

BREAK = "BREAK"
BREAK_WEIGHT = -1.0
ROUND_FACTOR = 1.1
SQUARE_FACTOR = 1 / 1.1

# One alternative per token kind; order matters (escapes before brackets, an explicit
# weight before a bare ")").
_TOKEN = re.compile(
    r"""
      \\[()\[\]\\]                  # escaped bracket or backslash
    | \\                            # a lone backslash (A1111 drops it)
    | \(                            # open round
    | \[                            # open square
    | :\s*(?P<weight>[+-]?[.\d]+)\s*\)   # ":1.3)" closes a round bracket with a weight
    | \)                            # close round
    | \]                            # close square
    | [^\\()\[\]:]+                 # plain text
    | :                             # a colon that is not a weight
    """,
    re.VERBOSE,
)
_BREAK_SPLIT = re.compile(r"\s*\bBREAK\b\s*")
_WEIGHT_PREFIX = re.compile(r":\s*[+-]?[.\d]+\s*")


def parse_prompt_attention(text: str) -> list[tuple[str, float]]:
    """Split ``text`` into ``(text, weight)`` runs; ``BREAK`` gives ``("BREAK", -1.0)``.

    Adjacent runs of equal weight are merged; an empty prompt gives ``[("", 1.0)]``.

    >>> parse_prompt_attention("an (important) word")
    [('an ', 1.0), ('important', 1.1), (' word', 1.0)]
    """
    if not isinstance(text, str):
        text = "" if text is None else str(text)
    runs: list[list] = []  # [text, weight, is_break]
    round_open: list[int] = []
    square_open: list[int] = []

    def add_text(chunk: str) -> None:
        for i, part in enumerate(_BREAK_SPLIT.split(chunk)):
            if i:
                runs.append([BREAK, BREAK_WEIGHT, True])
            if part:
                runs.append([part, 1.0, False])

    def multiply(start: int, factor: float) -> None:
        for run in runs[start:]:
            if not run[2]:
                run[1] *= factor

    for match in _TOKEN.finditer(text):
        token = match.group(0)
        weight = match.group("weight")
        if token.startswith("\\"):
            if len(token) > 1:
                runs.append([token[1:], 1.0, False])
        elif token == "(":
            round_open.append(len(runs))
        elif token == "[":
            square_open.append(len(runs))
        elif weight is not None:
            factor = _to_weight(weight)
            if not round_open:
                add_text(token)
            elif factor is None:
                # "(word:1.2.3)": the would-be weight is text, the ")" closes as a plain bracket
                prefix = _WEIGHT_PREFIX.match(token)
                if prefix is None:  # the token pattern only yields weights that start like one
                    raise AssertionError(f"weight token without a weight prefix: {token!r}")
                add_text(prefix.group(0))
                multiply(round_open.pop(), ROUND_FACTOR)
            else:
                multiply(round_open.pop(), factor)
        elif token == ")" and round_open:
            multiply(round_open.pop(), ROUND_FACTOR)
        elif token == "]" and square_open:
            multiply(square_open.pop(), SQUARE_FACTOR)
        else:
            add_text(token)

    for start in round_open:
        multiply(start, ROUND_FACTOR)
    for start in square_open:
        multiply(start, SQUARE_FACTOR)

    merged: list[tuple[str, float]] = []
    last_break = True  # nothing merges into a BREAK or across the start
    for chunk, weight, is_break in runs:
        if merged and not is_break and not last_break and merged[-1][1] == weight:
            merged[-1] = (merged[-1][0] + chunk, weight)
        else:
            merged.append((chunk, weight))
        last_break = is_break
    return merged or [("", 1.0)]


def strip_attention(text: str) -> str:
    """The prompt as plain words: brackets, weights and escapes removed, ``BREAK`` kept.

    >>> strip_attention("a (red:1.3) [cat] \\\\(sic\\\\)")
    'a red cat (sic)'
    """
    pieces = [f" {BREAK} " if (chunk, weight) == (BREAK, BREAK_WEIGHT) else chunk
              for chunk, weight in parse_prompt_attention(text)]
    return "".join(pieces).strip()


def _to_weight(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None

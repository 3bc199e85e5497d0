"""A server's safety policy: banned words, a forced negative prompt, an image classifier hook.

The bot applies the policy in channels that are not age-restricted.  Words are matched after
Unicode normalisation (NFKC, case folded, A1111 attention syntax removed), as whole words in
scripts that separate words with spaces and as substrings in those that do not (Chinese,
Japanese), so ``(NSFW:1.4)``, ``Ｎｓｆｗ`` and ``裸体`` inside a sentence are all caught.

The classifier is optional: with none configured (the default) images are not classified,
and the README says so.  :class:`TransformersClassifier` wraps any Hugging Face
image-classification model given as a local folder or hub id.
"""

from __future__ import annotations

import logging
import re
import threading
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Protocol

from generation.errors import RequestError
from generation.prompt_weights import strip_attention

if TYPE_CHECKING:
    from PIL import Image

    from generation.request import Request

log = logging.getLogger(__name__)

MAX_BANNED_WORDS = 500
MAX_WORD_LENGTH = 64


_DEFAULT_BLOCKED_LABELS = ("nsfw", "porn", "hentai", "sexy")


@dataclass(frozen=True, slots=True)
class SafetyPolicy:
    banned_words: tuple[str, ...] = ()
    forced_negative: str = ""
    classify_images: bool = False  # only meaningful when a classifier is installed
    blocked_labels: tuple[str, ...] = _DEFAULT_BLOCKED_LABELS
    threshold: float = 0.8

    def __post_init__(self) -> None:
        words = tuple(dict.fromkeys(_normalise(w) for w in self.banned_words if w and w.strip()))
        if len(words) > MAX_BANNED_WORDS:
            raise RequestError("safety.too_many_words", count=len(words), limit=MAX_BANNED_WORDS)
        long = [w for w in words if len(w) > MAX_WORD_LENGTH]
        if long:
            raise RequestError("safety.word_too_long", word=long[0][:20] + "…", limit=MAX_WORD_LENGTH)
        object.__setattr__(self, "banned_words", words)
        if not 0.0 < self.threshold <= 1.0:
            raise RequestError("safety.bad_threshold", value=self.threshold)

    @classmethod
    def from_dict(cls, data: dict | None) -> SafetyPolicy:
        data = dict(data or {})
        return cls(
            banned_words=tuple(data.get("banned_words", ())),
            forced_negative=str(data.get("forced_negative", "")),
            classify_images=bool(data.get("classify_images", False)),
            blocked_labels=tuple(data.get("blocked_labels", _DEFAULT_BLOCKED_LABELS)),
            threshold=float(data.get("threshold", 0.8)),
        )

    def to_dict(self) -> dict:
        return {
            "banned_words": list(self.banned_words),
            "forced_negative": self.forced_negative,
            "classify_images": self.classify_images,
            "blocked_labels": list(self.blocked_labels),
            "threshold": self.threshold,
        }


def _normalise(text: str) -> str:
    return unicodedata.normalize("NFKC", text).casefold().strip()


def _spaced(word: str) -> bool:
    """Scripts that put spaces between words (matched as whole words)."""
    return all(not ch.isalpha() or ord(ch) < 0x2E80 for ch in word)


def find_banned(text: str, words: Iterable[str]) -> str | None:
    """The first banned word found in ``text`` (already-normalised words), or None."""
    plain = _normalise(strip_attention(text))
    plain = re.sub(r"[_\-]+", " ", plain)
    for word in words:
        if _spaced(word):
            if re.search(rf"(?<![\w]){re.escape(word)}(?![\w])", plain):
                return word
        elif word in plain:
            return word
    return None


def apply_policy(request: Request, policy: SafetyPolicy) -> Request:
    """The request as the policy allows it: refused if the prompt has a banned word, with
    the forced negative prompt added.  The negative prompt is not searched (it lists what
    the user wants kept *out*)."""
    word = find_banned(request.prompt, policy.banned_words)
    if word is not None:
        raise RequestError("safety.banned_word", word=word)
    if policy.forced_negative.strip():
        forced = policy.forced_negative.strip()
        current = request.negative_prompt or ""
        if forced not in current:
            negative = f"{current}, {forced}" if current else forced
            request = replace(request, negative_prompt=negative)
    return request


# ---------------------------------------------------------------------- image classification


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    label: str = ""
    score: float = 0.0
    scores: dict[str, float] = field(default_factory=dict)


class ImageClassifier(Protocol):
    def classify(self, images: Sequence[Image.Image], policy: SafetyPolicy) -> list[Verdict]: ...


class NoClassifier:
    """The default: nothing is installed, every image passes (and the README says so)."""

    available = False

    def classify(self, images: Sequence[Image.Image], policy: SafetyPolicy) -> list[Verdict]:
        return [Verdict(allowed=True) for _ in images]


class TransformersClassifier:
    """A Hugging Face image-classification model (local folder or cached hub id).

    Loaded on first use; if it cannot be loaded the classifier reports itself unavailable and
    lets images pass, logging why once (a missing optional model must not stop generation).
    """

    def __init__(self, model: str, *, device: str | None = None) -> None:
        self.model = model
        self.device = device
        self._pipe = None
        self._failed: str | None = None
        self._lock = threading.Lock()

    @property
    def available(self) -> bool:
        self._load()
        return self._pipe is not None

    def _load(self) -> None:
        with self._lock:
            if self._pipe is not None or self._failed is not None:
                return
            try:
                from transformers import pipeline

                self._pipe = pipeline("image-classification", model=self.model, device=self.device)
            except Exception as exc:  # optional component: report, do not crash generation
                self._failed = f"{type(exc).__name__}: {exc}"
                log.warning("image classifier %r is unavailable, images will not be classified: %s",
                            self.model, self._failed)

    def classify(self, images: Sequence[Image.Image], policy: SafetyPolicy) -> list[Verdict]:
        self._load()
        if self._pipe is None:
            return NoClassifier().classify(images, policy)
        verdicts = []
        blocked = {label.casefold() for label in policy.blocked_labels}
        for result in self._pipe(list(images)):
            scores = {item["label"]: float(item["score"]) for item in result}
            hit = max(((label, score) for label, score in scores.items() if label.casefold() in blocked),
                      key=lambda pair: pair[1], default=("", 0.0))
            verdicts.append(Verdict(allowed=hit[1] < policy.threshold, label=hit[0], score=hit[1], scores=scores))
        return verdicts

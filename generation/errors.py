"""Typed errors that explain themselves.

Every user mistake is a :class:`BrushworkError` carrying a stable ``code`` and the
``params`` needed to explain it.  The text is rendered from the message catalogue
(``generation/locales/*.json``) in the reader's language, so the command line prints
English and the Discord bot answers in the user's locale from the same error.
"""

from __future__ import annotations

import unicodedata
from typing import Any

from generation.i18n import translate

#: How much of a value the user typed an error message repeats (an id, a name, a path).
ECHO_LIMIT = 40


def echo(value: object, limit: int = ECHO_LIMIT) -> str:
    """A value the user typed as an error message repeats it: on one line (control characters
    written as escapes, ``\\n``), and at most ``limit`` characters, then ``…`` — a
    10,000-character id is not printed back whole."""
    text = str(value)
    shown = text[:limit]
    if any(unicodedata.category(ch) in ("Cc", "Zl", "Zp") for ch in shown):
        shown = "".join(ch.encode("unicode_escape").decode("ascii") if unicodedata.category(ch) in ("Cc", "Zl", "Zp")
                        else ch for ch in shown)
    return shown + "…" if len(text) > limit else shown


class BrushworkError(Exception):
    """Base class for errors that are shown to users as they are (never a traceback)."""

    code: str = "error"

    def __init__(self, code: str | None = None, /, **params: Any) -> None:
        if code is not None:
            self.code = code
        self.params = params
        super().__init__(self.message())

    def message(self, locale: str = "en") -> str:
        return translate(self.code, locale, **self.params)

    def __reduce__(self):  # picklable across processes/threads with its params
        return (_rebuild, (type(self), self.code, self.params))


def _rebuild(cls, code, params):
    return cls(code, **params)


class RequestError(BrushworkError, ValueError):
    """The request (prompt, flags or keyword arguments) is not acceptable."""

    code = "request.invalid"


class ModelError(BrushworkError):
    """A model or LoRA cannot be found or loaded."""

    code = "model.invalid"


class DeviceError(ModelError):
    """The device asked for is not there (or is not a device name).

    Nothing can run on it, so it is fatal for a queue worker given that device: the worker
    stops and says why instead of retrying (``generation.queue.worker``).
    """

    code = "model.device_unavailable"


class ImageNotFound(BrushworkError, LookupError):
    code = "image.not_found"


class MetadataError(BrushworkError, ValueError):
    """A PNG carries no (or unreadable) Brushwork/A1111 recipe."""

    code = "metadata.missing"


class Cancelled(BrushworkError):
    """A running generation was asked to stop."""

    code = "job.cancelled"


class OutOfMemoryError(BrushworkError, MemoryError):
    """The accelerator ran out of memory for this call (its memory was handed back).

    The engine raises it in place of ``torch.OutOfMemoryError``; the job queue retries with
    fewer images per call, then with VAE tiling, before failing the job with it.
    """

    code = "engine.out_of_memory"


class QueueError(BrushworkError):
    """The job queue refused or cannot find a job (full queue, quota, unknown id…)."""

    code = "queue.error"

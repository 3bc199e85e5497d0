"""Errors of LoRA training and LoRA files, with codes in ``generation/locales/*/training.json``."""

from __future__ import annotations

from generation.errors import BrushworkError


class TrainingError(BrushworkError, ValueError):
    """A training setting, dataset or checkpoint is not usable (the message says which and why)."""

    code = "training.invalid"


class LoraFileError(BrushworkError, ValueError):
    """A LoRA file was refused on import or export (pickled, damaged, or not for this model)."""

    code = "lora.invalid"

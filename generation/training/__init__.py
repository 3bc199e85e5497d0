"""Server LoRAs: training on the tiny or a real SD1/SD2 model, export, and import checks.

* :mod:`~generation.training.config` — :class:`TrainingConfig` (frozen, validated; no torch);
* :mod:`~generation.training.buckets` — aspect-ratio buckets and the resumable batch order (no torch);
* :mod:`~generation.training.trainer` — :class:`LoraTrainer`: chunked, checkpointed, resumable training;
* :mod:`~generation.training.lora_files` — :func:`export_lora` (kohya keys, which A1111, ComfyUI
  and diffusers load; ``format="diffusers"`` for diffusers' names), :func:`export_kohya`,
  :func:`check_lora_file` (header-only checks) and :func:`inspect_lora` (against a base model);
* :mod:`~generation.training.errors` — :class:`TrainingError`, :class:`LoraFileError`.

Importing this package is cheap: torch loads with the trainer or the LoRA file functions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from generation.training.config import TrainingConfig
from generation.training.errors import LoraFileError, TrainingError

if TYPE_CHECKING:
    from generation.training.lora_files import (
        LoraInfo,
        LoraWeights,
        export_kohya,
        export_lora,
        inspect_lora,
    )
    from generation.training.trainer import (
        CheckpointInfo,
        ChunkResult,
        LoraTrainer,
        TrainingProgress,
        checkpoint_info,
    )

__all__ = [
    "CheckpointInfo", "ChunkResult", "LoraFileError", "LoraInfo", "LoraTrainer", "LoraWeights", "TrainingConfig",
    "TrainingError", "TrainingProgress", "checkpoint_info", "export_kohya", "export_lora", "inspect_lora",
]

_LAZY = {
    "LoraInfo": "generation.training.lora_files",
    "LoraWeights": "generation.training.lora_files",
    "export_kohya": "generation.training.lora_files",
    "export_lora": "generation.training.lora_files",
    "inspect_lora": "generation.training.lora_files",
    "CheckpointInfo": "generation.training.trainer",
    "ChunkResult": "generation.training.trainer",
    "LoraTrainer": "generation.training.trainer",
    "TrainingProgress": "generation.training.trainer",
    "checkpoint_info": "generation.training.trainer",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)

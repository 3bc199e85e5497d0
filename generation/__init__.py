"""Brushwork's engine: the request language, the generation pipeline and image recipes.

Importing ``generation`` is cheap; torch and diffusers load when an image is generated.

    from generation import generate
    images = generate("a lighthouse at dusk --seed 42 --steps 25")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from generation.version import VERSION as __version__

__all__ = ["GeneratedImage", "Request", "TrainedLora", "__version__", "generate", "parse", "read_recipe", "train_lora"]

if TYPE_CHECKING:
    from generation.api import GeneratedImage, TrainedLora, generate, train_lora
    from generation.grammar import parse
    from generation.metadata import read_recipe
    from generation.request import Request

_LAZY = {
    "generate": "generation.api",
    "GeneratedImage": "generation.api",
    "train_lora": "generation.api",
    "TrainedLora": "generation.api",
    "parse": "generation.grammar",
    "Request": "generation.request",
    "read_recipe": "generation.metadata",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'generation' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)

"""Models: what a model name means, how it loads, which stay in memory, and their hashes.

* :mod:`~generation.models.spec` — :class:`ModelSpec` and family detection (no torch);
* :mod:`~generation.models.registry` — :class:`ModelRegistry`: names, did-you-mean, profiles;
* :mod:`~generation.models.loading` — device/dtype choice and loading into shared pipelines;
* :mod:`~generation.models.cache` — :class:`ModelCache`, bounded and least-recently-used;
* :mod:`~generation.models.hashing` — A1111's model and LoRA hashes, with a persistent cache;
* :mod:`~generation.models.tiny` — the built-in offline model.

Importing this package is cheap: the modules that need torch load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from generation.models.cache import ModelCache
from generation.models.hashing import FileHasher
from generation.models.registry import BUILTIN_SPECS, ModelRegistry
from generation.models.spec import FAMILIES, ModelSpec, SourceKind

if TYPE_CHECKING:
    from generation.models.loading import LoadedModel, load_model, resolve_device, resolve_dtype

__all__ = [
    "BUILTIN_SPECS", "FAMILIES", "FileHasher", "LoadedModel", "ModelCache", "ModelRegistry", "ModelSpec",
    "SourceKind", "load_model", "resolve_device", "resolve_dtype",
]

_LAZY = {"LoadedModel", "load_model", "resolve_device", "resolve_dtype"}


def __getattr__(name: str) -> Any:  # torch is imported only when loading is really needed
    if name in _LAZY:
        from generation.models import loading

        return getattr(loading, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""The model registry: the names users may type, and what each one loads.

Built once by the composition root from the settings.  It holds only :class:`ModelSpec`
values and answers without loading weights: ``get`` (with a did-you-mean for typos),
``names`` and ``profile`` (what the request resolver needs: native size, limits, defaults).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping
from difflib import get_close_matches

from generation.errors import ModelError
from generation.models.spec import (
    ModelSpec,
    SourceKind,
    family_from_folder,
    family_from_single_file,
    guess_hub_family,
)
from generation.profiles import PROFILES, ModelProfile

BUILTIN_SPECS: tuple[ModelSpec, ...] = (
    ModelSpec("tiny", "builtin:tiny", family="tiny",
              description="built-in offline model with random weights: fast, for tests and demos"),
    ModelSpec("sd15", "stable-diffusion-v1-5/stable-diffusion-v1-5", family="sd1",
              description="Stable Diffusion 1.5 (512×512)"),
    ModelSpec("sdxl", "stabilityai/stable-diffusion-xl-base-1.0", family="sdxl",
              description="Stable Diffusion XL base 1.0 (1024×1024)"),
)


class ModelRegistry:
    """Known models by name; the built-in ones plus those the settings add (which win)."""

    def __init__(self, specs: Iterable[ModelSpec] = (), default: str = "tiny", *, builtins: bool = True) -> None:
        self._specs: dict[str, ModelSpec] = {}
        for spec in (*(BUILTIN_SPECS if builtins else ()), *specs):
            if not isinstance(spec, ModelSpec):
                raise TypeError(f"expected ModelSpec, got {type(spec).__name__}")
            self._specs[spec.name] = spec
        self._families: dict[str, str] = {}
        self._lock = threading.Lock()
        self._default = self.get(default).name

    @classmethod
    def with_builtins(cls, extra: Mapping[str, ModelSpec] | Iterable[ModelSpec] = (),
                      default: str = "tiny") -> ModelRegistry:
        specs = extra.values() if isinstance(extra, Mapping) else extra
        return cls(specs, default, builtins=True)

    @property
    def default(self) -> str:
        return self._default

    def names(self) -> list[str]:
        return sorted(self._specs)

    def specs(self) -> list[ModelSpec]:
        return [self._specs[name] for name in self.names()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._find(name) is not None

    def __iter__(self) -> Iterator[ModelSpec]:
        return iter(self.specs())

    def __len__(self) -> int:
        return len(self._specs)

    def get(self, name: str) -> ModelSpec:
        spec = self._find(name) if isinstance(name, str) else None
        if spec is None:
            known = self.names()
            close = get_close_matches(str(name).lower(), [n.lower() for n in known], n=1, cutoff=0.5)
            suggestion = next((n for n in known if close and n.lower() == close[0]), "")
            code = "model.unknown_suggest" if suggestion else "model.unknown"
            raise ModelError(code, name=name, known=known, suggestion=suggestion)
        return spec

    def _find(self, name: str) -> ModelSpec | None:
        spec = self._specs.get(name)
        if spec is None:  # names are case-insensitive for users: "SDXL" is "sdxl"
            spec = next((s for n, s in self._specs.items() if n.casefold() == name.casefold()), None)
        return spec

    def family(self, name: str) -> str:
        """The model's family: the spec's, or detected from its files (remembered)."""
        spec = self.get(name)
        if spec.family is not None:
            return spec.family
        with self._lock:
            cached = self._families.get(spec.name)
        if cached is not None:
            return cached
        family = detect_family(spec)
        with self._lock:
            self._families[spec.name] = family
        return family

    def profile(self, name: str) -> ModelProfile:
        return PROFILES[self.family(name)]


def detect_family(spec: ModelSpec) -> str:
    """Read the family from the model's files without loading weights."""
    kind = spec.kind
    if kind is SourceKind.BUILTIN:
        return "tiny"
    if kind is SourceKind.FOLDER:
        return family_from_folder(spec.path)
    if kind is SourceKind.SINGLE_FILE:
        return family_from_single_file(spec.path)
    if kind is SourceKind.HUB:
        folder = _cached_hub_folder(spec)
        if folder is not None:
            try:
                return family_from_folder(folder)
            except ModelError:  # a partial download: fall back to the name
                pass
        return guess_hub_family(spec.source)
    return guess_hub_family(spec.source.split(":", 1)[1])


def _cached_hub_folder(spec: ModelSpec):
    """The hub model's folder in the local cache, if ``model_index.json`` is there (no network)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - huggingface_hub comes with diffusers
        return None
    from pathlib import Path

    found = try_to_load_from_cache(spec.source, "model_index.json", revision=spec.revision)
    if isinstance(found, str):
        return Path(found).parent
    return None

"""What a model name means: where its weights are, which family it is, how to load it.

A :class:`ModelSpec` is plain data (settings build one per configured model) and this
module never imports torch: the registry, the request resolver and ``/help`` use specs
and families without loading anything.  Family detection reads at most a small JSON file
or a safetensors header, never the weights.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from generation.errors import ModelError
from generation.request import NAME_PATTERN

FAMILIES = ("sd1", "sd2", "sdxl", "tiny")

# Accepted spellings of a precision -> the torch dtype name.
DTYPE_NAMES = {
    "float16": "float16", "fp16": "float16", "half": "float16",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
    "float32": "float32", "fp32": "float32", "float": "float32",
}

BUILTIN_PREFIX = "builtin:"
MODELSCOPE_PREFIX = "modelscope:"
BUILTIN_MODELS = ("tiny",)
SAFE_SUFFIXES = (".safetensors",)
# Pickled checkpoints can run arbitrary code when loaded: a server must never open one.
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")
_MAX_HEADER = 100 * 1024 * 1024  # a safetensors header larger than this is not a real one


class SourceKind(StrEnum):
    BUILTIN = "builtin"
    HUB = "hub"
    MODELSCOPE = "modelscope"
    FOLDER = "folder"
    SINGLE_FILE = "single_file"


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One model: a name users type, and where its weights come from.

    ``source`` is ``builtin:tiny``, a Hugging Face hub id (``org/name``), ``modelscope:org/name``,
    a local diffusers folder, or a single-file ``.safetensors`` checkpoint.  ``family`` is
    detected when left ``None``.  ``config`` only matters for single-file checkpoints used
    offline: a diffusers folder (or hub id) whose component configs match the checkpoint.
    """

    name: str
    source: str
    family: str | None = None
    vae: str | None = None
    variant: str | None = None
    revision: str | None = None
    dtype: str | None = None
    config: str | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not NAME_PATTERN.fullmatch(self.name):
            raise ModelError("model.bad_name", name=self.name)
        if not isinstance(self.source, str) or not self.source.strip():
            raise ModelError("model.bad_source", name=self.name, source=self.source)
        object.__setattr__(self, "source", self.source.strip())
        if self.family is not None and self.family not in FAMILIES:
            raise ModelError("model.bad_family", name=self.name, family=self.family, known=list(FAMILIES))
        if self.dtype is not None:
            canonical = DTYPE_NAMES.get(str(self.dtype).lower())
            if canonical is None:
                raise ModelError("model.bad_dtype", value=self.dtype, known=sorted(set(DTYPE_NAMES.values())))
            object.__setattr__(self, "dtype", canonical)
        for value in (self.source, self.vae or ""):
            if value.lower().endswith(PICKLE_SUFFIXES):
                raise ModelError("model.pickle_refused", name=self.name, path=value)
        if self.source.startswith(BUILTIN_PREFIX) and self.source[len(BUILTIN_PREFIX):] not in BUILTIN_MODELS:
            raise ModelError("model.bad_source", name=self.name, source=self.source)
        if self.source.startswith(MODELSCOPE_PREFIX) and not _HUB_ID.match(self.source[len(MODELSCOPE_PREFIX):]):
            raise ModelError("model.bad_source", name=self.name, source=self.source)

    @property
    def kind(self) -> SourceKind:
        """Where the weights come from (a local path wins over a hub id spelled the same)."""
        return source_kind(self.source)

    @property
    def path(self) -> Path:
        """The local path of a folder or single-file source."""
        return Path(self.source).expanduser()


def source_kind(source: str) -> SourceKind:
    if source.startswith(BUILTIN_PREFIX):
        return SourceKind.BUILTIN
    if source.startswith(MODELSCOPE_PREFIX):
        return SourceKind.MODELSCOPE
    if source.lower().endswith(SAFE_SUFFIXES + PICKLE_SUFFIXES):
        return SourceKind.SINGLE_FILE
    path = Path(source).expanduser()
    looks_local = (path.is_absolute() or source.startswith((".", "~")) or "\\" in source
                   or source.count("/") != 1)
    if looks_local or path.exists() or not _HUB_ID.match(source):
        return SourceKind.FOLDER
    return SourceKind.HUB


# ---------------------------------------------------------------------- family detection


def family_from_cross_attention(dim: int) -> str:
    """The UNet's cross-attention width says which text encoder(s) it was trained with."""
    if dim == 2048:
        return "sdxl"
    if dim == 1024:
        return "sd2"
    if dim == 768:
        return "sd1"
    if dim < 768:
        return "tiny"  # only toy models (Brushwork's built-in one, diffusers' test models) are this small
    raise ModelError("model.unknown_family_dim", dim=dim)


def family_from_folder(folder: Path) -> str:
    """Family of a diffusers folder, from ``model_index.json`` and the UNet config."""
    index_file = folder / "model_index.json"
    if not folder.is_dir():
        raise ModelError("model.not_found", path=str(folder))
    if not index_file.is_file():
        raise ModelError("model.not_a_diffusers_folder", path=str(folder))
    try:
        index = json.loads(index_file.read_text("utf-8"))
        class_name = str(index.get("_class_name", ""))
    except (OSError, ValueError, AttributeError) as exc:
        raise ModelError("model.unreadable", path=str(index_file), detail=str(exc)) from None
    if "StableDiffusionXL" in class_name:
        return "sdxl"
    if "StableDiffusion" not in class_name:
        raise ModelError("model.unsupported_pipeline", path=str(folder), pipeline=class_name or "?")
    unet_config = folder / "unet" / "config.json"
    try:
        dim = json.loads(unet_config.read_text("utf-8")).get("cross_attention_dim", 768)
    except (OSError, ValueError) as exc:
        raise ModelError("model.unreadable", path=str(unet_config), detail=str(exc)) from None
    if isinstance(dim, list):
        dim = dim[0]
    return family_from_cross_attention(int(dim))


def family_from_state_dict_keys(keys: Iterable[str], *, path: str = "") -> str:
    """Family of an original (LDM/A1111 layout) checkpoint, from its tensor names.

    SDXL keeps its two text encoders under ``conditioner.embedders.0/1``; SD2 uses OpenCLIP
    (``cond_stage_model.model.``); SD1 uses OpenAI CLIP (``cond_stage_model.transformer.``).
    """
    has_unet = has_sdxl = has_sd2 = has_sd1 = False
    for key in keys:
        if key.startswith("model.diffusion_model."):
            has_unet = True
        if key.startswith("conditioner.embedders.1."):
            has_sdxl = True
        elif key.startswith("cond_stage_model.model."):
            has_sd2 = True
        elif key.startswith("cond_stage_model.transformer."):
            has_sd1 = True
    if has_sdxl:
        return "sdxl"
    if has_sd2:
        return "sd2"
    if has_sd1 or has_unet:
        return "sd1"
    raise ModelError("model.unknown_checkpoint", path=path)


def read_safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file (tensor names, dtypes, offsets), without the data."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read(8)
            if len(raw) != 8:
                raise ValueError("file too short")
            (length,) = struct.unpack("<Q", raw)
            if length > _MAX_HEADER:
                raise ValueError("header too large")
            header = json.loads(handle.read(length))
            if not isinstance(header, dict):
                raise ValueError("header is not an object")
            return header
    except FileNotFoundError:
        raise ModelError("model.not_found", path=str(path)) from None
    except (OSError, ValueError) as exc:
        raise ModelError("model.bad_safetensors", path=str(path), detail=str(exc)) from None


def family_from_single_file(path: Path) -> str:
    header = read_safetensors_header(path)
    return family_from_state_dict_keys((k for k in header if k != "__metadata__"), path=str(path))


def guess_hub_family(repo_id: str) -> str:
    """Best guess from a hub id when nothing is downloaded yet (settings should say ``family``)."""
    lowered = repo_id.lower()
    if "xl" in lowered:
        return "sdxl"
    if "stable-diffusion-2" in lowered or "sd2" in lowered:
        return "sd2"
    return "sd1"

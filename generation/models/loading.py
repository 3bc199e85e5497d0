"""Loading a model: from its spec to a txt2img and an img2img pipeline that share weights.

Every source (built-in, hub, ModelScope, local folder, single ``.safetensors`` file) ends
up as one txt2img pipeline plus an img2img pipeline made with ``from_pipe``, which reuses
the same UNet, VAE and text encoders: the hires fix and upscales cost no second copy of
the weights.  The device and precision are chosen here, once, from what the machine has.

Errors a user or an operator can fix (a missing folder, no network, a pickled checkpoint,
the optional ``modelscope`` package) become :class:`~generation.errors.ModelError` with a
message that says what to do.  torch and diffusers are imported when this module is.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from generation.errors import ModelError
from generation.models._quiet import quiet_libraries
from generation.models.spec import DTYPE_NAMES, MODELSCOPE_PREFIX, ModelSpec, SourceKind, family_from_folder

_TRUE = {"1", "true", "yes", "on"}


@dataclass(eq=False)
class LoadedModel:
    """A model ready to run: its pipelines (sharing modules), where and how it runs."""

    spec: ModelSpec
    family: str
    txt2img: Any
    img2img: Any
    device: torch.device
    dtype: torch.dtype
    scheduler_config: dict[str, Any]
    local_path: Path | None = None  # the folder or file the weights came from (None: built in)
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def is_xl(self) -> bool:
        return self.family == "sdxl"


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` read now (huggingface_hub reads it once, at its import)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """The device to run on: the one asked for, else CUDA, else Apple MPS, else the CPU."""
    if device is None or (isinstance(device, str) and device.strip().lower() in ("", "auto")):
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        chosen = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ModelError("model.bad_device", value=str(device)) from None
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise ModelError("model.device_unavailable", value=str(device))
    if chosen.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ModelError("model.device_unavailable", value=str(device))
    return chosen


def resolve_dtype(device: torch.device, *requested: str | torch.dtype | None) -> torch.dtype:
    """The first precision asked for (model spec, then engine), else the device's default.

    CUDA: float16 (bfloat16 only when asked: it is slower on older cards).  Apple MPS:
    float32, as diffusers' MPS guide loads models (float16 works on recent macOS and halves
    memory: ask for it).  CPU: float32, since half precision is slow or unsupported there.
    """
    for value in requested:
        if value is None:
            continue
        if isinstance(value, torch.dtype):
            return value
        name = DTYPE_NAMES.get(str(value).lower())
        if name is None:
            raise ModelError("model.bad_dtype", value=value, known=sorted(set(DTYPE_NAMES.values())))
        return getattr(torch, name)
    if device.type == "cuda":
        return torch.float16
    return torch.float32


def load_model(spec: ModelSpec, *, family: str, device: torch.device, dtype: torch.dtype) -> LoadedModel:
    """Load ``spec`` onto ``device`` in ``dtype``; ``family`` comes from the registry."""
    with quiet_libraries():
        kind = spec.kind
        local_path: Path | None = None
        if kind is SourceKind.BUILTIN:
            from generation.models.tiny import tiny_pipeline

            pipe = tiny_pipeline()
            if spec.vae:
                pipe.vae = _load_vae(spec, dtype)
        elif kind is SourceKind.SINGLE_FILE:
            local_path = spec.path
            pipe = _load_single_file(spec, family, dtype)
        else:
            local_path = _local_folder(spec, family)
            pipe = _load_folder(spec, local_path, family, dtype)
        pipe = pipe.to(device=device, dtype=dtype)
        pipe.set_progress_bar_config(disable=True)
        if device.type == "mps":
            pipe.enable_attention_slicing()  # diffusers' advice on Macs with less than 64 GB
        img2img_class = _pipeline_classes(family)[1]
        img2img = img2img_class.from_pipe(pipe)
        img2img.set_progress_bar_config(disable=True)
    return LoadedModel(
        spec=spec, family=family, txt2img=pipe, img2img=img2img, device=device, dtype=dtype,
        scheduler_config=dict(pipe.scheduler.config), local_path=local_path,
    )


def local_folder_for_hash(spec: ModelSpec) -> Path | None:
    """The folder (or file) whose bytes identify the model, without downloading anything."""
    kind = spec.kind
    if kind is SourceKind.BUILTIN:
        return None
    if kind in (SourceKind.FOLDER, SourceKind.SINGLE_FILE):
        if not spec.path.exists():
            raise ModelError("model.not_found", path=str(spec.path))
        return spec.path
    return _local_folder(spec, None, allow_download=False)


# ---------------------------------------------------------------------- sources


def _pipeline_classes(family: str) -> tuple[type, type]:
    from diffusers import (
        StableDiffusionImg2ImgPipeline,
        StableDiffusionPipeline,
        StableDiffusionXLImg2ImgPipeline,
        StableDiffusionXLPipeline,
    )

    if family == "sdxl":
        return StableDiffusionXLPipeline, StableDiffusionXLImg2ImgPipeline
    return StableDiffusionPipeline, StableDiffusionImg2ImgPipeline


def _skipped_components(family: str) -> dict[str, Any]:
    """Components Brushwork never runs: not downloaded, not loaded."""
    if family == "sdxl":
        return {"image_encoder": None, "feature_extractor": None}
    return {"safety_checker": None, "feature_extractor": None, "image_encoder": None,
            "requires_safety_checker": False}


def _local_folder(spec: ModelSpec, family: str | None, *, allow_download: bool = True) -> Path:
    kind = spec.kind
    if kind is SourceKind.FOLDER:
        if not spec.path.is_dir():
            raise ModelError("model.not_found", path=str(spec.path))
        return spec.path
    if kind is SourceKind.MODELSCOPE:
        return _modelscope_folder(spec, allow_download=allow_download)
    return _hub_folder(spec, family, allow_download=allow_download)


def _hub_folder(spec: ModelSpec, family: str | None, *, allow_download: bool) -> Path:
    from diffusers import DiffusionPipeline

    offline = hub_offline() or not allow_download
    skip = {k: v for k, v in _skipped_components(family or "sd1").items() if k != "requires_safety_checker"}
    try:
        folder = DiffusionPipeline.download(spec.source, revision=spec.revision, variant=spec.variant,
                                            local_files_only=offline, **skip)
    except Exception as exc:  # any failure here is "the files are not there": say how to get them
        code = "model.not_cached" if offline else "model.download_failed"
        raise ModelError(code, name=spec.name, source=spec.source, detail=_first_line(exc)) from None
    return Path(folder)


def _modelscope_folder(spec: ModelSpec, *, allow_download: bool) -> Path:
    try:
        from modelscope import snapshot_download
    except ImportError:
        raise ModelError("model.modelscope_missing", name=spec.name) from None
    model_id = spec.source[len(MODELSCOPE_PREFIX):]
    try:
        kwargs: dict[str, Any] = {"revision": spec.revision} if spec.revision else {}
        if not allow_download:
            kwargs["local_files_only"] = True
        folder = snapshot_download(model_id, **kwargs)
    except Exception as exc:
        raise ModelError("model.download_failed", name=spec.name, source=spec.source,
                         detail=_first_line(exc)) from None
    return Path(folder)


def _load_folder(spec: ModelSpec, folder: Path, family: str, dtype: torch.dtype):
    if family_from_folder(folder) == "sdxl" and family != "sdxl":
        family = "sdxl"  # the files know better than a guess from the hub id
    txt2img_class = _pipeline_classes(family)[0]
    kwargs: dict[str, Any] = {"torch_dtype": dtype, "local_files_only": True, **_skipped_components(family)}
    if spec.variant:
        kwargs["variant"] = spec.variant
    if spec.vae:
        kwargs["vae"] = _load_vae(spec, dtype)
    try:
        return txt2img_class.from_pretrained(folder, **kwargs)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelError("model.load_failed", name=spec.name, source=str(folder), detail=_first_line(exc)) from None


def _load_single_file(spec: ModelSpec, family: str, dtype: torch.dtype):
    path = spec.path
    if not path.is_file():
        raise ModelError("model.not_found", path=str(path))
    txt2img_class = _pipeline_classes(family)[0]
    kwargs: dict[str, Any] = {"torch_dtype": dtype}
    if spec.config:
        kwargs["config"] = spec.config
    if hub_offline() or (spec.config and Path(spec.config).expanduser().is_dir()):
        kwargs["local_files_only"] = True
    if spec.vae:
        kwargs["vae"] = _load_vae(spec, dtype)
    try:
        pipe = txt2img_class.from_single_file(str(path), **kwargs)
    except Exception as exc:  # conversion errors come in every type: report, don't crash
        raise ModelError("model.single_file_failed", name=spec.name, path=str(path),
                         detail=_first_line(exc)) from None
    if getattr(pipe, "safety_checker", None) is not None:
        pipe.safety_checker = None
    return pipe


def _load_vae(spec: ModelSpec, dtype: torch.dtype):
    from diffusers import AutoencoderKL

    source = spec.vae or ""
    try:
        if source.lower().endswith(".safetensors"):
            return AutoencoderKL.from_single_file(str(Path(source).expanduser()), torch_dtype=dtype)
        local = Path(source).expanduser()
        if local.is_dir():
            sub = "vae" if (local / "vae" / "config.json").is_file() else None
            return AutoencoderKL.from_pretrained(local, subfolder=sub, torch_dtype=dtype, local_files_only=True)
        return AutoencoderKL.from_pretrained(source, torch_dtype=dtype, local_files_only=hub_offline())
    except Exception as exc:
        raise ModelError("model.vae_failed", name=spec.name, source=source, detail=_first_line(exc)) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]

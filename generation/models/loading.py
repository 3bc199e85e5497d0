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

import inspect
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from generation.errors import DeviceError, ModelError
from generation.models._quiet import quiet_libraries
from generation.models.spec import DTYPE_NAMES, MODELSCOPE_PREFIX, ModelSpec, SourceKind, family_from_folder

_TRUE = {"1", "true", "yes", "on"}
MODELSCOPE_OFFLINE_ENV = "MODELSCOPE_OFFLINE"  # ModelScope has no offline switch of its own: this is ours
# The loggers ModelScope writes to (its own handlers print to stderr, and re-level them on use).
MODELSCOPE_LOGGERS = ("modelscope", "modelscope_hub")

# What Brushwork's pipelines load from a diffusers folder: the weight file name of each
# weighted component, the tokenizers, the scheduler config.  The safety checker, feature
# extractor and image encoder (see _skipped_components) are never fetched.
_WEIGHTED = {"unet": "diffusion_pytorch_model", "vae": "diffusion_pytorch_model",
             "text_encoder": "model", "text_encoder_2": "model"}
_TOKENIZERS = ("tokenizer", "tokenizer_2")


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


def modelscope_offline() -> bool:
    """``MODELSCOPE_OFFLINE`` (the name other ModelScope tools use), or ``HF_HUB_OFFLINE``: a
    machine set offline for the hub is offline for ModelScope too.  Read at each call."""
    return hub_offline() or os.environ.get(MODELSCOPE_OFFLINE_ENV, "").strip().lower() in _TRUE


def pipeline_file_patterns(variant: str | None = None) -> list[str]:
    """The files of a diffusers folder that Brushwork loads, as ``fnmatch`` patterns on their
    paths: ``model_index.json``, the scheduler config, the tokenizers, each weighted
    component's ``config.json`` and its safetensors weights in ``variant`` (``fp16``…), one
    file or shards with their index.  The hub path gets the same selection from diffusers
    (``DiffusionPipeline.download`` reads ``model_index.json`` first); ModelScope's
    ``snapshot_download`` is given these."""
    patterns = ["model_index.json", "scheduler/scheduler_config.json"]
    for folder in _TOKENIZERS:
        patterns += [f"{folder}/*.json", f"{folder}/*.txt", f"{folder}/*.model"]
    for folder, stem in _WEIGHTED.items():
        patterns.append(f"{folder}/config.json")
        if variant:
            patterns += [f"{folder}/{stem}.{variant}.safetensors", f"{folder}/{stem}.safetensors.index.{variant}.json",
                         f"{folder}/{stem}.{variant}-*-of-*.safetensors", f"{folder}/{stem}-*-of-*.{variant}.safetensors"]
        else:
            patterns += [f"{folder}/{stem}.safetensors", f"{folder}/{stem}.safetensors.index.json",
                         f"{folder}/{stem}-*-of-*.safetensors"]
    return patterns


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
        raise DeviceError("model.bad_device", value=str(device)) from None
    if chosen.type == "cuda" and (not torch.cuda.is_available()
                                  or (chosen.index is not None and chosen.index >= torch.cuda.device_count())):
        raise DeviceError("model.device_unavailable", value=str(device))
    if chosen.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise DeviceError("model.device_unavailable", value=str(device))
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
    from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import StableDiffusionPipeline
    from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion_img2img import (
        StableDiffusionImg2ImgPipeline,
    )
    from diffusers.pipelines.stable_diffusion_xl.pipeline_stable_diffusion_xl import StableDiffusionXLPipeline
    from diffusers.pipelines.stable_diffusion_xl.pipeline_stable_diffusion_xl_img2img import (
        StableDiffusionXLImg2ImgPipeline,
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
    from diffusers.pipelines.pipeline_utils import DiffusionPipeline

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
    """The model's folder in ModelScope's cache, downloading only the files the pipeline loads
    (unless offline: ``MODELSCOPE_OFFLINE``/``HF_HUB_OFFLINE``, or ``allow_download`` False)."""
    try:
        from modelscope import snapshot_download  # pyright: ignore[reportMissingImports] - an optional extra
    except ImportError:
        raise ModelError("model.modelscope_missing", name=spec.name) from None
    model_id = spec.source[len(MODELSCOPE_PREFIX):]
    offline = modelscope_offline() or not allow_download
    kwargs: dict[str, Any] = {"revision": spec.revision} if spec.revision else {}
    if offline:
        kwargs["local_files_only"] = True
    pattern_keyword = _allow_keyword(snapshot_download)
    if pattern_keyword is not None:
        kwargs[pattern_keyword] = pipeline_file_patterns(spec.variant)
    try:
        with _quiet_modelscope():
            folder = snapshot_download(model_id, **kwargs)
    except Exception as exc:  # any failure here is "the files are not there": say how to get them
        code = "model.modelscope_not_cached" if offline else "model.download_failed"
        raise ModelError(code, name=spec.name, source=spec.source, model_id=model_id,
                         detail=_first_line(exc)) from None
    return Path(folder)


def _allow_keyword(function: Callable[..., Any]) -> str | None:
    """How this ModelScope version's ``snapshot_download`` takes allow patterns: the hub's
    ``allow_patterns`` (newer releases), else its own ``allow_file_pattern``; ``None`` for a
    release with neither (it downloads the whole repository)."""
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):  # pragma: no cover - a builtin or C function
        return None
    for name in ("allow_patterns", "allow_file_pattern"):
        if name in parameters:
            return name
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return "allow_patterns"
    return None


class _OnlyErrors(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR


@contextmanager
def _quiet_modelscope() -> Iterator[None]:
    """ModelScope's own warnings (download retries, "cannot confirm the cached file is for
    revision…") off stderr while we call it; its errors still show.  Its ``get_logger`` sets
    the level again on every call, so a filter on the loggers and their handlers does the
    work the level cannot.  Everything is restored on exit."""
    loggers = [logging.getLogger(name) for name in MODELSCOPE_LOGGERS]
    saved = [logger.level for logger in loggers]
    only_errors = _OnlyErrors()
    filtered: list[logging.Logger | logging.Handler] = []
    for logger in loggers:
        logger.setLevel(logging.ERROR)
        for target in (logger, *logger.handlers):
            target.addFilter(only_errors)
            filtered.append(target)
    try:
        yield
    finally:
        for target in filtered:
            target.removeFilter(only_errors)
        for logger, level in zip(loggers, saved, strict=True):
            logger.setLevel(level)


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
    from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL

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

"""LoRA files: export (kohya/A1111 and diffusers key names) and import checks.

**Export.** :func:`export_lora` writes a ``.safetensors`` with **kohya's key names** by
default — ``lora_unet_<module path with "_">.lora_down.weight``, ``.lora_up.weight`` and a
scalar ``.alpha`` per module (SD1/SD2 text encoder: ``lora_te_text_model_…``; SDXL:
``lora_te1_``/``lora_te2_``), plus kohya's ``ss_*`` metadata.  That one file is the one
Brushwork stores, applies (diffusers reads kohya names) and hashes for the image's ``Lora
hashes``, and the one a user shares: AUTOMATIC1111, ComfyUI and diffusers all load it, so
A1111 and CivitAI find it by the hash an image records.

``format="diffusers"`` writes diffusers' names instead, for diffusers/PEFT scripts that
expect them; ComfyUI loads that file too, AUTOMATIC1111 does not (it reads kohya names
only).  The names are the ones both diffusers and ComfyUI map: UNet attention projections
in diffusers' attention-processor form (``unet.<block>.processor.to_q_lora.down.weight``,
``….processor.to_out_lora.up.weight``: ComfyUI maps a diffusers UNet layer only with
``processor.`` before ``to_q``/``to_k``/``to_v``/``to_out``), other UNet layers as
``unet.<module>.lora.down.weight``, text encoders with CLIP's full path
(``text_encoder.text_model.<module>.lora_linear_layer.down.weight``: ComfyUI wants
``text_model.``, which transformers 5 dropped from the module names).

Either way the scale ``alpha ÷ rank`` is **baked into the up matrices** (kohya files say
``alpha`` = rank): loaders that ignore alpha then apply exactly what was trained.  The
metadata (all strings, as safetensors requires) records the base model and its hash, rank,
the training alpha, steps, dataset size, trigger words, resolution and the Brushwork version.

:func:`export_kohya` gives any LoRA file kohya's names: a diffusers-format file is renamed;
a kohya file keeps its tensor bytes (only the metadata is rewritten), so its A1111 hash
stays the same.  Reading kohya names back needs the model's module names (dots became
underscores): :func:`module_table` and :func:`module_from_kohya` do that.

**Import.** :func:`check_lora_file` reads the safetensors header only (no model needed):
pickled formats are refused by name and by content; the file size is capped; the header's
length is checked before it is read, then its JSON (dtypes, shapes, offsets inside the
file, no overlaps); LoRA kinds Brushwork cannot apply (LyCORIS LoHa/LoKr, DoRA…) are
refused by name.  :func:`inspect_lora` does that, then judges the keys against a base
model: they must be diffusers/peft or kohya LoRA keys; every module must exist in the base
model and every matrix shape must fit it (rank equal on both halves).  Only the few scalar
``alpha`` tensors are read; no weights are loaded.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import struct
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from generation.models.spec import PICKLE_SUFFIXES
from generation.training.errors import LoraFileError

if TYPE_CHECKING:
    import torch

    from generation.models.loading import LoadedModel

UNET_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
TEXT_ENCODER_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")
COMPONENTS = ("unet", "text_encoder", "text_encoder_2")
DEFAULT_MAX_LORA_BYTES = 512 * 1024 * 1024
DEFAULT_MAX_HEADER_BYTES = 16 * 1024 * 1024
DTYPE_SIZES = {"F16": 2, "BF16": 2, "F32": 4, "F64": 8}  # what LoRA weights may be
ANY_DTYPE_SIZES = {**DTYPE_SIZES, "BOOL": 1, "U8": 1, "I8": 1, "I16": 2, "U16": 2, "I32": 4, "U32": 4, "I64": 8,
                   "U64": 8}
KOHYA_KEY = re.compile(r"^lora_(unet|te|te1|te2)_[A-Za-z0-9_]+\.(lora_down\.weight|lora_up\.weight|alpha)$")
_KOHYA_PREFIX = {"lora_unet_": "unet", "lora_te_": "text_encoder", "lora_te1_": "text_encoder",
                 "lora_te2_": "text_encoder_2"}
_KOHYA_SUFFIX = {".lora_down.weight": "down", ".lora_up.weight": "up", ".alpha": "alpha"}
_DIFFUSERS_SUFFIX = {".lora_A.weight": "down", ".lora_B.weight": "up", ".lora.down.weight": "down",
                     ".lora.up.weight": "up", ".lora_linear_layer.down.weight": "down",
                     ".lora_linear_layer.up.weight": "up", ".alpha": "alpha"}
# diffusers' attention-processor names: ``<block>.processor.to_q_lora.down.weight`` (to_out: ``to_out_lora``)
_PROCESSOR_KEY = re.compile(r"^(?P<block>.+)\.processor\.(?P<proj>to_q|to_k|to_v|to_out)_lora\.(?P<kind>down|up)\.weight$")
_PROJECTIONS = ("to_q", "to_k", "to_v", "to_out")
FORMATS = ("kohya", "diffusers")
_TABLE_KEY = "brushwork.lora_module_table"

# LoRA kinds Brushwork cannot apply, each told by a key part only it has (LyCORIS', kohya's and
# PEFT's names): inside the key, or at its end.  diffusers would refuse some with an obscure
# error and quietly drop DoRA's magnitudes, so they are refused by name, from the header alone.
_OTHER_KINDS_INSIDE = ((".hada_", "LyCORIS LoHa"), (".lokr_", "LyCORIS LoKr"), ("lora_magnitude_vector", "DoRA"),
                       (".lora_mid.", "LoCon with CP decomposition (lora_mid)"), (".oft_", "OFT/BOFT"))
_OTHER_KINDS_AT_END = ((".dora_scale", "DoRA"), (".on_input", "LyCORIS (IA)³"), (".a1.weight", "LyCORIS GLoRA"),
                       (".b1.weight", "LyCORIS GLoRA"), (".diff", "LyCORIS full (weight difference)"),
                       (".diff_b", "LyCORIS full (weight difference)"), (".w_norm", "LyCORIS norm"),
                       (".b_norm", "LyCORIS norm"))


def other_lora_kind(key: str) -> str | None:
    """The kind of LoRA Brushwork cannot apply that ``key`` belongs to (``"LyCORIS LoHa"``…), or None."""
    return next((kind for part, kind in _OTHER_KINDS_INSIDE if part in key), None) or next(
        (kind for part, kind in _OTHER_KINDS_AT_END if key.endswith(part)), None)


# ---------------------------------------------------------------------- weights and export


@dataclass(frozen=True)
class LoraWeights:
    """Trained LoRA matrices, not yet scaled: ``{"unet.<module>.lora_A.weight": tensor, …}``
    (``lora_A`` = down, ``lora_B`` = up), with the rank and alpha they were trained with
    and the metadata to write (strings)."""

    tensors: Mapping[str, torch.Tensor]
    rank: int
    alpha: float
    metadata: Mapping[str, str] = field(default_factory=dict)


def export_lora(source: Any, path: str | os.PathLike[str], metadata: Mapping[str, Any] | None = None, *,
                dtype: str = "float32", format: str = "kohya") -> Path:
    """Write ``source`` (a :class:`LoraWeights`, or anything with ``lora_weights()`` such as a
    :class:`~generation.training.trainer.LoraTrainer`) to ``path``.

    ``format``: ``kohya`` (the default: AUTOMATIC1111, ComfyUI and diffusers load it) or
    ``diffusers`` (diffusers' names, for diffusers/PEFT scripts; ComfyUI loads it, A1111 does
    not).  ``metadata`` is added to the trainer's own (values become strings; lists and dicts
    JSON).  The file is written atomically.  ``dtype``: ``float32`` or ``float16``.
    """
    import torch

    weights: LoraWeights = source.lora_weights() if hasattr(source, "lora_weights") else source
    if dtype not in ("float32", "float16"):
        raise ValueError("dtype must be 'float32' or 'float16'")
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}")
    scale = float(weights.alpha) / float(weights.rank)
    groups: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for key, tensor in weights.tensors.items():
        component, module, kind = split_lora_key(key)
        value = tensor.detach().to("cpu", torch.float32)
        if kind == "up":
            value = value * scale
        groups.setdefault((component, module), {})[kind] = value.to(getattr(torch, dtype)).contiguous()
    extra = string_metadata(metadata or {})
    meta = {**dict(weights.metadata), **extra, "brushwork.alpha_baked": "true"}  # up × alpha/rank: scale 1
    if format == "kohya":
        tensors, ranks, alphas = _kohya_tensors(groups, "LoRA")
        meta = {**_kohya_metadata(meta, ranks, alphas, sdxl=_is_sdxl(groups)), **extra}
    else:
        tensors = {diffusers_key(component, module, kind): value
                   for (component, module), parts in sorted(groups.items()) for kind, value in parts.items()}
        meta = {"format": "pt", **meta}
    return _write_safetensors(tensors, Path(path), meta)


def export_kohya(path_in: str | os.PathLike[str], path_out: str | os.PathLike[str],
                 metadata: Mapping[str, Any] | None = None) -> Path:
    """Write a LoRA file with kohya's key names (see the module docstring): a diffusers/peft
    file is renamed; a kohya file is copied with its tensor bytes untouched (same A1111 hash)
    and ``metadata`` added."""
    from safetensors.torch import load_file

    source = Path(path_in)
    header = read_header(source, name=source.name)
    if not header.tensors:
        raise LoraFileError("lora.empty", name=source.name)
    refuse_other_kinds(header, source.name)
    if key_format(header) == "kohya":
        return _rewrite_metadata(source, header, Path(path_out),
                                 {**header.metadata, **string_metadata(metadata or {})})
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for key, tensor in load_file(str(source)).items():
        component, module, kind = split_lora_key(key, name=source.name)
        groups.setdefault((component, module), {})[kind] = tensor
    tensors, ranks, alphas = _kohya_tensors(groups, source.name)
    meta = {k: v for k, v in header.metadata.items() if k != "format"}
    meta = _kohya_metadata(meta, ranks, alphas, sdxl=_is_sdxl(groups))
    meta.update(string_metadata(metadata or {}))
    return _write_safetensors(tensors, Path(path_out), meta)


def _is_sdxl(groups: Mapping[tuple[str, str], Any]) -> bool:
    return any(component == "text_encoder_2" for component, _ in groups)


def _kohya_tensors(groups: Mapping[tuple[str, str], Mapping[str, Any]], name: str
                   ) -> tuple[dict[str, Any], set[int], set[float]]:
    import torch

    sdxl = _is_sdxl(groups)
    out: dict[str, Any] = {}
    ranks: set[int] = set()
    alphas: set[float] = set()
    for (component, module), parts in sorted(groups.items()):
        if "down" not in parts or "up" not in parts:
            raise LoraFileError("lora.incomplete", name=name, module=f"{component}.{module}",
                                missing="lora_up" if "down" in parts else "lora_down")
        rank = int(parts["down"].shape[0])
        alpha = float(parts["alpha"].reshape(-1)[0]) if "alpha" in parts else float(rank)
        ranks.add(rank)
        alphas.add(alpha)
        base = kohya_name(component, module, sdxl=sdxl)
        out[f"{base}.lora_down.weight"] = parts["down"].contiguous()
        out[f"{base}.lora_up.weight"] = parts["up"].contiguous()
        out[f"{base}.alpha"] = torch.tensor(alpha, dtype=torch.float32)
    return out, ranks, alphas


def _kohya_metadata(meta: Mapping[str, str], ranks: set[int], alphas: set[float], *, sdxl: bool) -> dict[str, str]:
    """kohya's ``ss_*`` fields (A1111's and CivitAI's readers), from Brushwork's own."""
    out = {k: v for k, v in meta.items() if k != "format"}
    out.update({
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(max(ranks)),
        "ss_network_alpha": _number(next(iter(alphas))) if len(alphas) == 1 else "Dynamic",
        "ss_base_model_version": "sdxl_base_v1-0" if sdxl else "sd_v1",
    })
    for ours, theirs in (("brushwork.base_model", "ss_sd_model_name"), ("brushwork.dataset_size", "ss_num_train_images"),
                         ("brushwork.steps", "ss_max_train_steps"), ("brushwork.base_model_hash", "ss_new_sd_model_hash")):
        if ours in out:
            out[theirs] = out[ours]
    if "brushwork.resolution" in out:
        out["ss_resolution"] = f"({out['brushwork.resolution']}, {out['brushwork.resolution']})"
    return out


def split_lora_key(key: str, *, name: str = "LoRA") -> tuple[str, str, str]:
    """``unet.a.b.lora_A.weight`` -> ``("unet", "a.b", "down")`` (diffusers/peft names only;
    ``unet.a.processor.to_out_lora.up.weight`` -> ``("unet", "a.to_out.0", "up")``)."""
    component = next((c for c in COMPONENTS if key.startswith(c + ".")), None)
    processor = _PROCESSOR_KEY.match(key[len(component) + 1:]) if component else None
    if component is not None and processor is not None:
        projection = processor["proj"] + (".0" if processor["proj"] == "to_out" else "")
        return component, f"{processor['block']}.{projection}", processor["kind"]
    suffix = next((s for s in _DIFFUSERS_SUFFIX if key.endswith(s)), None)
    if component is None or suffix is None or len(key) <= len(component) + 1 + len(suffix):
        raise LoraFileError("lora.unsupported_key", name=name, key=key[:200])
    return component, key[len(component) + 1:-len(suffix)], _DIFFUSERS_SUFFIX[suffix]


def diffusers_key(component: str, module: str, kind: str) -> str:
    """The name :func:`export_lora` gives a matrix in ``diffusers`` format (``kind``: down/up),
    one that diffusers and ComfyUI both map (see the module docstring)."""
    part = "down" if kind == "down" else "up"
    if component == "unet":
        block, _, projection = module.removesuffix(".0").rpartition(".")
        if block and projection in _PROJECTIONS and (projection == "to_out") == module.endswith(".to_out.0"):
            return f"unet.{block}.processor.{projection}_lora.{part}.weight"
        return f"unet.{module}.lora.{part}.weight"
    if not module.startswith("text_model."):  # transformers 5 dropped CLIPTextModel.text_model; ComfyUI wants it
        module = "text_model." + module
    return f"{component}.{module}.lora_linear_layer.{part}.weight"


def key_format(header: SafetensorsHeader) -> str:
    """``kohya`` when every key has kohya's names, else ``diffusers`` (header only)."""
    return "kohya" if header.tensors and all(k.startswith(tuple(_KOHYA_PREFIX)) for k in header.tensors) \
        else "diffusers"


def kohya_name(component: str, module: str, *, sdxl: bool = False) -> str:
    """kohya's name for a module: ``lora_unet_down_blocks_0_…_to_q``, ``lora_te_text_model_…``."""
    if component == "unet":
        return "lora_unet_" + module.replace(".", "_")
    if not module.startswith("text_model."):  # transformers 5 dropped CLIPTextModel.text_model; kohya keeps it
        module = "text_model." + module
    prefix = {"text_encoder": "lora_te1_" if sdxl else "lora_te_", "text_encoder_2": "lora_te2_"}[component]
    return prefix + module.replace(".", "_")


def string_metadata(values: Mapping[str, Any]) -> dict[str, str]:
    """safetensors metadata must be ``str -> str``: numbers and flags as text, lists/dicts as JSON."""
    out: dict[str, str] = {}
    for key, value in values.items():
        if not isinstance(key, str):
            raise TypeError(f"metadata keys must be strings, got {key!r}")
        if value is None:
            continue
        if isinstance(value, str):
            out[key] = value
        elif isinstance(value, bool):
            out[key] = "true" if value else "false"
        elif isinstance(value, (int, float)):
            out[key] = _number(value)
        elif isinstance(value, (list, tuple, dict)):
            out[key] = json.dumps(value, ensure_ascii=False, sort_keys=isinstance(value, dict))
        else:
            raise TypeError(f"metadata value for {key!r} must be text, a number, a flag, a list or a dict")
    return out


def _write_safetensors(tensors: Mapping[str, Any], path: Path, metadata: Mapping[str, str]) -> Path:
    from safetensors.torch import save_file

    return _atomic_write(path, lambda tmp: save_file(dict(tensors), tmp, metadata=dict(metadata)))


def _rewrite_metadata(source: Path, header: SafetensorsHeader, path: Path, metadata: Mapping[str, str]) -> Path:
    """``source`` with another ``__metadata__``: the tensor bytes are copied as they are, so
    the A1111 hash (of everything after the header) does not change."""
    entries: dict[str, Any] = {"__metadata__": dict(metadata), **header.tensors}
    raw = json.dumps(entries, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-(8 + len(raw)) % 8)  # the data starts 8-aligned, as safetensors writes it

    def write(tmp: str) -> None:
        with open(source, "rb") as reader, open(tmp, "wb") as writer:
            writer.write(struct.pack("<Q", len(raw)))
            writer.write(raw)
            reader.seek(header.data_start)
            while chunk := reader.read(1 << 20):
                writer.write(chunk)

    return _atomic_write(path, write)


def _atomic_write(path: Path, write: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _number(value: float | int) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return repr(value) if isinstance(value, float) else str(value)


# ---------------------------------------------------------------------- safetensors header


@dataclass(frozen=True)
class SafetensorsHeader:
    tensors: dict[str, dict[str, Any]]  # key -> {"dtype", "shape", "data_offsets"}
    metadata: dict[str, str]
    data_start: int
    size: int


def read_header(source: str | os.PathLike[str] | bytes | bytearray | memoryview, *, name: str | None = None,
                max_bytes: int = DEFAULT_MAX_LORA_BYTES, max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
                dtypes: Mapping[str, int] = DTYPE_SIZES) -> SafetensorsHeader:
    """Check a file's size, format and safetensors header (nothing else is read).

    ``dtypes`` are the tensor types allowed, with their sizes (LoRA weights: floats only).
    """
    with _open_source(source) as (handle, size, label):
        name = name or label
        return _read_header(handle, size, name=name, max_bytes=max_bytes, max_header_bytes=max_header_bytes,
                            dtypes=dtypes)



def check_lora_file(source: str | os.PathLike[str] | bytes | bytearray | memoryview, *, name: str | None = None,
                    max_bytes: int | None = DEFAULT_MAX_LORA_BYTES,
                    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES) -> SafetensorsHeader:
    """What can be judged without a base model, from the header alone: pickles, size (``None``:
    no cap), a sound safetensors header, and a LoRA kind Brushwork can apply (see
    :func:`refuse_other_kinds`).  Run it before loading a model for :func:`inspect_lora`."""
    header = read_header(source, name=name, max_bytes=max_bytes if max_bytes is not None else 1 << 62,
                         max_header_bytes=max_header_bytes)
    refuse_other_kinds(header, name or (Path(source).name if isinstance(source, (str, os.PathLike)) else "LoRA"))
    return header


def refuse_other_kinds(header: SafetensorsHeader, name: str) -> None:
    """Refuse LyCORIS LoHa/LoKr, DoRA and the other kinds :func:`other_lora_kind` knows, by name
    (``lora.unsupported_kind``: what was found, what is supported, what to do)."""
    for key in header.tensors:
        kind = other_lora_kind(key)
        if kind is not None:
            raise LoraFileError("lora.unsupported_kind", name=name, kind=kind, key=key[:200])

def check_lora_values(source: str | os.PathLike[str] | bytes | bytearray | memoryview, *,
                      name: str | None = None, header: SafetensorsHeader | None = None) -> None:
    """Refuse a LoRA whose weights hold NaN or infinite numbers (``lora.not_finite``).

    Every tensor is read once, one at a time (memory: the largest tensor), and judged from
    its bits: diffusers would apply such a LoRA and make a black or noise image, with only a
    RuntimeWarning in a log.  ``header``: the one already read, if any.
    """
    import numpy as np

    with _open_source(source) as (handle, size, label):
        name = name or label
        if header is None:
            header = _read_header(handle, size, name=name, max_bytes=1 << 62,
                                  max_header_bytes=DEFAULT_MAX_HEADER_BYTES)
        for key, entry in sorted(header.tensors.items(), key=lambda item: item[1]["data_offsets"][0]):
            begin, end = entry["data_offsets"]
            handle.seek(header.data_start + begin)
            raw = handle.read(end - begin)
            if len(raw) != end - begin:
                raise LoraFileError("lora.truncated", name=name)
            bits, exponent = _FLOAT_BITS[entry["dtype"]]
            values = np.frombuffer(raw, dtype=bits)
            bad = np.flatnonzero((values & exponent) == exponent)  # all exponent bits set: NaN or ±Inf
            if bad.size:
                raise LoraFileError("lora.not_finite", name=name, key=key[:200], count=int(bad.size),
                                    total=int(values.size))


# the unsigned integer of each float type's width, and its exponent bits (all set: NaN or ±Inf)
_FLOAT_BITS = {"F16": ("<u2", 0x7C00), "BF16": ("<u2", 0x7F80), "F32": ("<u4", 0x7F800000),
               "F64": ("<u8", 0x7FF0000000000000)}


class _open_source:
    def __init__(self, source) -> None:
        self.source = source
        self.handle: IO[bytes] | None = None

    def __enter__(self) -> tuple[IO[bytes], int, str]:
        source = self.source
        if isinstance(source, (bytes, bytearray, memoryview)):
            self.handle = io.BytesIO(bytes(source))
            return self.handle, len(source), "LoRA"
        path = Path(source)
        if path.suffix.lower() in PICKLE_SUFFIXES:  # refused by name before a byte is read
            raise LoraFileError("lora.pickle_refused", name=path.name)
        try:
            size = path.stat().st_size
            self.handle = open(path, "rb")
        except OSError as exc:
            raise LoraFileError("lora.unreadable", name=path.name, detail=str(exc)[:200]) from None
        return self.handle, size, path.name

    def __exit__(self, *exc: object) -> None:
        if self.handle is not None:
            self.handle.close()


def _read_header(handle: IO[bytes], size: int, *, name: str, max_bytes: int, max_header_bytes: int,
                 dtypes: Mapping[str, int] = DTYPE_SIZES) -> SafetensorsHeader:
    if name.lower().endswith(PICKLE_SUFFIXES):
        raise LoraFileError("lora.pickle_refused", name=name)
    if size > max_bytes:
        raise LoraFileError("lora.too_large", name=name, size=_mb(size), limit=_mb(max_bytes))
    head = handle.read(16)
    if len(head) < 10 or head[8:9] != b"{":
        if _looks_pickled(head):
            raise LoraFileError("lora.pickle_refused", name=name)
        raise LoraFileError("lora.not_safetensors", name=name)
    (length,) = struct.unpack("<Q", head[:8])
    if length > max_header_bytes:
        raise LoraFileError("lora.header_too_large", name=name, size=_mb(length), limit=_mb(max_header_bytes))
    if 8 + length > size:
        raise LoraFileError("lora.truncated", name=name)
    handle.seek(8)
    raw = handle.read(length)
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError) as exc:
        raise LoraFileError("lora.bad_header", name=name, detail=str(exc)[:200]) from None
    if not isinstance(header, dict):
        raise LoraFileError("lora.bad_header", name=name, detail="the header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                 for k, v in metadata.items()):
        raise LoraFileError("lora.bad_header", name=name, detail="__metadata__ must map strings to strings")
    data_size = size - 8 - length
    spans = []
    for key, entry in header.items():
        dtype, shape, offsets = _entry_fields(entry)
        if dtype is None:
            raise LoraFileError("lora.bad_header", name=name, detail=f"tensor {key[:120]!r} is malformed")
        if dtype not in dtypes:
            raise LoraFileError("lora.bad_dtype", name=name, key=key[:200], dtype=str(dtype)[:20])
        begin, end = offsets
        if end - begin != math.prod(shape) * dtypes[dtype]:
            raise LoraFileError("lora.bad_header", name=name,
                                detail=f"tensor {key[:120]!r}: its byte range does not match its shape")
        if end > data_size:
            raise LoraFileError("lora.truncated", name=name)
        spans.append((begin, end, key))
    spans.sort()
    for (_, end, key), (begin, _, _) in zip(spans, spans[1:], strict=False):
        if begin < end:
            raise LoraFileError("lora.bad_header", name=name, detail=f"tensor {key[:120]!r} overlaps another")
    return SafetensorsHeader(tensors=header, metadata=dict(metadata), data_start=8 + length, size=size)


def _entry_fields(entry: Any) -> tuple[Any, list[int], tuple[int, int]] | tuple[None, list, tuple]:
    bad = (None, [], (0, 0))
    if not isinstance(entry, dict):
        return bad
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if not isinstance(dtype, str) or not isinstance(shape, list) or not isinstance(offsets, list):
        return bad
    if len(shape) > 8 or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        return bad
    if len(offsets) != 2 or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets):
        return bad
    if not 0 <= offsets[0] <= offsets[1]:
        return bad
    return dtype, shape, (offsets[0], offsets[1])


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key[:120]!r}")
        out[key] = value
    return out


def _looks_pickled(head: bytes) -> bool:
    """Python pickles (protocol 2+) and torch.save's zip files (a pickle inside)."""
    return (len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5) or head.startswith(b"PK\x03\x04")


def _mb(size: int) -> str:
    value = size / (1024 * 1024)
    return f"{value:.0f} MB" if value >= 10 else f"{value:.2f} MB"


# ---------------------------------------------------------------------- import checks


@dataclass(frozen=True)
class LoraInfo:
    """What an accepted LoRA file is.

    ``alpha`` is what a loader scales by (``alpha ÷ rank``): the ``.alpha`` tensors of a
    kohya file, else the rank (scale 1, as diffusers loads a file without alphas; Brushwork's
    own exports have the scale baked in).  ``modules`` are ``component.module.path`` in
    diffusers naming; ``targets`` their distinct last parts (``to_q``, ``q_proj``…).
    """

    format: str  # "diffusers" or "kohya"
    rank: int
    ranks: tuple[int, ...]
    alpha: float
    targets: tuple[str, ...]
    modules: tuple[str, ...]
    components: tuple[str, ...]
    metadata: dict[str, str]
    size_bytes: int
    tensors: int


@dataclass(frozen=True, slots=True)
class ModuleShape:
    kind: str  # "linear" or "conv"
    in_features: int
    out_features: int
    kernel: tuple[int, int] = (1, 1)


def module_table(model: LoadedModel) -> dict[str, dict[str, ModuleShape]]:
    """Every Linear/Conv2d of the model's UNet and text encoders, by component and path.

    Computed once per loaded model (kept in ``model.extras``).  Modules wrapped by a PEFT
    adapter (while the engine applies a LoRA) count as their base layer.
    """
    cached = model.extras.get(_TABLE_KEY)
    if cached is not None:
        return cached
    import torch

    table: dict[str, dict[str, ModuleShape]] = {}
    for component in COMPONENTS:
        module = getattr(model.txt2img, component, None)
        if module is None:
            continue
        entries: dict[str, ModuleShape] = {}
        for path, layer in module.named_modules():
            if ".lora_" in path or path.endswith("base_layer") or ".base_layer." in path or "lora_" in path:
                continue
            base = getattr(layer, "base_layer", layer)
            if isinstance(base, torch.nn.Linear):
                entries[path] = ModuleShape("linear", base.in_features, base.out_features)
            elif isinstance(base, torch.nn.Conv2d):
                kernel = tuple(base.kernel_size)
                entries[path] = ModuleShape("conv", base.in_channels // base.groups, base.out_channels,
                                            (int(kernel[0]), int(kernel[1])))
        table[component] = entries
    model.extras[_TABLE_KEY] = table
    return table


def has_module_table(model: LoadedModel) -> bool:
    """Whether :func:`module_table` was computed for ``model`` already."""
    return _TABLE_KEY in model.extras


def module_from_kohya(key_or_name: str, table: Mapping[str, Mapping[str, ModuleShape]]
                      ) -> tuple[str, str] | None:
    """``lora_unet_down_blocks_0_…_to_q[.lora_down.weight]`` -> ``("unet", "down_blocks.0.….to_q")``."""
    flat = key_or_name
    for suffix in _KOHYA_SUFFIX:
        if flat.endswith(suffix):
            flat = flat[:-len(suffix)]
            break
    prefix = next((p for p in sorted(_KOHYA_PREFIX, key=len, reverse=True) if flat.startswith(p)), None)
    if prefix is None:
        return None
    component = _KOHYA_PREFIX[prefix]
    rest = flat[len(prefix):]
    flats = _flat_names(table, component)
    path = flats.get(rest)
    if path is None and component != "unet" and rest.startswith("text_model_"):
        path = flats.get(rest[len("text_model_"):])
    return (component, path) if path is not None else None


def _flat_names(table: Mapping[str, Mapping[str, ModuleShape]], component: str) -> dict[str, str]:
    return {path.replace(".", "_"): path for path in table.get(component, {})}


def inspect_lora(source: str | os.PathLike[str] | bytes | bytearray | memoryview, base_model: LoadedModel, *,
                 max_bytes: int = DEFAULT_MAX_LORA_BYTES, max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
                 name: str | None = None) -> LoraInfo:
    """Check an uploaded LoRA against ``base_model`` (see the module docstring); raise or describe it.

    ``name`` (the upload's file name) is used in messages and to refuse pickled suffixes
    when ``source`` is bytes.  Raises :class:`LoraFileError` (``lora.*`` codes).
    """
    with _open_source(source) as (handle, size, label):
        name = name or label
        header = _read_header(handle, size, name=name, max_bytes=max_bytes, max_header_bytes=max_header_bytes)
        if not header.tensors:
            raise LoraFileError("lora.empty", name=name)
        refuse_other_kinds(header, name)
        table = module_table(base_model)
        fmt, groups = _group_keys(header, table, name)
        ranks: list[int] = []
        alphas: list[float] = []
        for (component, path), parts in sorted(groups.items()):
            rank = _check_module(name, component, path, parts, header, table[component][path])
            ranks.append(rank)
            if "alpha" in parts:
                alphas.append(_read_alpha(handle, header, parts["alpha"], name))
    rank = max(ranks)
    alpha = alphas[0] if alphas and len(set(alphas)) == 1 else float(max(alphas) if alphas else rank)
    modules = tuple(f"{c}.{p}" for c, p in sorted(groups))
    targets = tuple(sorted({_target_name(p) for _, p in groups}))
    return LoraInfo(format=fmt, rank=rank, ranks=tuple(sorted(set(ranks))), alpha=alpha, targets=targets,
                    modules=modules, components=tuple(sorted({c for c, _ in groups})),
                    metadata=dict(header.metadata), size_bytes=header.size, tensors=len(header.tensors))


def _group_keys(header: SafetensorsHeader, table: Mapping[str, Mapping[str, ModuleShape]], name: str
                ) -> tuple[str, dict[tuple[str, str], dict[str, str]]]:
    groups: dict[tuple[str, str], dict[str, str]] = {}
    formats: set[str] = set()
    for key in header.tensors:
        if key.startswith("lora_"):
            suffix = next((s for s in _KOHYA_SUFFIX if key.endswith(s)), None)
            if suffix is None or not KOHYA_KEY.match(key):
                raise LoraFileError("lora.unsupported_key", name=name, key=key[:200])
            found = module_from_kohya(key, table)
            if found is None:
                raise LoraFileError("lora.unknown_module", name=name, key=key[:200])
            formats.add("kohya")
            kind = _KOHYA_SUFFIX[suffix]
        else:
            component, path, kind = split_lora_key(key, name=name)
            modules = table.get(component, {})
            if path not in modules and path.startswith("text_model."):
                path = path[len("text_model."):]
            if path not in modules:
                raise LoraFileError("lora.unknown_module", name=name, key=key[:200])
            found = (component, path)
            formats.add("diffusers")
        parts = groups.setdefault(found, {})
        if kind in parts:
            raise LoraFileError("lora.duplicate_module", name=name, key=key[:200], other=parts[kind][:200])
        parts[kind] = key
    if len(formats) > 1:
        raise LoraFileError("lora.mixed_formats", name=name)
    return formats.pop(), groups


def _check_module(name: str, component: str, path: str, parts: dict[str, str], header: SafetensorsHeader,
                  target: ModuleShape) -> int:
    module = f"{component}.{path}"
    if "down" not in parts or "up" not in parts:
        raise LoraFileError("lora.incomplete", name=name, module=module,
                            missing="lora_up" if "down" in parts else "lora_down")
    down = list(header.tensors[parts["down"]]["shape"])
    up = list(header.tensors[parts["up"]]["shape"])
    if len(down) < 2 or len(up) < 2:
        raise LoraFileError("lora.shape_mismatch", name=name, key=parts["down" if len(down) < 2 else "up"],
                            expected="a matrix", got=str(down if len(down) < 2 else up))
    rank = down[0]
    if up[1] != rank or rank < 1:
        raise LoraFileError("lora.rank_mismatch", name=name, module=module, down=down[0], up=up[1])
    if target.kind == "linear":
        down_ok = down in ([rank, target.in_features], [rank, target.in_features, 1, 1])
        up_ok = up in ([target.out_features, rank], [target.out_features, rank, 1, 1])
        expected_down = f"[{rank}, {target.in_features}]"
    else:
        kh, kw = target.kernel
        down_ok = down in ([rank, target.in_features, kh, kw], [rank, target.in_features, 1, 1])
        up_ok = up == [target.out_features, rank, 1, 1]
        expected_down = f"[{rank}, {target.in_features}, {kh}, {kw}]"
    if not down_ok:
        raise LoraFileError("lora.shape_mismatch", name=name, key=parts["down"], expected=expected_down, got=str(down))
    if not up_ok:
        raise LoraFileError("lora.shape_mismatch", name=name, key=parts["up"],
                            expected=f"[{target.out_features}, {rank}]", got=str(up))
    if "alpha" in parts and math.prod(header.tensors[parts["alpha"]]["shape"]) != 1:
        raise LoraFileError("lora.bad_alpha", name=name, key=parts["alpha"])
    return rank


def _read_alpha(handle: IO[bytes], header: SafetensorsHeader, key: str, name: str) -> float:
    entry = header.tensors[key]
    begin = entry["data_offsets"][0]
    handle.seek(header.data_start + begin)
    raw = handle.read(DTYPE_SIZES[entry["dtype"]])
    dtype = entry["dtype"]
    if dtype == "F32":
        value = struct.unpack("<f", raw)[0]
    elif dtype == "F16":
        value = struct.unpack("<e", raw)[0]
    elif dtype == "BF16":
        value = struct.unpack("<f", b"\x00\x00" + raw)[0]
    else:
        value = struct.unpack("<d", raw)[0]
    if not math.isfinite(value) or value <= 0:
        raise LoraFileError("lora.bad_alpha", name=name, key=key)
    return float(value)


def _target_name(path: str) -> str:
    parts = path.split(".")
    return ".".join(parts[-2:]) if parts[-1].isdigit() and len(parts) > 1 else parts[-1]

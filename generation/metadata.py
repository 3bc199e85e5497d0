"""The recipe inside every image: AUTOMATIC1111's ``parameters`` text and Brushwork's own chunk.

Two text chunks go into each PNG:

* ``parameters`` — A1111's "infotext", the de-facto interchange format (A1111's PNG Info,
  ComfyUI loaders, CivitAI and image browsers read it).  It is written exactly as A1111
  writes it, LoRAs included as ``<lora:name:weight>`` tags in the prompt, so A1111 itself
  reproduces the image;
* ``brushwork`` — compact JSON with the request as :meth:`Request.to_dict` stores it: exact,
  typed and versioned (``"format": 1``), so reroll/upscale/vary never depend on how well a
  text format survives a round trip.

:func:`read_recipe` prefers the ``brushwork`` chunk and falls back to ``parameters``, so
images made by A1111 (or anything writing its format) can be reused too.  Reading never
decodes pixels: the chunks are walked one by one, and Pillow only opens the header (which
is where its decompression-bomb limit applies).

JPEG and WebP copies (the bot re-encodes results too large for a Discord upload) carry the
``parameters`` text where A1111 puts it for those formats: the EXIF ``UserComment`` tag,
UTF-16 with the ``UNICODE`` prefix (:func:`recipe_exif`); :func:`read_recipe` reads it back.

Every problem with a file or a text is a :class:`~generation.errors.MetadataError` whose
code names what is wrong; a request that cannot be written (unresolved, several images) is
a programming error and raises :class:`ValueError`.
"""

from __future__ import annotations

import io
import json
import os
import re
import struct
import unicodedata
import warnings
import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, BinaryIO, Literal

from PIL import Image, PngImagePlugin, UnidentifiedImageError

from generation.errors import MetadataError, RequestError
from generation.request import (
    IMAGE_SCALE,
    NAME_PATTERN,
    RANGES,
    Hires,
    LoraRef,
    Request,
    control_character,
    format_number,
    hires_size,
)
from generation.samplers import AUTOMATIC, Schedule, find_sampler, find_schedule, from_infotext

FORMAT = 1  # version of the ``brushwork`` chunk's JSON layout
PARAMETERS_KEY = "parameters"
BRUSHWORK_KEY = "brushwork"
NEGATIVE_PREFIX = "Negative prompt:"

# A1111's own pattern for the parameters line (modules/infotext_utils.py); a line is the
# parameters line only if it yields at least 3 pairs.
PARAM_PATTERN = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
SIZE_PATTERN = re.compile(r"^(\d+)x(\d+)$")
_INT = re.compile(r"^[+-]?[0-9]+$")
_FLOAT = re.compile(r"^[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$")
_EXTRA_KEY = re.compile(r"\w[\w \-/]*[\w\-/]")
_LORA_TAG = re.compile(r"<lora:([^<>]*)>")
_TRAILING_LORA_TAG = re.compile(r"\s*<lora:([^<>]*)>\Z")
_BLANKS = " \t"
BRUSHWORK_VERSION_PREFIX = "brushwork "  # the Version value Brushwork writes

# Pairs A1111 (and its extensions) write that never change the pixels: which batch an image
# was in, who made it, hashes of what the other keys name.
NO_EFFECT_KEYS = frozenset({"Hashes", "Batch size", "Batch pos", "User"})
# A1111's hires-pass settings, followed when they are the base pass's (Brushwork's hires pass
# always runs with the base sampler, schedule, CFG, prompts and model).  Keys are matched in
# lower case: A1111 has written both "Hires CFG Scale" and "Hires CFG scale".
_SAME_AS_BASE = {"hires prompt": "prompt", "hires negative prompt": "negative", "hires sampler": "sampler",
                 "hires schedule type": "schedule", "hires cfg scale": "cfg", "hires checkpoint": "model"}
HIRES_UPSCALER = "Lanczos"  # how Brushwork's hires pass enlarges the image
_UNKNOWN = Schedule("?", {}, "a schedule type diffusers has no equivalent for")

# The keys this module writes or reads itself; ``extra`` may not reuse them.
KNOWN_KEYS = frozenset({
    "Steps", "Sampler", "Schedule type", "CFG scale", "Seed", "Size", "Model hash", "Model",
    "Variation seed", "Variation seed strength", "Denoising strength", "Clip skip", "RNG", "Tiling",
    "Hires upscale", "Hires resize", "Hires steps", "Hires upscaler", "Lora hashes", "Version", "Init image",
})

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_TEXT_CHUNK = 1024 * 1024  # a recipe is a few KiB; a larger chunk with our key is refused
_TEXT_CHUNKS = (b"tEXt", b"zTXt", b"iTXt")
EXIF_IFD = 0x8769  # the Exif sub-IFD
USER_COMMENT = 0x9286  # where A1111 writes the parameters text in JPEG and WebP files
_COMMENT_PREFIXES = {b"UNICODE\0": "utf-16", b"ASCII\0\0\0": "latin-1", b"\0" * 8: "utf-8"}
EXIF_FORMATS = ("JPEG", "WEBP")
_OUR_KEYS = (PARAMETERS_KEY, BRUSHWORK_KEY)


@dataclass(frozen=True, slots=True)
class ParsedInfotext:
    """What an A1111 ``parameters`` text says.

    ``request`` holds everything Brushwork can reproduce; it is resolved when the text has
    Steps, Sampler, CFG scale, Seed, Size and a Model whose name is a valid Brushwork name
    (the name as written is always in ``model_name``).  ``extra`` keeps every pair that
    Brushwork does not use, values decoded, in the order written — so nothing is lost.

    ``unreproduced`` names, in the order written, every pair that was read but that an image
    made from ``request`` would not follow: a sampler or schedule type diffusers has no
    equivalent for (``request.sampler`` is then unset), another hires upscaler, sampler or
    prompt, A1111's ``ENSD``, ``Eta``, ``RNG: NV``, token merging, extensions' keys...
    A reader shows them ("not reproduced: …"); it never refuses the text for them.
    """

    request: Request
    model_hash: str | None = None
    model_name: str | None = None
    lora_hashes: dict[str, str] = field(default_factory=dict)
    extra: dict[str, str] = field(default_factory=dict)
    version: str | None = None  # as written: "brushwork 0.1.0", "v1.10.1"…
    hires_upscaler: str | None = None
    unreproduced: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Recipe:
    """The recipe read from an image.

    ``origin`` says which chunk it came from: ``"brushwork"`` (exact; ``version`` is the
    Brushwork version that wrote it) or ``"a1111"`` (the ``parameters`` text; ``version`` is
    its ``Version`` value, and ``request`` may be unresolved).  ``infotext`` is the
    ``parameters`` text when the image has one.  ``model_name`` is the ``Model`` value as
    written (an A1111 name may not be one Brushwork accepts: ``request.model`` is then
    unset); ``unreproduced`` is :attr:`ParsedInfotext.unreproduced` (empty for Brushwork's
    own chunk, which holds only what Brushwork reproduces).
    """

    request: Request
    infotext: str | None
    model_hash: str | None
    lora_hashes: dict[str, str]
    origin: Literal["brushwork", "a1111"]
    version: str | None
    model_name: str | None = None
    unreproduced: dict[str, str] = field(default_factory=dict)

    def with_model(self, model: str) -> Recipe:
        """The recipe with ``request.model`` set to a registered model (found by its hash)."""
        return replace(self, request=replace(self.request, model=model))


# ====================================================================== writing


def infotext(
    request: Request,
    *,
    model_hash: str | None,
    lora_hashes: Mapping[str, str],
    version: str,
    hires_upscaler: str = HIRES_UPSCALER,
    extra: Mapping[str, str] | None = None,
) -> str:
    """AUTOMATIC1111's ``parameters`` text for one image of a resolved request.

    ``request`` must be resolved and single-image (one of :meth:`Request.images`); anything
    else is a programming error (:class:`ValueError`), as are ``extra`` keys that A1111's
    pattern cannot read back or that clash with the keys written here.
    """
    sampler_name, cfg, model = _check_writable(request)
    sampler = find_sampler(sampler_name)
    pairs: list[tuple[str, str]] = [("Steps", str(request.steps)), ("Sampler", sampler.base)]
    if sampler.schedule != AUTOMATIC:
        pairs.append(("Schedule type", sampler.schedule))
    pairs += [
        ("CFG scale", format_number(cfg)),
        ("Seed", str(request.seed)),
        ("Size", f"{request.width}x{request.height}"),
    ]
    if model_hash:
        pairs.append(("Model hash", model_hash))
    pairs.append(("Model", model))
    if request.vary_seed is not None:
        pairs.append(("Variation seed", str(request.vary_seed)))
    if request.vary_strength is not None:
        pairs.append(("Variation seed strength", format_number(request.vary_strength)))
    hires = request.hires
    if hires is not None and hires.strength is not None:
        pairs.append(("Denoising strength", format_number(hires.strength)))
    if request.image is not None:  # img2img from a stored image (A1111 names no source; Brushwork does)
        pairs.append(("Init image", request.image))
    if request.clip_skip is not None and request.clip_skip > 1:
        pairs.append(("Clip skip", str(request.clip_skip)))
    pairs.append(("RNG", "CPU"))  # noise comes from a CPU torch.Generator, like A1111's "CPU" option
    if request.tile:
        pairs.append(("Tiling", "True"))
    if hires is not None:
        upscales = not (request.image is not None and hires.scale == IMAGE_SCALE)  # img2img at the same size
        if upscales:
            pairs.append(("Hires upscale", format_number(hires.scale)))
        if hires.steps is not None:
            pairs.append(("Hires steps", str(hires.steps)))
        if upscales:
            pairs.append(("Hires upscaler", hires_upscaler))
    if lora_hashes:
        pairs.append(("Lora hashes", _lora_hashes_text(lora_hashes)))
    for key, value in (extra or {}).items():
        if not isinstance(key, str) or not _EXTRA_KEY.fullmatch(key) or key in KNOWN_KEYS:
            raise ValueError(f"infotext: {key!r} cannot be an extra key")
        if not isinstance(value, str):
            raise ValueError(f"infotext: extra value for {key!r} must be a string, not {type(value).__name__}")
        pairs.append((key, value))
    pairs.append(("Version", f"brushwork {version}"))

    prompt = request.prompt
    if request.loras:
        tags = " ".join(f"<lora:{ref.name}:{format_number(ref.weight)}>" for ref in request.loras)
        prompt = f"{prompt} {tags}" if prompt else tags
    negative = f"\n{NEGATIVE_PREFIX} {request.negative_prompt}" if request.negative_prompt else ""
    parameters = ", ".join(f"{key}: {_quote(value)}" for key, value in pairs)
    return f"{prompt}{negative}\n{parameters}"


def png_bytes(
    image: Image.Image,
    *,
    request: Request,
    model_hash: str | None,
    lora_hashes: Mapping[str, str],
    version: str,
    extra: Mapping[str, str] | None = None,
    hires_upscaler: str = HIRES_UPSCALER,
    compress_level: int = 4,
) -> bytes:
    """The image as PNG bytes carrying its recipe in a ``parameters`` and a ``brushwork`` chunk."""
    text = infotext(request, model_hash=model_hash, lora_hashes=lora_hashes, version=version,
                    hires_upscaler=hires_upscaler, extra=extra)
    recipe: dict[str, Any] = {"format": FORMAT, "version": version, "request": request.to_dict()}
    canonical = _canonical(request)
    if canonical is not None:
        recipe["canonical"] = canonical
    recipe["model_hash"] = model_hash
    recipe["lora_hashes"] = dict(lora_hashes)

    info = PngImagePlugin.PngInfo()
    info.add_text(PARAMETERS_KEY, text)  # tEXt when Latin-1 can hold it, else iTXt (as A1111 does)
    info.add_itxt(BRUSHWORK_KEY, json.dumps(recipe, ensure_ascii=False, separators=(",", ":")))
    out = io.BytesIO()
    image.save(out, format="PNG", pnginfo=info, compress_level=compress_level)
    return out.getvalue()


def recipe_exif(png: bytes) -> bytes | None:
    """EXIF bytes carrying the ``parameters`` text of ``png`` as A1111 writes it into JPEG and
    WebP files (``UserComment``, ``UNICODE`` + UTF-16BE), for a re-encoded copy; ``None`` when
    the PNG has no recipe.  Pass the result as Pillow's ``exif=`` when saving the copy."""
    try:
        text = read_recipe(png).infotext
    except MetadataError:
        return None
    if not text:
        return None
    exif = Image.Exif()
    exif.get_ifd(EXIF_IFD)[USER_COMMENT] = b"UNICODE\0" + text.encode("utf-16-be")
    return exif.tobytes()


def _check_writable(request: Request) -> tuple[str, float, str]:
    """The request's sampler, CFG scale and model, after checking it can be written."""
    if not isinstance(request, Request):
        raise ValueError(f"infotext needs a Request, not {type(request).__name__}")
    sampler, cfg, model = request.sampler, request.cfg, request.model
    if not request.is_resolved or sampler is None or cfg is None or model is None:
        raise ValueError("infotext needs a resolved request (seed, steps, cfg, sampler, size and model set)")
    if request.n not in (None, 1) or request.chaos is not None:
        raise ValueError("infotext describes one image: pass one of request.images()")
    if request.loras and any(ref.name.strip() != ref.name for ref in request.loras):
        raise ValueError("infotext: a LoRA name with edge whitespace cannot be written as a <lora:…> tag")
    return sampler, cfg, model


def _canonical(request: Request) -> str | None:
    try:
        return request.render()
    except ModuleNotFoundError as exc:  # the request language is not there (yet): the chunk goes without
        if exc.name != "generation.grammar":
            raise
        return None


def _lora_hashes_text(lora_hashes: Mapping[str, str]) -> str:
    parts = []
    for name, digest in lora_hashes.items():
        for what in (name, digest):
            if not isinstance(what, str) or not what or what != what.strip() or any(c in what for c in ",:\n"):
                raise ValueError(f"infotext: bad LoRA hash entry {name!r}: {digest!r}")
        parts.append(f"{name}: {digest}")
    return ", ".join(parts)


def _quote(value: str) -> str:
    """A value as A1111 writes it: JSON-quoted when it holds ``,``, ``:`` or a line break.

    Quotes, other control characters, empty values and edge spaces are quoted too, since
    A1111's pattern would otherwise read them differently.
    """
    plain = value and value == value.strip() and not any(
        c in ',:"' or (c.isspace() and c != " ") or unicodedata.category(c) == "Cc" for c in value
    )
    return value if plain else json.dumps(value, ensure_ascii=False)


# ====================================================================== parsing


def parse_infotext(text: str) -> ParsedInfotext:
    """Read an A1111 ``parameters`` text (Brushwork's own, or any other tool's)."""
    if not isinstance(text, str):
        raise TypeError(f"parse_infotext expects str, not {type(text).__name__}")
    text = text.strip()
    if not text:
        raise MetadataError("metadata.empty_infotext")
    *lines, last = text.split("\n")
    if len(PARAM_PATTERN.findall(last)) < 3:  # A1111's rule: not a parameters line, part of the prompt
        lines.append(last)
        last = ""

    prompt_lines: list[str] = []
    negative_lines: list[str] | None = None
    for line in lines:
        stripped = line.lstrip()
        if negative_lines is None and stripped.startswith(NEGATIVE_PREFIX):
            negative_lines = [stripped[len(NEGATIVE_PREFIX):]]
        elif negative_lines is None:
            prompt_lines.append(line)
        else:
            negative_lines.append(line)
    params: dict[str, str] = {}
    for key, raw in PARAM_PATTERN.findall(last):
        params[key.strip()] = _unquote(raw)
    ours = params.get("Version", "").startswith(BRUSHWORK_VERSION_PREFIX)
    prompt, loras = _take_lora_tags("\n".join(prompt_lines), exact_trailing=ours)
    negative = None if negative_lines is None else "\n".join(negative_lines).strip()
    return _build(params, prompt, negative, loras)


def _unquote(raw: str) -> str:
    if len(raw) >= 2 and raw[0] == '"' and raw[-1] == '"':
        try:
            value = json.loads(raw)
        except ValueError:
            return raw  # A1111 keeps a value it cannot decode as it is
        if isinstance(value, str):
            return value
    return raw.strip()


def _take_lora_tags(prompt: str, *, exact_trailing: bool = False) -> tuple[str, list[LoraRef]]:
    """Pull ``<lora:name:weight>`` tags out of a prompt.

    ``exact_trailing`` (a text Brushwork wrote): Brushwork appends its tags after one space
    each, and those come off exactly, so a prompt ending in a comma keeps it.  Any other tag
    (other tools put them anywhere, as a comma-separated item) goes with one of the commas
    around it: "a cat, <lora:x:1>, red" is "a cat, red", and a tag at the start or the end
    of the prompt (or of a line) leaves no comma dangling.  Other extra-network tags
    (``<hypernet:…>``) stay in the text.
    """
    trailing: list[str] = []
    if exact_trailing:
        while match := _TRAILING_LORA_TAG.search(prompt):
            trailing.insert(0, match.group(0).strip())
            prompt = prompt[: match.start()]
    inner: list[str] = []
    while match := _LORA_TAG.search(prompt):
        inner.append(match.group(0))
        prompt = _without(prompt, match.start(), match.end())
    loras = [_lora_ref(tag) for tag in inner + trailing]
    seen: set[str] = set()
    for ref in loras:
        if ref.name.lower() in seen:
            raise MetadataError("metadata.duplicate_lora", name=ref.name)
        seen.add(ref.name.lower())
    return prompt.strip(), loras


def _without(text: str, start: int, end: int) -> str:
    """``text`` without ``text[start:end]`` (a tag that is one item of a comma-separated
    list), keeping exactly one separator between what was left and right of it."""
    left, right = text[:start].rstrip(_BLANKS), text[end:].lstrip(_BLANKS)
    at_start = not left or left.endswith("\n")
    at_end = not right or right.startswith("\n")
    if at_start:  # "<tag>, a cat": the comma after it goes; a line of its own goes whole
        right = right[1:].lstrip(_BLANKS) if right.startswith(",") else right
        return left + (right[1:] if left and right.startswith("\n") else right)
    if at_end:  # "a cat, <tag>"
        return left.removesuffix(",").rstrip(_BLANKS) + right
    if right.startswith(","):  # "a, <tag>, b" keeps one comma; "a <tag>, b" keeps its own
        return f"{left} {right[1:].lstrip(_BLANKS)}" if left.endswith(",") else left + right
    return f"{left} {right}"


def _lora_ref(tag: str) -> LoraRef:
    """``<lora:name>``, ``<lora:name:w>`` or A1111's ``<lora:name:w:w>`` with equal weights."""
    name, *weights = (part.strip() for part in tag[len("<lora:"):-1].split(":"))
    if not name or len(weights) > 2 or not all(_FLOAT.match(w) for w in weights):
        raise MetadataError("metadata.bad_lora_tag", tag=tag)
    values = {float(w) for w in weights} or {1.0}
    if len(values) != 1:
        raise MetadataError("metadata.bad_lora_tag", tag=tag)
    weight = values.pop()
    lo, hi = RANGES["lora_weight"]
    if not lo <= weight <= hi:
        raise MetadataError("metadata.bad_lora_tag", tag=tag)
    if not NAME_PATTERN.fullmatch(name):
        raise MetadataError("metadata.bad_lora_name", name=name, tag=tag)
    return LoraRef(name, weight)


class _Pairs:
    """The parameters line's pairs, taken one by one; what is left over is ``extra``."""

    def __init__(self, params: dict[str, str]) -> None:
        self.params = params
        self.used: set[str] = set()

    def text(self, key: str) -> str | None:
        if key in self.params:
            self.used.add(key)
            return self.params[key]
        return None

    def integer(self, key: str, range_name: str, *, zero_is_unset: bool = False) -> int | None:
        value = self.text(key)
        if value is None:
            return None
        if not _INT.match(value):
            raise MetadataError("metadata.not_an_integer", key=key, value=value)
        number = int(value)
        if zero_is_unset and number == 0:
            return None
        _check_range(key, value, number, range_name)
        return number

    def number(self, key: str, range_name: str) -> float | None:
        value = self.text(key)
        if value is None:
            return None
        if not _FLOAT.match(value):
            raise MetadataError("metadata.not_a_number", key=key, value=value)
        number = float(value)
        _check_range(key, value, number, range_name)
        return number

    def leftovers(self) -> dict[str, str]:
        return {k: v for k, v in self.params.items() if k not in self.used}


def _check_range(key: str, text: str, value: float, range_name: str) -> None:
    lo, hi = RANGES[range_name]
    if not lo <= value <= hi:
        raise MetadataError("metadata.out_of_range", key=key, value=text, low=format_number(lo),
                            high=format_number(hi))


def _build(params: dict[str, str], prompt: str, negative: str | None, loras: list[LoraRef]) -> ParsedInfotext:
    pairs = _Pairs(params)
    steps = pairs.integer("Steps", "steps")
    not_followed: set[str] = set()  # pairs read whose meaning Brushwork cannot run
    sampler_text, schedule = pairs.text("Sampler"), pairs.text("Schedule type")
    sampler = _sampler(sampler_text, schedule, not_followed)
    cfg = pairs.number("CFG scale", "cfg")
    seed = pairs.integer("Seed", "seed")
    width = height = None
    size = pairs.text("Size")
    if size is not None:
        width, height = _size("Size", size)
    model_hash = pairs.text("Model hash")
    model_name = pairs.text("Model")
    model = model_name if model_name is not None and NAME_PATTERN.fullmatch(model_name) else None
    vary_seed = pairs.integer("Variation seed", "seed")
    vary_strength = pairs.number("Variation seed strength", "vary_strength")
    clip_skip = pairs.integer("Clip skip", "clip_skip")
    if params.get("RNG", "").strip().upper() == "CPU":
        pairs.text("RNG")  # what Brushwork always does; any other RNG stays in extra
    tile = _tiling(pairs)
    image = pairs.text("Init image")
    hires, hires_upscaler = _hires(pairs, width, height, img2img=image is not None)
    if hires_upscaler is not None and hires_upscaler.strip().lower() != HIRES_UPSCALER.lower():
        not_followed.add("Hires upscaler")  # Brushwork's hires pass resizes the image with Lanczos
    lora_hashes = _parse_lora_hashes(pairs.text("Lora hashes"))
    version = pairs.text("Version")
    base = {"prompt": prompt, "negative": negative or "", "sampler": sampler_text or "",
            "schedule": schedule or AUTOMATIC, "cfg": "" if cfg is None else format_number(cfg),
            "model": model_name or ""}
    unreproduced = _unreproduced(params, pairs.used - not_followed, not_followed, base)

    try:
        request = Request(
            prompt=prompt, negative_prompt=negative, seed=seed, steps=steps, cfg=cfg, sampler=sampler,
            width=width, height=height, model=model, loras=tuple(loras) or None, hires=hires,
            vary_seed=vary_seed, vary_strength=vary_strength, clip_skip=clip_skip, tile=tile, image=image,
        )
    except RequestError as exc:
        if exc.code == "request.prompt_too_long":
            raise MetadataError("metadata.prompt_too_long", **exc.params) from None
        raise MetadataError("metadata.invalid", detail=exc.message()) from None
    return ParsedInfotext(request=request, model_hash=model_hash, model_name=model_name,
                          lora_hashes=lora_hashes, extra=pairs.leftovers(), version=version,
                          hires_upscaler=hires_upscaler, unreproduced=unreproduced)


def describe_unreproduced(pairs: Mapping[str, str]) -> str:
    """``Sampler: Restart; Hires upscaler: Latent`` — what :attr:`Recipe.unreproduced` holds,
    for a reader's "not reproduced: …" (``;`` apart: values may hold commas)."""
    return "; ".join(f"{key}: {value}" for key, value in pairs.items())


def _sampler(text: str | None, schedule: str | None, not_followed: set[str]) -> str | None:
    """The Brushwork sampler for A1111's ``Sampler`` and ``Schedule type``; ``None`` (and the
    keys that cannot be followed added to ``not_followed``) when diffusers has no such pair."""
    named_schedule = schedule is not None and (find_schedule(schedule) or _UNKNOWN).name != AUTOMATIC
    if text is None:
        if named_schedule:
            not_followed.add("Schedule type")
        return None
    try:
        find_sampler(text)
    except RequestError:
        not_followed.add("Sampler")
        if named_schedule:
            not_followed.add("Schedule type")
        return None
    try:
        return from_infotext(text, schedule).name
    except RequestError:  # a sampler diffusers has, on a schedule it cannot run it with
        not_followed.add("Schedule type")
        return None


def _unreproduced(params: Mapping[str, str], used: set[str], not_followed: set[str],
                  base: Mapping[str, str]) -> dict[str, str]:
    """The pairs an image made from the parsed request would not follow, in the order written."""
    out: dict[str, str] = {}
    for key, value in params.items():
        if key not in not_followed and (key in used or key in NO_EFFECT_KEYS or not value.strip()):
            continue
        lowered, plain = key.lower(), value.strip().lower()
        if key not in not_followed:
            if lowered == "emphasis" and plain == "original":  # A1111's default, and Brushwork's weighting
                continue
            same_as = _SAME_AS_BASE.get(lowered)
            if same_as is not None and (plain.startswith("use same") or plain == base[same_as].strip().lower()
                                        or (same_as == "cfg" and _FLOAT.match(plain) and base["cfg"]
                                            and float(plain) == float(base["cfg"]))):
                continue  # the hires pass as Brushwork runs it: the base pass's settings
        out[key] = value
    return out


def _size(key: str, text: str) -> tuple[int, int]:
    match = SIZE_PATTERN.match(text)
    if not match:
        raise MetadataError("metadata.bad_size", key=key, value=text)
    width, height = int(match.group(1)), int(match.group(2))
    for side in (width, height):
        _check_range(key, text, side, "side")
    return width, height


def _tiling(pairs: _Pairs) -> bool | None:
    value = pairs.text("Tiling")
    if value is None:
        return None
    lowered = value.strip().lower()
    if lowered not in ("true", "false"):
        raise MetadataError("metadata.bad_value", key="Tiling", value=value, allowed=["True", "False"])
    return True if lowered == "true" else None


def _hires(pairs: _Pairs, width: int | None, height: int | None, *,
           img2img: bool = False) -> tuple[Hires | None, str | None]:
    """``Hires upscale`` (or A1111's ``Hires resize: WxH``), ``Hires steps``, ``Denoising strength``;
    with ``Init image`` (Brushwork's img2img) and no upscale, the refine pass at scale 1."""
    if "Hires upscale" in pairs.params:
        scale = pairs.number("Hires upscale", "hires_scale")
    elif "Hires resize" in pairs.params:
        scale = _resize_scale(pairs.params["Hires resize"], width, height)
        pairs.used.add("Hires resize")
    elif img2img:
        scale = IMAGE_SCALE
    else:
        return None, None  # Denoising strength without hires is A1111 img2img's (no source): it stays in extra
    if scale is None:  # pragma: no cover - the key is there, so number() returned a value or raised
        return None, None
    steps = pairs.integer("Hires steps", "hires_steps", zero_is_unset=True)  # 0: as many as the base pass
    strength = pairs.number("Denoising strength", "strength")
    return Hires(scale=scale, steps=steps, strength=strength), pairs.text("Hires upscaler")


def _resize_scale(text: str, width: int | None, height: int | None) -> float:
    """A1111's "resize to WxH" as Brushwork's scale, when one scale gives that size."""
    match = SIZE_PATTERN.match(text)
    if not match or width is None or height is None:
        raise MetadataError("metadata.bad_hires_resize", value=text)
    target_w, target_h = int(match.group(1)), int(match.group(2))
    if target_w == 0 and target_h == 0:
        raise MetadataError("metadata.bad_hires_resize", value=text)
    scale = round(target_w / width if target_w else target_h / height, 4)
    lo, hi = RANGES["hires_scale"]
    wanted = (target_w or hires_size(width, height, scale)[0], target_h or hires_size(width, height, scale)[1])
    if not lo <= scale <= hi or hires_size(width, height, scale) != wanted:
        raise MetadataError("metadata.bad_hires_resize", value=text)
    return scale


def _parse_lora_hashes(text: str | None) -> dict[str, str]:
    out: dict[str, str] = {}
    if text is None:
        return out
    for part in text.split(","):
        if not part.strip():
            continue
        name, sep, digest = part.rpartition(":")
        if not sep or not name.strip() or not digest.strip():
            raise MetadataError("metadata.bad_lora_hashes", value=text)
        out[name.strip()] = digest.strip()
    return out


# ====================================================================== reading PNG files


def read_recipe(source: bytes | str | os.PathLike | BinaryIO) -> Recipe:
    """The recipe of an image: a PNG's ``brushwork`` chunk, else its A1111 ``parameters``
    chunk; a JPEG's or WebP's A1111 EXIF ``UserComment``."""
    with _opened(source) as stream:
        if stream.read(8) == PNG_SIGNATURE:
            stream.seek(0)
            texts = _read_png_texts(stream)
        else:
            stream.seek(0)
            return _exif_recipe(stream)
    infotext_text = texts.get(PARAMETERS_KEY)
    if infotext_text is not None:
        _check_controls(infotext_text)
    if BRUSHWORK_KEY in texts:
        return _brushwork_recipe(texts[BRUSHWORK_KEY], infotext_text)
    if infotext_text is not None and infotext_text.strip():
        return _a1111_recipe(infotext_text)
    raise MetadataError("metadata.missing")


@contextmanager
def _opened(source: bytes | str | os.PathLike | BinaryIO) -> Iterator[BinaryIO]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        yield io.BytesIO(bytes(source))
        return
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        try:
            handle = open(path, "rb")  # closed by the with below
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise MetadataError("metadata.no_such_file", path=path) from None
        except OSError as exc:
            raise MetadataError("metadata.unreadable_file", path=path, reason=exc.strerror or str(exc)) from None
        with handle:
            yield handle
        return
    if not hasattr(source, "read"):
        raise TypeError(f"read_recipe expects bytes, a path or a binary file, not {type(source).__name__}")
    seekable = getattr(source, "seekable", None)
    if seekable is not None and seekable():
        source.seek(0)
        yield source
    else:
        yield io.BytesIO(source.read())


def _read_png_texts(stream: BinaryIO) -> dict[str, str]:
    """The ``parameters`` and ``brushwork`` texts, checking the file is a whole PNG.

    Chunks are walked to IEND without decompressing the image data; Pillow then opens the
    header, which applies its decompression-bomb limit.
    """
    signature = stream.read(8)
    if signature != PNG_SIGNATURE:
        stream.seek(0)
        _not_png(stream)
    texts: dict[str, str] = {}
    first = True
    while True:
        header = stream.read(8)
        if len(header) < 8:
            raise MetadataError("metadata.truncated")
        length, kind = struct.unpack(">I4s", header)
        if length > 0x7FFFFFFF or not kind.isalpha():
            raise MetadataError("metadata.corrupt", part=kind.decode("ascii", "replace"))
        if first and (kind != b"IHDR" or length != 13):
            raise MetadataError("metadata.corrupt", part="IHDR")
        first = False
        if kind == b"IEND":
            if len(stream.read(length + 4)) < length + 4:
                raise MetadataError("metadata.truncated")
            break
        if kind in _TEXT_CHUNKS:
            _read_text_chunk(stream, kind, length, texts)
        else:
            stream.seek(length + 4, io.SEEK_CUR)  # data and CRC, never decoded
    stream.seek(0)
    _check_with_pillow(stream)
    return texts


def _check_controls(text: str) -> None:
    """A recipe text with a control character no prompt may hold (a NUL, a terminal escape) is
    refused as a whole: its prompt could be neither shown faithfully nor used."""
    found = control_character(text)
    if found is not None:
        raise MetadataError("metadata.control_character", position=found[0], char=found[1])


def _exif_recipe(stream: BinaryIO) -> Recipe:
    """The recipe of a JPEG or WebP file: its EXIF ``UserComment`` (header only, never pixels).
    Damaged EXIF is said in one line (Pillow's own warning is not printed)."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with Image.open(stream) as image:
                kind = image.format or "?"
                comment = image.getexif().get_ifd(EXIF_IFD).get(USER_COMMENT) if kind in EXIF_FORMATS else None
        damaged = any("EXIF" in str(warning.message) for warning in caught)
    except Image.DecompressionBombError as exc:  # Pillow's limit, checked on opening the header
        raise MetadataError("metadata.too_many_pixels", limit=_pixel_limit()) from exc
    except (UnidentifiedImageError, SyntaxError, OSError, ValueError, EOFError, struct.error):
        raise MetadataError("metadata.not_image") from None
    if kind not in EXIF_FORMATS:
        raise MetadataError("metadata.not_png", format=kind)
    if damaged and not comment:
        raise MetadataError("metadata.corrupt_exif", format=kind)
    text = _user_comment(comment) if comment else None
    if not text or not text.strip():
        raise MetadataError("metadata.missing_exif", format=kind)
    return _a1111_recipe(text)


def _a1111_recipe(text: str) -> Recipe:
    _check_controls(text)
    parsed = parse_infotext(text)
    return Recipe(request=parsed.request, infotext=text, model_hash=parsed.model_hash,
                  lora_hashes=parsed.lora_hashes, origin="a1111", version=parsed.version,
                  model_name=parsed.model_name, unreproduced=parsed.unreproduced)


def _user_comment(value: bytes | str) -> str:
    """An EXIF ``UserComment``: an 8-byte character-code prefix, then the text.  ``UNICODE``
    is UTF-16, big-endian as A1111 (piexif) writes it unless a byte-order mark says otherwise
    or the zero bytes of ASCII characters show little-endian."""
    if isinstance(value, str):  # some writers store it as ASCII text, prefix and all
        return value.removeprefix("ASCII\0\0\0").rstrip("\0")
    if len(value) > MAX_TEXT_CHUNK:
        raise MetadataError("metadata.comment_too_large", size=len(value), limit=MAX_TEXT_CHUNK)
    prefix, body = value[:8], value[8:]
    encoding = _COMMENT_PREFIXES.get(prefix)
    if encoding is None:  # no prefix at all: the whole value is the text
        encoding, body = "utf-8", value
    if encoding == "utf-16":
        if body[:2] in (b"\xfe\xff", b"\xff\xfe"):
            encoding = "utf-16"  # the mark decides
        else:
            even_zeros, odd_zeros = body[0::2].count(0), body[1::2].count(0)
            encoding = "utf-16-le" if odd_zeros > even_zeros else "utf-16-be"
    try:
        return body.decode(encoding).rstrip("\0")
    except UnicodeDecodeError:
        raise MetadataError("metadata.corrupt", part="EXIF UserComment") from None


def _read_text_chunk(stream: BinaryIO, kind: bytes, length: int, texts: dict[str, str]) -> None:
    head = stream.read(min(length, 80))
    key = head.split(b"\0", 1)[0].decode("latin-1")
    if key not in _OUR_KEYS or key in texts:
        stream.seek(length - len(head) + 4, io.SEEK_CUR)
        return
    if length > MAX_TEXT_CHUNK:
        raise MetadataError("metadata.text_too_large", key=key, size=length, limit=MAX_TEXT_CHUNK)
    data = head + stream.read(length - len(head))
    crc = stream.read(4)
    if len(data) < length or len(crc) < 4:
        raise MetadataError("metadata.truncated")
    if zlib.crc32(kind + data) != struct.unpack(">I", crc)[0]:
        raise MetadataError("metadata.corrupt", part=f"{kind.decode()} {key}")
    try:
        texts[key] = _decode_text(kind, data[len(key) + 1:], key)
    except MetadataError:
        raise
    except (ValueError, zlib.error):
        raise MetadataError("metadata.corrupt", part=f"{kind.decode()} {key}") from None


def _decode_text(kind: bytes, body: bytes, key: str) -> str:
    if kind == b"tEXt":
        return body.decode("latin-1")
    if kind == b"zTXt":
        if body[:1] != b"\0":
            raise ValueError("unknown compression method")
        return _inflate(body[1:], key).decode("latin-1")
    compressed, method, rest = body[0], body[1], body[2:]  # iTXt
    _language, _translated, text = rest.split(b"\0", 2)
    if compressed:
        if method != 0:
            raise ValueError("unknown compression method")
        text = _inflate(text, key)
    return text.decode("utf-8")


def _inflate(data: bytes, key: str) -> bytes:
    inflater = zlib.decompressobj()
    out = inflater.decompress(data, MAX_TEXT_CHUNK)
    if inflater.unconsumed_tail:  # a zip bomb in a text chunk: stop at the limit
        raise MetadataError("metadata.text_too_large", key=key, size=f">{MAX_TEXT_CHUNK}", limit=MAX_TEXT_CHUNK)
    return out


def _not_png(stream: BinaryIO) -> None:
    try:
        with Image.open(stream) as image:
            kind = image.format or "?"
    except Image.DecompressionBombError:
        kind = "?"
    except Exception:  # Pillow raises many types for data it cannot identify
        raise MetadataError("metadata.not_image") from None
    raise MetadataError("metadata.not_png", format=kind)


def _check_with_pillow(stream: BinaryIO) -> None:
    """Open the header only (no ``load()``): Pillow refuses decompression bombs here."""
    try:
        with Image.open(stream, formats=["PNG"]):
            pass
    except Image.DecompressionBombError as exc:
        width, height = _ihdr_size(stream)
        raise MetadataError("metadata.too_large", width=width, height=height,
                            limit=_pixel_limit()) from exc
    except (UnidentifiedImageError, SyntaxError, OSError, ValueError, EOFError, struct.error):
        raise MetadataError("metadata.unreadable_png") from None


def _pixel_limit() -> int | str:
    """Where Pillow's decompression-bomb error starts (twice its warning limit)."""
    limit = Image.MAX_IMAGE_PIXELS
    return "?" if limit is None else limit * 2


def _ihdr_size(stream: BinaryIO) -> tuple[int, int]:
    stream.seek(16)
    return struct.unpack(">II", stream.read(8))


def _brushwork_recipe(text: str, infotext_text: str | None) -> Recipe:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise MetadataError("metadata.bad_json", key=BRUSHWORK_KEY, position=exc.pos) from None
    except (ValueError, RecursionError):
        raise MetadataError("metadata.bad_json", key=BRUSHWORK_KEY, position="?") from None
    if not isinstance(data, dict):
        raise MetadataError("metadata.wrong_type", field="(top level)", expected="object")
    fmt = data.get("format")
    if isinstance(fmt, bool) or not isinstance(fmt, int):
        raise MetadataError("metadata.wrong_type", field="format", expected="integer")
    if fmt != FORMAT:
        raise MetadataError("metadata.unsupported_format", format=fmt, supported=FORMAT)
    version = data.get("version")
    if not isinstance(version, str):
        raise MetadataError("metadata.wrong_type", field="version", expected="string")
    model_hash = data.get("model_hash")
    if model_hash is not None and not isinstance(model_hash, str):
        raise MetadataError("metadata.wrong_type", field="model_hash", expected="string or null")
    lora_hashes = data.get("lora_hashes", {})
    if not isinstance(lora_hashes, dict) or not all(isinstance(v, str) for v in lora_hashes.values()):
        raise MetadataError("metadata.wrong_type", field="lora_hashes", expected="object of strings")
    canonical = data.get("canonical")
    if canonical is not None and not isinstance(canonical, str):
        raise MetadataError("metadata.wrong_type", field="canonical", expected="string")
    if not isinstance(data.get("request"), dict):
        raise MetadataError("metadata.wrong_type", field="request", expected="object")
    try:
        request = Request.from_dict(data["request"])
    except RequestError as exc:
        raise MetadataError("metadata.bad_recipe", detail=exc.message()) from None
    if not request.is_resolved:
        missing = [f for f in ("seed", "steps", "cfg", "sampler", "width", "height", "model")
                   if getattr(request, f) is None]
        raise MetadataError("metadata.unresolved_recipe", missing=missing)
    return Recipe(request=request, infotext=infotext_text, model_hash=model_hash, lora_hashes=dict(lora_hashes),
                  origin="brushwork", version=version)

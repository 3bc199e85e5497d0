"""The generation request: one frozen value that every layer passes around.

A :class:`Request` is what a user asked for.  Fields left ``None`` are *unset*: they take
their value from the user's or the server's defaults, then from the model's profile, when
the request is resolved (:func:`resolve`).  A resolved request has a seed, a size, steps,
CFG scale, a sampler and a model, and reproduces the same image on the same machine.

Validation lives here, in one place (``__post_init__``), and raises
:class:`~generation.errors.RequestError` with a code and the allowed range, so the flag
parser, the Python API and the bot all give the same precise answer.
"""

from __future__ import annotations

import math
import re
import secrets
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, fields, replace
from fractions import Fraction
from typing import Any

from generation.errors import BrushworkError, RequestError, echo
from generation.i18n import translate
from generation.profiles import ModelProfile
from generation.samplers import find_sampler, sampler_names

MAX_SEED = 2**32 - 1
MAX_PROMPT_CHARS = 4000
NAME_PATTERN = re.compile(r"[\w][\w.\-]{0,63}")  # always used with fullmatch  # model and LoRA names: letters (any script), digits, . _ -

# Ranges, in one table: the parser, the validator and /help read them from here.
RANGES: dict[str, tuple[float, float]] = {
    "seed": (0, MAX_SEED),
    "steps": (1, 150),
    "cfg": (1.0, 30.0),
    "n": (1, 4),
    "side": (8, 8192),
    "aspect_part": (1, 100),
    "aspect_ratio": (0.25, 4.0),
    "lora_weight": (-2.0, 2.0),
    "hires_scale": (1.05, 4.0),
    "hires_steps": (1, 150),
    "strength": (0.01, 1.0),
    "vary_strength": (0.01, 1.0),
    "chaos": (0, 100),
    "clip_skip": (1, 12),
}

#: ``--image``: the id of a stored image to start from (storage's public ids: 8 of
#: ``23456789abcdefghjkmnpqrstuvwxyz``; the owner of the id space checks it exists and is visible).
IMAGE_REF_PATTERN = re.compile(r"[2-9a-hjkmnp-z]{8}")

DEFAULT_HIRES_SCALE = 2.0
#: With ``--image`` and no ``--hires``, the refine pass keeps the picture's size: scale 1.
IMAGE_SCALE = 1.0
DEFAULT_HIRES_STRENGTH = 0.5

# Presets for the image operations (Midjourney's names, A1111's knobs).
UPSCALE_STRENGTH = {"subtle": 0.4, "creative": 0.65}
VARY_STRENGTH = {"subtle": 0.15, "strong": 0.45}


@dataclass(frozen=True, slots=True)
class LoraRef:
    """A LoRA to apply, by name, with its weight (``--lora name:0.8``)."""

    name: str
    weight: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not NAME_PATTERN.fullmatch(self.name):
            raise RequestError("request.bad_lora_name", flag="--lora", value=echo(self.name))
        _check_number("lora_weight", self.weight, "--lora", integer=False)

    def render(self) -> str:
        return f"{self.name}:{format_number(self.weight)}"


@dataclass(frozen=True, slots=True)
class Hires:
    """Hires fix: generate at the base size, upscale by ``scale``, then refine with img2img.

    ``steps`` is the number of steps of the refining pass (``None``: the same as the base
    pass); like diffusers' img2img (and A1111), only ``steps × strength`` of them run.
    """

    scale: float = DEFAULT_HIRES_SCALE
    steps: int | None = None
    strength: float | None = None

    def __post_init__(self) -> None:
        if self.scale != IMAGE_SCALE or isinstance(self.scale, bool):  # 1: the refine pass of --image
            _check_number("hires_scale", self.scale, "--hires", integer=False)
        if self.steps is not None:
            _check_number("hires_steps", self.steps, "--hires-steps", integer=True)
        if self.strength is not None:
            _check_number("strength", self.strength, "--strength", integer=False)


@dataclass(frozen=True, slots=True)
class Request:
    prompt: str
    negative_prompt: str | None = None
    seed: int | None = None
    steps: int | None = None
    cfg: float | None = None
    sampler: str | None = None
    aspect: tuple[int, int] | None = None
    width: int | None = None
    height: int | None = None
    n: int | None = None
    model: str | None = None
    loras: tuple[LoraRef, ...] | None = None
    hires: Hires | None = None
    vary_seed: int | None = None
    vary_strength: float | None = None
    chaos: int | None = None
    clip_skip: int | None = None
    tile: bool | None = None
    # img2img: the stored image to start from instead of noise (A1111's "send to img2img").
    # The picture replaces the base pass; ``hires`` is then its one refine pass (scale 1:
    # the same size; ``strength``: how much is repainted).
    image: str | None = None

    def __post_init__(self) -> None:
        _validate(self)

    # ------------------------------------------------------------------ views
    @property
    def count(self) -> int:
        return self.n or 1

    @property
    def is_resolved(self) -> bool:
        return None not in (self.seed, self.steps, self.cfg, self.sampler, self.width, self.height, self.model)

    @property
    def size(self) -> tuple[int, int] | None:
        return None if self.width is None or self.height is None else (self.width, self.height)

    @property
    def output_size(self) -> tuple[int, int] | None:
        """The size of the final image, after the hires pass if there is one."""
        size = self.size
        if size is None or self.hires is None:
            return size
        return hires_size(*size, self.hires.scale)

    # ------------------------------------------------------------------ copies
    def with_seed(self, seed: int | None) -> Request:
        return replace(self, seed=seed)

    def with_variation(self, vary_seed: int, strength: float) -> Request:
        return replace(self, vary_seed=vary_seed, vary_strength=strength, chaos=None)

    def merged(self, overrides: Request) -> Request:
        """This request with every field that ``overrides`` sets replacing ours.

        An empty prompt in ``overrides`` keeps ours (``tweak ID "--steps 40"``).  Setting
        ``--ar`` or ``--size`` replaces both of ours, since they are two ways to say one thing.
        """
        changes: dict[str, Any] = {}
        for f in fields(Request):
            value = getattr(overrides, f.name)
            if f.name == "prompt":
                if value:
                    changes["prompt"] = value
                continue
            if value is not None:
                changes[f.name] = value
        if overrides.aspect is not None:
            changes["width"] = changes["height"] = None
        elif overrides.width is not None:
            changes["aspect"] = None
        if overrides.vary_seed is not None or overrides.vary_strength is not None:
            changes["chaos"] = None
        if overrides.chaos is not None:
            changes["vary_seed"] = changes["vary_strength"] = None
        return replace(self, **changes)

    def images(self) -> list[Request]:
        """One single-image request per image of this (resolved) request.

        Image *i* uses seed ``seed + i`` (A1111's batches).  With ``--chaos C`` the images
        share the seed's composition instead and image *i* adds a variation from seed
        ``seed + i`` at strength ``0.1 + 0.9·C/100``: ``--chaos 0`` keeps them close,
        ``--chaos 100`` spreads them as far as independent seeds.
        """
        if self.seed is None:
            raise RequestError("request.unresolved", field="seed")
        out = []
        for i in range(self.count):
            if self.chaos is not None:
                if i == 0:
                    one = replace(self, n=None, chaos=None, vary_seed=None, vary_strength=None)
                else:
                    one = replace(self, n=None, chaos=None, vary_seed=(self.seed + i) % (MAX_SEED + 1),
                                  vary_strength=chaos_strength(self.chaos))
            else:
                vary = None if self.vary_seed is None else (self.vary_seed + i) % (MAX_SEED + 1)
                one = replace(self, n=None, seed=(self.seed + i) % (MAX_SEED + 1), vary_seed=vary)
            out.append(one)
        return out

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict with only the set fields (stable, compact)."""
        out: dict[str, Any] = {}
        for f in fields(Request):
            value = getattr(self, f.name)
            if value is None:
                continue
            if f.name == "aspect":
                value = list(value)
            elif f.name == "loras":
                value = [{"name": ref.name, "weight": ref.weight} for ref in value]
            elif f.name == "hires":
                value = {k: v for k, v in asdict(value).items() if v is not None}
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Request:
        if not isinstance(data, dict):
            raise RequestError("request.bad_json", detail="not an object")
        known = {f.name for f in fields(Request)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise RequestError("request.bad_json", detail=f"unknown keys {unknown}")
        values = dict(data)
        try:
            if values.get("aspect") is not None:
                values["aspect"] = tuple(values["aspect"])
            if values.get("loras") is not None:
                values["loras"] = tuple(LoraRef(**ref) for ref in values["loras"])
            if values.get("hires") is not None:
                values["hires"] = Hires(**values["hires"])
            return cls(**values)
        except BrushworkError:
            raise
        except (TypeError, ValueError) as exc:
            raise RequestError("request.bad_json", detail=str(exc)) from None

    def render(self) -> str:
        """The canonical flag string; ``parse(request.render()) == request``."""
        from generation.grammar import render

        return render(self)


@dataclass(frozen=True, slots=True)
class Note:
    """Something the resolver changed and the user should be told (never silent)."""

    code: str
    params: dict[str, Any] = field(default_factory=dict)

    def message(self, locale: str = "en") -> str:
        return translate(self.code, locale, **self.params)


# ---------------------------------------------------------------------- helpers


def format_number(value: float | int) -> str:
    """Shortest text that parses back to the same number (7.0 → "7", 0.55 → "0.55")."""
    if isinstance(value, bool):
        raise TypeError("bool is not a number here")
    if isinstance(value, int):
        return str(value)
    text = repr(float(value))
    if text.endswith(".0"):
        text = text[:-2]
    return text


def chaos_strength(chaos: int) -> float:
    return round(0.1 + 0.9 * chaos / 100, 4)


def snap8(value: float) -> int:
    """Nearest multiple of 8 (at least 8)."""
    return max(8, int(math.floor(value / 8 + 0.5)) * 8)


def hires_size(width: int, height: int, scale: float) -> tuple[int, int]:
    return snap8(width * scale), snap8(height * scale)


def aspect_size(aspect: tuple[int, int], area: int) -> tuple[int, int]:
    """Width and height with the given ratio and about ``area`` pixels, multiples of 8."""
    a, b = aspect
    width = math.sqrt(area * a / b)
    return snap8(width), snap8(width * b / a)


def picture_aspect(width: int, height: int, *, max_part: int = 100) -> tuple[tuple[int, int], bool]:
    """The ``--ar`` that keeps a picture's shape (``--image`` without a size): its width:height
    reduced to parts of at most ``max_part``, within ``--ar``'s limits (1:4 to 4:1); and whether
    the picture is beyond those limits (then it is drawn at the nearest allowed shape)."""
    true = Fraction(width, height)
    low, high = (Fraction(bound).limit_denominator() for bound in RANGES["aspect_ratio"])
    clamped = min(max(true, low), high)
    ratio = clamped.limit_denominator(max_part)
    if ratio.numerator > max_part:  # wide: the denominator was limited, the numerator may not be
        ratio = Fraction(max_part, max(1, round(max_part / clamped)))
    return (ratio.numerator, ratio.denominator), clamped != true


# What shows nothing: whitespace (U+3000 too), controls and format characters (zero-width space
# and joiners, U+2060, the BOM, the soft hyphen, bidi marks), variation selectors, the combining
# grapheme joiner, and the blank letters pasted to look empty (Hangul fillers, blank Braille).
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Zs", "Zl", "Zp"})
_INVISIBLE = frozenset("\u034f\u115f\u1160\u17b4\u17b5\u180b\u180c\u180d\u180f\u2800\u3164\uffa0")


def is_blank(text: str) -> bool:
    """Whether ``text`` shows nothing: empty, or invisible characters only.  It only decides
    emptiness; a prompt with something to see keeps its zero-width joiners (emoji need them)."""
    return all(_invisible(ch) for ch in text)


def _invisible(ch: str) -> bool:
    code = ord(ch)
    return (ch.isspace() or ch in _INVISIBLE or unicodedata.category(ch) in _INVISIBLE_CATEGORIES
            or 0xFE00 <= code <= 0xFE0F or 0xE0100 <= code <= 0xE01EF)  # variation selectors


def draw_seed() -> int:
    return secrets.randbelow(MAX_SEED + 1)


def _check_number(name: str, value: Any, flag: str, *, integer: bool) -> None:
    lo, hi = RANGES[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RequestError("request.not_an_integer" if integer else "request.not_a_number", flag=flag, value=value)
    if integer and not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            raise RequestError("request.not_an_integer", flag=flag, value=format_number(value))
        raise RequestError("request.not_an_integer", flag=flag, value=value)
    if isinstance(value, float) and not math.isfinite(value):
        raise RequestError("request.out_of_range", flag=flag, value=value, low=format_number(lo),
                           high=format_number(hi))
    if not lo <= value <= hi:
        raise RequestError("request.out_of_range", flag=flag, value=format_number(value),
                           low=format_number(lo), high=format_number(hi))


#: Control characters a prompt may hold: line breaks and tabs.  Any other (ESC of a terminal
#: colour code, NUL, BEL…) is refused, not stripped: it would be stored, written into every
#: PNG and echoed to terminals, and silently dropping it would change what was asked.
PROMPT_CONTROLS_ALLOWED = frozenset("\t\n\r")


def control_character(text: str) -> tuple[int, str] | None:
    """The first control character ``text`` may not hold (see :data:`PROMPT_CONTROLS_ALLOWED`):
    its 1-based position and its escape (``\\x1b``); None when there is none."""
    for index, ch in enumerate(text):
        if ch not in PROMPT_CONTROLS_ALLOWED and unicodedata.category(ch) == "Cc":
            return index + 1, ch.encode("unicode_escape").decode("ascii")
    return None


def _check_text(text: str, code: str = "request.prompt_control_character") -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates (from broken JSON) cannot be stored or written to a PNG
        raise RequestError("request.bad_prompt") from None
    found = control_character(text)
    if found is not None:
        raise RequestError(code, position=found[0], char=found[1])


def _validate(r: Request) -> None:
    if not isinstance(r.prompt, str):
        raise RequestError("request.bad_prompt")
    _check_text(r.prompt)
    if r.prompt != r.prompt.strip() or (r.prompt and is_blank(r.prompt)):
        object.__setattr__(r, "prompt", "" if is_blank(r.prompt) else r.prompt.strip())
    if len(r.prompt) > MAX_PROMPT_CHARS:
        raise RequestError("request.prompt_too_long", length=len(r.prompt), limit=MAX_PROMPT_CHARS)
    if r.negative_prompt is not None:
        if not isinstance(r.negative_prompt, str):
            raise RequestError("request.bad_prompt")
        _check_text(r.negative_prompt, "request.negative_control_character")
        neg = r.negative_prompt.strip()
        object.__setattr__(r, "negative_prompt", neg or None)
        if len(neg) > MAX_PROMPT_CHARS:
            raise RequestError("request.prompt_too_long", length=len(neg), limit=MAX_PROMPT_CHARS)
    ints = {"seed": "--seed", "steps": "--steps", "n": "--n", "chaos": "--chaos", "clip_skip": "--clip-skip",
            "vary_seed": "--vary-seed"}
    for name, flag in ints.items():
        value = getattr(r, name)
        if value is not None:
            _check_number("seed" if name == "vary_seed" else name, value, flag, integer=True)
    if r.cfg is not None:
        _check_number("cfg", r.cfg, "--cfg", integer=False)
        object.__setattr__(r, "cfg", float(r.cfg))
    if r.vary_strength is not None:
        _check_number("vary_strength", r.vary_strength, "--vary-strength", integer=False)
        object.__setattr__(r, "vary_strength", float(r.vary_strength))
    if r.sampler is not None:
        if not isinstance(r.sampler, str):
            raise RequestError("request.unknown_sampler_plain", value=echo(r.sampler), known=sampler_names())
        canonical = find_sampler(r.sampler).name
        if canonical != r.sampler:
            object.__setattr__(r, "sampler", canonical)
    if r.aspect is not None:
        if (not isinstance(r.aspect, tuple) or len(r.aspect) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in r.aspect)):
            raise RequestError("request.bad_aspect", flag="--ar", value=r.aspect)
        lo, hi = RANGES["aspect_part"]
        if not all(lo <= v <= hi for v in r.aspect):
            raise RequestError("request.bad_aspect", flag="--ar", value=f"{r.aspect[0]}:{r.aspect[1]}")
        ratio = r.aspect[0] / r.aspect[1]
        rlo, rhi = RANGES["aspect_ratio"]
        if not rlo <= ratio <= rhi:
            raise RequestError("request.aspect_out_of_range", flag="--ar", value=f"{r.aspect[0]}:{r.aspect[1]}")
        if r.width is not None or r.height is not None:
            raise RequestError("request.conflict", first="--ar", second="--size")
    if (r.width is None) != (r.height is None):
        raise RequestError("request.bad_size", flag="--size", value=f"{r.width}x{r.height}")
    for side in (r.width, r.height):
        if side is not None:
            _check_number("side", side, "--size", integer=True)
    if r.model is not None and (not isinstance(r.model, str) or not NAME_PATTERN.fullmatch(r.model)):
        raise RequestError("request.bad_model_name", flag="--model", value=r.model)
    if r.loras is not None:
        if isinstance(r.loras, list):
            object.__setattr__(r, "loras", tuple(r.loras))
        if not all(isinstance(ref, LoraRef) for ref in r.loras):
            raise RequestError("request.bad_lora", value=r.loras)
        names = [ref.name.lower() for ref in r.loras]
        if len(set(names)) != len(names):
            dup = next(n for n in names if names.count(n) > 1)
            raise RequestError("request.duplicate_lora", name=dup)
        if not r.loras:
            object.__setattr__(r, "loras", None)
    if r.hires is not None and not isinstance(r.hires, Hires):
        raise RequestError("request.bad_hires")
    if r.chaos is not None and (r.vary_seed is not None or r.vary_strength is not None):
        raise RequestError("request.conflict", first="--chaos", second="--vary-seed/--vary-strength")
    if r.chaos is not None and r.n is not None and r.n < 2:
        raise RequestError("request.chaos_needs_n")
    if r.tile is not None and not isinstance(r.tile, bool):
        raise RequestError("request.bad_tile")
    if r.tile is False:
        object.__setattr__(r, "tile", None)
    _validate_image(r)


def _validate_image(r: Request) -> None:
    """``--image``: a well-formed id; the refine pass exists (scale 1 unless ``--hires``); no
    variation seeds or chaos, which shape the noise of a base pass that a picture replaces."""
    if r.image is None:
        if r.hires is not None and r.hires.scale == IMAGE_SCALE:
            lo, hi = RANGES["hires_scale"]
            raise RequestError("request.out_of_range", flag="--hires", value="1", low=format_number(lo),
                               high=format_number(hi))
        return
    if not isinstance(r.image, str):
        raise RequestError("request.bad_image_ref", flag="--image", value=echo(r.image))
    ref = r.image.strip().lower()
    if not IMAGE_REF_PATTERN.fullmatch(ref):
        raise RequestError("request.bad_image_ref", flag="--image", value=echo(r.image))
    object.__setattr__(r, "image", ref)
    if r.hires is None:
        object.__setattr__(r, "hires", Hires(scale=IMAGE_SCALE))
    if r.chaos is not None:
        raise RequestError("request.conflict", first="--image", second="--chaos")
    if r.vary_seed is not None or r.vary_strength is not None:
        raise RequestError("request.conflict", first="--image", second="--vary-seed/--vary-strength")


# ---------------------------------------------------------------------- resolution


def resolve(
    request: Request,
    profile: ModelProfile,
    *,
    model: str,
    defaults: Iterable[Request] = (),
    seed_source: Callable[[], int] = draw_seed,
) -> tuple[Request, list[Note]]:
    """Fill every unset field, check the result against the model's profile.

    ``defaults`` are partial requests applied from the weakest to the strongest (server
    defaults, then the user's); the request itself always wins.  Returns the resolved
    request and the notes the user must see (a size snapped to a multiple of 8…).
    """
    merged: Request | None = None
    for layer in defaults:
        merged = layer if merged is None else merged.merged(layer)
    r = request if merged is None else replace(merged, prompt=request.prompt).merged(request)
    if not r.prompt:
        raise RequestError("request.empty_prompt")
    if r.chaos is not None and r.count < 2:  # --n may come from the defaults, so only now is it known
        raise RequestError("request.chaos_needs_n")
    notes: list[Note] = []

    steps = r.steps if r.steps is not None else profile.default_steps
    if steps > profile.max_steps:
        raise RequestError("request.out_of_range", flag="--steps", value=steps, low=1, high=profile.max_steps)
    cfg = r.cfg if r.cfg is not None else profile.default_cfg
    sampler = r.sampler or profile.default_sampler

    if r.width is not None and r.height is not None:
        width, height = snap8(r.width), snap8(r.height)
        if (width, height) != (r.width, r.height):
            notes.append(Note("note.size_snapped", {"requested": f"{r.width}x{r.height}",
                                                    "used": f"{width}x{height}"}))
    elif r.aspect is not None:
        width, height = aspect_size(r.aspect, profile.native_area)
    else:
        width, height = profile.native_width, profile.native_height
    _check_size(width, height, profile, flag="--size" if r.aspect is None else "--ar")

    hires = r.hires
    if hires is not None:
        typed_steps = hires.steps
        hires_steps = hires.steps if hires.steps is not None else steps
        strength = hires.strength if hires.strength is not None else DEFAULT_HIRES_STRENGTH
        hires = Hires(scale=hires.scale, steps=hires_steps, strength=strength)
        if hires_steps > profile.max_steps:
            raise RequestError("request.out_of_range", flag="--hires-steps", value=hires_steps, low=1,
                               high=profile.max_steps)
        if int(hires_steps * strength) < 1:  # img2img runs steps × strength of them: none at all
            raise RequestError("request.refine_no_steps", steps=hires_steps, strength=format_number(strength),
                               flag="--steps" if r.image is not None and typed_steps is None else "--hires-steps")
        out_w, out_h = hires_size(width, height, hires.scale)
        _check_size(out_w, out_h, profile, flag="--hires")

    if r.clip_skip is not None and r.clip_skip > profile.max_clip_skip:
        raise RequestError("request.out_of_range", flag="--clip-skip", value=r.clip_skip, low=1,
                           high=profile.max_clip_skip)

    seed = r.seed if r.seed is not None else seed_source()
    vary_seed = r.vary_seed
    if r.vary_strength is not None and vary_seed is None:
        vary_seed = seed_source()
    if vary_seed is not None and r.vary_strength is None:
        raise RequestError("request.vary_strength_missing")

    resolved = replace(
        r, seed=seed, steps=steps, cfg=cfg, sampler=sampler, aspect=None, width=width, height=height,
        model=model, hires=hires, vary_seed=vary_seed,
        # clip skip 1 is the model's own last layer: the same as unset (A1111 writes it only above 1)
        clip_skip=None if r.clip_skip == 1 else r.clip_skip,
    )
    return resolved, notes


def _check_size(width: int, height: int, profile: ModelProfile, *, flag: str) -> None:
    lo, hi = profile.min_side, profile.max_side
    if not (lo <= width <= hi and lo <= height <= hi):
        raise RequestError("request.size_out_of_range", flag=flag, value=f"{width}x{height}", low=lo, high=hi,
                           model=profile.family)
    if width * height > profile.max_pixels:
        side = int(math.sqrt(profile.max_pixels)) // 8 * 8
        raise RequestError("request.too_many_pixels", flag=flag, value=f"{width}x{height}",
                           limit=f"{side}x{side}", model=profile.family)

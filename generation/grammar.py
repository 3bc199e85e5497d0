"""The request language: ``a cat on a motorbike --ar 3:2 --seed 42 --no blurry``.

One grammar for the command line, the Discord bot and the Python API:

* The prompt comes first and runs up to the first flag marker.  A marker is two dashes or
  one long dash, at the start of the text or after whitespace, followed by a letter.  A dash
  is any of Unicode's (``-``, ``－``, ``‐``, the minus sign ``−``…: keyboards, phones and input
  methods type them for ``-``); a long one is an en or em dash (``–``, ``—``: phones turn
  ``--`` into those) or a wider one, so ``——`` (a Chinese input method's dash) is one too.
  One hyphen (``-x``), three dashes and dashes inside a word (``well-known``) are text.
* A flag's name is ``[A-Za-z][A-Za-z0-9_-]*``, read through NFKC (full-width ``ｓｔｅｐｓ`` is
  ``steps``); case, ``_`` and ``-`` do not matter.  Its value is the text up to the next
  marker, stripped; a number in it may be typed in full-width digits (``３０``) or with a
  minus sign (``−1``).  The prompt, and text values, stay exactly as typed.
* A value that starts with ``"`` is a quoted string when a complete one (``\\"`` and
  ``\\\\`` escape) is followed by the next marker or the end: markers inside it are text.
* Otherwise a value, and the prompt, are *raw*: wrapped whole in “…”, ‘…’ or '…' (with no
  closing quote of that kind inside) they are unwrapped.  A word that starts with
  backslashes and then a marker (``\\--not-a-flag``) is text, one backslash removed; so is
  a raw text that starts with backslashes and then an opening quote (not unwrapped).
  The prompt is never quote-parsed: ``a sign saying "hello"`` means what it says.

:func:`render` writes the canonical string, escaping what it must, so that
``parse(render(request)) == request`` for every valid request.  Errors are
:class:`~generation.errors.RequestError` with a code from ``locales/*/grammar.json`` (or
``request.json``, whose validation is reused) that names the flag as the user typed it.
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass
from difflib import get_close_matches
from typing import Any

from generation.errors import RequestError
from generation.i18n import translate
from generation.request import (
    DEFAULT_HIRES_SCALE,
    IMAGE_SCALE,
    RANGES,
    Hires,
    LoraRef,
    Request,
    format_number,
    is_blank,
)
from generation.samplers import find_sampler, sampler_names

__all__ = ["FLAGS", "FlagSpec", "find_flag", "parse", "parse_defaults", "render"]


# ---------------------------------------------------------------------- the flag table


@dataclass(frozen=True, slots=True)
class FlagSpec:
    """One flag of the request language, as ``/help`` and ``brushwork --help`` show it."""

    name: str  # canonical, without the dashes: "hires-steps"
    field: str  # the Request field it sets; "size" sets width and height, "hires.steps" a part of Hires
    kind: str  # text | name | sampler | integer | seed | number | aspect | size | lora | scale | switch
    syntax: str  # how the value is written, e.g. "W:H"
    example: str
    aliases: tuple[str, ...] = ()
    range_key: str | None = None  # key of generation.request.RANGES

    @property
    def flag(self) -> str:
        return "--" + self.name

    @property
    def range(self) -> tuple[float, float] | None:
        return None if self.range_key is None else RANGES[self.range_key]

    @property
    def repeatable(self) -> bool:
        return self.kind == "lora"

    @property
    def takes_value(self) -> bool:
        return self.kind != "switch"

    @property
    def value_optional(self) -> bool:
        return self.kind in ("scale", "switch")

    @property
    def description(self) -> str:
        """One line of English; :meth:`describe` gives it in another locale."""
        return self.describe("en")

    def describe(self, locale: str | None = "en") -> str:
        return translate(f"flag.{self.name}", locale)

    def usage(self) -> str:
        """``--steps N``, ``--hires [SCALE]``, ``--tile``."""
        return self.flag if not self.syntax else f"{self.flag} {self.syntax}"


FLAGS: tuple[FlagSpec, ...] = (
    FlagSpec("no", "negative_prompt", "text", "TEXT", "--no blurry, text, watermark", ("negative", "neg")),
    FlagSpec("model", "model", "name", "NAME", "--model sdxl"),
    FlagSpec("lora", "loras", "lora", "NAME[:WEIGHT]", "--lora inkwash:0.8", range_key="lora_weight"),
    FlagSpec("ar", "aspect", "aspect", "W:H", "--ar 3:2", ("aspect", "aspect-ratio"), "aspect_part"),
    FlagSpec("size", "size", "size", "WxH", "--size 768x512", range_key="side"),
    FlagSpec("steps", "steps", "integer", "N", "--steps 30", range_key="steps"),
    FlagSpec("cfg", "cfg", "number", "SCALE", "--cfg 7", ("cfg-scale", "guidance", "guidance-scale"), "cfg"),
    FlagSpec("sampler", "sampler", "sampler", "NAME", '--sampler "DPM++ 2M Karras"'),
    FlagSpec("seed", "seed", "seed", "N", "--seed 42", range_key="seed"),
    FlagSpec("vary-seed", "vary_seed", "seed", "N", "--vary-seed 7", ("subseed",), "seed"),
    FlagSpec("vary-strength", "vary_strength", "number", "S", "--vary-strength 0.2", ("subseed-strength",),
             "vary_strength"),
    FlagSpec("image", "image", "image", "ID", "--image k3x9fq2a", ("init", "init-image", "img2img")),
    FlagSpec("hires", "hires.scale", "scale", "[SCALE]", "--hires 2", range_key="hires_scale"),
    FlagSpec("hires-steps", "hires.steps", "integer", "N", "--hires-steps 15", range_key="hires_steps"),
    FlagSpec("strength", "hires.strength", "number", "S", "--strength 0.5", ("denoise", "denoising-strength"),
             "strength"),
    FlagSpec("clip-skip", "clip_skip", "integer", "N", "--clip-skip 2", ("clipskip",), "clip_skip"),
    FlagSpec("tile", "tile", "switch", "", "--tile"),
    FlagSpec("chaos", "chaos", "integer", "N", "--chaos 50", range_key="chaos"),
    FlagSpec("n", "n", "integer", "N", "--n 4", ("num", "count", "batch"), "n"),
)

# Flags of other tools people type out of habit, and ours that come closest.
_HINTS = {
    "c": "chaos", "r": "n", "repeat": "n", "s": "cfg", "stylize": "cfg", "q": "steps", "quality": "steps",
    "v": "model", "version": "model", "niji": "model", "w": "size", "h": "size", "width": "size",
    "height": "size", "negative-prompt": "no", "neg-prompt": "no", "sampling-steps": "steps",
    "sampling-method": "sampler", "scheduler": "sampler", "hr": "hires", "hires-fix": "hires",
    "upscale": "hires", "tiling": "tile", "variation-seed": "vary-seed", "variation-strength": "vary-strength",
}


def _key(name: str) -> str:
    return unicodedata.normalize("NFKC", name).lower().replace("-", "").replace("_", "")


_BY_KEY: dict[str, FlagSpec] = {_key(spelling): spec for spec in FLAGS for spelling in (spec.name, *spec.aliases)}
_BY_NAME = {spec.name: spec for spec in FLAGS}
_SPELLINGS = [spelling for spec in FLAGS for spelling in (spec.name, *spec.aliases)]


def find_flag(name: str) -> FlagSpec | None:
    """The flag a spelling means (``"Guidance_Scale"`` → ``--cfg``), or None."""
    return _BY_KEY.get(_key(name.lstrip(_DASHES)))


# ---------------------------------------------------------------------- lexical layer

# Unicode's dashes (category Pd) and the minus sign, but not the wave dashes 〜 and 〰, which are
# tildes (Japanese input methods type 〜 for "~").  One long dash is a marker; other dashes pair.
_LONG_DASHES = "\u2012\u2013\u2014\u2015\u2e3a\u2e3b\ufe31\ufe32\ufe58"  # figure, en, em, bar, 2-em, 3-em…
_DASHES = ("-\u058a\u05be\u1400\u1806\u2010\u2011\u2212\u2e17\u2e1a\u2e40\u2e5d\u30a0\ufe63\uff0d\U00010ead"
           + _LONG_DASHES)
_MARK = rf"(?:[{re.escape(_DASHES)}]{{2}}|[{_LONG_DASHES}])"
# A name's letters, digits, "_" and "-", and their full-width forms (NFKC reads them as ASCII).
_NAME_START = "A-Za-z\uff21-\uff3a\uff41-\uff5a"
_NAME = rf"[{_NAME_START}][{_NAME_START}0-9_\-\uff10-\uff19\uff3f\uff0d\ufe63]*"
_MARKER = re.compile(rf"(?<!\S){_MARK}(?=[{_NAME_START}])")
_FLAG = re.compile(rf"{_MARK}(?P<name>{_NAME})")
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"', re.DOTALL)
_UNQUOTE = re.compile(r"\\([\\\"])")
_ESCAPED_MARKER = re.compile(rf"(?<!\S)\\(\\*{_MARK}(?=[{_NAME_START}]))")
_FLAGLIKE = re.compile(rf"(?<!\S)(\\*{_MARK}(?=[{_NAME_START}]))")
_PAIRS = {"“": "”", "‘": "’", "'": "'"}
_ESCAPED_OPENER = re.compile(r"\\+[“‘']")
_SPACE = re.compile(r"\s*")


@dataclass(frozen=True, slots=True)
class _Flag:
    typed: str  # the name as written (NFKC: "ＳＴＥＰＳ" is "STEPS"), with "--" in front: "--Guidance"
    spec: FlagSpec | None
    value: str | None  # None: nothing followed the flag


def _split(text: str) -> tuple[str, list[_Flag]]:
    """The raw prompt and the flags in order, values unquoted/unescaped."""
    first = _MARKER.search(text)
    end = first.start() if first else len(text)
    prompt = _raw(text[:end])
    flags: list[_Flag] = []
    pos = end
    while pos < len(text):
        m = _FLAG.match(text, pos)
        assert m is not None  # pos is at a marker, and a marker starts a flag
        name = unicodedata.normalize("NFKC", m.group("name"))
        after = m.end()
        value: str | None = None
        start = _skip_space(text, after)
        quoted = _QUOTED.match(text, start) if text.startswith('"', start) else None
        if quoted:
            stop = _skip_space(text, quoted.end())
            if stop == len(text) or (stop > quoted.end() and _MARKER.match(text, stop)):
                value = _UNQUOTE.sub(r"\1", quoted.group(1))
                flags.append(_Flag("--" + name, find_flag(name), value))
                pos = stop
                continue
        nxt = _MARKER.search(text, after)
        pos = nxt.start() if nxt else len(text)
        raw = _raw(text[after:pos])
        flags.append(_Flag("--" + name, find_flag(name), raw if raw else None))
    return prompt, flags


def _skip_space(text: str, pos: int) -> int:
    space = _SPACE.match(text, pos)
    return space.end() if space else pos  # "\s*" always matches


def _raw(segment: str) -> str:
    """A raw prompt or value: stripped, unwrapped from phone quotes, escapes removed."""
    text = segment.strip()
    if _ESCAPED_OPENER.match(text):
        text = text[1:]
    elif _wrapped(text):
        text = text[1:-1]
    return _ESCAPED_MARKER.sub(r"\1", text)


def _wrapped(text: str) -> bool:
    if len(text) < 2 or text[0] not in _PAIRS:
        return False
    closer = _PAIRS[text[0]]
    return text[-1] == closer and closer not in text[1:-1]


def _escape_raw(text: str) -> str:
    """Inverse of :func:`_raw` for a stripped text: escape flag-like words and a wrapping quote."""
    escaped = _FLAGLIKE.sub(r"\\\1", text)
    if _ESCAPED_OPENER.match(escaped) or _wrapped(escaped):
        escaped = "\\" + escaped
    return escaped


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


# ---------------------------------------------------------------------- values

_INT = re.compile(r"[+-]?[0-9]+")
# format_number writes 1e-05 for tiny values, so an exponent is accepted (1e999 is out of range)
_FLOAT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_DECIMAL_COMMA = re.compile(r"[+-]?[0-9]*,[0-9]+")
_ASPECT = re.compile(r"([0-9]+)\s*:\s*([0-9]+)")
_ASPECT_OTHER = re.compile(r"([0-9]+)\s*[/xX×*]\s*([0-9]+)")
_SIZE = re.compile(r"([0-9]+)\s*[xX×*]\s*([0-9]+)")
_LORA_SPLIT = re.compile(r"[\s,，]+")
_COLON = re.compile(r"\s*[:：]\s*")
_MAX_DIGITS = 30  # beyond this a number is out of every range (and int() of 4300+ digits raises)
# Full-width digits and signs from Chinese input methods, and minus signs, in values that are numbers.
_FULL_WIDTH = str.maketrans("０１２３４５６７８９．：＋－ｘＸ＊\u2212\ufe63", "0123456789.:+-xX*--")


def _show(value: str, limit: int = 60) -> str:
    return value if len(value) <= limit else value[: limit - 1] + "…"


class _Context:
    """One flag being read: raises errors that name it as typed, with its range and example."""

    def __init__(self, flag: _Flag) -> None:
        self.flag = flag
        self.spec: FlagSpec = flag.spec  # type: ignore[assignment]
        self.typed = flag.typed
        self.shown: str | None = None  # a one-number value as typed, for out-of-range messages

    def error(self, code: str, **params: Any) -> RequestError:
        base: dict[str, Any] = {"flag": self.typed, "example": self.example()}
        if self.spec.range is not None:
            low, high = self.spec.range
            base.update(low=format_number(low), high=format_number(high))
        base.update(params)
        return RequestError(code, **base)

    def example(self) -> str:
        return self.typed + self.spec.example[len(self.spec.flag):]

    def out_of_range(self, text: str) -> RequestError:
        return self.error("request.out_of_range", value=_show(text))

    def retyped(self, err: RequestError) -> RequestError:
        err = _retyped(err, {self.spec.flag: self.typed})
        if self.shown is not None and err.code == "request.out_of_range":
            err = RequestError(err.code, **{**err.params, "value": self.shown})  # "1e-999", not "0"
        return err

    def integer(self, text: str) -> int:
        text = text.translate(_FULL_WIDTH)
        if not _INT.fullmatch(text):
            raise self.error("grammar.bad_integer", value=_show(text))
        if len(text.lstrip("+-")) > _MAX_DIGITS:
            raise self.out_of_range(text)
        return int(text)

    def number(self, text: str) -> float:
        text = text.translate(_FULL_WIDTH)
        if _FLOAT.fullmatch(text):
            value = float(text)
            if not math.isfinite(value):
                raise self.out_of_range(text)
            return value
        if _DECIMAL_COMMA.fullmatch(text):
            raise self.error("grammar.decimal_comma", value=_show(text), fixed=text.replace(",", "."))
        raise self.error("grammar.bad_number", value=_show(text))


def _retyped(err: RequestError, typed: dict[str, str]) -> RequestError:
    """The same error, naming flags the way the user wrote them (``--guidance``, not ``--cfg``)."""
    params = {k: typed.get(v, v) if isinstance(v, str) else v for k, v in err.params.items()}
    return err if params == err.params else RequestError(err.code, **params)


def _probe(ctx: _Context, **fields: Any) -> None:
    """Validate one field with Request's own rules; errors name the flag as typed."""
    try:
        Request(prompt="", **fields)
    except RequestError as err:
        raise ctx.retyped(err) from None


def _read(ctx: _Context, value: str) -> Any:
    """The Python value of one flag (already known to have a value, unless optional)."""
    kind = ctx.spec.kind
    if kind in ("integer", "seed", "number", "scale"):
        ctx.shown = _show(value)
    if kind == "text":
        return value
    if kind == "name":
        _probe(ctx, model=value)
        return value
    if kind == "sampler":
        return find_sampler(value).name
    if kind in ("integer", "seed"):
        number = ctx.integer(value)
        if kind == "seed" and number == -1:
            return None  # -1: a random seed, as in A1111
        if ctx.spec.field.startswith("hires."):
            _probe_hires(ctx, steps=number)
        else:
            _probe(ctx, **{ctx.spec.field: number})
        return number
    if kind == "number":
        number = ctx.number(value)
        if ctx.spec.field.startswith("hires."):
            _probe_hires(ctx, strength=number)
        else:
            _probe(ctx, **{ctx.spec.field: number})
        return number
    if kind == "scale":
        text = value.translate(_FULL_WIDTH)
        if len(text) > 1 and text[-1] in "xX×":  # "--hires 2x"
            text = text[:-1].rstrip()
        scale = ctx.number(text)
        if scale == IMAGE_SCALE:  # Hires(1) is --image's refine pass; typed, --hires must upscale
            raise ctx.out_of_range(value)
        _probe_hires(ctx, scale=scale)
        return scale
    if kind == "image":
        _probe(ctx, image=value)
        return value.strip().lower()
    if kind == "aspect":
        return _read_aspect(ctx, value)
    if kind == "size":
        return _read_size(ctx, value)
    if kind == "lora":
        return _read_loras(ctx, value)
    raise AssertionError(kind)  # pragma: no cover - the table has no other kinds


def _probe_hires(ctx: _Context, **parts: Any) -> None:
    try:
        Hires(**parts)
    except RequestError as err:
        raise ctx.retyped(err) from None


def _read_aspect(ctx: _Context, value: str) -> tuple[int, int]:
    text = value.translate(_FULL_WIDTH)
    m = _ASPECT.fullmatch(text)
    if not m:
        other = _ASPECT_OTHER.fullmatch(text)
        if other:
            fixed = f"{int(other.group(1))}:{int(other.group(2))}" if max(map(len, other.groups())) < 6 else "3:2"
            raise ctx.error("grammar.aspect_separator", value=_show(value), fixed=fixed)
        raise ctx.error("request.bad_aspect", value=_show(value))
    if max(len(m.group(1)), len(m.group(2))) > 6:
        raise ctx.error("request.bad_aspect", value=_show(value))
    aspect = (int(m.group(1)), int(m.group(2)))
    _probe(ctx, aspect=aspect)
    return aspect


def _read_size(ctx: _Context, value: str) -> tuple[int, int]:
    text = value.translate(_FULL_WIDTH)
    m = _SIZE.fullmatch(text)
    if not m:
        if _ASPECT.fullmatch(text):
            raise ctx.error("grammar.size_is_aspect", value=_show(value))
        raise ctx.error("request.bad_size", value=_show(value))
    if max(len(m.group(1)), len(m.group(2))) > _MAX_DIGITS:
        raise ctx.out_of_range(value)
    width, height = int(m.group(1)), int(m.group(2))
    _probe(ctx, width=width, height=height)
    return width, height


def _read_loras(ctx: _Context, value: str) -> list[LoraRef]:
    refs = []
    for item in _LORA_SPLIT.split(_COLON.sub(":", value)):
        if not item:
            continue
        name, colon, weight_text = item.partition(":")
        if not name or (colon and not weight_text) or ":" in weight_text:
            raise ctx.error("grammar.bad_lora", value=_show(item))
        if not colon and _FLOAT.fullmatch(name.translate(_FULL_WIDTH)):
            raise ctx.error("grammar.bad_lora", value=_show(item))  # "--lora ink 0.8": a weight, not a name
        weight = ctx.number(weight_text) if colon else 1.0
        try:
            refs.append(LoraRef(name, weight))
        except RequestError as err:
            raise ctx.retyped(err) from None
    if not refs:
        raise ctx.error("grammar.missing_lora")
    return refs


_MISSING = {
    "text": "grammar.missing_text",
    "name": "grammar.missing_name",
    "sampler": "grammar.missing_sampler",
    "integer": "grammar.missing_integer",
    "seed": "grammar.missing_integer",
    "number": "grammar.missing_number",
    "aspect": "grammar.missing_aspect",
    "size": "grammar.missing_size",
    "lora": "grammar.missing_lora",
    "image": "grammar.missing_image",
}


# ---------------------------------------------------------------------- parse


def parse(text: str, *, allow_empty_prompt: bool = False) -> Request:
    """Read a prompt with inline flags into a :class:`Request`.

    Raises :class:`RequestError` (and nothing else) for any text that is not a valid
    request; ``allow_empty_prompt`` accepts flags alone (``tweak ID "--steps 40"``).
    """
    return _parse(text, allow_empty_prompt=allow_empty_prompt, flags_only=False)


def parse_defaults(text: str) -> Request:
    """Stored defaults such as ``--steps 30 --sampler euler_a``: flags only, no prompt."""
    return _parse(text, allow_empty_prompt=True, flags_only=True)


def _parse(text: str, *, allow_empty_prompt: bool, flags_only: bool) -> Request:
    if not isinstance(text, str):
        raise RequestError("request.bad_prompt")
    prompt, flags = _split(text)
    if flags_only and not is_blank(prompt):
        raise RequestError("grammar.defaults_flags_only", value=_show(prompt))

    values: dict[str, Any] = {}
    typed: dict[str, str] = {}  # canonical "--cfg" -> as typed "--guidance"
    loras: list[LoraRef] = []
    for flag in flags:
        spec = flag.spec
        if spec is None:
            raise _unknown_flag(flag.typed)
        if spec.flag in typed and not spec.repeatable:
            raise RequestError("grammar.repeated_flag", flag=flag.typed, previous=typed[spec.flag])
        typed.setdefault(spec.flag, flag.typed)
        ctx = _Context(flag)
        if flag.value is None or not flag.value.strip():
            if spec.kind == "switch":
                values[spec.field] = True
                continue
            if spec.kind == "scale":
                values[spec.field] = DEFAULT_HIRES_SCALE
                continue
            extra = {"known": sampler_names()} if spec.kind == "sampler" else {}
            raise ctx.error(_MISSING[spec.kind], **extra)
        if spec.kind == "switch":
            raise ctx.error("grammar.unexpected_value", value=_show(flag.value))
        result = _read(ctx, flag.value if spec.kind == "text" else flag.value.strip())
        if spec.kind == "lora":
            loras.extend(result)
        else:
            values[spec.field] = result

    for part in ("hires-steps", "strength"):
        if _BY_NAME[part].flag in typed and "--hires" not in typed and "--image" not in typed:
            raise RequestError("grammar.needs_hires", flag=typed[_BY_NAME[part].flag])
    if "--ar" in typed and "--size" in typed:
        first, second = sorted((typed["--ar"], typed["--size"]), key=lambda t: _position(flags, t))
        raise RequestError("request.conflict", first=first, second=second)

    fields: dict[str, Any] = {}
    for name, value in values.items():
        if name == "size":
            if value is not None:
                fields["width"], fields["height"] = value
        elif not name.startswith("hires."):
            fields[name] = value
    if "hires.scale" in values or "image" in values:  # --image: its refine pass keeps the size unless --hires
        fields["hires"] = Hires(values.get("hires.scale", IMAGE_SCALE), values.get("hires.steps"),
                                values.get("hires.strength"))
    if loras:
        fields["loras"] = tuple(loras)
    if is_blank(prompt) and not allow_empty_prompt:
        raise RequestError("request.empty_prompt")
    try:
        return Request(prompt=prompt, **fields)
    except RequestError as err:
        raise _retyped(err, typed) from None


def _position(flags: list[_Flag], typed: str) -> int:
    return next(i for i, f in enumerate(flags) if f.typed == typed)


def _unknown_flag(typed: str) -> RequestError:
    name = typed[2:]
    guess = _HINTS.get(name.lower().replace("_", "-"))
    if guess is None:
        close = get_close_matches(name.lower().replace("_", "-")[:40], _SPELLINGS, n=1, cutoff=0.6)
        guess = close[0] if close else None
    if guess is not None:
        return RequestError("grammar.unknown_flag_suggest", flag=_show(typed), suggestion="--" + guess)
    return RequestError("grammar.unknown_flag", flag=_show(typed), known=[spec.flag for spec in FLAGS])


# ---------------------------------------------------------------------- render


def render(request: Request) -> str:
    """The canonical string for a request: ``parse(render(r)) == r``.

    The prompt comes first (flag-like words escaped), then the set fields in a fixed order.
    """
    r = request
    parts: list[str] = []
    if r.prompt:
        parts.append(_escape_raw(r.prompt))
    if r.negative_prompt is not None:
        parts.append("--no " + _render_text(r.negative_prompt))
    if r.model is not None:
        parts.append("--model " + r.model)
    for ref in r.loras or ():
        parts.append("--lora " + ref.render())
    if r.aspect is not None:
        parts.append(f"--ar {r.aspect[0]}:{r.aspect[1]}")
    if r.width is not None and r.height is not None:
        parts.append(f"--size {r.width}x{r.height}")
    _number(parts, "--steps", r.steps)
    _number(parts, "--cfg", r.cfg)
    if r.sampler is not None:
        parts.append("--sampler " + (_quote(r.sampler) if " " in r.sampler else r.sampler))
    _number(parts, "--seed", r.seed)
    _number(parts, "--vary-seed", r.vary_seed)
    _number(parts, "--vary-strength", r.vary_strength)
    if r.image is not None:
        parts.append("--image " + r.image)
    if r.hires is not None:
        if not (r.image is not None and r.hires.scale == IMAGE_SCALE):
            _number(parts, "--hires", r.hires.scale)
        _number(parts, "--hires-steps", r.hires.steps)
        _number(parts, "--strength", r.hires.strength)
    _number(parts, "--clip-skip", r.clip_skip)
    if r.tile:
        parts.append("--tile")
    _number(parts, "--chaos", r.chaos)
    _number(parts, "--n", r.n)
    return " ".join(parts)


def _number(parts: list[str], flag: str, value: float | int | None) -> None:
    if value is not None:
        parts.append(f"{flag} {format_number(value)}")


def _render_text(value: str) -> str:
    """A text value raw when it reads back the same, else as a quoted string."""
    _, flags = _split("--no " + value)
    if len(flags) == 1 and flags[0].value == value:
        return value
    return _quote(value)


"""``/help``: the tutorial, as plain sections the cog turns into embeds (no Discord here).

The topics' texts are ``bot/locales/*/help.json`` (``help.topic.<name>.title/body``); each
topic also lists the flags it is about, with their ranges and examples, from the request
language's own table (:data:`generation.grammar.FLAGS`, descriptions in the reader's locale).
Two topics are made here: ``flags`` (every flag) and ``compare`` (how to see a parameter's
effect with ``/compare``).  Sections respect Discord's embed limits (field values ≤ 1024
characters, 25 fields, 6000 characters in all).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bot.texts import clip
from generation.grammar import FLAGS, FlagSpec
from generation.i18n import translate
from generation.request import RANGES, format_number
from generation.samplers import DEFAULT_SAMPLER, SAMPLERS

#: Topics of ``help.json``, in the order the tutorial reads best.
TEXT_TOPICS = ("prompt", "negative", "sampler", "steps", "cfg", "seed", "size", "hires", "image", "variation",
               "lora", "examples", "code")
#: Topics made here.
OWN_TOPICS = ("flags", "compare")
TOPICS = TEXT_TOPICS + OWN_TOPICS

#: The flags each topic is about.
TOPIC_FLAGS: dict[str, tuple[str, ...]] = {
    "prompt": (),
    "negative": ("no",),
    "sampler": ("sampler",),
    "steps": ("steps",),
    "cfg": ("cfg",),
    "seed": ("seed",),
    "size": ("ar", "size"),
    "hires": ("hires", "hires-steps", "strength"),
    "image": ("image", "strength"),
    "variation": ("vary-seed", "vary-strength", "n", "chaos"),
    "lora": ("lora", "clip-skip"),
    "examples": (),
    "code": (),
    "flags": tuple(spec.name for spec in FLAGS),
    "compare": (),
}

FIELD_LIMIT = 1024
DESCRIPTION_LIMIT = 4096
TOTAL_LIMIT = 6000


@dataclass(frozen=True, slots=True)
class Section:
    """One embed: a title, a description, named fields."""

    title: str
    description: str
    fields: tuple[tuple[str, str], ...] = field(default_factory=tuple)
    footer: str | None = None

    @property
    def size(self) -> int:
        return (len(self.title) + len(self.description) + sum(len(n) + len(v) for n, v in self.fields)
                + len(self.footer or ""))


def _t(code: str, locale: str, **params: object) -> str:
    return translate(code, locale, **params)


def topic_title(topic: str, locale: str) -> str:
    prefix = "help_cmd" if topic in OWN_TOPICS else "help"
    return _t(f"{prefix}.topic.{topic}.title", locale)


def topic_body(topic: str, locale: str) -> str:
    prefix = "help_cmd" if topic in OWN_TOPICS else "help"
    return _t(f"{prefix}.topic.{topic}.body", locale)


def flag_range(spec: FlagSpec, locale: str) -> str | None:
    """The allowed values of a flag, as the reader should type them (``1–150``, ``1:4–4:1``…)."""
    if spec.name == "ar":
        low, high = RANGES["aspect_ratio"]
        return f"1:{format_number(1 / low)}–{format_number(high)}:1"
    if spec.name == "size":
        low, high = RANGES["side"]
        return _t("help_cmd.range.size", locale, low=format_number(low), high=format_number(high))
    if spec.name == "sampler":
        return _t("help_cmd.range.sampler", locale)
    if spec.name == "seed":
        low, high = RANGES["seed"]
        return _t("help_cmd.range.seed", locale, low=format_number(low), high=format_number(high))
    if spec.range is None:
        return None
    low, high = spec.range
    return f"{format_number(low)}–{format_number(high)}"


def flag_line(spec: FlagSpec, locale: str) -> str:
    """``**`--steps N`** (1–150) — what it does. e.g. `--steps 30`"""
    usage = f"**`{spec.usage()}`**"
    limits = flag_range(spec, locale)
    head = f"{usage} ({limits})" if limits else usage
    example = _t("help_cmd.example", locale, example=spec.example)
    return f"{head} — {spec.describe(locale)} {example}"


def chunk_lines(lines: list[str], limit: int = FIELD_LIMIT) -> list[str]:
    """Lines joined into as few blocks of at most ``limit`` characters as possible."""
    blocks: list[str] = []
    current = ""
    for line in lines:
        line = clip(line, limit)
        candidate = f"{current}\n{line}" if current else line
        if len(candidate) > limit:
            blocks.append(current)
            current = line
        else:
            current = candidate
    if current:
        blocks.append(current)
    return blocks


def _flag_fields(names: tuple[str, ...], locale: str) -> list[tuple[str, str]]:
    specs = [spec for spec in FLAGS if spec.name in names]
    if not specs:
        return []
    blocks = chunk_lines([flag_line(spec, locale) for spec in specs])
    title = _t("help_cmd.flags", locale)
    return [(title if i == 0 else f"{title} ({i + 1})", block) for i, block in enumerate(blocks)]


def overview(locale: str) -> Section:
    """``/help`` without a topic: the introduction, the topics, quick examples, every flag."""
    topics = "\n".join(f"`{name}` — {topic_title(name, locale)}" for name in TOPICS)
    fields = [(_t("help_cmd.topics", locale), topics),
              (_t("help.topic.examples.title", locale), _t("help.topic.examples.body", locale))]
    fields += _flag_fields(TOPIC_FLAGS["flags"], locale)
    return _fit(Section(title=_t("help.title", locale), description=_t("help.intro", locale),
                        fields=tuple(fields), footer=_t("help_cmd.footer", locale)))


def topic(name: str, locale: str) -> Section:
    """One topic: its text, the flags it is about, and for samplers the list of samplers."""
    if name not in TOPICS:
        raise KeyError(name)
    fields = _flag_fields(TOPIC_FLAGS[name], locale)
    if name == "sampler":
        lines: dict[str, list[str]] = {}  # one line per sampler: its name on each schedule
        for s in SAMPLERS:
            lines.setdefault(s.base, []).append(f"`{s.name}`" + (" ★" if s.name == DEFAULT_SAMPLER else ""))
        fields += [(_t("help_cmd.samplers", locale), block)
                   for block in chunk_lines([" · ".join(names) for names in lines.values()])]
    description = topic_body(name, locale)
    if name == "flags":
        description = _t("help_cmd.flags_intro", locale)
    return _fit(Section(title=topic_title(name, locale), description=description[:DESCRIPTION_LIMIT],
                        fields=tuple(fields), footer=_t("help_cmd.footer", locale)))


def _fit(section: Section) -> Section:
    """Drop trailing fields until the embed is within Discord's limits (never expected to trigger)."""
    fields = list(section.fields)[:25]
    while fields and Section(section.title, section.description, tuple(fields), section.footer).size > TOTAL_LIMIT:
        fields.pop()
    return Section(section.title[:256], section.description[:DESCRIPTION_LIMIT], tuple(fields), section.footer)


__all__ = ["OWN_TOPICS", "TEXT_TOPICS", "TOPICS", "Section", "flag_line", "flag_range", "overview", "topic"]

"""What a LoRA training run does: :class:`TrainingConfig`, frozen and validated in one place.

The defaults are the issue's, and suit 10–50 images on a GPU: rank 8, alpha 8, learning
rate 1e-4, 1000 steps at 512 pixels.  :meth:`TrainingConfig.cpu` gives small ones for a
CPU (100 steps at 256 pixels), where an SD 1.5 step takes seconds, not milliseconds.

No torch here: the bot validates a user's options before anything is queued.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from generation.training.errors import TrainingError

MIXED_PRECISION = ("auto", "no", "fp16", "bf16")
RESOLUTION_STEP = 64
# field -> (lowest, highest); integers where the default is an int
RANGES: dict[str, tuple[float, float]] = {
    "rank": (1, 128),
    "alpha": (0.01, 1024),
    "learning_rate": (1e-7, 1e-2),
    "steps": (1, 100_000),
    "resolution": (64, 2048),
    "batch_size": (1, 64),
    "caption_dropout": (0.0, 0.9),
    "seed": (0, 2**32 - 1),
    "sample_every": (0, 100_000),
    "sample_steps": (1, 150),
    "checkpoint_every": (0, 100_000),
}
MAX_TRIGGER_CHARS = 64
MAX_PROMPT_CHARS = 1000
# Fields that may differ when a run resumes: they change neither the weights nor the data order.
RESUMABLE_CHANGES = frozenset({"steps", "sample_every", "sample_prompt", "sample_steps", "checkpoint_every"})


@dataclass(frozen=True, slots=True)
class TrainingConfig:
    """A LoRA training run's settings (see the module docstring for the defaults).

    * ``rank``/``alpha``: the LoRA's size and scale (the update is scaled by alpha ÷ rank);
    * ``caption_dropout``: the share of steps that train on an empty caption (helps CFG);
    * ``trigger_word``: put in front of every caption (and the only text of images without
      one), recorded in the file's metadata;
    * ``sample_every`` (0 = never) steps, a preview from ``sample_prompt`` (default: the
      first image's caption) and ``seed``, ``sample_steps`` denoising steps;
    * ``mixed_precision``: ``auto`` = fp16 on CUDA, off elsewhere; ``fp16``/``bf16`` need CUDA;
    * ``gradient_checkpointing``: None = on with CUDA (saves memory), off elsewhere;
    * ``checkpoint_every`` (0 = only at the end of each chunk) steps, a resumable checkpoint.
    """

    rank: int = 8
    alpha: float = 8.0
    learning_rate: float = 1e-4
    steps: int = 1000
    resolution: int = 512
    batch_size: int = 1
    caption_dropout: float = 0.05
    train_text_encoder: bool = False
    seed: int = 0
    sample_every: int = 100
    sample_prompt: str | None = None
    sample_steps: int = 20
    mixed_precision: str = "auto"
    gradient_checkpointing: bool | None = None
    trigger_word: str | None = None
    checkpoint_every: int = 100

    def __post_init__(self) -> None:
        for name, (low, high) in RANGES.items():
            value = getattr(self, name)
            integer = isinstance(_DEFAULTS[name], int)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise TrainingError("training.not_a_number", field=name, value=value)
            if integer and not float(value).is_integer():
                raise TrainingError("training.not_a_whole_number", field=name, value=value)
            object.__setattr__(self, name, int(value) if integer else float(value))
            if not low <= value <= high:
                raise TrainingError("training.out_of_range", field=name, value=value,
                                    low=_number(low), high=_number(high))
        if self.resolution % RESOLUTION_STEP:
            raise TrainingError("training.resolution_step", value=self.resolution, step=RESOLUTION_STEP,
                                suggestion=max(RESOLUTION_STEP, round(self.resolution / RESOLUTION_STEP)
                                               * RESOLUTION_STEP))
        for name in ("train_text_encoder",):
            if not isinstance(getattr(self, name), bool):
                raise TrainingError("training.not_a_flag", field=name, value=getattr(self, name))
        if self.gradient_checkpointing is not None and not isinstance(self.gradient_checkpointing, bool):
            raise TrainingError("training.not_a_flag", field="gradient_checkpointing",
                                value=self.gradient_checkpointing)
        if self.mixed_precision not in MIXED_PRECISION:
            raise TrainingError("training.bad_choice", field="mixed_precision", value=self.mixed_precision,
                                allowed=list(MIXED_PRECISION))
        object.__setattr__(self, "trigger_word", _clean_trigger(self.trigger_word))
        if self.sample_prompt is not None:
            prompt = " ".join(str(self.sample_prompt).split())
            if len(prompt) > MAX_PROMPT_CHARS:
                raise TrainingError("training.prompt_too_long", length=len(prompt), limit=MAX_PROMPT_CHARS)
            object.__setattr__(self, "sample_prompt", prompt or None)

    @classmethod
    def cpu(cls, **overrides: Any) -> TrainingConfig:
        """Small settings a CPU finishes in minutes (override any of them)."""
        values: dict[str, Any] = {"steps": 100, "resolution": 256, "sample_every": 25, "sample_steps": 10,
                                  "checkpoint_every": 25, "mixed_precision": "no", "gradient_checkpointing": False}
        values.update(overrides)
        return cls(**values)

    @classmethod
    def for_device(cls, device_type: str, **overrides: Any) -> TrainingConfig:
        """The issue's defaults on CUDA, :meth:`cpu` ones elsewhere."""
        return cls(**overrides) if device_type == "cuda" else cls.cpu(**overrides)

    def with_changes(self, **changes: Any) -> TrainingConfig:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def caption_for(self, caption: str | None) -> str:
        """The text an image trains with: the trigger word first (once), then its caption."""
        caption = " ".join((caption or "").split())
        trigger = self.trigger_word
        if not trigger:
            return caption
        if not caption:
            return trigger
        if trigger.casefold() in caption.casefold():
            return caption
        return f"{trigger}, {caption}"


_DEFAULTS = {f.name: f.default for f in fields(TrainingConfig)}


def _clean_trigger(value: Any) -> str | None:
    if value is None:
        return None
    text = " ".join(str(value).split())
    if not text:
        return None
    if len(text) > MAX_TRIGGER_CHARS or any(ch in text for ch in ",()[]:") or not text.isprintable():
        raise TrainingError("training.bad_trigger", value=text[:80], limit=MAX_TRIGGER_CHARS)
    return text


def _number(value: float) -> str:
    if float(value).is_integer():
        return str(int(value))
    return f"{value:g}"

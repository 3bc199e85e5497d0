"""Per-family model profiles: native resolution, size limits and sensible defaults.

A profile is what the request resolver needs to know about a model without loading it:
``--ar`` keeps the profile's native pixel area, ``--size`` is checked against its limits,
and unset ``--steps``/``--cfg``/``--sampler`` come from it.
"""

from __future__ import annotations

from dataclasses import dataclass

from generation.samplers import DEFAULT_SAMPLER


@dataclass(frozen=True, slots=True)
class ModelProfile:
    family: str  # "sd1", "sd2", "sdxl", "tiny"
    native_width: int
    native_height: int
    min_side: int = 64
    max_side: int = 2048
    max_pixels: int = 2048 * 2048  # final image, hires fix included
    default_steps: int = 25
    max_steps: int = 150
    default_cfg: float = 7.0
    default_sampler: str = DEFAULT_SAMPLER
    max_clip_skip: int = 12

    @property
    def native_area(self) -> int:
        return self.native_width * self.native_height


PROFILES: dict[str, ModelProfile] = {
    "sd1": ModelProfile("sd1", 512, 512, max_side=2048, max_pixels=2048 * 2048),
    "sd2": ModelProfile("sd2", 768, 768, max_side=2048, max_pixels=2048 * 2048),
    "sdxl": ModelProfile("sdxl", 1024, 1024, min_side=256, max_side=3072, max_pixels=3072 * 3072,
                         default_cfg=6.0),
    # the built-in offline model: quick on a CPU, random weights
    "tiny": ModelProfile("tiny", 512, 512, min_side=32, max_side=2048, max_pixels=2048 * 2048,
                         default_steps=20, max_clip_skip=2),
}

"""Which requests can share one pipeline call, and how much work a request is.

Kept apart from :mod:`generation.engine` (which imports torch) because the job queue needs
both answers when a job is *submitted* — grouping compatible jobs and estimating how long
they take — in processes that never load a model (``brushwork queue``, a command line that
only enqueues for a bot's worker).
"""

from __future__ import annotations

from typing import Any

from generation.request import Request, hires_size

# Requests that differ in any of these cannot share a pipeline call.
BATCH_FIELDS = ("model", "loras", "width", "height", "steps", "cfg", "sampler", "hires", "clip_skip", "tile")


def batch_key(request: Request) -> tuple[tuple[str, Any], ...]:
    """What must be equal for requests to run in one pipeline call (hashable, field-named).

    Prompts, negative prompts, seeds and variation seeds may differ; everything that shapes
    the call itself (model, LoRAs, size, steps, CFG, sampler, hires, clip skip, tiling) may not.
    """
    hires = request.hires
    values: dict[str, Any] = {
        "model": request.model,
        "loras": tuple((ref.name.casefold(), float(ref.weight)) for ref in request.loras or ()),
        "width": request.width,
        "height": request.height,
        "steps": request.steps,
        "cfg": None if request.cfg is None else float(request.cfg),
        "sampler": request.sampler,
        "hires": None if hires is None else (float(hires.scale), hires.steps, hires.strength),
        "clip_skip": request.clip_skip or 1,  # unset means 1: the last layer
        "tile": bool(request.tile),
    }
    return tuple((name, values[name]) for name in BATCH_FIELDS)


def hires_steps_run(request: Request) -> int:
    """How many steps the hires pass really runs (diffusers' img2img: ``int(steps × strength)``)."""
    hires = request.hires
    if hires is None:
        return 0
    steps = hires.steps if hires.steps is not None else request.steps
    if steps is None:
        raise ValueError("hires_steps_run needs a resolved request: neither hires.steps nor steps is set")
    strength = hires.strength if hires.strength is not None else 0.5
    return min(int(steps * strength), steps)


def work_units(request: Request, *, from_image: bool = False) -> float:
    """Denoising work of a resolved request, in megapixel-steps (all its images).

    Step time grows about linearly with the pixel count, so ``steps × megapixels`` (plus the
    hires pass at its larger size) is a model-independent measure of a job; the queue turns
    it into seconds with step times it measured.  ``from_image``: the base pass is skipped
    (an upscale starts from an existing picture).
    """
    width, height = request.width or 512, request.height or 512
    units = 0.0 if from_image else (request.steps or 1) * width * height
    if request.hires is not None:
        big_w, big_h = hires_size(width, height, request.hires.scale)
        units += hires_steps_run(request) * big_w * big_h
    return max(units, 1.0) * request.count / 1e6


__all__ = ["BATCH_FIELDS", "batch_key", "hires_steps_run", "work_units"]

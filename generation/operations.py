"""Reroll, tweak, upscale and vary: pure transforms from a parent image's request.

Each returns the *unresolved* request for the new image; resolving it draws whatever is
new (a seed for reroll, a variation seed for vary) and re-checks the model's limits.
The parent is always a single-image resolved request, as stored with every image.
"""

from __future__ import annotations

from dataclasses import replace
from enum import StrEnum

from generation.errors import RequestError
from generation.request import (
    DEFAULT_HIRES_SCALE,
    IMAGE_SCALE,
    UPSCALE_STRENGTH,
    VARY_STRENGTH,
    Hires,
    Request,
    draw_seed,
)


class Relation(StrEnum):
    """How an image descends from its parent (stored for lineage)."""

    REROLL = "reroll"
    TWEAK = "tweak"
    UPSCALE = "upscale"
    VARY = "vary"


def reroll(parent: Request) -> Request:
    """Same settings, a new seed (and no variation: a new composition)."""
    return replace(parent, seed=None, vary_seed=None, vary_strength=None, chaos=None, n=None)


def tweak(parent: Request, changes: Request) -> Request:
    """Same seed and settings, with whatever ``changes`` sets (prompt and/or flags).

    ``changes`` comes from ``parse(text, allow_empty_prompt=True)``: an empty prompt keeps
    the parent's.  Setting ``--ar``/``--size`` recomputes the size on resolve.
    """
    if not changes.prompt and changes == Request(prompt=""):
        raise RequestError("request.tweak_nothing")
    child = replace(parent, n=None).merged(changes)
    return child


def upscale(parent: Request, mode: str = "subtle", *, parent_id: str | None = None) -> Request:
    """A 2× hires pass over the parent image (the parent's pixels are the base pass).

    ``subtle`` keeps the image and adds detail; ``creative`` lets the model repaint more.
    A parent that itself started from a picture (``--image``, at its own size) has no base
    pass to replay: the upscale starts from the parent (``parent_id``, its stored id), so the
    recipe says exactly what was done.
    """
    if mode not in UPSCALE_STRENGTH:
        raise RequestError("request.bad_mode", value=mode, allowed=list(UPSCALE_STRENGTH))
    same_size_img2img = parent.image is not None and parent.hires is not None and parent.hires.scale == IMAGE_SCALE
    if parent.hires is not None and not same_size_img2img:
        raise RequestError("request.already_upscaled", size=_size(parent))
    strength = UPSCALE_STRENGTH[mode]
    hires = Hires(scale=DEFAULT_HIRES_SCALE, steps=refine_steps(parent.steps, strength), strength=strength)
    if parent.image is not None:
        if parent_id is None:
            raise RequestError("request.upscale_needs_id")
        return replace(parent, n=None, image=parent_id, hires=hires)
    return replace(parent, n=None, hires=hires)


def refine_steps(steps: int | None, strength: float) -> int | None:
    """The hires steps of an upscale: the parent's, raised (only) until the pass really runs a
    step — img2img runs ``int(steps × strength)`` of them, so a 2-step image upscaled at 0.35
    gets 3.  A button press never fails for a number the user did not choose."""
    if steps is None or strength <= 0:
        return steps
    while int(steps * strength) < 1:
        steps += 1
    return steps


def vary(parent: Request, mode: str = "subtle", *, vary_seed: int | None = None) -> Request:
    """Same seed plus a new variation seed at a ``subtle`` or ``strong`` strength.

    A1111's variation seed has one level: varying an image that is itself a variation
    draws a new variation of the same base seed (a sibling), at the chosen strength.
    """
    if mode not in VARY_STRENGTH:
        raise RequestError("request.bad_mode", value=mode, allowed=list(VARY_STRENGTH))
    if parent.image is not None:  # a variation seed shapes the base pass's noise; a picture replaced it
        raise RequestError("request.vary_from_image", image=parent.image)
    seed = vary_seed if vary_seed is not None else draw_seed()
    return replace(parent, n=None, chaos=None).with_variation(seed, VARY_STRENGTH[mode])


def _size(request: Request) -> str:
    size = request.output_size
    return f"{size[0]}x{size[1]}" if size else "?"

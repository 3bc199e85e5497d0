"""Batched = alone on the CPU: the UNet denoises each image of a batch on its own.

A CPU's matrix kernels choose their blocking, and so the order of their additions, from the
shapes of the whole call: the same row of a ``Linear`` comes out in a different last bit
when it is multiplied in a batch of 8 rather than 2 (the time embedding and every ResNet's
``time_emb_proj`` take ``(batch, features)`` inputs, where this shows).  Those bits grew
into pixels 1/255 apart between an image made in a batch and the same request alone.

So on the CPU a pipeline call's UNet forward is split into the rows of one image — its
unconditional and conditional halves with classifier-free guidance — and each is run as
the very call that image gets alone: same shapes, same kernels, same bits.  What a batch
still shares is everything around the UNet (the call itself, the scheduler, the model
load, the queue's turn); the VAE already decodes a batch image by image (slicing).
Accelerators keep the whole batch in one forward: that is where batching pays, and their
fp16 kernels differ in the last bits anyway.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch


def _rows(value: Any, index: list[int], batch: int) -> Any:
    """``value`` cut to the rows ``index`` when it is batched; anything else as it is."""
    if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == batch:
        return value[index]
    if isinstance(value, dict):
        return {key: _rows(item, index, batch) for key, item in value.items()}
    return value


def image_rows(batch: int, images: int) -> list[list[int]]:
    """The rows of each image in a UNet input of ``batch`` rows made for ``images`` images.

    diffusers stacks classifier-free guidance as ``[uncond₀ … uncondₙ₋₁, cond₀ … condₙ₋₁]``
    (``batch == 2n``): image *i* is rows ``[i, n + i]``, the order its own call has.  Without
    guidance (``batch == n``) it is row ``[i]``.  Any other layout is one group: not split.
    """
    if images > 1 and batch == 2 * images:
        return [[i, images + i] for i in range(images)]
    if images > 1 and batch == images:
        return [[i] for i in range(images)]
    return [list(range(batch))]


@contextmanager
def unet_per_image(unet: Any, *, images: int, enabled: bool = True) -> Iterator[None]:
    """For this block, run ``unet``'s forward once per image of a batch of ``images``."""
    if not enabled or images <= 1:
        yield
        return
    own = unet.__dict__.get("forward")  # an instance's forward (accelerate's hooks set one)
    forward = unet.forward

    def split_forward(sample: torch.Tensor, timestep: Any, *args: Any, **kwargs: Any) -> Any:
        batch = int(sample.shape[0])
        groups = image_rows(batch, images)
        if len(groups) == 1:
            return forward(sample, timestep, *args, **kwargs)
        outputs = [forward(sample[rows], _rows(timestep, rows, batch),
                           *(_rows(arg, rows, batch) for arg in args),
                           **{key: _rows(value, rows, batch) for key, value in kwargs.items()})
                   for rows in groups]
        order = torch.tensor([row for rows in groups for row in rows], device=sample.device)
        first = outputs[0]
        if isinstance(first, tuple):  # return_dict=False, what the pipelines ask for
            merged = torch.cat([out[0] for out in outputs])
            return (torch.empty_like(merged).index_copy_(0, order, merged), *first[1:])
        merged = torch.cat([out.sample for out in outputs])
        first.sample = torch.empty_like(merged).index_copy_(0, order, merged)
        return first

    unet.forward = split_forward
    try:
        yield
    finally:
        if own is not None:
            unet.forward = own
        else:
            del unet.forward  # the class's own forward again

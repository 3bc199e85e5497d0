"""Seamless tiling: circular padding on the convolutions, for one call only.

With ``--tile`` every convolution of the UNet and the VAE wraps around the image edges
(``padding_mode="circular"``), so the left edge continues the right one and the picture
tiles.  The modules are shared by every request, so the previous padding modes are put
back in ``finally``, whatever happens during the call.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

from torch import nn

# torch's own annotation of ``Conv2d.padding_mode``.
PaddingMode = Literal["zeros", "reflect", "replicate", "circular"]


@contextmanager
def circular_padding(*modules: Any, enabled: bool = True) -> Iterator[int]:
    """Switch every ``Conv2d`` under ``modules`` to circular padding; yields how many."""
    changed: list[tuple[nn.Conv2d, PaddingMode]] = []
    try:
        if enabled:
            for module in modules:
                if module is None:
                    continue
                for conv in module.modules():
                    if isinstance(conv, nn.Conv2d) and conv.padding_mode != "circular":
                        changed.append((conv, conv.padding_mode))
                        conv.padding_mode = "circular"
        yield len(changed)
    finally:
        for conv, mode in changed:
            conv.padding_mode = mode

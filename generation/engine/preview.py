"""Cheap progress previews: latents to RGB by a fixed linear map, no VAE.

A 4-channel SD latent is close to a linear function of the image colours, so a 4×3
matrix gives a recognisable thumbnail at latent resolution (1/8 of the image) for the cost
of one small matrix product.  Computed only when a progress consumer calls ``preview()``.
The coefficients are the widely used community fits for SD1/2 and SDXL latents; for the
tiny model they give coloured noise, which is all it makes.
"""

from __future__ import annotations

import math

import torch
from PIL import Image

_SD_FACTORS = (
    (0.3512, 0.2297, 0.3227),
    (0.3250, 0.4974, 0.2350),
    (-0.2829, 0.1762, 0.2721),
    (-0.2120, -0.2616, -0.7177),
)
_SDXL_FACTORS = (
    (0.3651, 0.4232, 0.4341),
    (-0.2533, -0.0042, 0.1068),
    (0.1076, 0.1111, -0.0362),
    (-0.3165, -0.2492, -0.2188),
)
_SDXL_BIAS = (0.1084, -0.0175, -0.0011)


def latents_to_preview(latents: torch.Tensor, family: str) -> Image.Image:
    """An RGB thumbnail of a batch of latents ``(B, 4, h, w)``, tiled in a near-square grid."""
    xl = family == "sdxl"
    factors = torch.tensor(_SDXL_FACTORS if xl else _SD_FACTORS, dtype=torch.float32)
    bias = torch.tensor(_SDXL_BIAS if xl else (0.0, 0.0, 0.0), dtype=torch.float32)
    with torch.no_grad():
        lat = latents.detach()[:, :4].float().cpu()
        rgb = torch.einsum("bchw,cr->bhwr", lat, factors) + bias
        rgb = ((rgb + 1.0) * 127.5).clamp(0, 255).to(torch.uint8).numpy()
    count, height, width = rgb.shape[0], rgb.shape[1], rgb.shape[2]
    columns = math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    sheet = Image.new("RGB", (columns * width, rows * height))
    for index in range(count):
        sheet.paste(Image.fromarray(rgb[index], "RGB"), ((index % columns) * width, (index // columns) * height))
    return sheet

"""Initial noise from seeds: reproducible on any device, per image, with variation seeds.

Each image's noise comes from its own CPU ``torch.Generator`` seeded with its seed and is
moved to the device afterwards: CUDA, MPS and CPU random streams differ, the CPU's is the
same everywhere, so a seed gives the same image on a laptop and on a GPU server (what
diffusers recommends, and what A1111 calls the "CPU" RNG source).  The same generators,
having drawn the initial noise, then feed the ancestral samplers' per-step noise: image
*i* of a batch never depends on the other images.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

_PARALLEL = 0.9995  # above this cosine, slerp is numerically a lerp


def generator(seed: int) -> torch.Generator:
    return torch.Generator(device="cpu").manual_seed(int(seed))


def seed_noise(seed: int, shape: Sequence[int]) -> tuple[torch.Tensor, torch.Generator]:
    """Noise of ``shape`` (leading batch dimension of 1) and the generator it left behind."""
    gen = generator(seed)
    return torch.randn(tuple(shape), generator=gen, dtype=torch.float32), gen


def slerp(t: float, start: torch.Tensor, end: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation from ``start`` (t=0) to ``end`` (t=1), treating each as one vector.

    Two Gaussian noises are nearly orthogonal; a straight blend would shrink their norm and
    wash the image out, slerp keeps it.  t=0 and t=1 return the ends exactly.
    """
    if t <= 0.0:
        return start.clone()
    if t >= 1.0:
        return end.clone()
    a = start.double().flatten()
    b = end.double().flatten()
    cos = torch.dot(a / a.norm(), b / b.norm()).clamp(-1.0, 1.0)
    if abs(float(cos)) > _PARALLEL:
        mixed = (1.0 - t) * a + t * b
    else:
        omega = torch.arccos(cos)
        sin = torch.sin(omega)
        mixed = (torch.sin((1.0 - t) * omega) / sin) * a + (torch.sin(t * omega) / sin) * b
    return mixed.view(start.shape).to(start.dtype)


def initial_noise(
    seeds: Sequence[int],
    shape: Sequence[int],
    *,
    vary_seeds: Sequence[int | None] | None = None,
    vary_strengths: Sequence[float | None] | None = None,
) -> tuple[torch.Tensor, list[torch.Generator]]:
    """Batch noise ``(len(seeds), *shape)`` on the CPU, and one generator per image.

    With a variation seed, image *i*'s noise is ``slerp(strength, noise(seed), noise(vary_seed))``
    (A1111's "Variation seed"): strength 1.0 is exactly the variation seed's noise.
    """
    noises: list[torch.Tensor] = []
    generators: list[torch.Generator] = []
    for index, seed in enumerate(seeds):
        noise, gen = seed_noise(seed, (1, *shape))
        vary_seed = vary_seeds[index] if vary_seeds is not None else None
        strength = vary_strengths[index] if vary_strengths is not None else None
        if vary_seed is not None and strength:
            other, _ = seed_noise(vary_seed, (1, *shape))
            noise = slerp(float(strength), noise, other)
        noises.append(noise)
        generators.append(gen)
    return torch.cat(noises, dim=0), generators

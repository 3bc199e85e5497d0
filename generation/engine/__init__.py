"""The engine: runs resolved requests on diffusers pipelines (imports torch).

* :mod:`~generation.engine.engine` — :class:`Engine`, :class:`StepInfo`, :class:`GeneratedImage` (``batch_key`` lives in :mod:`generation.batching`, torch-free);
* :mod:`~generation.engine.schedulers` — A1111 sampler name → diffusers scheduler;
* :mod:`~generation.engine.prompts` — weighted long-prompt encoding, clip skip, SDXL;
* :mod:`~generation.engine.noise` — per-image CPU noise, variation seeds;
* :mod:`~generation.engine.loras` — :class:`LoraResolver`, :class:`FolderLoraResolver`, per-call adapters;
* :mod:`~generation.engine.rows` — on the CPU, the UNet runs each image of a batch as alone (bit-identical);
* :mod:`~generation.engine.tiling`, :mod:`~generation.engine.preview` — seamless tiling, progress thumbnails.
"""

from __future__ import annotations

from generation.batching import BATCH_FIELDS, batch_key, hires_steps_run
from generation.engine.engine import Engine, GeneratedImage, StepInfo, Timings
from generation.engine.loras import FolderLoraResolver, LoraResolver, ResolvedLora
from generation.engine.schedulers import make_scheduler

__all__ = [
    "BATCH_FIELDS", "Engine", "FolderLoraResolver", "GeneratedImage", "LoraResolver", "ResolvedLora", "StepInfo",
    "Timings", "batch_key", "hires_steps_run", "make_scheduler",
]

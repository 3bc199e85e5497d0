"""LoRA training in resumable chunks: :class:`LoraTrainer`.

The technique is diffusers' own LoRA recipe: a PEFT LoRA on the UNet's attention
projections (``to_q``, ``to_k``, ``to_v``, ``to_out.0``; optionally the CLIP text
encoder's ``q/k/v/out_proj``), the epsilon (or v-prediction) loss against noise added by
a ``DDPMScheduler`` at a random timestep, AdamW, gradients clipped at 1.  Around it:

* **A private copy.** The trainer deep-copies the UNet (and the text encoder when it is
  trained) and adds the adapter to the copy; the shared pipeline the engine generates with
  is never modified, so generation in the same process is unaffected.  The VAE and a
  frozen text encoder are shared read-only.
* **Cached inputs.** Every image is fitted to its aspect-ratio bucket
  (:mod:`.buckets`) and encoded by the VAE once (the latent distribution's mean, so it
  is deterministic); captions (trigger word first) are encoded once when the text
  encoder is frozen.  Steps then cost one UNet forward and backward.
* **Chunks.** :meth:`LoraTrainer.run_chunk` trains for at most N steps or S seconds (or
  until ``should_abort()`` says so), then writes a checkpoint, so a shared queue can put
  interactive generation between chunks.
* **Checkpoints** (``workdir/checkpoint.safetensors``, one file written to a temporary
  name and renamed: a crash leaves the old one or the new one, never half) hold the LoRA
  weights, AdamW's state, the CPU random generator's state, the bucket sampler's position,
  the step, the loss average, and the fp16 loss scaler.  A trainer built on a workdir that
  has one resumes exactly there: on the same device and versions, a run interrupted any
  number of times ends with the same bits as an uninterrupted one (the tests check it on
  CPU).  All randomness — LoRA initialisation, caption dropout, noise, timesteps — comes
  from that one CPU generator and the seed; no global RNG is used.  A checkpoint made for
  another base model (hash), dataset (pixels and captions) or setting is refused;
  ``steps`` and the sample/checkpoint frequencies may change between chunks.
* **GPU.** On CUDA: fp16 autocast with a loss scaler (or bf16) and gradient checkpointing
  by default; the LoRA parameters stay float32.  Elsewhere float32, no checkpointing.
* **Progress.** After every step ``on_progress`` gets the step, the loss and its moving
  average, seconds per step and the ETA; every ``sample_every`` steps (and at step 0, the
  "before" picture, and at the end) a preview is drawn from a fixed prompt and seed with
  the in-training LoRA, saved as ``workdir/samples/step_NNNNNN.png`` and passed along.

Only SD1/SD2-layout models (``sd1``, ``sd2``, ``tiny``) train here; SDXL is refused with a
clear error.  A trainer is used by one thread at a time, and a chunk should not run while
the engine generates on the same model (the shared queue runs one job at a time anyway):
the VAE, tokenizer and a frozen text encoder are shared with the engine's pipeline, and a
LoRA the engine applies for a call would show in a preview drawn at that moment.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from generation.models._quiet import quiet_libraries
from generation.models.loading import LoadedModel
from generation.training.buckets import BucketSampler, fit_to_bucket, make_buckets, nearest_bucket
from generation.training.config import RESUMABLE_CHANGES, TrainingConfig
from generation.training.errors import TrainingError
from generation.training.lora_files import TEXT_ENCODER_TARGETS, UNET_TARGETS, LoraWeights
from generation.version import VERSION

CHECKPOINT_FILE = "checkpoint.safetensors"
SAMPLES_DIR = "samples"
CHECKPOINT_FORMAT = 1
TRAINABLE_FAMILIES = ("sd1", "sd2", "tiny")
ADAPTER = "default"
SAMPLE_SAMPLER = "Euler a"
SAMPLE_CFG = 7.0
MAX_GRAD_NORM = 1.0
WEIGHT_DECAY = 1e-2
LOSS_EMA = 0.9
_STATE_KEY = "brushwork.checkpoint"

DatasetItem = Any  # (image, caption) pairs, or objects with .image and .caption (ZipMember)


@dataclass(frozen=True, slots=True)
class TrainingProgress:
    """One step done.  ``sample`` is set on the steps that drew a preview."""

    step: int
    total: int
    loss: float
    loss_ema: float
    seconds_per_step: float
    eta_seconds: float
    sample: Image.Image | None = None
    sample_path: Path | None = None


@dataclass(frozen=True, slots=True)
class ChunkResult:
    """Where a chunk left the run.  ``loss`` is the moving average; ``done`` means all steps ran."""

    step: int
    total: int
    loss: float | None
    done: bool
    steps_run: int = 0
    seconds: float = 0.0
    eta_seconds: float = 0.0
    samples: tuple[Path, ...] = ()


@dataclass(frozen=True, slots=True)
class CheckpointInfo:
    """What a workdir's checkpoint says, read from its header only (no model, no tensors)."""

    step: int
    total: int
    loss: float | None
    base_model: str
    base_model_hash: str
    dataset_size: int
    seconds_per_step: float
    samples: tuple[str, ...]

    @property
    def done(self) -> bool:
        return self.step >= self.total


class LoraTrainer:
    """Trains a LoRA for ``model`` on ``dataset`` in ``workdir`` (see the module docstring).

    ``model`` is a :class:`LoadedModel`, or a callable returning one (called when a chunk
    needs it, so a trainer kept between chunks does not pin an evicted model); see
    :meth:`from_engine`.  ``dataset`` is a sequence of ``(image, caption)`` — PIL images or
    :class:`~generation.datasets.CleanImage` — or of :class:`~generation.datasets.ZipMember`.
    """

    def __init__(self, model: LoadedModel | Callable[[], LoadedModel], dataset: Sequence[DatasetItem],
                 config: TrainingConfig, workdir: str | os.PathLike[str], *, base_model: str | None = None,
                 model_hash: str | None = None, family: str | None = None) -> None:
        if not isinstance(config, TrainingConfig):
            raise TypeError(f"config must be a TrainingConfig, got {type(config).__name__}")
        if isinstance(model, LoadedModel):
            loaded = model
            self._load_model: Callable[[], LoadedModel] = lambda: loaded
            family = family or model.family
            base_model = base_model or model.spec.name
        else:
            self._load_model = model
            if family is None or base_model is None:
                loaded = model()
                family, base_model = family or loaded.family, base_model or loaded.spec.name
        if family not in TRAINABLE_FAMILIES:
            raise TrainingError("training.family_unsupported", model=base_model, family=family,
                                supported=list(TRAINABLE_FAMILIES))
        self.config = config
        self.family = family
        self.base_model = base_model
        self.model_hash = model_hash or _default_hash(model if isinstance(model, LoadedModel) else None)
        self.workdir = Path(workdir)
        self.items = _normalise_dataset(dataset)
        self.dataset_fingerprint = _fingerprint(self.items)
        self.step = 0
        self.loss_ema: float | None = None
        self.last_loss: float | None = None
        self.seconds_per_step = 0.0
        self.seconds_trained = 0.0
        self.sample_seconds = 0.0
        self.samples: list[str] = []
        self._sampler_state = {"epoch": 0, "cursor": 0}
        self._scaler_state: dict[str, Any] | None = None
        self._saved_step: int | None = None
        self._ready: _Prepared | None = None
        self.workdir.mkdir(parents=True, exist_ok=True)
        for stale in (*self.workdir.glob(".checkpoint-*.tmp"), *self.workdir.glob(f"{SAMPLES_DIR}/.sample-*.png")):
            stale.unlink(missing_ok=True)  # left by a crash in the middle of a write
        state = read_checkpoint_state(self.workdir)
        if state is not None:
            self._adopt(state)

    @classmethod
    def from_engine(cls, engine: Any, model_name: str, dataset: Sequence[DatasetItem], config: TrainingConfig,
                    workdir: str | os.PathLike[str]) -> LoraTrainer:
        """A trainer on one of ``engine``'s models, loaded through its cache when a chunk runs."""
        spec = engine.registry.get(model_name)
        return cls(lambda: engine.load(spec.name), dataset, config, workdir, base_model=spec.name,
                   model_hash=engine.model_hash(spec.name), family=engine.registry.family(spec.name))

    # ------------------------------------------------------------------ state
    @property
    def total_steps(self) -> int:
        return self.config.steps

    @property
    def done(self) -> bool:
        return self.step >= self.config.steps

    @property
    def checkpoint_path(self) -> Path:
        return self.workdir / CHECKPOINT_FILE

    @property
    def samples_dir(self) -> Path:
        return self.workdir / SAMPLES_DIR

    def eta_seconds(self) -> float:
        total, step, every = self.config.steps, self.step, self.config.sample_every
        remaining = max(0, total - step)
        samples_left = 0
        if every and remaining:  # previews at every multiple of ``every`` and at the last step
            samples_left = total // every - step // every + (1 if total % every else 0)
        return remaining * self.seconds_per_step + samples_left * self.sample_seconds

    def _adopt(self, state: dict[str, Any]) -> None:
        """Take over a checkpoint's counters after checking it belongs to this run."""
        if state.get("format") != CHECKPOINT_FORMAT:
            raise TrainingError("training.checkpoint_mismatch", path=str(self.checkpoint_path), field="format",
                                saved=state.get("format"), now=CHECKPOINT_FORMAT)
        checks = [("base_model_hash", state.get("base_model_hash"), self.model_hash),
                  ("dataset", state.get("dataset"), self.dataset_fingerprint)]
        saved_config = state.get("config") or {}
        now_config = self.config.to_dict()
        checks += [(f"config.{k}", saved_config.get(k), v) for k, v in now_config.items() if k not in RESUMABLE_CHANGES]
        for field_name, saved, now in checks:
            if saved != now:
                raise TrainingError("training.checkpoint_mismatch", path=str(self.checkpoint_path),
                                    field=field_name, saved=_short(saved), now=_short(now))
        self.step = int(state["step"])
        self.loss_ema = state.get("loss_ema")
        self.last_loss = state.get("last_loss")
        self.seconds_per_step = float(state.get("seconds_per_step") or 0.0)
        self.seconds_trained = float(state.get("seconds_trained") or 0.0)
        self.sample_seconds = float(state.get("sample_seconds") or 0.0)
        self.samples = list(state.get("samples") or [])
        self._sampler_state = dict(state["sampler"])
        self._scaler_state = state.get("scaler")
        self._saved_step = self.step

    # ------------------------------------------------------------------ running
    def run_chunk(self, max_steps: int | None = None, max_seconds: float | None = None, *,
                  should_abort: Callable[[], bool] | None = None,
                  on_progress: Callable[[TrainingProgress], None] | None = None) -> ChunkResult:
        """Train until ``max_steps`` more steps ran, ``max_seconds`` passed (at least one step
        runs), ``should_abort()`` returns True (checked before every step; the chunk then ends
        normally, checkpointed — it is a pause, not an error), or the run is done.

        The checkpoint is written at the end of every chunk (and every
        ``config.checkpoint_every`` steps).  Raises :class:`TrainingError` if the loss
        becomes NaN or infinite (the last checkpoint stays as it was).
        """
        started = time.perf_counter()
        if self.done:
            return self._result(0, 0.0, ())
        ready = self._prepare()
        samples: list[Path] = []
        if self.step == 0 and self.config.sample_every and not self._has_sample(0):
            samples.append(self._take_sample(ready)[1])  # the "before" picture
        steps_run = 0
        while not self.done:
            if max_steps is not None and steps_run >= max_steps:
                break
            if max_seconds is not None and steps_run and time.perf_counter() - started >= max_seconds:
                break
            if should_abort is not None and should_abort():
                break
            step_started = time.perf_counter()
            try:
                loss = self._train_step(ready)
            except BaseException:
                self._rewind()  # a half-done step must not be checkpointed or continued
                raise
            elapsed = time.perf_counter() - step_started
            self.step += 1
            steps_run += 1
            self.last_loss = loss
            self.loss_ema = loss if self.loss_ema is None else LOSS_EMA * self.loss_ema + (1 - LOSS_EMA) * loss
            self.seconds_trained += elapsed
            self.seconds_per_step = elapsed if not self.seconds_per_step else (
                LOSS_EMA * self.seconds_per_step + (1 - LOSS_EMA) * elapsed)
            image = path = None
            every = self.config.sample_every
            if every and (self.step % every == 0 or self.done):
                image, path = self._take_sample(ready)
                samples.append(path)
            if self.config.checkpoint_every and self.step % self.config.checkpoint_every == 0:
                self._save_checkpoint(ready)
            if on_progress is not None:
                on_progress(TrainingProgress(self.step, self.config.steps, loss, self.loss_ema,
                                             self.seconds_per_step, self.eta_seconds(), image, path))
        if self._saved_step != self.step:
            self._save_checkpoint(ready)
        return self._result(steps_run, time.perf_counter() - started, tuple(samples))

    def _result(self, steps_run: int, seconds: float, samples: tuple[Path, ...]) -> ChunkResult:
        return ChunkResult(step=self.step, total=self.config.steps, loss=self.loss_ema, done=self.done,
                           steps_run=steps_run, seconds=seconds, eta_seconds=self.eta_seconds(), samples=samples)

    def _rewind(self) -> None:
        """Forget everything since the last checkpoint: the next chunk starts from it again."""
        self._ready = None
        state = read_checkpoint_state(self.workdir)
        if state is not None:
            self._adopt(state)
            return
        self.step, self.loss_ema, self.last_loss, self.samples = 0, None, None, []
        self._sampler_state = {"epoch": 0, "cursor": 0}
        self._scaler_state = None
        self._saved_step = None

    def close(self) -> None:
        """Free the model copies, caches and optimizer (the next chunk rebuilds them from the checkpoint)."""
        if self._ready is not None and self._saved_step != self.step:
            self._save_checkpoint(self._ready)
        self._ready = None

    # ------------------------------------------------------------------ preparation
    def _prepare(self) -> _Prepared:
        if self._ready is None:
            self._ready = _Prepared.build(self)
        return self._ready

    def _train_step(self, ready: _Prepared) -> float:
        config = self.config
        batch = ready.sampler.next_batch()
        latents = torch.cat([ready.latents[i] for i in batch])
        count = len(batch)
        gen = ready.generator
        dropped = torch.rand(count, generator=gen) < config.caption_dropout
        texts = ["" if bool(dropped[j]) else ready.texts[i] for j, i in enumerate(batch)]
        noise = torch.randn(latents.shape, generator=gen, dtype=torch.float32).to(ready.device)
        timesteps = torch.randint(0, ready.train_timesteps, (count,), generator=gen).to(ready.device)
        noisy = ready.noise_scheduler.add_noise(latents, noise, timesteps)
        if ready.prediction_type == "v_prediction":
            target = ready.noise_scheduler.get_velocity(latents, noise, timesteps)
        else:
            target = noise
        with ready.autocast():
            conditioning = ready.encode_text(texts)
            prediction = ready.unet(noisy.to(ready.input_dtype), timesteps, encoder_hidden_states=conditioning,
                                    return_dict=False)[0]
        loss = torch.nn.functional.mse_loss(prediction.float(), target.float())
        value = float(loss.detach())
        if not math.isfinite(value):
            raise TrainingError("training.diverged", step=self.step + 1, lr=config.learning_rate)
        params = [p for _, p in ready.params]
        if ready.scaler is not None:
            ready.scaler.scale(loss).backward()
            ready.scaler.unscale_(ready.optimizer)
            torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM)
            ready.scaler.step(ready.optimizer)
            ready.scaler.update()
        else:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM)
            ready.optimizer.step()
        ready.optimizer.zero_grad(set_to_none=True)
        return value

    # ------------------------------------------------------------------ samples
    def sample(self, prompt: str | None = None, *, seed: int | None = None, steps: int | None = None) -> Image.Image:
        """A preview with the LoRA as trained so far (default: the configured prompt and seed)."""
        return self._prepare().draw(prompt or self.sample_prompt, self.config.seed if seed is None else seed,
                                    steps or self.config.sample_steps)

    @property
    def sample_prompt(self) -> str:
        if self.config.sample_prompt:
            return self.config.sample_prompt
        first = self.items[0][1]
        return self.config.caption_for(first) or "a picture"

    def _has_sample(self, step: int) -> bool:
        return (self.samples_dir / _sample_name(step)).is_file()

    def _take_sample(self, ready: _Prepared) -> tuple[Image.Image, Path]:
        started = time.perf_counter()
        image = ready.draw(self.sample_prompt, self.config.seed, self.config.sample_steps)
        self.sample_seconds = time.perf_counter() - started
        path = self.samples_dir / _sample_name(self.step)
        _atomic_png(image, path)
        if path.name not in self.samples:
            self.samples.append(path.name)
        return image, path

    # ------------------------------------------------------------------ weights
    def lora_weights(self) -> LoraWeights:
        """The LoRA as trained so far (from memory, or from the checkpoint without loading a model)."""
        if self._ready is not None:
            named = {name: p.detach().to("cpu", torch.float32).clone() for name, p in self._ready.params}
        elif self.checkpoint_path.is_file():
            from safetensors.torch import load_file

            stored = load_file(str(self.checkpoint_path))
            named = {k[len("param."):]: v.float() for k, v in stored.items() if k.startswith("param.")}
        else:
            raise TrainingError("training.nothing_trained", path=str(self.workdir))
        tensors = {name.replace(f".{ADAPTER}.", "."): value for name, value in named.items()}
        return LoraWeights(tensors=tensors, rank=self.config.rank, alpha=self.config.alpha,
                           metadata=self.metadata())

    def metadata(self) -> dict[str, str]:
        """What an exported file records about this run (``brushwork.*``, all strings)."""
        config = self.config
        targets = list(UNET_TARGETS) + (list(TEXT_ENCODER_TARGETS) if config.train_text_encoder else [])
        return {
            "brushwork.version": VERSION,
            "brushwork.base_model": self.base_model,
            "brushwork.base_model_hash": self.model_hash,
            "brushwork.family": self.family,
            "brushwork.rank": str(config.rank),
            "brushwork.alpha": _plain(config.alpha),
            "brushwork.steps": str(self.step),
            "brushwork.dataset_size": str(len(self.items)),
            "brushwork.dataset_sha256": self.dataset_fingerprint,
            "brushwork.trigger_words": json.dumps([config.trigger_word] if config.trigger_word else [],
                                                  ensure_ascii=False),
            "brushwork.resolution": str(config.resolution),
            "brushwork.learning_rate": _plain(config.learning_rate),
            "brushwork.batch_size": str(config.batch_size),
            "brushwork.caption_dropout": _plain(config.caption_dropout),
            "brushwork.train_text_encoder": "true" if config.train_text_encoder else "false",
            "brushwork.targets": json.dumps(targets),
            "brushwork.seed": str(config.seed),
        }

    # ------------------------------------------------------------------ checkpoints
    def _save_checkpoint(self, ready: _Prepared) -> None:
        tensors: dict[str, torch.Tensor] = {}
        for name, param in ready.params:
            tensors[f"param.{name}"] = param.detach().to("cpu").contiguous()
        for index, values in ready.optimizer.state_dict()["state"].items():
            for key, value in values.items():
                tensor = value if isinstance(value, torch.Tensor) else torch.tensor(value)
                tensors[f"optim.{index}.{key}"] = tensor.detach().to("cpu").contiguous()
        tensors["rng.generator"] = ready.generator.get_state()
        state = {
            "format": CHECKPOINT_FORMAT,
            "step": self.step,
            "total": self.config.steps,
            "sampler": ready.sampler.state(),
            "loss_ema": self.loss_ema,
            "last_loss": self.last_loss,
            "seconds_per_step": self.seconds_per_step,
            "seconds_trained": self.seconds_trained,
            "sample_seconds": self.sample_seconds,
            "samples": self.samples,
            "config": self.config.to_dict(),
            "dataset": self.dataset_fingerprint,
            "dataset_size": len(self.items),
            "base_model": self.base_model,
            "base_model_hash": self.model_hash,
            "scaler": ready.scaler.state_dict() if ready.scaler is not None else None,
            "params": [name for name, _ in ready.params],
            "saved_at": time.time(),
        }
        _atomic_safetensors(tensors, self.checkpoint_path, {_STATE_KEY: json.dumps(state)})
        self._saved_step = self.step
        self._sampler_state = dict(state["sampler"])  # what a re-prepared run (after close) starts from
        self._scaler_state = state["scaler"]

    def _restore(self, ready: _Prepared) -> None:
        """Load the checkpoint's tensors into a freshly prepared run."""
        from safetensors.torch import load_file

        stored = load_file(str(self.checkpoint_path))
        names = [name for name, _ in ready.params]
        if sorted(names) != sorted(k[len("param."):] for k in stored if k.startswith("param.")):
            raise TrainingError("training.checkpoint_mismatch", path=str(self.checkpoint_path), field="params",
                                saved="other modules", now="these modules")
        with torch.no_grad():
            for name, param in ready.params:
                param.copy_(stored[f"param.{name}"].to(param.device, param.dtype))
        state_dict = ready.optimizer.state_dict()
        restored: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in stored.items():
            if key.startswith("optim."):
                _, index, name = key.split(".", 2)
                restored.setdefault(int(index), {})[name] = value
        state_dict["state"] = restored
        ready.optimizer.load_state_dict(state_dict)
        ready.generator.set_state(stored["rng.generator"])
        if ready.scaler is not None and self._scaler_state:
            ready.scaler.load_state_dict(self._scaler_state)


# ---------------------------------------------------------------------- the prepared run


class _Prepared:
    """Everything a chunk needs in memory: model copies, caches, optimizer, generator.

    The diffusers/transformers modules are ``Any``, as the pipelines they come from are
    (:class:`LoadedModel`): their annotations do not describe how they are called here.
    """

    model: LoadedModel
    device: torch.device
    input_dtype: torch.dtype  # what the UNet (and a trained text encoder) take in
    autocast_dtype: torch.dtype | None  # None: no mixed precision
    unet: Any  # a private copy of the pipeline's UNet, with the LoRA adapter
    text_encoder: Any | None  # a private copy with an adapter, or None: the text encoder stays frozen
    noise_scheduler: Any  # a DDPMScheduler
    train_timesteps: int
    prediction_type: str
    optimizer: torch.optim.AdamW
    scaler: torch.amp.GradScaler | None  # fp16 only
    generator: torch.Generator  # CPU: every random draw of the run
    tokenizer: Any
    frozen_text_encoder: Any  # the shared pipeline's (read-only)
    texts: list[str]  # the items' captions (trigger word first)
    sampler: BucketSampler
    latents: list[torch.Tensor]  # one per item, in its bucket's size
    resolution: int
    family: str | None
    _embeddings: dict[str, torch.Tensor]  # caption → encoding, when the text encoder is frozen
    _pipe: Any  # the preview pipeline, made on the first draw

    def __init__(self) -> None:
        self.params: list[tuple[str, torch.nn.Parameter]] = []

    @classmethod
    def build(cls, trainer: LoraTrainer) -> _Prepared:
        self = cls()
        config = trainer.config
        model = trainer._load_model()
        self.model = model
        self.device = model.device
        cuda = self.device.type == "cuda"
        precision = config.mixed_precision
        if precision == "auto":
            precision = "fp16" if cuda else "no"
        if precision != "no" and not cuda:
            raise TrainingError("training.mixed_precision_needs_cuda", value=precision, device=str(self.device))
        if precision == "bf16" and not torch.cuda.is_bf16_supported():
            raise TrainingError("training.bf16_unsupported", device=str(self.device))
        weight_dtype = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
        self.input_dtype = weight_dtype
        self.autocast_dtype = None if precision == "no" else weight_dtype
        checkpointing = config.gradient_checkpointing if config.gradient_checkpointing is not None else cuda
        pipe = model.txt2img
        with quiet_libraries():
            # diffusers' top-level names are lazy, not re-exports a type checker sees: the defining modules
            from diffusers.schedulers.scheduling_ddpm import DDPMScheduler
            from peft import LoraConfig

            self.unet = _private_copy(pipe.unet, self.device, weight_dtype)
            with torch.random.fork_rng(devices=[]):  # the LoRA's initial A matrices come from the seed
                torch.manual_seed(config.seed)
                # (peft annotates lora_alpha as int; a float alpha is used as it is)
                self.unet.add_adapter(LoraConfig(r=config.rank,
                                                 lora_alpha=config.alpha,  # pyright: ignore[reportArgumentType]
                                                 init_lora_weights=True, target_modules=list(UNET_TARGETS)),
                                      adapter_name=ADAPTER)
            self.text_encoder = None
            if config.train_text_encoder:
                from peft import inject_adapter_in_model

                text_encoder = self.text_encoder = _private_copy(pipe.text_encoder, self.device, weight_dtype)
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(config.seed + 1)
                    inject_adapter_in_model(LoraConfig(r=config.rank,
                                                       lora_alpha=config.alpha,  # pyright: ignore[reportArgumentType]
                                                       init_lora_weights=True,
                                                       target_modules=list(TEXT_ENCODER_TARGETS)),
                                            text_encoder, adapter_name=ADAPTER)
            self.noise_scheduler = DDPMScheduler.from_config(
                {k: v for k, v in model.scheduler_config.items() if not k.startswith("_")})
        self.train_timesteps = int(self.noise_scheduler.config.num_train_timesteps)
        self.prediction_type = self.noise_scheduler.config.prediction_type
        for prefix, module in (("unet", self.unet), ("text_encoder", self.text_encoder)):
            if module is None:
                continue
            for name, param in module.named_parameters():
                if "lora_" in name:
                    param.requires_grad_(True)
                    if param.dtype != torch.float32:
                        param.data = param.data.float()  # trainable weights stay float32 under autocast
                    self.params.append((f"{prefix}.{name}", param))
                else:
                    param.requires_grad_(False)
            module.train()
        if checkpointing:
            self.unet.enable_gradient_checkpointing()
            if self.text_encoder is not None:
                _checkpoint_text_encoder(self.text_encoder)
        self.optimizer = torch.optim.AdamW([p for _, p in self.params], lr=config.learning_rate,
                                           weight_decay=WEIGHT_DECAY)
        self.scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
        self.generator = torch.Generator(device="cpu").manual_seed(config.seed)
        self.tokenizer = pipe.tokenizer
        self.frozen_text_encoder = pipe.text_encoder
        self.texts = [config.caption_for(caption) for _, caption in trainer.items]
        buckets = make_buckets(config.resolution)
        item_buckets = [nearest_bucket(image.width, image.height, buckets) for image, _ in trainer.items]
        self.sampler = BucketSampler(item_buckets, batch_size=config.batch_size, seed=config.seed,
                                     **trainer._sampler_state)
        self.latents = _encode_images(pipe.vae, [image for image, _ in trainer.items], item_buckets, self.device)
        self._embeddings = {}
        if self.text_encoder is None:
            for text in sorted({*self.texts, ""}):
                self._embeddings[text] = self._run_text_encoder(self.frozen_text_encoder, [text]).detach()
        self.resolution = config.resolution
        self.family = trainer.family
        self._pipe = None
        if trainer.checkpoint_path.is_file() and trainer.step > 0:
            trainer._restore(self)
        return self

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def _token_ids(self, texts: list[str]) -> torch.Tensor:
        return self.tokenizer(texts, padding="max_length", max_length=self.tokenizer.model_max_length,
                              truncation=True, return_tensors="pt").input_ids.to(self.device)

    def _run_text_encoder(self, encoder: Any, texts: list[str]) -> torch.Tensor:
        with torch.no_grad():
            return encoder(self._token_ids(texts))[0].to(self.input_dtype)

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        if self.text_encoder is None:
            return torch.cat([self._embeddings[text] for text in texts])
        return self.text_encoder(self._token_ids(texts))[0]

    def draw(self, prompt: str, seed: int, steps: int) -> Image.Image:
        """One preview through a pipeline made of the shared VAE/tokenizer and the trained copies."""
        from generation.engine.noise import initial_noise
        from generation.engine.prompts import PromptEncoder
        from generation.engine.schedulers import make_scheduler

        model = self.model
        if self._pipe is None:
            with quiet_libraries():
                from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import (
                    StableDiffusionPipeline,
                )

                pipe = model.txt2img
                self._pipe = StableDiffusionPipeline(
                    vae=pipe.vae, text_encoder=self.text_encoder or pipe.text_encoder, tokenizer=pipe.tokenizer,
                    unet=self.unet, scheduler=make_scheduler(SAMPLE_SAMPLER, model.scheduler_config),
                    # (diffusers types these two optional components as required)
                    safety_checker=None, feature_extractor=None,  # pyright: ignore[reportArgumentType]
                    requires_safety_checker=False)
                self._pipe.set_progress_bar_config(disable=True)
        pipe = self._pipe
        pipe.scheduler = make_scheduler(SAMPLE_SAMPLER, model.scheduler_config, noise_seeds=[seed])
        factor = int(pipe.vae_scale_factor)
        size = self.resolution
        noise, generators = initial_noise([seed], (int(self.unet.config.in_channels), size // factor, size // factor))
        modules = [m for m in (self.unet, self.text_encoder) if m is not None]
        for module in modules:
            module.eval()
        mixed = model.dtype != torch.float32 or self.input_dtype != torch.float32
        autocast = torch.autocast(self.device.type, dtype=model.dtype if model.dtype != torch.float32
                                  else self.input_dtype) if mixed else contextlib.nullcontext()
        try:
            with torch.no_grad(), autocast, quiet_libraries():
                encoded = PromptEncoder(pipe, model.family).encode(prompt, "")
                image = pipe(prompt_embeds=encoded.embeds, negative_prompt_embeds=encoded.negative,
                             latents=noise.to(self.device, model.dtype), generator=generators, height=size,
                             width=size, num_inference_steps=steps, guidance_scale=SAMPLE_CFG,
                             output_type="pil").images[0]
        finally:
            for module in modules:
                module.train()
        return image


# ---------------------------------------------------------------------- helpers


def read_checkpoint_state(workdir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The JSON state stored in a workdir's checkpoint header, or None if there is none."""
    path = Path(workdir) / CHECKPOINT_FILE
    if not path.is_file():
        return None
    from generation.training.lora_files import ANY_DTYPE_SIZES, LoraFileError, read_header

    try:
        header = read_header(path, max_bytes=1 << 40, dtypes=ANY_DTYPE_SIZES)
        return json.loads(header.metadata[_STATE_KEY])
    except LoraFileError as exc:
        raise TrainingError("training.checkpoint_unreadable", path=str(path), detail=exc.message()) from None
    except (KeyError, ValueError) as exc:
        raise TrainingError("training.checkpoint_unreadable", path=str(path), detail=str(exc)[:200]) from None


def checkpoint_info(workdir: str | os.PathLike[str]) -> CheckpointInfo | None:
    """A workdir's progress without loading anything heavy (for status lines after a restart)."""
    state = read_checkpoint_state(workdir)
    if state is None:
        return None
    return CheckpointInfo(step=int(state["step"]), total=int(state["total"]), loss=state.get("loss_ema"),
                          base_model=str(state.get("base_model")), base_model_hash=str(state.get("base_model_hash")),
                          dataset_size=int(state.get("dataset_size") or 0),
                          seconds_per_step=float(state.get("seconds_per_step") or 0.0),
                          samples=tuple(state.get("samples") or ()))


def _private_copy(module: Any, device: torch.device, dtype: torch.dtype) -> Any:
    if getattr(module, "peft_config", None):  # a LoRA is being applied by a generation right now
        raise TrainingError("training.model_busy")
    copied = copy.deepcopy(module).to(device=device)
    if copied.dtype != dtype:
        copied = copied.to(dtype=dtype)
    copied.requires_grad_(False)
    return copied


def _checkpoint_text_encoder(encoder: Any) -> None:
    """Non-reentrant activation checkpointing (reentrant needs inputs that require grad, or drops gradients)."""
    options = {"use_reentrant": False}
    if hasattr(encoder, "activation_checkpointing_enable"):  # transformers 5
        encoder.activation_checkpointing_enable(activation_checkpointing_kwargs=options)
    else:
        encoder.gradient_checkpointing_enable(gradient_checkpointing_kwargs=options)


def _encode_images(vae: Any, images: list[Image.Image], buckets: list[tuple[int, int]], device: torch.device
                   ) -> list[torch.Tensor]:
    """Each image fitted to its bucket and encoded once: the latent distribution's mean, scaled."""
    encoder = vae if vae.dtype == torch.float32 else copy.deepcopy(vae).to(torch.float32)  # half VAEs overflow
    scaling = float(vae.config.scaling_factor)
    shift = float(getattr(vae.config, "shift_factor", None) or 0.0)
    out = []
    with torch.no_grad():
        for image, bucket in zip(images, buckets, strict=True):
            pixels = np.asarray(fit_to_bucket(image, bucket), dtype=np.float32) / 127.5 - 1.0
            tensor = torch.from_numpy(pixels).permute(2, 0, 1).unsqueeze(0).to(device)
            latent = encoder.encode(tensor).latent_dist.mode()
            out.append(((latent - shift) * scaling).float())
    return out


def _normalise_dataset(dataset: Sequence[DatasetItem]) -> list[tuple[Image.Image, str | None]]:
    items: list[tuple[Image.Image, str | None]] = []
    for item in dataset:
        if hasattr(item, "image") and hasattr(item, "caption"):
            image, caption = item.image, item.caption
        else:
            image, caption = item
        if hasattr(image, "to_pil"):
            image = image.to_pil()
        if not isinstance(image, Image.Image):
            raise TypeError(f"dataset images must be PIL images or CleanImage, got {type(image).__name__}")
        if caption is not None and not isinstance(caption, str):
            raise TypeError("captions must be text or None")
        items.append((image.convert("RGB"), caption))
    if not items:
        raise TrainingError("training.empty_dataset")
    return items


def _fingerprint(items: list[tuple[Image.Image, str | None]]) -> str:
    """sha256 over every image's pixels (as :class:`CleanImage` hashes them) and caption, in order."""
    digest = hashlib.sha256()
    for image, caption in items:
        pixels = hashlib.sha256(f"RGB {image.width}x{image.height}\n".encode("ascii"))
        pixels.update(image.tobytes())
        digest.update(pixels.hexdigest().encode("ascii"))
        digest.update(b"\0" + (caption or "").encode("utf-8") + b"\n")
    return digest.hexdigest()


def _default_hash(model: LoadedModel | None) -> str:
    if model is not None and model.spec.source == "builtin:tiny":
        from generation.models.hashing import MODEL_HASH_LENGTH
        from generation.models.tiny import content_hash

        return content_hash()[:MODEL_HASH_LENGTH]
    return "unknown"


def _sample_name(step: int) -> str:
    return f"step_{step:06d}.png"


def _atomic_png(image: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".sample-", suffix=".png", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            image.save(handle, format="PNG")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _atomic_safetensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    from safetensors.torch import save_file

    fd, tmp = tempfile.mkstemp(prefix=".checkpoint-", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        with contextlib.suppress(OSError):  # make the rename itself durable (POSIX)
            directory = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= 24 else text[:21] + "…"


def _plain(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))

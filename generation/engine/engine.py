"""The engine: resolved requests in, images out, one pipeline call per batch.

:meth:`Engine.generate` takes single-image requests that can share a pipeline call
(:func:`batch_key` says which can), and runs them together with per-image prompts,
negative prompts and seeds.  Around the diffusers call it adds what A1111 users expect:
weighted long prompts and clip skip (:mod:`.prompts`), seeds reproducible on any device and
variation seeds (:mod:`.noise`), the hires fix, seamless tiling (:mod:`.tiling`), LoRAs
applied for the call only (:mod:`.loras`), progress with cheap previews, and cancellation.

Every image is a function of its own request only: the same request gives the same pixels
alone or in a batch, today or after a restart (on the same device type).  That is what
lets a user reroll, vary or upscale any stored image.

Calls are serialised by a lock: the pipelines and their modules are shared and each call
changes them for its duration (scheduler, LoRA adapters, padding modes).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import torch
from PIL import Image

from generation.batching import batch_key, hires_steps_run
from generation.engine.loras import (
    LoraResolverLike,
    LoraStateCache,
    LoraVerdicts,
    ResolvedLora,
    applied_loras,
    check_lora,
    resolve_lora,
)
from generation.engine.noise import generator, initial_noise
from generation.engine.preview import latents_to_preview
from generation.engine.prompts import EncodedPrompt, PromptEncoder
from generation.engine.rows import unet_per_image
from generation.engine.schedulers import make_scheduler
from generation.engine.tiling import circular_padding
from generation.errors import Cancelled, ModelError, OutOfMemoryError, RequestError
from generation.models._quiet import quiet_libraries
from generation.models.cache import ModelCache, free_accelerator_memory
from generation.models.hashing import MODEL_HASH_LENGTH, FileHasher
from generation.models.loading import (
    LoadedModel,
    load_model,
    local_folder_for_hash,
    resolve_device,
    resolve_dtype,
)
from generation.models.registry import ModelRegistry
from generation.models.spec import SourceKind
from generation.profiles import ModelProfile
from generation.request import Request, hires_size

log = logging.getLogger(__name__)

Phase = Literal["base", "hires"]
_T = TypeVar("_T")

# Above this many output pixels the VAE decodes in tiles (a 2048² decode needs >10 GB otherwise).
VAE_TILING_PIXELS = 1536 * 1536


@dataclass(frozen=True, slots=True)
class StepInfo:
    """Progress of one step.  ``preview()`` builds a thumbnail of the batch, only when called.

    Call ``preview`` from the callback (or soon after): it reads the step's latents.
    ``preview(only=[i, …])`` shows only the images of those requests (positions in the list
    given to :meth:`Engine.generate`) — the queue batches different users' jobs together,
    and each must see only its own pictures; it returns None when none of them is in this
    step (prompts of different lengths run as separate groups).  ``images`` lists the
    requests this step is denoising.
    """

    phase: Phase
    step: int
    total: int
    overall_step: int
    overall_total: int
    preview: Callable[..., Image.Image | None] = field(repr=False, compare=False)
    images: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Timings:
    """Seconds spent in each part of the call that made an image (shared by its batch)."""

    load_s: float = 0.0
    encode_s: float = 0.0
    base_s: float = 0.0
    hires_s: float = 0.0
    total_s: float = 0.0

    def to_dict(self) -> dict[str, float]:
        return {k: round(v, 4) for k, v in asdict(self).items()}


@dataclass(frozen=True, slots=True)
class GeneratedImage:
    image: Image.Image
    request: Request
    model_hash: str
    lora_hashes: dict[str, str]
    timings: Timings


class Engine:
    """Runs generation requests on the models of a registry (see the module docstring)."""

    def __init__(
        self,
        registry: ModelRegistry,
        *,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        cache_dir: Path | str | None = None,
        max_loaded_models: int = 1,
        lora_resolver: LoraResolverLike | None = None,
        vae_tiling: bool | None = None,
        max_model_bytes: int | None = None,
    ) -> None:
        self.registry = registry
        self.device = resolve_device(device)
        self._dtype = dtype
        resolve_dtype(self.device, dtype)  # a bad precision is reported now, not at the first image
        self.hasher = FileHasher(cache_dir)
        self.lora_resolver = lora_resolver
        self.vae_tiling = vae_tiling  # None: automatic above VAE_TILING_PIXELS
        # Bounded by count, and by the weights' memory when max_model_bytes is given.
        self._models: ModelCache[str, LoadedModel] = ModelCache(
            max_loaded_models, max_bytes=max_model_bytes, size_of=model_bytes if max_model_bytes else None)
        self._lora_states = LoraStateCache()
        self.lora_verdicts = LoraVerdicts(cache_dir)
        self._hashes: dict[str, str] = {}
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ models
    def profile(self, name: str) -> ModelProfile:
        return self.registry.profile(name)

    def load(self, name: str) -> LoadedModel:
        """The loaded model (loading it, and evicting the least recently used, if needed).

        Running out of accelerator memory while loading unloads every other model and tries
        once more; if it still does not fit, :class:`~generation.errors.OutOfMemoryError`
        (``engine.out_of_memory_loading``): fewer images per call cannot help, so the queue
        fails the job at once with advice instead of retrying smaller batches.
        """
        spec = self.registry.get(name)

        def loader() -> LoadedModel:
            family = self.registry.family(spec.name)
            dtype = resolve_dtype(self.device, spec.dtype, self._dtype)
            return load_model(spec, family=family, device=self.device, dtype=dtype)

        for attempt in range(2):
            try:
                return self._models.get_or_load(spec.name, loader)
            except BaseException as error:
                if not _is_out_of_memory(error):
                    raise
            # Outside the except block: the half-loaded weights the traceback held are gone.
            others = [key for key in self._models.keys() if key != spec.name]
            if attempt == 0 and others:
                log.warning("out of memory loading %s; unloading %s and trying again", spec.name, ", ".join(others))
                self._models.clear()
                free_accelerator_memory()
                continue
            break
        free_accelerator_memory()
        raise OutOfMemoryError("engine.out_of_memory_loading", model=spec.name, device=str(self.device))

    def loaded_models(self) -> list[str]:
        return self._models.keys()

    def unload_all(self) -> None:
        self._models.clear()

    def model_hash(self, name: str) -> str:
        """A1111's short model hash (10 hex digits) of a model, remembered per name."""
        spec = self.registry.get(name)
        cached = self._hashes.get(spec.name)
        if cached is not None:
            return cached
        if spec.kind is SourceKind.BUILTIN:
            from generation.models.tiny import content_hash

            value = content_hash()[:MODEL_HASH_LENGTH]
        else:
            loaded = self._models.get(spec.name)
            path = loaded.local_path if loaded is not None and loaded.local_path else local_folder_for_hash(spec)
            if path is None:  # pragma: no cover - only built-ins have no files
                raise ModelError("model.not_found", path=spec.source)
            value = self.hasher.model_hash(path) if path.is_file() else self.hasher.folder_hash(
                path, variant=spec.variant)
        self._hashes[spec.name] = value
        return value

    def model_for_hash(self, model_hash: str) -> str | None:
        """The registered model whose A1111 short hash is ``model_hash`` (its first 10 hex
        digits; a full sha256 works too), or ``None``.  Only models whose files are here are
        hashed, never downloaded; hashing a large checkpoint the first time takes seconds
        (then the hash cache answers)."""
        wanted = model_hash.strip().lower()
        if len(wanted) < MODEL_HASH_LENGTH or any(c not in "0123456789abcdef" for c in wanted):
            return None  # A1111's old 8-digit hash is another algorithm: it matches nothing here
        wanted = wanted[:MODEL_HASH_LENGTH]
        for name in self.registry.names():
            try:
                if self.model_hash(name) == wanted:
                    return name
            except (ModelError, OSError):  # not downloaded, or its file is gone: not this one
                continue
        return None

    # ------------------------------------------------------------------ LoRA files
    def check_loras(self, loras: Sequence[ResolvedLora], model: str) -> None:
        """Refuse now, with one line, a LoRA file that a call on ``model`` would refuse.

        For planning, before a job is queued: the file itself (header, kind, finite weights:
        read once per file content), and its keys and shapes against ``model`` when that is
        known without loading it — remembered from an earlier call (any process sharing the
        cache folder), or judged now when the model is loaded in this process.  What is not
        known yet is judged by :meth:`generate` right after the model loads, before diffusers
        sees the file.  Raises :class:`~generation.training.errors.LoraFileError` or
        :class:`~generation.errors.ModelError`.
        """
        spec = self.registry.get(model)
        hashes = [self._check_lora_file(lora) for lora in loras]
        loaded = self._models.get(spec.name)
        for lora, sha256 in zip(loras, hashes, strict=True):
            if loaded is not None and _has_module_table(loaded):
                self.lora_verdicts.check_model(lora.path, sha256, name=lora.name,
                                               model_hash=self.model_hash(spec.name), model=loaded)
            elif self.lora_verdicts.has_model_verdicts(sha256):
                try:
                    model_hash = self.model_hash(spec.name)
                except (ModelError, OSError):  # its files are not here yet: judged when it loads
                    continue
                self.lora_verdicts.known_model_verdict(sha256, name=lora.name, model_hash=model_hash)

    def _check_lora_file(self, lora: ResolvedLora) -> str:
        """The verdict on the file alone (once per content); returns its sha256."""
        check_lora(lora)  # a pickle or a missing file: refused by name, never cached
        sha256 = self.hasher.sha256(lora.path)
        self.lora_verdicts.check_file(lora.path, sha256, name=lora.name)
        return sha256

    # ------------------------------------------------------------------ generation
    def generate(
        self,
        requests: Sequence[Request],
        *,
        init_images: Sequence[Image.Image] | None = None,
        on_step: Callable[[StepInfo], None] | None = None,
        should_abort: Callable[[], bool] | None = None,
        vae_tiling: bool | None = None,
        lora_resolver: LoraResolverLike | None = None,
    ) -> list[GeneratedImage]:
        """Generate one image per request, in one pipeline call (per pass).

        ``requests`` are resolved single-image requests sharing one :func:`batch_key`.
        ``init_images`` (one per request) replace the base pass: they go straight into the
        hires pass, which is how an existing image is upscaled.  ``on_step`` is called once
        per step; ``should_abort`` is checked every step and raises
        :class:`~generation.errors.Cancelled`.  ``vae_tiling`` overrides the engine's setting
        for this call (the queue's low-memory retry turns it on).  ``lora_resolver`` replaces
        the engine's own for this call: the queue resolves each job's ``--lora`` names when
        the job is planned (a server's own LoRAs first), and the runner hands that answer here,
        so a name means the file the job was planned with, whatever else shares the engine.

        Running out of accelerator memory raises :class:`~generation.errors.OutOfMemoryError`
        (memory already handed back), so a caller can retry with fewer images or tiling.
        """
        started = time.perf_counter()
        requests = list(requests)
        _validate(requests, init_images)
        _check_abort(should_abort)
        first = requests[0]
        with self._lock:
            resolver = lora_resolver if lora_resolver is not None else self.lora_resolver
            loras = [(resolve_lora(resolver, ref.name), float(ref.weight)) for ref in first.loras or ()]
            for lora, _ in loras:  # the file alone: refused before the model loads
                self._check_lora_file(lora)
            load_started = time.perf_counter()
            model = self.load(_resolved(first.model, "model"))
            load_s = time.perf_counter() - load_started
            model_hash = self.model_hash(_resolved(first.model, "model"))
            for lora, _ in loras:  # its keys and shapes against this model, before diffusers sees it
                self.lora_verdicts.check_model(lora.path, self.hasher.sha256(lora.path), name=lora.name,
                                               model_hash=model_hash, model=model)
            out_of_memory = False
            try:
                images, parts = self._run(model, requests, init_images, loras, on_step, should_abort,
                                          vae_tiling)
            except BaseException as error:
                if _has_lora_layers(model):  # cleanup failed: never serve a model with a LoRA left in it
                    self._models.evict(model.spec.name)
                if not _is_out_of_memory(error):
                    raise
                out_of_memory = True
            if out_of_memory:
                # Outside the except block: the traceback (and the step's tensors it holds) is gone.
                free_accelerator_memory()
                raise OutOfMemoryError("engine.out_of_memory", images=len(requests), device=str(self.device))
        timings = Timings(load_s=load_s, total_s=time.perf_counter() - started, **parts)
        lora_hashes = {ref.name: lora.short_hash for ref, (lora, _) in zip(first.loras or (), loras, strict=True)}
        return [GeneratedImage(image=image, request=request, model_hash=model_hash, lora_hashes=dict(lora_hashes),
                               timings=timings)
                for image, request in zip(images, requests, strict=True)]

    def _run(self, model: LoadedModel, requests: list[Request], init_images: Sequence[Image.Image] | None,
             loras: list[tuple[ResolvedLora, float]], on_step: Callable[[StepInfo], None] | None,
             should_abort: Callable[[], bool] | None,
             tiling: bool | None) -> tuple[list[Image.Image], dict[str, float]]:
        first = requests[0]
        pipe = model.txt2img
        parts = {"encode_s": 0.0, "base_s": 0.0, "hires_s": 0.0}
        output_pixels = _pixels(first.output_size or first.size or (0, 0))
        vae_tiling = tiling if tiling is not None else self.vae_tiling
        if vae_tiling is None:
            vae_tiling = output_pixels > VAE_TILING_PIXELS
        with (
            applied_loras(pipe, loras, self._lora_states),
            circular_padding(pipe.unet, pipe.vae, enabled=bool(first.tile)),
            _vae_modes(pipe.vae, slicing=len(requests) > 1, tiling=vae_tiling),
        ):
            encode_started = time.perf_counter()
            encoder = model.extras.get("encoder")
            if encoder is None:
                encoder = model.extras["encoder"] = PromptEncoder(pipe, model.family)
            encoded = _encode_all(encoder, requests)
            parts["encode_s"] = time.perf_counter() - encode_started
            # Images whose prompts need different numbers of 77-token chunks cannot share a
            # call without padding one of them, which would change it: run them apart.
            groups: dict[int, list[int]] = {}
            for index, enc in enumerate(encoded):
                groups.setdefault(enc.length, []).append(index)
            per_group = (0 if init_images is not None else _resolved(first.steps, "steps")) + hires_steps_run(first)
            progress = _Progress(on_step, should_abort, model.family, per_group * len(groups))
            results: list[Image.Image | None] = [None] * len(requests)
            for indices in groups.values():
                sub = [requests[i] for i in indices]
                embeds = [encoded[i] for i in indices]
                progress.images = tuple(indices)
                if init_images is None:
                    pass_started = time.perf_counter()
                    images = self._base_pass(model, sub, embeds, progress)
                    parts["base_s"] += time.perf_counter() - pass_started
                else:
                    images = [init_images[i].convert("RGB") for i in indices]
                if first.hires is not None:
                    _check_abort(should_abort)
                    pass_started = time.perf_counter()
                    images = self._hires_pass(model, sub, embeds, images, progress)
                    parts["hires_s"] += time.perf_counter() - pass_started
                for index, image in zip(indices, images, strict=True):
                    results[index] = image
        return [image for image in results if image is not None], parts

    def _base_pass(self, model: LoadedModel, requests: list[Request], embeds: list[EncodedPrompt],
                   progress: _Progress) -> list[Image.Image]:
        first = requests[0]
        pipe = model.txt2img
        seeds = [_resolved(r.seed, "seed") for r in requests]
        width, height = _resolved(first.width, "width"), _resolved(first.height, "height")
        steps = _resolved(first.steps, "steps")
        factor = int(pipe.vae_scale_factor)
        shape = (int(pipe.unet.config.in_channels), height // factor, width // factor)
        noise, generators = initial_noise(seeds, shape, vary_seeds=[r.vary_seed for r in requests],
                                          vary_strengths=[r.vary_strength for r in requests])
        pipe.scheduler = make_scheduler(_resolved(first.sampler, "sampler"), model.scheduler_config, noise_seeds=seeds)
        kwargs = _embed_kwargs(embeds, model)
        kwargs.update(
            height=height, width=width, num_inference_steps=steps, guidance_scale=float(_resolved(first.cfg, "cfg")),
            latents=noise.to(device=model.device, dtype=model.dtype), generator=generators, output_type="pil",
        )
        return self._call(model, pipe, kwargs, progress.phase("base", steps), images=len(requests))

    def _hires_pass(self, model: LoadedModel, requests: list[Request], embeds: list[EncodedPrompt],
                    images: list[Image.Image], progress: _Progress) -> list[Image.Image]:
        first = requests[0]
        hires = first.hires
        assert hires is not None and first.width is not None and first.height is not None
        size = hires_size(first.width, first.height, hires.scale)
        upscaled = [image if image.size == size else image.resize(size, Image.Resampling.LANCZOS) for image in images]
        pipe = model.img2img
        seeds = [_resolved(r.seed, "seed") for r in requests]
        pipe.scheduler = make_scheduler(_resolved(first.sampler, "sampler"), model.scheduler_config, noise_seeds=seeds)
        kwargs = _embed_kwargs(embeds, model)
        kwargs.update(
            image=upscaled, strength=float(hires.strength if hires.strength is not None else 0.5),
            num_inference_steps=hires.steps if hires.steps is not None else first.steps,
            guidance_scale=float(_resolved(first.cfg, "cfg")), generator=[generator(seed) for seed in seeds],
            output_type="pil",
        )
        return self._call(model, pipe, kwargs, progress.phase("hires", hires_steps_run(first)), images=len(requests))

    @staticmethod
    def _call(model: LoadedModel, pipe: Any, kwargs: dict[str, Any], phase: _Phase, *, images: int
              ) -> list[Image.Image]:
        if phase.callback is not None:
            kwargs["callback_on_step_end"] = phase.callback
            kwargs["callback_on_step_end_tensor_inputs"] = ["latents"] if phase.wants_latents else []
        # On the CPU each image's UNet rows run as its own call would: batched == alone, bit for bit.
        on_cpu = model.device.type == "cpu"
        with quiet_libraries(), unet_per_image(pipe.unet, images=images, enabled=on_cpu):
            # (quiet: scheduler chatter, "lower_order_final"..., is not the user's to act on)
            images_out = pipe(**kwargs).images
        phase.finish()
        return list(images_out)


# ---------------------------------------------------------------------- helpers


def _validate(requests: list[Request], init_images: Sequence[Image.Image] | None) -> None:
    if not requests:
        raise RequestError("engine.empty_batch")
    for request in requests:
        if not isinstance(request, Request):
            raise TypeError(f"expected Request, got {type(request).__name__}")
        missing = next((name for name in ("seed", "steps", "cfg", "sampler", "width", "height", "model")
                        if getattr(request, name) is None), None)
        if missing is not None:
            raise RequestError("engine.unresolved", field=missing)
        if request.count != 1 or request.chaos is not None:
            raise RequestError("engine.not_single", n=request.count)
    expected = dict(batch_key(requests[0]))
    for request in requests[1:]:
        for name, value in batch_key(request):
            if value != expected[name]:
                raise RequestError("engine.incompatible_batch", field=name, first=expected[name], other=value)
    first = requests[0]
    if first.hires is not None and hires_steps_run(first) < 1:
        raise RequestError("engine.hires_no_steps", steps=first.hires.steps, strength=first.hires.strength)
    if init_images is not None:
        if len(init_images) != len(requests):
            raise RequestError("engine.init_images_count", images=len(init_images), requests=len(requests))
        if first.hires is None:
            raise RequestError("engine.init_needs_hires")
        for image in init_images:
            if not isinstance(image, Image.Image):
                raise TypeError(f"init_images must be PIL images, got {type(image).__name__}")


def _resolved(value: _T | None, field: str) -> _T:
    """A field :func:`_validate` checked is set; ``None`` here means an unresolved request got in."""
    if value is None:
        raise RequestError("engine.unresolved", field=field)
    return value


def model_bytes(model: LoadedModel) -> int:
    """Memory held by a loaded model's weights (parameters and buffers; img2img shares them)."""
    seen: set[int] = set()
    total = 0
    for component in model.txt2img.components.values():
        if isinstance(component, torch.nn.Module):
            for tensor in (*component.parameters(), *component.buffers()):
                if id(tensor) not in seen:
                    seen.add(id(tensor))
                    total += tensor.numel() * tensor.element_size()
    return total


def _is_out_of_memory(error: BaseException) -> bool:
    """CUDA's OutOfMemoryError, or the RuntimeError other backends (MPS) raise for the same."""
    if isinstance(error, torch.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


def _check_abort(should_abort: Callable[[], bool] | None) -> None:
    if should_abort is not None and should_abort():
        raise Cancelled("engine.cancelled")


def _pixels(size: tuple[int, int]) -> int:
    return size[0] * size[1]


def _encode_all(encoder: PromptEncoder, requests: list[Request]) -> list[EncodedPrompt]:
    """Encode each distinct (prompt, negative) once; images of one request share it."""
    seen: dict[tuple[str, str], EncodedPrompt] = {}
    out = []
    for request in requests:
        key = (request.prompt, request.negative_prompt or "")
        if key not in seen:
            seen[key] = encoder.encode(key[0], key[1], clip_skip=request.clip_skip)
        out.append(seen[key])
    return out


def _embed_kwargs(embeds: list[EncodedPrompt], model: LoadedModel) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "prompt_embeds": torch.cat([e.embeds for e in embeds]).to(model.dtype),
        "negative_prompt_embeds": torch.cat([e.negative for e in embeds]).to(model.dtype),
    }
    if model.is_xl:
        kwargs["pooled_prompt_embeds"] = torch.cat([_pooled(e.pooled) for e in embeds]).to(model.dtype)
        kwargs["negative_pooled_prompt_embeds"] = torch.cat(
            [_pooled(e.negative_pooled) for e in embeds]).to(model.dtype)
    return kwargs


def _pooled(tensor: torch.Tensor | None) -> torch.Tensor:
    """An SDXL prompt's pooled embedding: the encoder makes one for every SDXL prompt."""
    if tensor is None:
        raise ValueError("an SDXL prompt was encoded without its pooled embedding")
    return tensor


@contextmanager
def _vae_modes(vae: Any, *, slicing: bool, tiling: bool) -> Iterator[None]:
    """Decode a batch image by image (slicing) and/or in tiles, for this call only."""
    before = (bool(getattr(vae, "use_slicing", False)), bool(getattr(vae, "use_tiling", False)))
    try:
        vae.use_slicing = slicing
        vae.use_tiling = tiling
        yield
    finally:
        vae.use_slicing, vae.use_tiling = before


def _has_module_table(model: LoadedModel) -> bool:
    """Whether a LoRA check may read ``model``'s layers from another thread: only once they are
    listed (the first LoRA call lists them under the engine's lock; listing reads the modules
    while a call may be adding adapters to them)."""
    from generation.training.lora_files import has_module_table

    return has_module_table(model)


def _has_lora_layers(model: LoadedModel) -> bool:
    pipe = model.txt2img
    for module in (getattr(pipe, "unet", None), getattr(pipe, "text_encoder", None),
                   getattr(pipe, "text_encoder_2", None)):
        if module is not None and any("lora_" in name for name, _ in module.named_modules()):
            return True
    return False


class _Phase:
    """The step callback of one pipeline call: abort checks, progress, previews."""

    def __init__(self, progress: _Progress, phase: Phase, total: int) -> None:
        self.progress = progress
        self.phase: Phase = phase
        self.total = total
        self.emitted = 0
        active = progress.on_step is not None or progress.should_abort is not None
        self.callback = self._callback if active else None
        self.wants_latents = progress.on_step is not None

    def _callback(self, pipe: Any, index: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        progress = self.progress
        _check_abort(progress.should_abort)
        if progress.on_step is not None:
            # second-order samplers make several scheduler iterations per user step
            iterations = int(getattr(pipe, "_num_timesteps", 0) or self.total)
            self._emit(min(self.total, ((index + 1) * self.total) // max(iterations, 1)), tensors.get("latents"))
        return {}

    def _emit(self, target: int, latents: torch.Tensor | None) -> None:
        progress = self.progress
        on_step = progress.on_step
        if on_step is None:  # the callers check first
            raise RuntimeError("progress emitted without an on_step callback")
        family = progress.family
        images = progress.images

        def preview(only: Sequence[int] | None = None) -> Image.Image | None:
            rows = list(range(len(images))) if only is None else [images.index(i) for i in only if i in images]
            if not rows:
                return None
            if latents is None:
                return Image.new("RGB", (8, 8))
            return latents_to_preview(latents[rows], family)

        while self.emitted < target:
            self.emitted += 1
            progress.done += 1
            on_step(StepInfo(self.phase, self.emitted, self.total, progress.done, progress.total, preview, images))

    def finish(self) -> None:
        if self.progress.on_step is not None and self.emitted < self.total:
            self._emit(self.total, None)


class _Progress:
    def __init__(self, on_step: Callable[[StepInfo], None] | None, should_abort: Callable[[], bool] | None,
                 family: str, total: int) -> None:
        self.on_step = on_step
        self.should_abort = should_abort
        self.family = family
        self.total = total
        self.done = 0
        self.images: tuple[int, ...] = ()  # the requests of the group being denoised

    def phase(self, phase: Phase, total: int) -> _Phase:
        return _Phase(self, phase, total)

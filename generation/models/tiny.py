"""The built-in ``tiny`` model: a Stable Diffusion 1 pipeline built in code, random weights.

Why it exists: weights cannot be downloaded in CI or on a fresh machine, yet every layer
(requests, engine, metadata, bot) must run end to end.  The model is built from a fixed
construction seed, so it is identical on every machine (same torch version), and its
:func:`content_hash` is computed from its weights.  It is shaped to be quick at real sizes
on a CPU: a VAE with 4 blocks (downscale factor 8, like SD), a 3-level UNet with
attention only at the lowest resolution, a 4-layer CLIP text encoder and a byte-level CLIP
BPE tokenizer made from a vocabulary alone (514 entries, no merges).  Its images are
structured noise, not pictures; what matters is that they are deterministic and react to
every input.

Nothing is built at import.  The built components are kept per process; each pipeline
handed out gets its own copies, so a caller moving it to a GPU or adding a LoRA never
changes another's.
"""

from __future__ import annotations

import copy
import hashlib
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from generation.models._quiet import quiet_libraries

if TYPE_CHECKING:
    from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import StableDiffusionPipeline

CONSTRUCTION_SEED = 20240607
TEXT_HIDDEN = 32
TEXT_LAYERS = 4
MAX_TOKENS = 77
BOS = "<|startoftext|>"
EOS = "<|endoftext|>"

_lock = threading.Lock()
_built: _Components | None = None
_hash: str | None = None


@dataclass(frozen=True)
class _Components:
    tokenizer: Any
    text_encoder: Any
    unet: Any
    vae: Any
    scheduler_config: dict[str, Any]


def byte_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable character table (written out, no download).

    Printable Latin-1 bytes map to themselves; the others are shifted past 255 so that
    every byte has a visible, whitespace-free character.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    shifted = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + shifted)
            shifted += 1
    return table


def tiny_vocab() -> dict[str, int]:
    """256 byte characters, again with CLIP's end-of-word suffix, and the two specials: 514."""
    chars = [byte_to_unicode()[b] for b in range(256)]
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": 256 + i for i, c in enumerate(chars)})
    vocab[BOS] = 512
    vocab[EOS] = 513
    return vocab


def _build() -> _Components:
    # diffusers' top-level names are lazy, not re-exports a type checker sees: the defining modules
    import torch
    from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    vocab = tiny_vocab()
    # model_max_length must be set: left unset it is ~1e30 and padding overflows (transformers 5)
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=MAX_TOKENS)
    with torch.random.fork_rng(devices=[]):  # never disturb the caller's global RNG
        torch.manual_seed(CONSTRUCTION_SEED)
        text_encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=len(vocab), hidden_size=TEXT_HIDDEN, intermediate_size=64,
            num_hidden_layers=TEXT_LAYERS, num_attention_heads=4, max_position_embeddings=MAX_TOKENS,
            projection_dim=TEXT_HIDDEN, bos_token_id=vocab[BOS], eos_token_id=vocab[EOS],
            pad_token_id=vocab[EOS], hidden_act="quick_gelu",
        ))
        unet = UNet2DConditionModel(
            sample_size=64,
            block_out_channels=(32, 32, 64),
            layers_per_block=1,
            down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
            cross_attention_dim=TEXT_HIDDEN,
            attention_head_dim=8,
            norm_num_groups=8,
        )
        vae = AutoencoderKL(
            # diffusers annotates these tuple[int] / tuple[str] (one item) for tuples of any length
            block_out_channels=(8, 16, 32, 32),  # pyright: ignore[reportArgumentType]
            down_block_types=("DownEncoderBlock2D",) * 4,  # pyright: ignore[reportArgumentType]
            up_block_types=("UpDecoderBlock2D",) * 4,  # pyright: ignore[reportArgumentType]
            latent_channels=4,
            norm_num_groups=8,
            layers_per_block=1,
            sample_size=512,
            mid_block_add_attention=False,
        )
    for module in (text_encoder, unet, vae):
        module.eval().requires_grad_(False)
    scheduler_config = {  # SD 1.5's scheduler settings
        "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
        "num_train_timesteps": 1000, "steps_offset": 1, "set_alpha_to_one": False,
        "skip_prk_steps": True, "clip_sample": False, "timestep_spacing": "leading",
        "prediction_type": "epsilon",
    }
    return _Components(tokenizer, text_encoder, unet, vae, scheduler_config)


def _components() -> _Components:
    global _built
    with _lock:
        if _built is None:
            with quiet_libraries():
                _built = _build()
        return _built


def tiny_pipeline() -> StableDiffusionPipeline:
    """A fresh StableDiffusionPipeline (CPU, float32) with its own copies of the tiny modules."""
    parts = _components()
    with quiet_libraries():
        from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import StableDiffusionPipeline
        from diffusers.schedulers.scheduling_pndm import PNDMScheduler

        # diffusers' annotations: ``scheduler`` is the KarrasDiffusionSchedulers enum, not a
        # scheduler, and the two optional components are typed as required
        pipe = StableDiffusionPipeline(
            vae=copy.deepcopy(parts.vae),
            text_encoder=copy.deepcopy(parts.text_encoder),
            tokenizer=copy.deepcopy(parts.tokenizer),
            unet=copy.deepcopy(parts.unet),
            scheduler=PNDMScheduler.from_config(parts.scheduler_config),  # pyright: ignore[reportArgumentType]
            safety_checker=None,  # pyright: ignore[reportArgumentType]
            feature_extractor=None,  # pyright: ignore[reportArgumentType]
            requires_safety_checker=False,
        )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def content_hash() -> str:
    """sha256 over the tiny model's weights and vocabulary: equal builds give equal hashes."""
    global _hash
    if _hash is None:
        parts = _components()
        digest = hashlib.sha256()
        for label, module in (("text_encoder", parts.text_encoder), ("unet", parts.unet), ("vae", parts.vae)):
            for name, tensor in sorted(module.state_dict().items()):
                digest.update(f"{label}.{name}:{tensor.dtype}:{tuple(tensor.shape)}\n".encode())
                digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        for token, index in sorted(tiny_vocab().items(), key=lambda item: item[1]):
            digest.update(f"{index}={token}\n".encode())
        _hash = digest.hexdigest()
    return _hash


def reset_for_tests() -> None:
    """Forget the built model so the next use builds it again (tests compare two builds)."""
    global _built, _hash
    with _lock:
        _built = None
        _hash = None

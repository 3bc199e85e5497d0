"""LoRA training speed: Brushwork's LoraTrainer against a plain diffusers + PEFT loop, same run.

Both train the same LoRA (rank, targets, precision, gradient checkpointing) on a private
copy of the same UNet, at the same latent size, batch and AdamW settings; the plain loop
is the core of diffusers' ``train_text_to_image_lora.py`` (random latents and text
states: no data pipeline at all), so the ratio shows what Brushwork adds per step
(bucketed cached latents, the seeded CPU generator, the finiteness check, progress).
Rounds alternate between the two so machine noise hits both alike.  Prints seconds per
step (median), steps per second, their ratio, the cost of one checkpoint and one
preview, preparation time and peak memory.

    python bench/bench_training.py                      # tiny model, CPU, 64/256/512 px
    python bench/bench_training.py --unet sd15          # SD 1.5-sized UNet, random weights (for a GPU)
    python bench/bench_training.py --unet sd15 --resolution 512 --steps 30 --no-grad-ckpt

``--unet sd15`` builds UNet2DConditionModel from SD 1.5's block configuration (860 M
parameters), a CLIP ViT-L-sized text encoder and SD's VAE, all with random weights: speed
does not depend on the values, and nothing is downloaded.  On a CPU it is very slow
(seconds per step), so the default CPU run uses the tiny model only.
"""

from __future__ import annotations

import argparse
import copy
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing


def _peak_rss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 / (1024 if sys.platform == "darwin" else 1)


def sd15_random_model(device, dtype):
    """An SD 1.5-shaped pipeline with random weights, as a LoadedModel (no download)."""
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from generation.models.loading import LoadedModel
    from generation.models.spec import ModelSpec
    from generation.models.tiny import BOS, EOS, MAX_TOKENS, tiny_vocab

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        unet = UNet2DConditionModel(
            sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
            block_out_channels=(320, 640, 1280, 1280),
            down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=768, attention_head_dim=8, norm_num_groups=32,
        )
        vocab = tiny_vocab()  # the tokenizer's vocabulary size does not change the UNet's cost
        text_encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=len(vocab), hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
            num_attention_heads=12, max_position_embeddings=MAX_TOKENS, projection_dim=768,
            bos_token_id=vocab[BOS], eos_token_id=vocab[EOS], pad_token_id=vocab[EOS], hidden_act="quick_gelu"))
        vae = AutoencoderKL(
            block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4, layers_per_block=2, norm_num_groups=32,
            sample_size=512)
    scheduler_config = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
                        "num_train_timesteps": 1000, "steps_offset": 1, "set_alpha_to_one": False,
                        "skip_prk_steps": True, "clip_sample": False, "prediction_type": "epsilon"}
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77),
        unet=unet, scheduler=PNDMScheduler.from_config(scheduler_config), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False)
    from generation.models._quiet import quiet_libraries

    with quiet_libraries():  # diffusers' note about casting with .to() is expected for random weights
        pipe = pipe.to(device=device, dtype=dtype)
    for module in (pipe.unet, pipe.vae, pipe.text_encoder):
        module.requires_grad_(False).eval()
    spec = ModelSpec("sd15-random", "builtin:tiny", family="sd1", description="SD 1.5 shapes, random weights")
    return LoadedModel(spec=spec, family="sd1", txt2img=pipe, img2img=None, device=device, dtype=dtype,
                       scheduler_config=scheduler_config)


def make_dataset(count: int, resolution: int):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    items = []
    for index in range(count):
        small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        items.append((Image.fromarray(small).resize((resolution, resolution), Image.Resampling.BICUBIC),
                      f"picture number {index}, ink wash"))
    return items


class PlainLoop:
    """The core of diffusers' LoRA training script, with random inputs."""

    def __init__(self, model, config, precision: str, checkpointing: bool) -> None:
        import torch
        from diffusers import DDPMScheduler
        from peft import LoraConfig

        from generation.training.lora_files import UNET_TARGETS

        self.torch = torch
        self.device = model.device
        weight_dtype = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
        self.autocast = None if precision == "no" else weight_dtype
        from generation.models._quiet import quiet_libraries

        with quiet_libraries():  # diffusers' note about casting with .to() is expected here
            self.unet = copy.deepcopy(model.txt2img.unet).to(self.device, weight_dtype).requires_grad_(False)
        self.unet.add_adapter(LoraConfig(r=config.rank, lora_alpha=config.alpha, target_modules=list(UNET_TARGETS)))
        self.params = [p for p in self.unet.parameters() if p.requires_grad]
        for p in self.params:
            p.data = p.data.float()
        if checkpointing:
            self.unet.enable_gradient_checkpointing()
        self.unet.train()
        self.optimizer = torch.optim.AdamW(self.params, lr=config.learning_rate, weight_decay=1e-2)
        self.scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
        self.scheduler = DDPMScheduler.from_config(model.scheduler_config)
        side = config.resolution // 8
        self.latents = torch.randn(config.batch_size, 4, side, side, device=self.device)
        dim = model.txt2img.unet.config.cross_attention_dim
        self.states = torch.randn(config.batch_size, 77, dim, device=self.device, dtype=weight_dtype)

    def step(self) -> float:
        torch = self.torch
        noise = torch.randn_like(self.latents)
        timesteps = torch.randint(0, 1000, (self.latents.shape[0],), device=self.device)
        noisy = self.scheduler.add_noise(self.latents, noise, timesteps)
        context = torch.autocast(self.device.type, dtype=self.autocast) if self.autocast else _null()
        with context:
            prediction = self.unet(noisy.to(self.states.dtype), timesteps, self.states, return_dict=False)[0]
        loss = torch.nn.functional.mse_loss(prediction.float(), noise.float())
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.params, 1.0)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.params, 1.0)
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())  # diffusers' script logs the loss every step too (a sync)


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def bench(model, model_hash: str, args, resolution: int) -> None:
    import torch

    from generation.training import LoraTrainer, TrainingConfig

    cuda = model.device.type == "cuda"
    precision = args.mixed_precision
    if precision == "auto":
        precision = "fp16" if cuda else "no"
    checkpointing = args.grad_ckpt if args.grad_ckpt is not None else cuda
    config = TrainingConfig(rank=args.rank, alpha=args.rank, steps=10**5, resolution=resolution,
                            batch_size=args.batch_size, caption_dropout=0.05, mixed_precision=precision,
                            gradient_checkpointing=checkpointing, sample_every=0, checkpoint_every=0,
                            sample_steps=args.preview_steps, train_text_encoder=args.train_text_encoder)
    items = make_dataset(args.images, resolution)
    workdir = Path(tempfile.mkdtemp(prefix="bench-training-"))
    trainer = LoraTrainer(model, items, config, workdir, model_hash=model_hash)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    trainer.run_chunk(max_steps=args.warmup)  # preparation (copies, latents, captions) + warm-up steps
    prep_and_warmup = time.perf_counter() - started
    plain = PlainLoop(model, config, precision, checkpointing)
    for _ in range(args.warmup):
        plain.step()
    times: dict[str, list[float]] = {"brushwork": [], "plain": []}
    checkpoint_s: list[float] = []
    per_round = max(2, args.steps // args.rounds)
    for _ in range(args.rounds):
        stamps: list[float] = []
        t0 = time.perf_counter()
        result = trainer.run_chunk(max_steps=per_round,
                                   on_progress=lambda _, stamps=stamps: stamps.append(time.perf_counter()))
        total = time.perf_counter() - t0
        steps = [b - a for a, b in zip([t0, *stamps], stamps, strict=False)]
        times["brushwork"] += steps
        checkpoint_s.append(total - (stamps[-1] - t0))  # after the last step: the chunk's checkpoint
        assert result.steps_run == per_round
        for _ in range(per_round):
            t1 = time.perf_counter()
            plain.step()
            times["plain"].append(time.perf_counter() - t1)
    t2 = time.perf_counter()
    trainer.sample()
    preview_s = time.perf_counter() - t2
    median = {name: statistics.median(values) for name, values in times.items()}
    peak = f", peak CUDA {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB (both loops)" if cuda else ""
    threads = torch.get_num_threads()
    print(f"{args.unet} UNet on {model.device} ({str(model.dtype).removeprefix('torch.')} weights, {threads} threads), "
          f"{resolution}x{resolution}, batch {args.batch_size}, rank {args.rank}, precision {precision}, "
          f"gradient checkpointing {'on' if checkpointing else 'off'}"
          f"{', text encoder too' if args.train_text_encoder else ''}")
    for name, label in (("brushwork", "LoraTrainer.run_chunk"), ("plain", "plain diffusers+peft")):
        print(f"  {label:22s} median {median[name]:.4f} s/step  {1 / median[name]:7.2f} steps/s  "
              f"({len(times[name])} steps)")
    print(f"  ratio brushwork/plain {median['brushwork'] / median['plain']:.3f}; checkpoint "
          f"{statistics.median(checkpoint_s):.3f} s; preview ({args.preview_steps} steps) {preview_s:.2f} s; "
          f"prep + {args.warmup} warm-up steps {prep_and_warmup:.2f} s ({args.images} images){peak}")
    trainer.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--unet", choices=("tiny", "sd15"), default="tiny")
    parser.add_argument("--device", default=None, help="cpu, cuda (default: automatic)")
    parser.add_argument("--dtype", default=None, help="weights: float16, bfloat16, float32 (default: per device)")
    parser.add_argument("--resolution", type=int, action="append",
                        help="repeatable (default: 64, 256, 512 for tiny; 512 for sd15)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per loop (default 40 tiny, 30 sd15)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--images", type=int, default=10)
    parser.add_argument("--preview-steps", type=int, default=20)
    parser.add_argument("--mixed-precision", default="auto", choices=("auto", "no", "fp16", "bf16"))
    parser.add_argument("--grad-ckpt", dest="grad_ckpt", action="store_true", default=None)
    parser.add_argument("--no-grad-ckpt", dest="grad_ckpt", action="store_false")
    parser.add_argument("--train-text-encoder", action="store_true")
    args = parser.parse_args(argv)
    resolutions = args.resolution or ([64, 256, 512] if args.unet == "tiny" else [512])
    args.steps = args.steps or (40 if args.unet == "tiny" else 30)

    import torch

    from generation.models.loading import resolve_device, resolve_dtype

    device = resolve_device(args.device)
    dtype = resolve_dtype(device, args.dtype)
    started = time.perf_counter()
    if args.unet == "tiny":
        from generation.engine import Engine
        from generation.models import ModelRegistry

        engine = Engine(ModelRegistry(), device=device, dtype=dtype)
        model, model_hash = engine.load("tiny"), engine.model_hash("tiny")
    else:
        if device.type != "cuda":
            print("note: an SD 1.5-sized UNet on a CPU takes seconds per step; use a GPU for real figures")
        model, model_hash = sd15_random_model(device, dtype), "random"
    print(f"model built/loaded in {time.perf_counter() - started:.1f} s; torch {torch.__version__}")
    for resolution in resolutions:
        bench(model, model_hash, args, resolution)
    print(f"peak RSS {_peak_rss_mib():.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

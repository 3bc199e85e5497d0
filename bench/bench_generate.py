"""Engine overhead: the same request through Engine.generate and through a plain diffusers call.

Both run on the same pipeline object (same modules, same scheduler class and options),
one after the other, warm-up first, then ``--repeat`` interleaved rounds so that machine
noise hits both alike.  Prints both median times, their ratio (goal: ≤ 1.10), whether the
pixels are identical, and peak memory (process RSS; CUDA's max allocated on a GPU).

    python bench/bench_generate.py [--size 512x512 --steps 20 --repeat 5 --device cpu]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing


def _peak_rss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 / (1024 if sys.platform == "darwin" else 1)  # bytes on macOS, KiB on Linux


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--size", default="512x512", help="WxH, multiples of 8")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--sampler", default="Euler a")
    parser.add_argument("--cfg", type=float, default=7.0)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--device", default=None, help="cpu, cuda, mps (default: automatic)")
    parser.add_argument("--dtype", default=None, help="float16, bfloat16, float32 (default: per device)")
    parser.add_argument("--prompt", default="a lighthouse on a cliff at dusk, oil painting")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))

    import numpy as np
    import torch

    from generation.engine import Engine, make_scheduler
    from generation.models import ModelRegistry
    from generation.request import Request, resolve

    registry = ModelRegistry()
    engine = Engine(registry, device=args.device, dtype=args.dtype)
    request, _ = resolve(
        Request(prompt=args.prompt, seed=args.seed, steps=args.steps, cfg=args.cfg, sampler=args.sampler,
                width=width, height=height),
        registry.profile(args.model), model=args.model,
    )
    requests = request.images()
    started = time.perf_counter()
    model = engine.load(args.model)
    load_s = time.perf_counter() - started
    pipe = model.txt2img
    cuda = model.device.type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    def run_engine():
        return engine.generate(requests)[0].image

    def run_plain():
        pipe.scheduler = make_scheduler(args.sampler, model.scheduler_config)
        generator = torch.Generator("cpu").manual_seed(args.seed)
        return pipe(args.prompt, height=height, width=width, num_inference_steps=args.steps,
                    guidance_scale=args.cfg, generator=generator).images[0]

    paths = {"engine": run_engine, "diffusers": run_plain}
    times: dict[str, list[float]] = {name: [] for name in paths}
    peak_cuda: dict[str, float] = {}
    images = {}
    for name, fn in paths.items():  # warm-up: kernels, allocator, caches
        images[name] = fn()
    for _ in range(args.repeat):
        for name, fn in paths.items():
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - t0)
            if cuda:
                peak_cuda[name] = max(peak_cuda.get(name, 0.0), torch.cuda.max_memory_allocated() / 2**20)

    medians = {name: statistics.median(values) for name, values in times.items()}
    same = np.array_equal(np.asarray(images["engine"]), np.asarray(images["diffusers"]))
    threads = torch.get_num_threads()
    print(f"model {args.model} on {model.device} ({str(model.dtype).removeprefix('torch.')}, {threads} threads), "
          f"{width}x{height}, {args.steps} steps, {args.sampler}, cfg {args.cfg}, seed {args.seed}; "
          f"load {load_s:.2f} s")
    for name in paths:
        spread = ", ".join(f"{t:.3f}" for t in times[name])
        extra = f", peak CUDA {peak_cuda[name]:.0f} MiB" if name in peak_cuda else ""
        print(f"  {name:9s} median {medians[name]:.3f} s  (runs: {spread}){extra}")
    ratio = medians["engine"] / medians["diffusers"]
    verdict = "OK" if ratio <= 1.10 else "ABOVE GOAL"
    print(f"  ratio engine/diffusers {ratio:.3f} (goal <= 1.10: {verdict}); identical pixels: {'yes' if same else 'no'}")
    print(f"  peak RSS {_peak_rss_mib():.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

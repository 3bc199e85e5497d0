"""The engine on the tiny built-in model: real pipelines, real pixels, CPU, 64×64.

Every test compares pixels: equal where the engine promises reproducibility (same request,
batch vs alone, LoRA removed, tiling restored), different where an input must matter
(seed, tokens past the 77th, weights, clip skip, tiling, LoRA).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from generation.engine import Engine, FolderLoraResolver, StepInfo, batch_key, make_scheduler
from generation.engine.engine import VAE_TILING_PIXELS
from generation.engine.noise import initial_noise, slerp
from generation.engine.prompts import CHUNK_TOKENS, PromptEncoder
from generation.errors import Cancelled, ModelError, RequestError
from generation.models import ModelRegistry
from generation.profiles import PROFILES
from generation.request import Hires, LoraRef, Request, hires_size, resolve
from generation.samplers import SAMPLERS, Sampler

PROMPT = "a red fox in the snow"
pytestmark = pytest.mark.slow  # runs the tiny model (seconds in all, but end to end)


def tiny(prompt: str = PROMPT, **fields) -> list[Request]:
    """Resolved single-image requests for the tiny model (64×64, 3 steps by default)."""
    fields.setdefault("width", 64)
    fields.setdefault("height", 64)
    fields.setdefault("steps", 3)
    fields.setdefault("seed", 1234)
    fields.setdefault("sampler", "Euler")
    resolved, _ = resolve(Request(prompt=prompt, **fields), PROFILES["tiny"], model="tiny")
    return resolved.images()


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def run(engine: Engine, prompt: str = PROMPT, **fields) -> np.ndarray:
    return pixels(engine.generate(tiny(prompt, **fields))[0].image)


def max_diff(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(a - b).max())


# ---------------------------------------------------------------------- samplers


@pytest.mark.parametrize("sampler", SAMPLERS, ids=lambda s: s.name)
def test_every_sampler_runs_and_reproduces(tiny_engine, sampler: Sampler):
    model = tiny_engine.load("tiny")
    scheduler = make_scheduler(sampler.name, model.scheduler_config)
    assert type(scheduler).__name__ == sampler.scheduler_class
    for option, value in sampler.scheduler_options.items():
        assert scheduler.config[option] == value
    first = run(tiny_engine, sampler=sampler.name, steps=2)
    assert first.shape == (64, 64, 3)
    assert first.std() > 5  # a real picture of noise, not a flat or NaN image
    assert max_diff(first, run(tiny_engine, sampler=sampler.name, steps=2)) == 0


def test_unsupported_scheduler_option_is_refused(monkeypatch):
    bogus = replace(SAMPLERS[1], name="Euler", scheduler_options={"no_such_option": True})
    monkeypatch.setattr("generation.engine.schedulers.find_sampler", lambda name: bogus)
    with pytest.raises(ModelError) as error:
        make_scheduler("Euler", {"num_train_timesteps": 1000})
    assert error.value.code == "engine.sampler_unsupported"
    assert "no_such_option" in error.value.message()


# ---------------------------------------------------------------------- seeds


def test_same_request_gives_identical_pixels(tiny_engine):
    assert max_diff(run(tiny_engine, sampler="Euler a"), run(tiny_engine, sampler="Euler a")) == 0


def test_other_seed_gives_other_pixels(tiny_engine):
    assert max_diff(run(tiny_engine, seed=1), run(tiny_engine, seed=2)) > 20


def test_engine_matches_a_plain_diffusers_call(tiny_engine):
    """Short prompt, no weights: the engine's encoding and noise are exactly diffusers'."""
    ours = run(tiny_engine, seed=77, sampler="Euler a", cfg=6.5)
    model = tiny_engine.load("tiny")
    pipe = model.txt2img
    pipe.scheduler = make_scheduler("Euler a", model.scheduler_config)
    theirs = pipe(PROMPT, height=64, width=64, num_inference_steps=3, guidance_scale=6.5,
                  generator=torch.Generator().manual_seed(77)).images[0]
    assert max_diff(ours, pixels(theirs)) == 0


@pytest.mark.parametrize("sampler", ["Euler a", "DPM++ 2M Karras", "DPM++ SDE"])
def test_batch_of_two_equals_each_image_alone(tiny_engine, sampler):
    batch = tiny_engine.generate(tiny(seed=500, n=2, sampler=sampler))
    alone = [run(tiny_engine, seed=500 + i, sampler=sampler) for i in range(2)]
    diffs = [max_diff(pixels(b.image), a) for b, a in zip(batch, alone, strict=True)]
    print(f"batch vs alone, {sampler}: max abs difference {diffs} (of 255)")
    assert max(diffs) <= 1


def test_batch_with_prompts_of_different_lengths_equals_alone(tiny_engine):
    long_prompt = "masterpiece, " * 12 + "a fox"  # more than 75 tokens: two chunks
    requests = [*tiny(PROMPT, seed=11), *tiny(long_prompt, seed=12)]
    batch = tiny_engine.generate(requests)
    assert max_diff(pixels(batch[0].image), run(tiny_engine, PROMPT, seed=11)) == 0
    assert max_diff(pixels(batch[1].image), run(tiny_engine, long_prompt, seed=12)) == 0


def mixed_batch(sampler: str, **fields) -> list[Request]:
    """Different users' requests that share a call: other prompts, seeds, weights, lengths, a variation."""
    return [*tiny("a cat", seed=101, sampler=sampler, **fields),
            *tiny("a (dog:1.3) on a hill", seed=102, sampler=sampler, **fields),
            *tiny("a fox", seed=103, vary_seed=7, vary_strength=0.3, sampler=sampler, **fields),
            *tiny("masterpiece, " * 12 + "a lake", seed=104, sampler=sampler, **fields),
            *tiny("a cat", seed=105, sampler=sampler, **fields)]


@pytest.mark.parametrize(("sampler", "fields"), [
    ("Euler", {}), ("DPM++ SDE", {}), ("Euler a", {"cfg": 1.0}),
    ("DPM++ 2M Karras", {"hires": Hires(scale=1.5, steps=2, strength=0.5), "tile": True}),
], ids=["euler", "dpmpp-sde", "no-guidance", "hires-tile"])
def test_every_image_of_a_mixed_batch_is_byte_for_byte_its_request_alone(tiny_engine, sampler, fields):
    """Issue 17.9: image 1 (seed 102) of a batch differed from itself alone in 2 values by 1/255."""
    requests = mixed_batch(sampler, **fields)
    batch = tiny_engine.generate(requests)
    for request, made in zip(requests, batch, strict=True):
        alone = tiny_engine.generate([request])[0].image
        assert made.image.tobytes() == alone.tobytes(), f"seed {request.seed} differs from itself alone"


def test_a_request_gives_the_same_bytes_whatever_it_is_batched_with(tiny_engine):
    """A retried job meets other companions (or none): its pixels are those of its first try."""
    mine = tiny("a lighthouse at dusk", seed=102, sampler="Euler a")[0]
    others = mixed_batch("Euler a")
    first = tiny_engine.generate([others[0], mine, others[2]])[1].image.tobytes()
    assert tiny_engine.generate([mine, *others[1:]])[0].image.tobytes() == first
    assert tiny_engine.generate([others[4], mine])[1].image.tobytes() == first
    assert tiny_engine.generate([mine])[0].image.tobytes() == first


def test_the_unet_is_split_per_image_on_the_cpu_only_for_the_call(tiny_engine):
    from generation.engine.rows import image_rows, unet_per_image

    assert image_rows(6, 3) == [[0, 3], [1, 4], [2, 5]]  # guidance: [uncond…, cond…]
    assert image_rows(3, 3) == [[0], [1], [2]]
    assert image_rows(2, 1) == [[0, 1]]
    unet = tiny_engine.load("tiny").txt2img.unet
    batches: list[int] = []
    hook = unet.conv_in.register_forward_hook(lambda module, args, out: batches.append(int(args[0].shape[0])))
    try:
        with torch.no_grad(), unet_per_image(unet, images=3):
            out = unet(torch.zeros(6, 4, 8, 8), torch.tensor(10), encoder_hidden_states=torch.zeros(6, 77, 32),
                       return_dict=False)[0]
        assert batches == [2, 2, 2] and tuple(out.shape) == (6, 4, 8, 8)
        assert "forward" not in unet.__dict__  # the module's own forward again after the call
        with torch.no_grad(), unet_per_image(unet, images=3, enabled=False):
            unet(torch.zeros(6, 4, 8, 8), torch.tensor(10), encoder_hidden_states=torch.zeros(6, 77, 32))
        assert batches[3:] == [6]  # an accelerator keeps the whole batch in one forward
    finally:
        hook.remove()


def test_variation_strength_one_is_the_variation_seed(tiny_engine):
    varied = run(tiny_engine, seed=10, vary_seed=99, vary_strength=1.0)
    assert max_diff(varied, run(tiny_engine, seed=99)) == 0


def test_small_variation_stays_close_to_the_seed(tiny_engine):
    base = run(tiny_engine, seed=10)
    varied = run(tiny_engine, seed=10, vary_seed=99, vary_strength=0.05)
    other = run(tiny_engine, seed=99)
    assert max_diff(base, varied) > 0
    assert np.abs(base - varied).mean() < np.abs(base - other).mean() / 4


def test_slerp_keeps_the_ends_and_the_norm():
    a, _ = initial_noise([1], (4, 8, 8))
    b, _ = initial_noise([2], (4, 8, 8))
    assert torch.equal(slerp(0.0, a, b), a) and torch.equal(slerp(1.0, a, b), b)
    middle = slerp(0.5, a, b)
    assert abs(middle.norm() / a.norm() - 1) < 0.05  # a straight blend would lose ~30%


# ---------------------------------------------------------------------- prompts


def test_tokens_after_the_77th_change_the_image(tiny_engine):
    head = "a fox " * 16  # 96 byte tokens: the last words land in the second chunk
    assert max_diff(run(tiny_engine, head + "red"), run(tiny_engine, head + "blue")) > 0


def test_long_prompt_is_chunked_not_truncated(tiny_engine):
    encoder = PromptEncoder(tiny_engine.load("tiny").txt2img, "tiny")
    assert encoder.chunk_count("x" * CHUNK_TOKENS, "") == 1
    assert encoder.chunk_count("x" * (CHUNK_TOKENS + 1), "") == 2
    assert encoder.chunk_count("a cat BREAK a dog", "") == 2
    encoded = encoder.encode("x" * 200, "blurry")
    assert encoded.embeds.shape == encoded.negative.shape == (1, 3 * 77, 32)


def test_chunks_are_wrapped_and_commas_move_to_the_next_chunk(tiny_engine):
    from generation.engine.prompts import _Chunker

    tokenizer = tiny_engine.load("tiny").txt2img.tokenizer
    chunker = _Chunker(tokenizer)
    chunks = chunker.chunks("a" * 70 + ", bcdefghij")  # 70 + 1 + 9 tokens: the chunk fills up after the comma
    assert len(chunks) == 2
    for chunk in chunks:
        assert len(chunk.ids) == len(chunk.weights) == 77
        assert chunk.ids[0] == tokenizer.bos_token_id
    assert chunks[0].ids[71] == chunker.comma  # the comma stays; the words after it move
    assert chunks[0].ids[72] == tokenizer.eos_token_id
    assert chunks[1].ids[1:10] == tuple(tokenizer("bcdefghij", add_special_tokens=False).input_ids)
    assert chunks[1].ids[10] == tokenizer.eos_token_id


def test_weights_follow_the_attention_syntax(tiny_engine):
    from generation.engine.prompts import _Chunker

    chunk = _Chunker(tiny_engine.load("tiny").txt2img.tokenizer).chunks("a (b:1.5) [c]")[0]
    # BOS, "a", "b", "c", EOS: spaces only separate words
    assert chunk.weights[:5] == (1.0, 1.0, 1.5, pytest.approx(1 / 1.1), 1.0)


def test_weighted_word_changes_the_image(tiny_engine):
    plain = run(tiny_engine, "a fox in the snow")
    assert max_diff(plain, run(tiny_engine, "a (fox:1.5) in the snow")) > 0
    assert max_diff(plain, run(tiny_engine, "a (fox:1.0) in the snow")) == 0


def test_clip_skip_two_changes_the_image(tiny_engine):
    assert max_diff(run(tiny_engine), run(tiny_engine, clip_skip=2)) > 0
    assert max_diff(run(tiny_engine), run(tiny_engine, clip_skip=1)) == 0


def test_clip_skip_beyond_the_encoder_is_refused(tiny_engine):
    encoder = PromptEncoder(tiny_engine.load("tiny").txt2img, "tiny")
    with pytest.raises(RequestError) as error:
        encoder.encode("a fox", "", clip_skip=5)
    assert error.value.code == "request.out_of_range"


def test_negative_prompt_changes_the_image(tiny_engine):
    assert max_diff(run(tiny_engine), run(tiny_engine, negative_prompt="blurry, ugly")) > 0


# ---------------------------------------------------------------------- hires, init images


def test_hires_output_size_and_refinement(tiny_engine):
    hires = Hires(scale=2.0, steps=4, strength=0.5)
    requests = tiny(seed=3, hires=hires)
    base = tiny_engine.generate(tiny(seed=3))[0].image
    refined = tiny_engine.generate(requests)[0].image
    assert refined.size == hires_size(64, 64, 2.0) == (128, 128)
    upscaled = pixels(base.resize((128, 128), Image.Resampling.LANCZOS))
    assert max_diff(pixels(refined), upscaled) > 0  # the img2img pass repainted the upscaled base
    # the refining pass starts from the base image: another base, same seed, another result
    other_base = tiny_engine.generate(tiny(seed=4))[0].image
    from_other = tiny_engine.generate(requests, init_images=[other_base])[0].image
    assert max_diff(pixels(refined), pixels(from_other)) > 0


def test_init_images_skip_the_base_pass(tiny_engine):
    hires = Hires(scale=1.5, steps=4, strength=0.5)
    requests = tiny(seed=3, hires=hires)
    base = tiny_engine.generate(tiny(seed=3))[0].image
    steps: list[StepInfo] = []
    from_image = tiny_engine.generate(requests, init_images=[base], on_step=steps.append)[0].image
    assert from_image.size == (96, 96)
    assert max_diff(pixels(from_image), pixels(tiny_engine.generate(requests)[0].image)) == 0
    assert {s.phase for s in steps} == {"hires"} and steps[-1].overall_total == 2


def test_init_images_are_checked(tiny_engine):
    image = Image.new("RGB", (64, 64))
    with pytest.raises(RequestError) as error:
        tiny_engine.generate(tiny(), init_images=[image])
    assert error.value.code == "engine.init_needs_hires"
    with pytest.raises(RequestError) as error:
        tiny_engine.generate(tiny(hires=Hires(2.0)), init_images=[image, image])
    assert error.value.code == "engine.init_images_count"


def test_hires_that_runs_no_step_is_refused(tiny_engine):
    with pytest.raises(RequestError) as error:  # resolving says so first, for every front end
        tiny(hires=Hires(2.0, steps=1, strength=0.5))
    assert error.value.code == "request.refine_no_steps" and "--hires-steps" in error.value.message()
    unchecked = Request(prompt=PROMPT, width=64, height=64, steps=3, seed=1, cfg=7.0, sampler="Euler", model="tiny",
                        hires=Hires(2.0, steps=1, strength=0.5))
    with pytest.raises(RequestError) as error:  # and the engine itself never runs an empty pass
        tiny_engine.generate([unchecked])
    assert error.value.code == "engine.hires_no_steps"


# ---------------------------------------------------------------------- tiling


def test_tile_changes_the_image_and_padding_is_restored(tiny_engine):
    plain = run(tiny_engine)
    tiled = run(tiny_engine, tile=True)
    assert max_diff(plain, tiled) > 0
    pipe = tiny_engine.load("tiny").txt2img
    modes = {m.padding_mode for part in (pipe.unet, pipe.vae) for m in part.modules()
             if isinstance(m, torch.nn.Conv2d)}
    assert modes == {"zeros"}
    assert max_diff(plain, run(tiny_engine)) == 0


def test_vae_modes_are_per_call(tiny_engine):
    engine = Engine(ModelRegistry(), device="cpu", vae_tiling=True)
    image = engine.generate(tiny(n=2, width=64, height=64))[1].image
    assert image.size == (64, 64)
    vae = engine.load("tiny").txt2img.vae
    assert not vae.use_tiling and not vae.use_slicing
    assert VAE_TILING_PIXELS == 1536 * 1536


# ---------------------------------------------------------------------- LoRA


@pytest.fixture(scope="module")
def lora_engine(tmp_path_factory, make_lora):
    """An engine whose LoRA folder holds one random LoRA, ``ink.wash``."""
    folder = tmp_path_factory.mktemp("loras")
    make_lora(folder, "ink.wash")
    resolver = FolderLoraResolver(folder, cache_dir=tmp_path_factory.mktemp("cache"))
    return Engine(ModelRegistry(), device="cpu", lora_resolver=resolver)


def _lora_free(engine: Engine) -> bool:
    pipe = engine.load("tiny").txt2img
    names = [n for part in (pipe.unet, pipe.text_encoder) for n, _ in part.named_modules()]
    return not any("lora" in n for n in names) and not getattr(pipe.unet, "peft_config", None)


def test_lora_changes_the_image_and_is_removed_after(lora_engine):
    before = run(lora_engine)
    with_lora = lora_engine.generate(tiny(loras=(LoraRef("ink.wash", 1.0),)))[0]
    half = run(lora_engine, loras=(LoraRef("ink.wash", 0.5),))
    after = run(lora_engine)
    assert max_diff(before, pixels(with_lora.image)) > 0
    assert max_diff(half, pixels(with_lora.image)) > 0
    assert max_diff(before, after) == 0
    assert _lora_free(lora_engine)
    assert list(with_lora.lora_hashes) == ["ink.wash"] and len(with_lora.lora_hashes["ink.wash"]) == 12


def test_lora_is_removed_when_the_call_is_cancelled(lora_engine):
    with pytest.raises(Cancelled):
        lora_engine.generate(tiny(loras=(LoraRef("ink.wash", 1.0),)), should_abort=lambda: _lora_free(lora_engine))
    assert _lora_free(lora_engine)


def test_unknown_lora_lists_the_available_ones(lora_engine, tiny_engine):
    with pytest.raises(ModelError) as error:
        lora_engine.generate(tiny(loras=(LoraRef("inkwash", 1.0),)))
    assert error.value.code == "model.unknown_lora_suggest"
    assert "ink.wash" in error.value.message() and "ink.wash" in error.value.message("zh-CN")
    with pytest.raises(ModelError) as error:
        tiny_engine.generate(tiny(loras=(LoraRef("ink", 1.0),)))  # this engine has no resolver
    assert error.value.code == "model.no_loras"


# ---------------------------------------------------------------------- progress, cancellation


def test_on_step_once_per_step_with_totals(tiny_engine):
    steps: list[StepInfo] = []
    tiny_engine.generate(tiny(steps=3, hires=Hires(1.5, steps=4, strength=0.5)), on_step=steps.append)
    assert [(s.phase, s.step, s.total, s.overall_step, s.overall_total) for s in steps] == [
        ("base", 1, 3, 1, 5), ("base", 2, 3, 2, 5), ("base", 3, 3, 3, 5),
        ("hires", 1, 2, 4, 5), ("hires", 2, 2, 5, 5),
    ]
    assert steps[0].preview().size == (8, 8)  # latent resolution, 64 / 8
    assert steps[-1].preview().size == (12, 12)


def test_on_step_counts_user_steps_for_second_order_samplers(tiny_engine):
    steps: list[StepInfo] = []
    tiny_engine.generate(tiny(steps=3, sampler="Heun", n=2), on_step=steps.append)
    assert [s.step for s in steps] == [1, 2, 3] and steps[-1].total == 3
    assert steps[-1].preview().size == (16, 8)  # two images side by side


def test_should_abort_cancels_at_the_next_step(tiny_engine):
    seen: list[StepInfo] = []
    calls = iter([False, False, True])
    with pytest.raises(Cancelled) as error:
        tiny_engine.generate(tiny(steps=6), on_step=seen.append, should_abort=lambda: next(calls))
    assert error.value.code == "engine.cancelled"
    assert [s.step for s in seen] == [1]  # checked at the start, after step 1, then stopped after step 2
    with pytest.raises(Cancelled):
        tiny_engine.generate(tiny(), should_abort=lambda: True)
    assert max_diff(run(tiny_engine, steps=6), run(tiny_engine, steps=6)) == 0


# ---------------------------------------------------------------------- batches and results


def test_batch_key_groups_what_can_share_a_call():
    a, b = tiny(seed=1, n=2)
    assert batch_key(a) == batch_key(b)
    assert batch_key(a) == batch_key(replace(a, prompt="other", negative_prompt="x", seed=9))
    assert batch_key(a) != batch_key(replace(a, steps=5))
    assert batch_key(a) == batch_key(replace(a, clip_skip=1))


def test_incompatible_or_unresolved_batches_are_refused(tiny_engine):
    with pytest.raises(RequestError) as error:
        tiny_engine.generate([*tiny(steps=3), *tiny(steps=4)])
    assert error.value.code == "engine.incompatible_batch" and "steps" in error.value.message()
    with pytest.raises(RequestError) as error:
        tiny_engine.generate([Request(prompt="a fox")])
    assert error.value.code == "engine.unresolved"
    resolved, _ = resolve(Request(prompt="a fox", n=2, width=64, height=64), PROFILES["tiny"], model="tiny")
    with pytest.raises(RequestError) as error:
        tiny_engine.generate([resolved])
    assert error.value.code == "engine.not_single"
    with pytest.raises(RequestError) as error:
        tiny_engine.generate([])
    assert error.value.code == "engine.empty_batch"


def test_generated_image_carries_its_recipe(tiny_engine):
    from generation.models.tiny import content_hash

    requests = tiny(n=2)
    results = tiny_engine.generate(requests)
    assert [r.request for r in results] == requests
    assert all(r.model_hash == content_hash()[:10] == tiny_engine.model_hash("tiny") for r in results)
    assert results[0].lora_hashes == {}
    assert results[0].timings.total_s >= results[0].timings.base_s > 0


# ---------------------------------------------------------------------- SDXL


@pytest.fixture(scope="module")
def xl_engine(tmp_path_factory):
    """An SDXL-shaped pipeline built from tiny parts (two text encoders, pooled and time embeds)."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    from generation.models.tiny import tiny_pipeline, tiny_vocab

    def text_config() -> CLIPTextConfig:
        return CLIPTextConfig(vocab_size=514, hidden_size=32, intermediate_size=37, num_hidden_layers=3,
                              num_attention_heads=4, max_position_embeddings=77, projection_dim=32,
                              bos_token_id=512, eos_token_id=513, pad_token_id=513)

    base = tiny_pipeline()
    with torch.random.fork_rng():
        torch.manual_seed(0)
        pipe = StableDiffusionXLPipeline(
            vae=base.vae, text_encoder=CLIPTextModel(text_config()),
            text_encoder_2=CLIPTextModelWithProjection(text_config()), tokenizer=base.tokenizer,
            tokenizer_2=CLIPTokenizer(vocab=tiny_vocab(), merges=[], model_max_length=77, pad_token="!"),
            unet=UNet2DConditionModel(
                sample_size=32, block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=8,
                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4),
                use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=8,
                projection_class_embeddings_input_dim=6 * 8 + 32, cross_attention_dim=64),
            scheduler=EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                             timestep_spacing="leading", steps_offset=1),
        )
    folder = tmp_path_factory.mktemp("xl") / "tiny-xl"
    pipe.save_pretrained(folder)
    from generation.models import ModelSpec

    return Engine(ModelRegistry([ModelSpec("xl", str(folder))]), device="cpu")


def xl(prompt: str = PROMPT, **fields) -> list[Request]:
    fields.setdefault("width", 64)
    fields.setdefault("height", 64)
    fields.setdefault("steps", 3)
    fields.setdefault("seed", 1234)
    fields.setdefault("sampler", "Euler")
    resolved, _ = resolve(Request(prompt=prompt, **fields), PROFILES["tiny"], model="xl")
    return resolved.images()


def test_sdxl_family_is_detected_and_loads_xl_pipelines(xl_engine):
    assert xl_engine.registry.family("xl") == "sdxl"
    model = xl_engine.load("xl")
    assert type(model.txt2img).__name__ == "StableDiffusionXLPipeline"
    assert type(model.img2img).__name__ == "StableDiffusionXLImg2ImgPipeline"
    assert model.img2img.text_encoder_2 is model.txt2img.text_encoder_2


def test_sdxl_matches_a_plain_diffusers_call(xl_engine):
    ours = pixels(xl_engine.generate(xl(seed=8))[0].image)
    model = xl_engine.load("xl")
    pipe = model.txt2img
    pipe.scheduler = make_scheduler("Euler", model.scheduler_config)
    theirs = pipe(PROMPT, height=64, width=64, num_inference_steps=3, guidance_scale=7.0,
                  generator=torch.Generator().manual_seed(8)).images[0]
    assert max_diff(ours, pixels(theirs)) == 0


def test_sdxl_prompts_clip_skip_batches_and_hires(xl_engine):
    def image(prompt: str = PROMPT, **fields) -> np.ndarray:
        return pixels(xl_engine.generate(xl(prompt, **fields))[0].image)

    plain = image()
    assert max_diff(plain, image(clip_skip=2)) > 0
    assert max_diff(plain, image(negative_prompt="blurry")) > 0
    head = "a fox " * 16
    assert max_diff(image(head + "red"), image(head + "blue")) > 0
    batch = xl_engine.generate(xl(seed=40, n=2))
    assert max_diff(pixels(batch[1].image), image(seed=41)) <= 1
    refined = xl_engine.generate(xl(hires=Hires(1.5, steps=4, strength=0.5)))[0].image
    assert refined.size == (96, 96)


# ---------------------------------------------------------------------- GPU


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_reproduces_and_matches_the_cpu_picture(tiny_engine):
    """CPU generators make the noise, so a seed gives the same picture on the GPU."""
    half = Engine(ModelRegistry(), device="cuda")
    assert half.load("tiny").dtype == torch.float16
    first = pixels(half.generate(tiny(seed=5, n=2, sampler="Euler a"))[1].image)
    assert max_diff(first, pixels(half.generate(tiny(seed=5, n=2, sampler="Euler a"))[1].image)) == 0
    full = Engine(ModelRegistry(), device="cuda", dtype="float32")
    on_gpu = pixels(full.generate(tiny(seed=6, sampler="Euler a"))[0].image)
    on_cpu = run(tiny_engine, seed=6, sampler="Euler a")
    assert np.abs(on_gpu - on_cpu).mean() < 4  # float rounding differs by device, the noise does not

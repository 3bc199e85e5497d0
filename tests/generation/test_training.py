"""LoRA training on the tiny model (CPU, 64×64): weights, resume, isolation, export, import checks.

A "crash" is simulated by dropping the trainer object and building a new one on the same
workdir: everything it needs must come from the checkpoint file.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import re
import struct

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save as save_safetensors

from generation.datasets import validate_image
from generation.engine import Engine, FolderLoraResolver
from generation.models import ModelRegistry
from generation.profiles import PROFILES
from generation.request import LoraRef, Request, resolve
from generation.training import (
    LoraFileError,
    LoraTrainer,
    TrainingConfig,
    TrainingError,
    checkpoint_info,
    export_kohya,
    export_lora,
    inspect_lora,
)
from generation.training.buckets import BucketSampler, fit_to_bucket, make_buckets, nearest_bucket
from generation.training.lora_files import KOHYA_KEY, module_from_kohya, module_table, split_lora_key
from tests.generation import lora_loaders

pytestmark = pytest.mark.slow  # trains the tiny model (a few seconds in all)

PROMPT = "inkwash, a mountain above the clouds"


def texture(seed: int, size: tuple[int, int]) -> Image.Image:
    """A smooth, seeded picture (noise blurred by upscaling), so the VAE sees structure."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    return Image.fromarray(small).resize(size, Image.Resampling.BICUBIC)


@pytest.fixture(scope="module")
def dataset():
    sizes = [(64, 64), (96, 64), (64, 96), (80, 80)]
    captions = ["a mountain above the clouds", "a river at dawn", None, "水墨 bamboo"]
    # CleanImage (what uploads become) and plain PIL images are both accepted
    images = [validate_image(_png(texture(i, size))) if i % 2 else texture(i, size) for i, size in enumerate(sizes)]
    return list(zip(images, captions, strict=True))


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def config(**changes) -> TrainingConfig:
    values = {"steps": 6, "resolution": 64, "rank": 4, "alpha": 2, "learning_rate": 1e-2, "sample_every": 3,
              "sample_steps": 2, "checkpoint_every": 0, "trigger_word": "inkwash", "seed": 7}
    values.update(changes)
    return TrainingConfig.cpu(**values)


def tiny_requests(**fields) -> list[Request]:
    fields.setdefault("width", 64)
    fields.setdefault("height", 64)
    fields.setdefault("steps", 2)
    fields.setdefault("seed", 1234)
    fields.setdefault("sampler", "Euler a")
    fields.setdefault("cfg", 7.0)
    resolved, _ = resolve(Request(prompt=fields.pop("prompt", PROMPT), **fields), PROFILES["tiny"], model="tiny")
    return resolved.images()


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def lora_free(engine: Engine) -> bool:
    pipe = engine.load("tiny").txt2img
    names = [n for part in (pipe.unet, pipe.text_encoder) for n, _ in part.named_modules()]
    return not any("lora" in n for n in names) and not getattr(pipe.unet, "peft_config", None)


@pytest.fixture(scope="module")
def trained(tiny_engine, dataset, tmp_path_factory):
    """One full run (6 steps) and its progress reports."""
    trainer = LoraTrainer.from_engine(tiny_engine, "tiny", dataset, config(), tmp_path_factory.mktemp("run"))
    reports = []
    result = trainer.run_chunk(on_progress=reports.append)
    return trainer, result, reports


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    folder = tmp_path_factory.mktemp("loras")
    trainer, _, _ = trained
    path = export_lora(trainer, folder / "inkwash.safetensors", {"brushwork.dataset_name": "水墨"})
    return path


@pytest.fixture(scope="module")
def exported_diffusers(trained, exported):
    trainer, _, _ = trained
    return export_lora(trainer, exported.parent / "inkwash_diffusers.safetensors", format="diffusers")


@pytest.fixture(scope="module")
def trained_te(tiny_engine, dataset, tmp_path_factory):
    """A LoRA on the UNet and the text encoder (3 steps)."""
    trainer = LoraTrainer.from_engine(tiny_engine, "tiny", dataset,
                                      config(steps=3, sample_every=0, train_text_encoder=True),
                                      tmp_path_factory.mktemp("run_te"))
    trainer.run_chunk()
    return trainer


@pytest.fixture(scope="module")
def lora_engine(exported, tmp_path_factory):
    """An engine whose LoRA folder is the export folder (tests add their own files to it)."""
    resolver = FolderLoraResolver(exported.parent, cache_dir=tmp_path_factory.mktemp("hashes"))
    return Engine(ModelRegistry(), device="cpu", lora_resolver=resolver)


# ---------------------------------------------------------------------- training


def test_training_changes_the_lora_and_reports_progress(trained, dataset, tiny_engine, tmp_path):
    trainer, result, reports = trained
    start = LoraTrainer.from_engine(tiny_engine, "tiny", dataset, config(), tmp_path)
    assert start.run_chunk(max_steps=0).step == 0  # prepares and checkpoints the untrained LoRA
    before, after = start.lora_weights().tensors, trainer.lora_weights().tensors
    assert set(before) == set(after) and len(after) == 64  # 16 attention projections × (A, B) … × 2 blocks
    ups = [k for k in after if ".lora_B." in k]
    assert all(torch.count_nonzero(before[k]) == 0 for k in ups)  # PEFT starts B at zero
    assert all(torch.count_nonzero(after[k]) > 0 for k in ups)
    assert result.done and result.step == 6 and result.steps_run == 6 and np.isfinite(result.loss)
    assert [r.step for r in reports] == [1, 2, 3, 4, 5, 6]
    assert all(np.isfinite(r.loss) and r.seconds_per_step > 0 for r in reports)
    assert reports[-1].eta_seconds == 0 and reports[0].eta_seconds > 0
    assert [r.step for r in reports if r.sample is not None] == [3, 6]
    assert [p.name for p in result.samples] == ["step_000000.png", "step_000003.png", "step_000006.png"]
    assert Image.open(result.samples[-1]).size == (64, 64)
    assert trainer.run_chunk().steps_run == 0  # done: nothing more to do


def test_samples_show_the_lora_as_the_engine_will_apply_it(trained, lora_engine):
    """The trainer's preview and the engine with the exported file draw the same picture."""
    trainer, _, _ = trained
    engine = lora_engine
    preview = trainer.sample(PROMPT, seed=1234, steps=2)
    with_lora = engine.generate(tiny_requests(loras=(LoraRef("inkwash", 1.0),)))[0].image
    without = engine.generate(tiny_requests())[0].image
    assert np.abs(pixels(preview) - pixels(with_lora)).max() <= 2  # alpha/rank baked in correctly
    assert np.abs(pixels(with_lora) - pixels(without)).max() > 5  # and the LoRA does something visible
    assert lora_free(engine)


def test_resume_after_a_crash_ends_bit_identical(trained, dataset, tiny_engine, tmp_path):
    trainer, result, _ = trained
    first = LoraTrainer.from_engine(tiny_engine, "tiny", dataset, config(), tmp_path)
    assert first.run_chunk(max_steps=2).step == 2
    assert first.run_chunk(max_steps=2).step == 4
    del first  # the "crash": only the workdir survives (with, say, a write it never finished)
    (tmp_path / ".checkpoint-abc.tmp").write_bytes(b"half a checkpoint")
    info = checkpoint_info(tmp_path)
    assert (info.step, info.total, info.base_model, info.dataset_size) == (4, 6, "tiny", 4)
    resumed = LoraTrainer.from_engine(tiny_engine, "tiny", dataset, config(), tmp_path)
    assert resumed.step == 4 and not resumed.done
    assert not (tmp_path / ".checkpoint-abc.tmp").exists()
    last = resumed.run_chunk()
    assert last.done and last.steps_run == 2
    ours, reference = resumed.lora_weights().tensors, trainer.lora_weights().tensors
    assert all(torch.equal(ours[k], reference[k]) for k in reference)  # bit-equal, not just close
    assert last.loss == result.loss


def test_close_releases_the_copies_and_the_next_chunk_resumes(dataset, tiny_engine, tmp_path):
    reference = LoraTrainer.from_engine(tiny_engine, "tiny", dataset, config(steps=4, sample_every=0), tmp_path / "a")
    reference.run_chunk()
    trainer = LoraTrainer.from_engine(tiny_engine, "tiny", dataset, config(steps=4, sample_every=0), tmp_path / "b")
    trainer.run_chunk(max_steps=2)
    trainer.close()
    assert trainer._ready is None
    trainer.run_chunk()
    ours, theirs = trainer.lora_weights().tensors, reference.lora_weights().tensors
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)


def test_training_never_touches_the_shared_pipeline(tiny_engine, dataset, tmp_path):
    model = tiny_engine.load("tiny")
    weights = {k: v.clone() for k, v in model.txt2img.unet.state_dict().items()}
    before = tiny_engine.generate(tiny_requests())[0].image
    trainer = LoraTrainer.from_engine(tiny_engine, "tiny", dataset, config(steps=3, train_text_encoder=True),
                                      tmp_path)
    trainer.run_chunk(max_steps=2)
    during = tiny_engine.generate(tiny_requests())[0].image  # between two chunks
    trainer.run_chunk()
    after = tiny_engine.generate(tiny_requests())[0].image
    assert np.array_equal(pixels(before), pixels(during)) and np.array_equal(pixels(before), pixels(after))
    assert lora_free(tiny_engine)
    assert all(torch.equal(v, weights[k]) for k, v in model.txt2img.unet.state_dict().items())


def test_text_encoder_lora_is_exported_and_applied(trained_te, tiny_engine, lora_engine, exported):
    trainer = trained_te
    preview = trainer.sample(PROMPT, seed=1234, steps=2)
    for fmt in ("kohya", "diffusers"):
        path = export_lora(trainer, exported.parent / f"te_{fmt}.safetensors", format=fmt)
        info = inspect_lora(path, tiny_engine.load("tiny"))
        assert (info.format, info.components) == (fmt, ("text_encoder", "unet"))
        assert {"q_proj", "k_proj", "v_proj", "out_proj"} <= set(info.targets)
        with_lora = lora_engine.generate(tiny_requests(loras=(LoraRef(path.stem, 1.0),)))[0].image
        assert np.abs(pixels(preview) - pixels(with_lora)).max() <= 2, fmt
        assert lora_free(lora_engine)
    with safe_open(str(exported.parent / "te_kohya.safetensors"), "pt") as handle:
        te_keys = [k for k in handle.keys() if k.startswith("lora_te_")]
    assert te_keys and all(k.startswith("lora_te_text_model_encoder_layers_") and KOHYA_KEY.match(k)
                           for k in te_keys)  # A1111's names, even though transformers 5 has no text_model


def test_gradient_checkpointing_keeps_every_gradient(dataset, tiny_engine, tmp_path):
    """Checkpointing (on by default with CUDA) must not drop the LoRA's gradients, UNet or CLIP."""
    results = []
    for checkpointing in (False, True):
        trainer = LoraTrainer.from_engine(tiny_engine, "tiny", dataset, config(
            steps=2, sample_every=0, train_text_encoder=True, gradient_checkpointing=checkpointing),
            tmp_path / str(checkpointing))
        trainer.run_chunk()
        results.append(trainer.lora_weights().tensors)
    plain, checkpointed = results
    assert any(k.startswith("text_encoder.") for k in plain)
    for key in plain:
        assert torch.allclose(plain[key], checkpointed[key], atol=1e-6), key


def test_pausing_and_time_limits_end_a_chunk_cleanly(dataset, tiny_engine, tmp_path):
    trainer = LoraTrainer.from_engine(tiny_engine, "tiny", dataset, config(sample_every=0), tmp_path)
    calls = []
    paused = trainer.run_chunk(should_abort=lambda: calls.append(1) or len(calls) > 2)
    assert (paused.step, paused.done) == (2, False)
    assert checkpoint_info(tmp_path).step == 2  # a pause is checkpointed, not lost
    timed = trainer.run_chunk(max_seconds=0.0)
    assert timed.steps_run == 1  # at least one step always runs


def test_a_diverging_run_stops_and_keeps_its_last_checkpoint(dataset, tiny_engine, tmp_path, monkeypatch):
    trainer = LoraTrainer.from_engine(tiny_engine, "tiny", dataset, config(sample_every=0), tmp_path)
    trainer.run_chunk(max_steps=2)
    monkeypatch.setattr(torch.nn.functional, "mse_loss", lambda *a, **k: torch.tensor(float("nan")))
    with pytest.raises(TrainingError) as error:
        trainer.run_chunk()
    assert error.value.code == "training.diverged" and "step 3" in error.value.message()
    assert checkpoint_info(tmp_path).step == 2
    assert trainer.step == 2 and trainer._ready is None  # rewound to the checkpoint, not left half-stepped
    monkeypatch.undo()
    resumed = trainer.run_chunk()
    reference = LoraTrainer.from_engine(tiny_engine, "tiny", dataset, config(sample_every=0), tmp_path / "ref")
    reference.run_chunk()
    ours, theirs = trainer.lora_weights().tensors, reference.lora_weights().tensors
    assert resumed.done and all(torch.equal(ours[k], theirs[k]) for k in theirs)


def test_a_checkpoint_of_another_run_is_refused(dataset, tiny_engine, tmp_path):
    LoraTrainer.from_engine(tiny_engine, "tiny", dataset, config(sample_every=0), tmp_path).run_chunk(max_steps=1)
    with pytest.raises(TrainingError) as error:
        LoraTrainer.from_engine(tiny_engine, "tiny", dataset[:3], config(sample_every=0), tmp_path)
    assert error.value.code == "training.checkpoint_mismatch" and error.value.params["field"] == "dataset"
    with pytest.raises(TrainingError) as error:
        LoraTrainer.from_engine(tiny_engine, "tiny", dataset, config(sample_every=0, rank=8), tmp_path)
    assert error.value.params["field"] == "config.rank"
    longer = LoraTrainer.from_engine(tiny_engine, "tiny", dataset, config(sample_every=0, steps=8), tmp_path)
    assert (longer.step, longer.total_steps) == (1, 8)  # more steps is a resumable change


def test_unsupported_families_and_cpu_mixed_precision_are_refused(dataset, tiny_engine, tmp_path):
    with pytest.raises(TrainingError) as error:
        LoraTrainer(lambda: pytest.fail("no model should load"), dataset, config(), tmp_path,
                    base_model="sdxl", family="sdxl")
    assert error.value.code == "training.family_unsupported"
    trainer = LoraTrainer.from_engine(tiny_engine, "tiny", dataset, config(mixed_precision="fp16"), tmp_path)
    with pytest.raises(TrainingError) as error:
        trainer.run_chunk()
    assert error.value.code == "training.mixed_precision_needs_cuda"
    with pytest.raises(TrainingError) as error:
        LoraTrainer.from_engine(tiny_engine, "tiny", [], config(), tmp_path / "empty")
    assert error.value.code == "training.empty_dataset"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fp16_training_on_cuda_resumes_bit_identical(dataset, tmp_path):
    engine = Engine(ModelRegistry(), device="cuda")
    cfg = config(mixed_precision="fp16", gradient_checkpointing=True)
    one = LoraTrainer.from_engine(engine, "tiny", dataset, cfg, tmp_path / "a")
    one.run_chunk()
    two = LoraTrainer.from_engine(engine, "tiny", dataset, cfg, tmp_path / "b")
    two.run_chunk(max_steps=3)
    del two
    two = LoraTrainer.from_engine(engine, "tiny", dataset, cfg, tmp_path / "b")
    two.run_chunk()
    a, b = one.lora_weights().tensors, two.lora_weights().tensors
    assert all(torch.isfinite(v).all() for v in a.values())
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-3


# ---------------------------------------------------------------------- settings and buckets


@pytest.mark.parametrize(("changes", "code", "field"), [
    ({"rank": 0}, "training.out_of_range", "rank"),
    ({"rank": 129}, "training.out_of_range", "rank"),
    ({"learning_rate": 0.5}, "training.out_of_range", "learning_rate"),
    ({"learning_rate": "fast"}, "training.not_a_number", "learning_rate"),
    ({"steps": 2.5}, "training.not_a_whole_number", "steps"),
    ({"batch_size": True}, "training.not_a_number", "batch_size"),
    ({"caption_dropout": 1.0}, "training.out_of_range", "caption_dropout"),
    ({"resolution": 500}, "training.resolution_step", None),
    ({"mixed_precision": "fp8"}, "training.bad_choice", "mixed_precision"),
    ({"train_text_encoder": "yes"}, "training.not_a_flag", "train_text_encoder"),
    ({"trigger_word": "ink, wash"}, "training.bad_trigger", None),
    ({"sample_prompt": "x" * 1001}, "training.prompt_too_long", None),
])
def test_bad_settings_are_named_with_what_is_allowed(changes, code, field):
    with pytest.raises(TrainingError) as error:
        TrainingConfig(**changes)
    assert error.value.code == code
    for locale in ("en", "zh-CN"):
        message = error.value.message(locale)
        assert "{" not in message and (field is None or field in message)
    if code == "training.resolution_step":
        assert "512" in error.value.message()


def test_defaults_follow_the_issue_and_cpu_defaults_are_small():
    gpu = TrainingConfig()
    assert (gpu.rank, gpu.alpha, gpu.learning_rate, gpu.steps, gpu.resolution) == (8, 8.0, 1e-4, 1000, 512)
    cpu = TrainingConfig.for_device("cpu")
    assert cpu.steps <= 100 and cpu.resolution <= 256 and cpu.mixed_precision == "no"
    assert TrainingConfig.for_device("cuda", steps=500).steps == 500
    assert TrainingConfig.from_dict(cpu.to_dict()) == cpu


def test_captions_get_the_trigger_word_once():
    cfg = TrainingConfig(trigger_word="  inkwash  ")
    assert cfg.trigger_word == "inkwash"
    assert cfg.caption_for("a crane") == "inkwash, a crane"
    assert cfg.caption_for("an Inkwash crane") == "an Inkwash crane"
    assert cfg.caption_for(None) == "inkwash"
    assert TrainingConfig().caption_for(None) == ""


def test_buckets_keep_the_area_and_multiples_of_64():
    buckets = make_buckets(512)
    assert (512, 512) in buckets and len(buckets) > 5
    for width, height in buckets:
        assert width % 64 == 0 and height % 64 == 0
        assert width * height <= 512 * 512 and width * height >= 0.75 * 512 * 512
        assert max(width, height) / min(width, height) <= 3
    assert nearest_bucket(1080, 1920, buckets)[0] < 512  # portrait stays portrait
    assert nearest_bucket(1920, 1080, buckets)[0] > 512
    assert fit_to_bucket(texture(1, (1000, 700)), (576, 448)).size == (576, 448)
    assert make_buckets(64) == [(64, 64)]


def test_bucket_sampler_resumes_at_the_same_batch():
    item_buckets = [(64, 64)] * 5 + [(128, 64)] * 3
    sampler = BucketSampler(item_buckets, batch_size=2, seed=3)
    straight = [sampler.next_batch() for _ in range(9)]
    assert all(len({item_buckets[i] for i in batch}) == 1 for batch in straight)  # one shape per batch
    assert sorted(i for batch in straight[:len(sampler)] for i in batch) == list(range(8))  # an epoch sees all
    partial = BucketSampler(item_buckets, batch_size=2, seed=3)
    for _ in range(4):
        partial.next_batch()
    resumed = BucketSampler(item_buckets, batch_size=2, seed=3, **partial.state())
    assert [resumed.next_batch() for _ in range(5)] == straight[4:]


# ---------------------------------------------------------------------- export


def test_export_has_kohya_keys_baked_scale_and_metadata(trained, exported):
    trainer, _, _ = trained
    with safe_open(str(exported), "pt") as handle:
        keys = list(handle.keys())
        meta = handle.metadata()
        alphas = {handle.get_tensor(k).item() for k in keys if k.endswith(".alpha")}
        up_key = next(k for k in keys if k.endswith("attn1_to_q.lora_up.weight") and "mid_block" in k)
        up = handle.get_tensor(up_key)
    assert len(keys) == 96 and all(KOHYA_KEY.match(k) and k.startswith("lora_unet_") for k in keys)
    trained_up = trainer.lora_weights().tensors["unet.mid_block.attentions.0.transformer_blocks.0.attn1.to_q.lora_B.weight"]
    assert torch.allclose(up, trained_up * 0.5)  # alpha 2 / rank 4, baked in…
    assert alphas == {4.0}  # …so the file says alpha = rank: scale 1 everywhere
    assert (meta["ss_network_module"], meta["ss_network_dim"], meta["ss_network_alpha"]) == ("networks.lora", "4", "4")
    assert (meta["ss_sd_model_name"], meta["ss_base_model_version"], meta["ss_resolution"]) == ("tiny", "sd_v1",
                                                                                                 "(64, 64)")
    assert meta["brushwork.base_model"] == "tiny" and len(meta["brushwork.base_model_hash"]) == 10
    assert (meta["brushwork.rank"], meta["brushwork.alpha"], meta["brushwork.steps"]) == ("4", "2", "6")
    assert meta["brushwork.dataset_size"] == "4" and meta["brushwork.resolution"] == "64"
    assert json.loads(meta["brushwork.trigger_words"]) == ["inkwash"]
    assert meta["brushwork.dataset_name"] == "水墨" and meta["brushwork.version"]


def test_diffusers_export_has_names_diffusers_and_comfyui_both_map(trained, exported_diffusers):
    trainer, _, _ = trained
    with safe_open(str(exported_diffusers), "pt") as handle:
        keys = list(handle.keys())
        meta = handle.metadata()
        up = handle.get_tensor("unet.mid_block.attentions.0.transformer_blocks.0.attn1.processor.to_out_lora.up.weight")
    assert len(keys) == 64 and all(
        re.fullmatch(r"unet\.[\w.]+\.processor\.to_(q|k|v|out)_lora\.(down|up)\.weight", k) for k in keys)
    trained_up = trainer.lora_weights().tensors[
        "unet.mid_block.attentions.0.transformer_blocks.0.attn1.to_out.0.lora_B.weight"]
    assert torch.allclose(up, trained_up * 0.5)
    assert meta["format"] == "pt" and meta["brushwork.alpha_baked"] == "true" and meta["brushwork.steps"] == "6"


@pytest.mark.parametrize("fmt", ["kohya", "diffusers"])
def test_every_key_of_an_export_maps_in_comfyui(trained_te, tiny_engine, tmp_path, fmt):
    """ComfyUI's key rules (tests/generation/lora_loaders.py): every key used, every layer trained patched."""
    path = export_lora(trained_te, tmp_path / f"both.{fmt}.safetensors", format=fmt)
    layers = lora_loaders.model_layers(tiny_engine.load("tiny").txt2img)
    loaded = lora_loaders.comfyui_loads(lora_loaders.shapes_of(path), layers)
    trained_layers = {tuple(k.split(".", 1)[0:1]) + (k.split(".", 1)[1].rsplit(".lora_", 1)[0],)
                      for k in trained_te.lora_weights().tensors}
    assert len(trained_layers) == 48  # 32 UNet projections, 16 CLIP ones
    assert not loaded.unused and loaded.layers == trained_layers


def test_the_kohya_export_maps_in_a1111_and_the_diffusers_one_does_not(trained_te, tmp_path):
    kohya = export_lora(trained_te, tmp_path / "a.safetensors")
    loaded = lora_loaders.a1111_loads(lora_loaders.shapes_of(kohya))
    assert not loaded.unused and len(loaded.layers) == 48
    diffusers = export_lora(trained_te, tmp_path / "b.safetensors", format="diffusers")
    assert not lora_loaders.a1111_loads(lora_loaders.shapes_of(diffusers)).keys  # what the README says


def test_the_checkers_refuse_what_diffusers_training_scripts_write(trained_te, tiny_engine, tmp_path):
    """diffusers' ``convert_state_dict_to_diffusers`` names (Brushwork's export before): ComfyUI maps none."""
    from diffusers.utils import convert_state_dict_to_diffusers

    tensors: dict[str, torch.Tensor] = {}
    for component in ("unet", "text_encoder"):
        state = {k[len(component) + 1:]: v for k, v in trained_te.lora_weights().tensors.items()
                 if k.startswith(component + ".")}
        tensors.update({f"{component}.{k}": v.contiguous() for k, v in convert_state_dict_to_diffusers(state).items()})
    shapes = {k: tuple(v.shape) for k, v in tensors.items()}
    layers = lora_loaders.model_layers(tiny_engine.load("tiny").txt2img)
    assert not lora_loaders.comfyui_loads(shapes, layers).keys and not lora_loaders.a1111_loads(shapes).keys


def test_kohya_export_of_either_format_is_the_same_file_to_loaders(exported, exported_diffusers, tiny_engine,
                                                                   lora_engine):
    again = export_kohya(exported_diffusers, exported.parent / "inkwash_again.safetensors", {"ss_output_name": "ink"})
    same = export_kohya(exported, exported.parent / "inkwash_same.safetensors", {"ss_output_name": "ink"})
    originals = _tensors(exported)
    for path in (again, same):
        ours = _tensors(path)
        assert set(ours) == set(originals) and all(torch.equal(ours[k], originals[k]) for k in ours)
        with safe_open(str(path), "pt") as handle:
            meta = handle.metadata()
        assert meta["ss_output_name"] == "ink" and meta["ss_network_dim"] == "4" and meta["brushwork.steps"] == "6"
    # a kohya file keeps its tensor bytes: the same A1111 hash, whatever the metadata says
    assert _addnet_hash(same) == _addnet_hash(exported)
    # invertible on the tiny model's modules: every kohya name maps back to the diffusers module
    table = module_table(tiny_engine.load("tiny"))
    back = {".".join(module_from_kohya(k, table) or ("?",)) for k in originals}
    assert back == {f"unet.{m}" for m in (split_lora_key(k)[1] for k in _tensors(exported_diffusers))}
    info = inspect_lora(exported, tiny_engine.load("tiny"))
    assert (info.format, info.rank, info.alpha) == ("kohya", 4, 4.0)
    # and diffusers draws the same picture from either file
    images = [pixels(lora_engine.generate(tiny_requests(loras=(LoraRef(path.stem, 1.0),)))[0].image)
              for path in (exported, exported_diffusers, again)]
    assert np.abs(images[0] - images[1]).max() <= 1 and np.array_equal(images[0], images[2])


def _addnet_hash(path) -> str:
    """A1111's LoRA hash, computed here from the bytes: sha256 of all after the safetensors header."""
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    return hashlib.sha256(data[8 + length:]).hexdigest()[:12]


# ---------------------------------------------------------------------- import checks


def test_inspect_accepts_our_exports(exported, exported_diffusers, tiny_engine):
    model = tiny_engine.load("tiny")
    kohya, diffusers = inspect_lora(exported, model), inspect_lora(exported_diffusers, model)
    assert (kohya.format, kohya.rank, kohya.ranks, kohya.alpha) == ("kohya", 4, (4,), 4.0)
    assert (diffusers.format, diffusers.rank, diffusers.alpha) == ("diffusers", 4, 4.0)
    for info in (kohya, diffusers):
        assert info.targets == ("to_k", "to_out.0", "to_q", "to_v") and info.components == ("unet",)
        assert len(info.modules) == 32 and info.metadata["brushwork.base_model"] == "tiny"
    assert kohya.modules == diffusers.modules
    assert inspect_lora(exported.read_bytes(), model).modules == kohya.modules


def _tensors(path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), "pt") as handle:
        return {k: handle.get_tensor(k) for k in handle.keys()}


def _variant(exported, change) -> bytes:
    tensors = _tensors(exported)
    change(tensors)
    return save_safetensors(tensors)


def _first(tensors, suffix: str) -> str:
    return next(k for k in sorted(tensors) if k.endswith(suffix))


BAD_LORAS = [
    ("other-base-shape", lambda t: t.update({_first(t, "attn2.processor.to_k_lora.down.weight"): torch.zeros(4, 768)}),
     "lora.shape_mismatch"),
    ("other-base-module", lambda t: t.update({
        "unet.down_blocks.2.attentions.1.transformer_blocks.0.attn1.to_q.lora.down.weight": torch.zeros(4, 64)}),
     "lora.unknown_module"),
    ("rank-mismatch", lambda t: t.update({_first(t, "to_q_lora.up.weight"): torch.zeros(64, 3)}),
     "lora.rank_mismatch"),
    ("incomplete", lambda t: t.pop(_first(t, "to_v_lora.up.weight")), "lora.incomplete"),
    ("lycoris", lambda t: t.update({"lora_unet_mid_block_attentions_0_proj_in.hada_w1_a": torch.zeros(2)}),
     "lora.unsupported_kind"),
    ("unknown-part", lambda t: t.update({_first(t, "to_v_lora.up.weight").replace("up", "middle"): torch.zeros(2)}),
     "lora.unsupported_key"),
    ("mixed", lambda t: t.update({
        "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn1_to_q.alpha": torch.tensor(4.0)}),
     "lora.mixed_formats"),
    ("integer-weights", lambda t: t.update({_first(t, "to_q_lora.up.weight"): torch.zeros(64, 4, dtype=torch.int32)}),
     "lora.bad_dtype"),
]


@pytest.mark.parametrize(("label", "change", "code"), BAD_LORAS, ids=[b[0] for b in BAD_LORAS])
def test_inspect_refuses_loras_that_do_not_fit(exported_diffusers, tiny_engine, label, change, code):
    with pytest.raises(LoraFileError) as error:
        inspect_lora(_variant(exported_diffusers, change), tiny_engine.load("tiny"), name=f"{label}.safetensors")
    assert error.value.code == code
    assert f"{label}.safetensors" in error.value.message() and "{" not in error.value.message("zh-CN")


def test_inspect_refuses_pickles_truncation_and_absurd_headers(exported, tiny_engine, tmp_path):
    model = tiny_engine.load("tiny")
    data = exported.read_bytes()
    buffer = io.BytesIO()
    torch.save({"w": torch.zeros(2)}, buffer)
    cases = [
        (buffer.getvalue(), "lora.pickle_refused"),  # torch.save: a zip with a pickle inside
        (pickle.dumps({"w": [1, 2]}, protocol=4), "lora.pickle_refused"),
        (data[:-100], "lora.truncated"),
        (data[:200], "lora.truncated"),
        (struct.pack("<Q", 1 << 40) + b'{"a": 1}', "lora.header_too_large"),
        (b"plain text, not a LoRA at all", "lora.not_safetensors"),
        (struct.pack("<Q", 10) + b"{not json}", "lora.bad_header"),
        (struct.pack("<Q", 2) + b"{}", "lora.empty"),
    ]
    for raw, code in cases:
        with pytest.raises(LoraFileError) as error:
            inspect_lora(raw, model, name="upload.safetensors")
        assert error.value.code == code, (code, error.value.message())
    for suffix in (".ckpt", ".pt", ".bin"):  # refused by name, even with safetensors content
        path = tmp_path / f"style{suffix}"
        path.write_bytes(data)
        with pytest.raises(LoraFileError) as error:
            inspect_lora(path, model)
        assert error.value.code == "lora.pickle_refused" and path.name in error.value.message()
    with pytest.raises(LoraFileError) as error:
        inspect_lora(exported, model, max_bytes=1000)
    assert error.value.code == "lora.too_large"

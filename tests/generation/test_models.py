"""Model specs, the registry, loading, the cache, hashes and the tiny built-in model."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from generation.engine import Engine
from generation.errors import ModelError
from generation.i18n import _catalogue
from generation.models import FileHasher, ModelCache, ModelRegistry, ModelSpec, SourceKind
from generation.models.loading import resolve_device, resolve_dtype
from generation.models.spec import (
    family_from_single_file,
    family_from_state_dict_keys,
    source_kind,
)
from generation.profiles import PROFILES
from generation.request import Request, resolve

ROOT = Path(__file__).resolve().parents[2]


def _image(engine: Engine, model: str = "tiny", seed: int = 21) -> np.ndarray:
    request, _ = resolve(Request(prompt="a lighthouse at dusk", seed=seed, width=64, height=64, steps=3),
                         PROFILES["tiny"], model=model)
    return np.asarray(engine.generate(request.images())[0].image, dtype=np.int16)


# ---------------------------------------------------------------------- the tiny model


def test_tiny_model_is_identical_across_builds():
    from generation.models import tiny

    first_hash = tiny.content_hash()
    first = tiny.tiny_pipeline().unet.state_dict()
    tiny.reset_for_tests()
    second = tiny.tiny_pipeline().unet.state_dict()
    assert tiny.content_hash() == first_hash
    assert re.fullmatch(r"[0-9a-f]{64}", first_hash)
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_tiny_tokenizer_is_byte_level_and_bounded():
    from generation.models.tiny import tiny_pipeline

    tokenizer = tiny_pipeline().tokenizer
    assert tokenizer.model_max_length == 77 and len(tokenizer) == 514
    ids = tokenizer("猫 and a cat", padding="max_length", max_length=77).input_ids
    assert len(ids) == 77 and ids[0] == tokenizer.bos_token_id
    assert tokenizer("a cat").input_ids != tokenizer("a dog").input_ids


def test_tiny_pipelines_do_not_share_modules():
    from generation.models.tiny import tiny_pipeline

    assert tiny_pipeline().unet is not tiny_pipeline().unet


# ---------------------------------------------------------------------- specs and the registry


def test_registry_knows_the_builtins_and_settings_models(tmp_path):
    registry = ModelRegistry.with_builtins({"mine": ModelSpec("mine", str(tmp_path / "mine"))}, default="sd15")
    assert registry.names() == ["mine", "sd15", "sdxl", "tiny"]
    assert registry.default == "sd15"
    assert registry.get("SDXL").name == "sdxl"  # names are case-insensitive
    assert registry.profile("tiny") == PROFILES["tiny"]
    assert registry.profile("sdxl") == PROFILES["sdxl"]
    override = ModelRegistry([ModelSpec("sd15", "me/my-sd15", family="sd1")])
    assert override.get("sd15").source == "me/my-sd15"


def test_unknown_model_lists_known_names_and_suggests():
    registry = ModelRegistry()
    with pytest.raises(ModelError) as error:
        registry.get("sdx1")
    assert error.value.code == "model.unknown_suggest" and error.value.params["suggestion"] == "sdxl"
    assert "sd15, sdxl, tiny" in error.value.message()
    assert "sdxl" in error.value.message("zh-CN")
    with pytest.raises(ModelError) as error:
        registry.get("midjourney")
    assert error.value.code == "model.unknown"
    with pytest.raises(ModelError):
        ModelRegistry(default="nope")


@pytest.mark.parametrize("source", ["/models/v1-5-pruned.ckpt", "./anything.pt", "x.PTH"])
def test_pickled_checkpoints_are_refused(source):
    with pytest.raises(ModelError) as error:
        ModelSpec("old", source)
    assert error.value.code == "model.pickle_refused"
    assert "safetensors" in error.value.message()


def test_spec_validation_and_source_kinds(tmp_path):
    assert ModelSpec("m", "org/name", dtype="fp16").dtype == "float16"
    for bad in ({"family": "sd3"}, {"dtype": "int8"}):
        with pytest.raises(ModelError):
            ModelSpec("m", "org/name", **bad)
    with pytest.raises(ModelError):
        ModelSpec("bad name", "org/name")
    with pytest.raises(ModelError):
        ModelSpec("m", "builtin:huge")
    assert source_kind("builtin:tiny") is SourceKind.BUILTIN
    assert source_kind("stabilityai/stable-diffusion-xl-base-1.0") is SourceKind.HUB
    assert source_kind("modelscope:AI-ModelScope/stable-diffusion-v1-5") is SourceKind.MODELSCOPE
    assert source_kind("/models/dreamshaper.safetensors") is SourceKind.SINGLE_FILE
    assert source_kind(str(tmp_path)) is SourceKind.FOLDER
    assert source_kind("./models/sd") is SourceKind.FOLDER


def test_missing_folder_is_a_clear_error(tmp_path):
    registry = ModelRegistry([ModelSpec("gone", str(tmp_path / "gone"))])
    with pytest.raises(ModelError) as error:
        registry.profile("gone")
    assert error.value.code == "model.not_found"
    with pytest.raises(ModelError) as error:
        Engine(registry, device="cpu").load("gone")
    assert error.value.code == "model.not_found" and str(tmp_path / "gone") in error.value.message()
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError) as error:
        ModelRegistry([ModelSpec("empty", str(tmp_path / "empty"))]).profile("empty")
    assert error.value.code == "model.not_a_diffusers_folder"


def test_hub_model_offline_says_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    registry = ModelRegistry([ModelSpec("ghost", "brushwork-tests/no-such-model", family="sd1")])
    with pytest.raises(ModelError) as error:
        Engine(registry, device="cpu").load("ghost")
    assert error.value.code == "model.not_cached"
    message = error.value.message()
    assert "`hf download brushwork-tests/no-such-model`" in message  # huggingface_hub ≥ 1.0 ships `hf`
    assert "huggingface-cli" not in message and "huggingface-cli" not in error.value.message("zh-CN")


def test_modelscope_without_the_extra_says_how_to_install():
    try:
        import modelscope  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("modelscope is installed here")
    registry = ModelRegistry([ModelSpec("ms", "modelscope:AI-ModelScope/stable-diffusion-v1-5", family="sd1")])
    with pytest.raises(ModelError) as error:
        Engine(registry, device="cpu").load("ms")
    assert error.value.code == "model.modelscope_missing"
    assert "pip install 'brushwork[modelscope]'" in error.value.message()


def test_family_from_checkpoint_keys(tmp_path):
    assert family_from_state_dict_keys(["conditioner.embedders.1.model.ln_final.weight",
                                        "model.diffusion_model.out.0.weight"]) == "sdxl"
    assert family_from_state_dict_keys(["cond_stage_model.model.ln_final.weight"]) == "sd2"
    assert family_from_state_dict_keys(["cond_stage_model.transformer.text_model.final_layer_norm.weight"]) == "sd1"
    with pytest.raises(ModelError) as error:
        family_from_state_dict_keys(["lora_unet_down_blocks_0.alpha"])
    assert error.value.code == "model.unknown_checkpoint"

    from safetensors.torch import save_file

    path = tmp_path / "xl.safetensors"
    save_file({"conditioner.embedders.1.model.ln_final.weight": torch.zeros(2),
               "model.diffusion_model.out.0.weight": torch.zeros(2)}, str(path))
    assert family_from_single_file(path) == "sdxl"
    registry = ModelRegistry([ModelSpec("xl", str(path))])
    assert registry.profile("xl") == PROFILES["sdxl"]
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelError) as error:
        family_from_single_file(tmp_path / "junk.safetensors")
    assert error.value.code == "model.bad_safetensors"


def test_unloadable_single_file_is_a_model_error(tmp_path, monkeypatch):
    from safetensors.torch import save_file

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = tmp_path / "broken.safetensors"
    save_file({"cond_stage_model.transformer.text_model.final_layer_norm.weight": torch.zeros(2)}, str(path))
    with pytest.raises(ModelError) as error:
        Engine(ModelRegistry([ModelSpec("broken", str(path))]), device="cpu").load("broken")
    assert error.value.code == "model.single_file_failed"
    detail = error.value.params["detail"]
    assert detail.endswith(".")  # diffusers' sentence: the template must not add a second period
    for locale in ("en", "zh-CN"):
        message = error.value.message(locale)
        assert message.endswith(detail) and ".." not in message and "。." not in message and ".。" not in message


# ---------------------------------------------------------------------- single-file checkpoints

_RESNET = (("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("norm2", "out_layers.0"),
           ("conv2", "out_layers.3"), ("time_emb_proj", "emb_layers.1"), ("conv_shortcut", "skip_connection"))
_UNET_FIXED = {"conv_in": "input_blocks.0.0", "time_embedding.linear_1": "time_embed.0",
               "time_embedding.linear_2": "time_embed.2", "conv_norm_out": "out.0", "conv_out": "out.2"}
_VAE_FIXED = {"conv_norm_out": "norm_out"}


def _ldm_unet(state: dict, config) -> dict:
    """diffusers UNet names -> the original (LDM/A1111) checkpoint layout."""
    per_block = config["layers_per_block"] + 1
    attention = ["CrossAttn" in t for t in config["up_block_types"]]
    out = {}
    for key, value in state.items():
        module, _, leaf = key.rpartition(".")
        if module in _UNET_FIXED:
            new = f"{_UNET_FIXED[module]}.{leaf}"
        elif m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(\w+)", key):
            new = f"input_blocks.{1 + int(m[1]) * per_block + per_block - 1}.0.op.{m[2]}"
        elif m := re.fullmatch(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
            new = f"input_blocks.{1 + int(m[1]) * per_block + int(m[3])}.{0 if m[2] == 'resnets' else 1}.{m[4]}"
        elif m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.(.+)", key):
            block = int(m[1])
            new = f"output_blocks.{block * per_block + per_block - 1}.{2 if attention[block] else 1}.{m[2]}"
        elif m := re.fullmatch(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
            new = f"output_blocks.{int(m[1]) * per_block + int(m[3])}.{0 if m[2] == 'resnets' else 1}.{m[4]}"
        elif m := re.fullmatch(r"mid_block\.(resnets|attentions)\.(\d+)\.(.+)", key):
            new = f"middle_block.{1 if m[1] == 'attentions' else 2 * int(m[2])}.{m[3]}"
        else:
            raise KeyError(key)
        if ".resnets." in key:
            for ours, theirs in _RESNET:
                new = new.replace(f".{ours}.", f".{theirs}.")
        out[f"model.diffusion_model.{new}"] = value
    return out


def _ldm_vae(state: dict, config) -> dict:
    blocks = len(config["up_block_types"])
    out = {}
    for key, value in state.items():
        new = key
        for ours, theirs in _VAE_FIXED.items():
            new = new.replace(f"coder.{ours}.", f"coder.{theirs}.")
        new = re.sub(r"encoder\.down_blocks\.(\d+)\.resnets\.", r"encoder.down.\1.block.", new)
        new = re.sub(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.", r"encoder.down.\1.downsample.", new)
        new = re.sub(r"mid_block\.resnets\.(\d+)\.", lambda m: f"mid.block_{int(m[1]) + 1}.", new)
        new = re.sub(r"decoder\.up_blocks\.(\d+)\.resnets\.", lambda m: f"decoder.up.{blocks - 1 - int(m[1])}.block.",
                     new)
        new = re.sub(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.",
                     lambda m: f"decoder.up.{blocks - 1 - int(m[1])}.upsample.", new)
        out["first_stage_model." + new.replace("conv_shortcut", "nin_shortcut")] = value
    return out


@pytest.mark.slow
def test_single_file_checkpoint_loads_like_the_folder(tiny_engine, tmp_path, monkeypatch):
    """The tiny model written as an A1111-style .safetensors loads back to the same image."""
    from safetensors.torch import save_file

    from generation.models.tiny import tiny_pipeline

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pipe = tiny_pipeline()
    pipe.save_pretrained(tmp_path / "config")  # offline, the component configs come from here
    checkpoint = {**_ldm_unet(pipe.unet.state_dict(), pipe.unet.config),
                  **_ldm_vae(pipe.vae.state_dict(), pipe.vae.config),
                  **{f"cond_stage_model.transformer.text_model.{k}": v
                     for k, v in pipe.text_encoder.state_dict().items()}}
    path = tmp_path / "tiny-single.safetensors"
    save_file({k: v.contiguous() for k, v in checkpoint.items()}, str(path))
    registry = ModelRegistry([ModelSpec("single", str(path), config=str(tmp_path / "config"))])
    assert registry.family("single") == "sd1"  # detected from the checkpoint's keys
    engine = Engine(registry, device="cpu", cache_dir=tmp_path / "cache")
    assert np.array_equal(_image(engine, "single"), _image(tiny_engine))
    assert engine.model_hash("single") == hashlib.sha256(path.read_bytes()).hexdigest()[:10]


# ---------------------------------------------------------------------- loading


@pytest.mark.slow
def test_local_folder_loads_the_same_model(tiny_engine, tmp_path):
    from generation.models.tiny import tiny_pipeline

    folder = tmp_path / "tiny-saved"
    tiny_pipeline().save_pretrained(folder)
    registry = ModelRegistry([ModelSpec("saved", str(folder))])
    assert registry.profile("saved") == PROFILES["tiny"]  # detected from the UNet's width
    engine = Engine(registry, device="cpu", cache_dir=tmp_path / "cache")
    assert np.array_equal(_image(engine, "saved"), _image(tiny_engine))
    folder_hash = engine.model_hash("saved")
    assert re.fullmatch(r"[0-9a-f]{10}", folder_hash)
    assert Engine(registry, device="cpu").model_hash("saved") == folder_hash


def test_img2img_shares_the_txt2img_modules(tiny_engine):
    model = tiny_engine.load("tiny")
    for name in ("unet", "vae", "text_encoder", "tokenizer"):
        assert getattr(model.img2img, name) is getattr(model.txt2img, name)
    assert type(model.img2img).__name__ == "StableDiffusionImg2ImgPipeline"
    assert model.txt2img.safety_checker is None


def test_device_and_dtype_choice():
    cpu = resolve_device("cpu")
    assert cpu.type == "cpu"
    assert resolve_dtype(cpu) == torch.float32
    assert resolve_dtype(cpu, None, "bf16") == torch.bfloat16
    assert resolve_dtype(cpu, "float16", "float32") == torch.float16  # the model's own setting wins
    assert resolve_dtype(torch.device("cuda")) == torch.float16
    with pytest.raises(ModelError) as error:
        resolve_device("tpu:9")
    assert error.value.code == "model.bad_device"
    if not torch.cuda.is_available():
        with pytest.raises(ModelError) as error:
            resolve_device("cuda")
        assert error.value.code == "model.device_unavailable"


def test_engine_keeps_a_bounded_number_of_models(tmp_path):
    from generation.models.tiny import tiny_pipeline

    folder = tmp_path / "copy"
    tiny_pipeline().save_pretrained(folder)
    engine = Engine(ModelRegistry([ModelSpec("copy", str(folder))]), device="cpu", max_loaded_models=1)
    engine.load("tiny")
    engine.load("copy")
    assert engine.loaded_models() == ["copy"]


# ---------------------------------------------------------------------- the cache


def test_model_cache_is_lru_and_bounded():
    evicted: list[str] = []
    cache: ModelCache[str, object] = ModelCache(2, on_evict=lambda key, value: evicted.append(key))
    for key in ("a", "b"):
        cache.get_or_load(key, object)
    cache.get("a")  # "a" is now the most recently used
    cache.get_or_load("c", object)
    assert cache.keys() == ["a", "c"] and evicted == ["b"]
    assert cache.evict("a") and evicted == ["b", "a"]
    cache.clear()
    assert len(cache) == 0


def test_model_cache_loads_once_under_concurrency():
    cache: ModelCache[str, object] = ModelCache(1)
    calls: list[int] = []
    barrier = threading.Barrier(4)

    def loader() -> object:
        calls.append(1)
        return object()

    def worker() -> None:
        barrier.wait()
        results.append(cache.get_or_load("m", loader))

    results: list[object] = []
    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1 and len({id(r) for r in results}) == 1


# ---------------------------------------------------------------------- hashes


def test_file_hash_is_sha256_and_cached_on_disk(tmp_path):
    data = os.urandom(3 * 1024 * 1024 + 17)  # more than one read chunk
    path = tmp_path / "model.safetensors"
    path.write_bytes(data)
    hasher = FileHasher(tmp_path / "cache")
    expected = hashlib.sha256(data).hexdigest()
    assert hasher.sha256(path) == expected
    assert hasher.model_hash(path) == expected[:10]
    assert hasher.computed == 1
    again = FileHasher(tmp_path / "cache")  # a new process reads the JSON cache
    assert again.model_hash(path) == expected[:10] and again.computed == 0
    entries = json.loads((tmp_path / "cache" / "hashes.json").read_text())["entries"]
    assert any(key.endswith(str(path.resolve())) for key in entries)
    path.write_bytes(data + b"x")  # replaced file: new size and mtime, hashed again
    assert again.sha256(path) == hashlib.sha256(data + b"x").hexdigest() and again.computed == 1


def test_hub_cache_blobs_are_named_after_their_hash(tmp_path):
    digest = hashlib.sha256(b"weights").hexdigest()
    blob = tmp_path / "blobs" / digest
    blob.parent.mkdir()
    blob.write_bytes(b"weights")
    link = tmp_path / "snapshots" / "main" / "unet" / "diffusion_pytorch_model.safetensors"
    link.parent.mkdir(parents=True)
    link.symlink_to(blob)
    hasher = FileHasher()
    assert hasher.sha256(link) == digest and hasher.computed == 0


def test_lora_hash_skips_the_safetensors_header(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "style.safetensors"
    save_file({"w": torch.arange(16, dtype=torch.float32)}, str(path), metadata={"name": "one"})
    raw = path.read_bytes()
    header = int.from_bytes(raw[:8], "little")
    expected = hashlib.sha256(raw[8 + header:]).hexdigest()[:12]
    assert FileHasher().lora_hash(path) == expected
    other = tmp_path / "renamed.safetensors"
    save_file({"w": torch.arange(16, dtype=torch.float32)}, str(other), metadata={"name": "two, longer"})
    assert FileHasher().lora_hash(other) == expected  # metadata edits keep the hash


def test_folder_hash_is_stable_and_ignores_other_variants(tmp_path):
    for folder in (tmp_path / "a", tmp_path / "b"):
        (folder / "unet").mkdir(parents=True)
        (folder / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"weights")
        (folder / "unet" / "config.json").write_text("{}")
    (tmp_path / "b" / "unet" / "diffusion_pytorch_model.fp16.safetensors").write_bytes(b"half")
    hasher = FileHasher()
    assert hasher.folder_hash(tmp_path / "a") == hasher.folder_hash(tmp_path / "b")
    assert hasher.folder_hash(tmp_path / "b", variant="fp16") != hasher.folder_hash(tmp_path / "b")


# ---------------------------------------------------------------------- conventions


def test_every_error_code_raised_here_has_both_translations():
    sources = [*(ROOT / "generation" / "models").glob("*.py"), *(ROOT / "generation" / "engine").glob("*.py")]
    codes = set()
    for source in sources:
        codes |= set(re.findall(r"""["']((?:model|engine)\.[a-z_]+)["']""", source.read_text()))
    assert {"model.unknown", "engine.cancelled", "model.pickle_refused"} <= codes
    for locale in ("en", "zh-CN"):
        missing = codes - set(_catalogue(locale))
        assert not missing, f"{locale} lacks {sorted(missing)}"
    english = json.loads((ROOT / "generation/locales/en/engine.json").read_text("utf-8"))
    chinese = json.loads((ROOT / "generation/locales/zh-CN/engine.json").read_text("utf-8"))
    assert english.keys() == chinese.keys()


@pytest.mark.slow
def test_importing_models_does_no_work():
    code = ("import sys, generation.models, generation.models.registry; "
            "r = generation.models.ModelRegistry(); r.profile('sd15'); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=60)

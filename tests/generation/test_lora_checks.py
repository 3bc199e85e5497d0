"""Issue 17.4: a bad LoRA in a folder (or in ``lora_files=``) is refused as an import is, with one line.

Wrong key names used to fail inside diffusers ("Adapter name(s) {'brushwork_0'} not in the
list", a traceback, the job failed as ``queue.internal``), wrong shapes with a 69-line
message, NaN weights were applied with only a RuntimeWarning.  Each bad file here is built
in code against the tiny model; the engine judges a file once per content and model.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from generation.api import generate
from generation.engine import Engine, FolderLoraResolver
from generation.engine.loras import ResolvedLora
from generation.errors import BrushworkError
from generation.models import ModelRegistry
from generation.profiles import PROFILES
from generation.request import LoraRef, Request, resolve
from generation.training import LoraFileError, lora_files
from generation.training.lora_files import check_lora_values

pytestmark = pytest.mark.slow  # runs the tiny model

ATTN = "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn1_to_q"  # a 64×64 projection of the tiny UNet
PEFT_ATTN = "unet.mid_block.attentions.0.transformer_blocks.0.attn1.to_q"


def _random(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(sum(shape))).to(dtype)


def _kohya(down: torch.Tensor | None = None, up: torch.Tensor | None = None, module: str = ATTN):
    return {f"{module}.lora_down.weight": _random(4, 64) if down is None else down,
            f"{module}.lora_up.weight": _random(64, 4) if up is None else up, f"{module}.alpha": torch.tensor(4.0)}


def _with(tensor: torch.Tensor, value: float, index: int = 3) -> torch.Tensor:
    out = tensor.clone()
    out.view(-1)[index] = value
    return out


#: name -> (tensors, the refusal's code, what its one line must name)
BAD_FILES = {
    "renamed-keys": ({"unet.down_blockz.0.attn.to_q.lora_A.weight": _random(4, 64),
                      "unet.down_blockz.0.attn.to_q.lora_B.weight": _random(64, 4)},
                     "lora.unknown_module", "down_blockz"),
    "kohya-unknown-layer": (_kohya(module="lora_unet_no_such_block_to_q"), "lora.unknown_module", "no_such_block"),
    "not-lora-keys": ({"model.diffusion_model.input_blocks.0.weight": _random(4, 64)}, "lora.unsupported_key",
                      "input_blocks"),
    "wrong-shape": (_kohya(down=_random(4, 80)), "lora.shape_mismatch", "[4, 64]"),
    "rank-mismatch": (_kohya(up=_random(64, 8)), "lora.rank_mismatch", "rank 4"),
    "all-nan": ({k: torch.full_like(v, float("nan")) for k, v in _kohya().items()}, "lora.not_finite", "NaN"),
    "one-inf-f16": (_kohya(up=_with(_random(64, 4, dtype=torch.float16), float("inf"))), "lora.not_finite",
                    "1 of 256"),
    "bf16-nan": (_kohya(down=_with(_random(4, 64, dtype=torch.bfloat16), float("nan"))), "lora.not_finite", "NaN"),
    "f64-minus-inf": (_kohya(down=_with(_random(4, 64, dtype=torch.float64), float("-inf"))), "lora.not_finite",
                      "lora_down"),
    "peft-nan": ({f"{PEFT_ATTN}.lora_A.weight": _random(4, 64),
                  f"{PEFT_ATTN}.lora_B.weight": _with(_random(64, 4), float("nan"), 255)},
                 "lora.not_finite", "lora_B"),
}


@pytest.fixture()
def folder(tmp_path) -> Path:
    for name, (tensors, _, _) in BAD_FILES.items():
        save_file(tensors, str(tmp_path / f"{name}.safetensors"))
    save_file(_kohya(), str(tmp_path / "good.safetensors"))
    return tmp_path


def _requests(lora: str) -> list[Request]:
    resolved, _ = resolve(Request(prompt="a lighthouse", width=64, height=64, steps=2, seed=7, sampler="Euler a",
                                  loras=(LoraRef(lora, 0.8),)), PROFILES["tiny"], model="tiny")
    return resolved.images()


def _lora_layers(engine: Engine) -> list[str]:
    return [name for name, _ in engine.load("tiny").txt2img.unet.named_modules() if "lora_" in name]


@pytest.mark.parametrize("name", list(BAD_FILES))
def test_a_bad_folder_lora_is_refused_with_one_line(tiny_engine, folder, name):
    _, code, names = BAD_FILES[name]
    with pytest.raises(LoraFileError) as error:
        tiny_engine.generate(_requests(name), lora_resolver=FolderLoraResolver(folder))
    assert error.value.code == code
    message = error.value.message()
    assert "\n" not in message and names in message and f"`{name}`" in message
    assert "{" not in error.value.message("zh-CN") and "\n" not in error.value.message("zh-CN")
    assert _lora_layers(tiny_engine) == []  # nothing was applied, nothing is left behind


def test_a_good_lora_is_still_applied(tiny_engine, folder):
    with_lora = tiny_engine.generate(_requests("good"), lora_resolver=FolderLoraResolver(folder))[0].image
    without, _ = resolve(Request(prompt="a lighthouse", width=64, height=64, steps=2, seed=7, sampler="Euler a"),
                         PROFILES["tiny"], model="tiny")
    assert with_lora.tobytes() != tiny_engine.generate(without.images())[0].image.tobytes()


def test_nan_weights_are_refused_before_the_model_loads(folder):
    engine = Engine(ModelRegistry(), device="cpu", lora_resolver=FolderLoraResolver(folder))
    loads: list[str] = []
    engine.load = lambda name: loads.append(name)  # type: ignore[method-assign,assignment,return-value]
    with pytest.raises(LoraFileError) as error:
        engine.generate(_requests("all-nan"))
    assert error.value.code == "lora.not_finite" and loads == []


def test_the_verdict_is_reached_once_per_file_content(tiny_engine, folder, monkeypatch, tmp_path):
    reads: list[str] = []
    original = lora_files.check_lora_values
    monkeypatch.setattr(lora_files, "check_lora_values", lambda source, **kw: (reads.append(str(source)),
                                                                                original(source, **kw))[1])
    engine = Engine(ModelRegistry(), device="cpu", cache_dir=tmp_path / "cache")
    engine._models = tiny_engine._models  # the session's loaded tiny model: no second build
    for _ in range(3):
        with pytest.raises(LoraFileError):
            engine.generate(_requests("wrong-shape"), lora_resolver=FolderLoraResolver(folder))
        engine.generate(_requests("good"), lora_resolver=FolderLoraResolver(folder))
    assert len(reads) == 2  # each file's weights read once, not once per call
    assert engine.lora_verdicts.judged == 4  # two files, each: alone and against the tiny model
    # the same bytes under another name are the same verdict, told with the name asked for
    (folder / "copy.safetensors").write_bytes((folder / "wrong-shape.safetensors").read_bytes())
    with pytest.raises(LoraFileError) as error:
        engine.generate(_requests("copy"), lora_resolver=FolderLoraResolver(folder))
    assert error.value.code == "lora.shape_mismatch" and "`copy`" in error.value.message()
    assert len(reads) == 2 and engine.lora_verdicts.judged == 4


def test_another_process_refuses_a_known_bad_file_at_planning_without_loading(tiny_engine, folder, tmp_path):
    cache = tmp_path / "cache"
    first = Engine(ModelRegistry(), device="cpu", cache_dir=cache)
    first._models = tiny_engine._models
    with pytest.raises(LoraFileError):
        first.generate(_requests("renamed-keys"), lora_resolver=FolderLoraResolver(folder))
    later = Engine(ModelRegistry(), device="cpu", cache_dir=cache)  # a new process: nothing loaded
    later.load = lambda name: pytest.fail("planning must not load a model")  # type: ignore[method-assign]
    lora = ResolvedLora("renamed-keys", folder / "renamed-keys.safetensors", "0" * 12)
    with pytest.raises(LoraFileError) as error:
        later.check_loras([lora], "tiny")
    assert error.value.code == "lora.unknown_module"
    later.check_loras([ResolvedLora("good", folder / "good.safetensors", "0" * 12)], "tiny")  # sound; its fit: when the model loads


def test_planning_judges_keys_and_shapes_when_the_model_is_loaded(tiny_engine, folder):
    tiny_engine.generate(_requests("good"), lora_resolver=FolderLoraResolver(folder))  # its layers are listed
    with pytest.raises(LoraFileError) as error:
        tiny_engine.check_loras([ResolvedLora("kohya-unknown-layer",
                                              folder / "kohya-unknown-layer.safetensors", "0" * 12)], "tiny")
    assert error.value.code == "lora.unknown_module"


def test_the_python_api_refuses_bad_lora_files(tiny_engine, folder):
    for name in ("all-nan", "renamed-keys", "wrong-shape"):
        with pytest.raises(BrushworkError) as error:
            generate(f"a lighthouse --lora {name}:0.8 --size 64x64 --steps 2 --seed 1", engine=tiny_engine,
                     model="tiny", lora_files={name: folder / f"{name}.safetensors"})
        assert error.value.code == BAD_FILES[name][1] and "\n" not in error.value.message()
    images = generate("a lighthouse --lora good:0.8 --size 64x64 --steps 2 --seed 1", engine=tiny_engine,
                      model="tiny", lora_files=folder)
    assert images[0].lora_hashes["good"]


def test_finite_weights_pass_the_value_check(folder):
    check_lora_values(folder / "good.safetensors")
    check_lora_values((folder / "good.safetensors").read_bytes(), name="good.safetensors")
    with pytest.raises(LoraFileError) as error:
        check_lora_values((folder / "bf16-nan.safetensors").read_bytes(), name="bf16-nan.safetensors")
    assert error.value.params["count"] == 1 and error.value.params["total"] == 256

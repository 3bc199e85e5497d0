"""LoRA kinds Brushwork cannot apply (LyCORIS LoHa/LoKr, DoRA…) are refused from the header alone,
before any base model is loaded — at generation time and by the import check."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from generation.engine import Engine, FolderLoraResolver
from generation.models import ModelRegistry
from generation.profiles import PROFILES
from generation.request import LoraRef, Request, resolve
from generation.training import LoraFileError, inspect_lora
from generation.training.lora_files import check_lora_file

ATTN = "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn1_to_q"  # a 64×64 projection of the tiny UNet
CONV = "lora_unet_mid_block_resnets_0_conv1"  # 64 → 64, 3×3
PEFT_ATTN = "unet.mid_block.attentions.0.transformer_blocks.0.attn1.to_q"


def _random(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(sum(shape)))


def _lora() -> dict[str, torch.Tensor]:
    return {f"{ATTN}.lora_down.weight": _random(4, 64), f"{ATTN}.lora_up.weight": _random(64, 4),
            f"{ATTN}.alpha": torch.tensor(4.0)}


KINDS = {  # what people download, built the way LyCORIS, kohya and PEFT name it
    "loha": ("LyCORIS LoHa", {f"{ATTN}.hada_w1_a": _random(64, 4), f"{ATTN}.hada_w1_b": _random(4, 64),
                              f"{ATTN}.hada_w2_a": _random(64, 4), f"{ATTN}.hada_w2_b": _random(4, 64),
                              f"{ATTN}.alpha": torch.tensor(4.0)}),
    "lokr": ("LyCORIS LoKr", {f"{ATTN}.lokr_w1": _random(8, 8), f"{ATTN}.lokr_w2_a": _random(8, 2),
                              f"{ATTN}.lokr_w2_b": _random(2, 8), f"{ATTN}.alpha": torch.tensor(2.0)}),
    "dora": ("DoRA", {**_lora(), f"{ATTN}.dora_scale": _random(1, 64)}),
    "peft-dora": ("DoRA", {f"{PEFT_ATTN}.lora_A.weight": _random(4, 64), f"{PEFT_ATTN}.lora_B.weight": _random(64, 4),
                           f"{PEFT_ATTN}.lora_magnitude_vector": _random(64)}),
    "locon-cp": ("LoCon with CP decomposition (lora_mid)", {
        f"{CONV}.lora_down.weight": _random(4, 64, 1, 1), f"{CONV}.lora_mid.weight": _random(4, 4, 3, 3),
        f"{CONV}.lora_up.weight": _random(64, 4, 1, 1), f"{CONV}.alpha": torch.tensor(4.0)}),
    "ia3": ("LyCORIS (IA)³", {f"{ATTN}.weight": _random(64), f"{ATTN}.on_input": torch.tensor(1.0)}),
    "glora": ("LyCORIS GLoRA", {f"{ATTN}.a1.weight": _random(4, 64), f"{ATTN}.a2.weight": _random(64, 4),
                                f"{ATTN}.b1.weight": _random(4, 64), f"{ATTN}.b2.weight": _random(64, 4)}),
    "full": ("LyCORIS full (weight difference)", {f"{ATTN}.diff": _random(64, 64)}),
}


@pytest.fixture()
def folder(tmp_path):
    for name, (_, tensors) in KINDS.items():
        save_file(tensors, str(tmp_path / f"{name}.safetensors"))
    save_file(_lora(), str(tmp_path / "plain.safetensors"))
    return tmp_path


def _requests(lora: str) -> list[Request]:
    resolved, _ = resolve(Request(prompt="a lighthouse", width=64, height=64, steps=2, seed=7, sampler="Euler a",
                                  loras=(LoraRef(lora, 1.0),)), PROFILES["tiny"], model="tiny")
    return resolved.images()


class LoadCalled(Exception):
    pass


def _engine_that_must_not_load(folder) -> tuple[Engine, list[str]]:
    engine = Engine(ModelRegistry(), device="cpu", lora_resolver=FolderLoraResolver(folder))
    loads: list[str] = []

    def load(name):
        loads.append(name)
        raise LoadCalled(name)

    engine.load = load  # type: ignore[method-assign]
    return engine, loads


@pytest.mark.parametrize("name", list(KINDS))
def test_the_header_tells_the_kind_and_the_message_says_what_to_do(folder, name):
    kind, tensors = KINDS[name]
    with pytest.raises(LoraFileError) as error:
        check_lora_file(folder / f"{name}.safetensors")
    assert error.value.code == "lora.unsupported_kind" and error.value.params["kind"] == kind
    assert error.value.params["key"] in tensors
    message = error.value.message()
    assert f"{name}.safetensors" in message and kind in message  # what was found
    assert "lora_down" in message and "lora_A" in message  # what is supported
    assert "standard LoRA" in message and "extract" in message  # what to do
    assert kind in error.value.message("zh-CN") and "{" not in error.value.message("zh-CN")


def test_a_standard_lora_passes_the_header_check(folder, tiny_engine):
    header = check_lora_file(folder / "plain.safetensors")
    assert set(header.tensors) == set(_lora())
    assert inspect_lora(folder / "plain.safetensors", tiny_engine.load("tiny")).modules == (
        "unet.mid_block.attentions.0.transformer_blocks.0.attn1.to_q",)  # the test's layer is a real one


@pytest.mark.parametrize("name", list(KINDS))
def test_generation_refuses_the_kind_before_the_model_loads(folder, name):
    engine, loads = _engine_that_must_not_load(folder)
    with pytest.raises(LoraFileError) as error:
        engine.generate(_requests(name))
    assert error.value.code == "lora.unsupported_kind" and error.value.params["kind"] == KINDS[name][0]
    assert loads == []  # refused from the header: no 6 GB, no 10 s


def test_generation_with_a_standard_lora_goes_on_to_load_the_model(folder):
    engine, loads = _engine_that_must_not_load(folder)
    with pytest.raises(LoadCalled):
        engine.generate(_requests("plain"))
    assert loads == ["tiny"]

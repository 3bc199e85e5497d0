"""Importing and exporting LoRA files through the service: a kind the engine cannot apply is
refused from the header before the base model loads; an export is the file its images' hashes
name (kohya keys when it has them, converted when asked)."""

from __future__ import annotations

import hashlib
import struct

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from generation.engine import Engine
from generation.models import ModelRegistry
from generation.training import LoraFileError
from generation.training.lora_files import KOHYA_KEY
from storage.records import Scope

pytestmark = pytest.mark.slow

A = Scope(user_id=21, guild_id=501)
ATTN = "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn1_to_q"


def _file(tmp_path, name: str, tensors: dict[str, torch.Tensor]) -> bytes:
    path = tmp_path / f"{name}.safetensors"
    save_file(tensors, str(path))
    return path.read_bytes()


def _kohya() -> dict[str, torch.Tensor]:
    noise = torch.Generator().manual_seed(3)
    return {f"{ATTN}.lora_down.weight": torch.randn(4, 64, generator=noise),
            f"{ATTN}.lora_up.weight": torch.randn(64, 4, generator=noise), f"{ATTN}.alpha": torch.tensor(4.0)}


class LoadCalled(Exception):
    pass


@pytest.mark.parametrize(("tensors", "kind"), [
    ({f"{ATTN}.hada_w1_a": torch.zeros(64, 2), f"{ATTN}.hada_w1_b": torch.zeros(2, 64),
      f"{ATTN}.hada_w2_a": torch.zeros(64, 2), f"{ATTN}.hada_w2_b": torch.zeros(2, 64)}, "LyCORIS LoHa"),
    ({f"{ATTN}.lokr_w1": torch.zeros(8, 8), f"{ATTN}.lokr_w2": torch.zeros(8, 8)}, "LyCORIS LoKr"),
    ({**_kohya(), f"{ATTN}.dora_scale": torch.ones(1, 64)}, "DoRA"),
], ids=["loha", "lokr", "dora"])
def test_an_import_of_another_kind_is_refused_before_the_model_loads(tmp_path, tensors, kind, make_container):
    engine = Engine(ModelRegistry(), device="cpu")
    loads: list[str] = []

    def load(name):
        loads.append(name)
        raise LoadCalled(name)

    engine.load = load  # type: ignore[method-assign]
    container = make_container(engine=engine)
    try:
        with pytest.raises(LoraFileError) as error:
            container.loras.import_lora(A, "style.safetensors", _file(tmp_path, "style", tensors), can_manage=True)
        assert error.value.code == "lora.unsupported_kind" and error.value.params["kind"] == kind
        assert loads == [] and container.loras.list(A) == []
        with pytest.raises(LoadCalled):  # a standard LoRA goes on to the check against the model
            container.loras.import_lora(A, "plain.safetensors", _file(tmp_path, "plain", _kohya()), can_manage=True)
        assert loads == ["tiny"]
    finally:
        container.close()


def _addnet(path) -> str:
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    return hashlib.sha256(data[8 + length:]).hexdigest()[:12]


def test_an_export_is_the_file_its_hash_names(tmp_path, tiny_engine, make_lora, make_container):
    container = make_container(engine=tiny_engine)
    loras = container.loras
    try:
        kohya = loras.import_lora(A, "ink.safetensors", _file(tmp_path, "ink", _kohya()), can_manage=True)
        plain, asked = loras.export(A, "ink"), loras.export(A, "ink", kohya=True)
        assert (plain.format, asked.format) == ("kohya", "kohya")
        assert plain.path == asked.path == loras.files.absolute(kohya.file_path)  # nothing to convert
        assert (plain.filename, asked.filename) == ("ink.safetensors", "ink-kohya.safetensors")
        assert _addnet(plain.path) == kohya.short_hash

        diffusers = loras.import_lora(A, "wash.safetensors", make_lora(tmp_path, "wash").read_bytes(),
                                      can_manage=True)
        stored, converted = loras.export(A, "wash"), loras.export(A, "wash", kohya=True)
        assert stored.format == "diffusers" and _addnet(stored.path) == diffusers.short_hash  # as uploaded
        assert converted.format == "kohya" and converted.path != stored.path
        with safe_open(str(converted.path), "pt") as handle:
            assert all(KOHYA_KEY.match(key) for key in handle.keys())
    finally:
        container.close()

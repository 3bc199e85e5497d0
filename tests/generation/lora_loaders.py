"""What ComfyUI and AUTOMATIC1111 would load of a LoRA file, by their key rules, for the tiny model.

Written from how the two map names (ComfyUI: ``comfy/lora.py``, ``model_lora_keys_unet`` /
``model_lora_keys_clip`` and the weight adapters' suffixes; A1111: ``extensions-builtin/Lora``,
``convert_diffusers_name_to_compvis`` and the LoRA module type), not from their code and not
from Brushwork's: a checker that shared Brushwork's naming would pass whatever it exported.

**ComfyUI** builds a map from LoRA name prefixes to model weights — for each UNet weight in
diffusers naming: ``lora_unet_<path with _>``, and ``<path>`` / ``unet.<path>`` with
``processor.`` put before ``to_q``/``to_k``/``to_v``/``to_out`` (``to_out.0`` losing its ``.0``);
for CLIP layer ``b``: ``lora_te_text_model_encoder_layers_<b>_<layer with _>`` (``lora_te1_``
too, and ``lora_te2_`` for SDXL's second encoder) and ``text_encoder.text_model.encoder.layers.
<b>.<layer>`` — then, per prefix, takes the first matrix pair present among its suffixes, and
the prefix's ``.alpha``.  Keys nobody took are "lora key not loaded".

**A1111** splits a key at its first dot into module and part, converts the module name with
regular expressions over kohya's names (``lora_unet_{down,up}_blocks_<i>_{attentions,resnets}_
<j>_…``, ``lora_unet_mid_block_…``, ``lora_te_text_model_encoder_layers_<n>_…``; SDXL's
``lora_te1_``/``lora_te2_``), and its LoRA module type needs ``lora_up.weight`` and
``lora_down.weight`` (``alpha`` optional).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

COMFY_PAIRS = (  # (up, down), in the order ComfyUI tries them
    ("{}.lora_up.weight", "{}.lora_down.weight"),
    ("{}_lora.up.weight", "{}_lora.down.weight"),
    ("{}.lora_B.weight", "{}.lora_A.weight"),
    ("{}.lora.up.weight", "{}.lora.down.weight"),
    ("{}.lora_linear_layer.up.weight", "{}.lora_linear_layer.down.weight"),
)
CLIP_LAYERS = ("mlp.fc1", "mlp.fc2", "self_attn.k_proj", "self_attn.q_proj", "self_attn.v_proj",
               "self_attn.out_proj")
A1111_MODULES = (
    re.compile(r"lora_unet_(down|up)_blocks_\d+_(attentions|resnets)_\d+_.+"),
    re.compile(r"lora_unet_mid_block_(attentions|resnets)_\d+_.+"),
    re.compile(r"lora_unet_(conv_in|conv_out|time_embedding_linear_\d+).*"),
    re.compile(r"lora_unet_(down_blocks_\d+_downsamplers|up_blocks_\d+_upsamplers)_0_conv"),
    re.compile(r"lora_te[12]?_text_model_encoder_layers_\d+_.+"),
)
A1111_PARTS = {"lora_up.weight", "lora_down.weight", "alpha"}


@dataclass(frozen=True)
class Layer:
    component: str
    path: str  # diffusers / transformers module path
    out_features: int
    in_features: int


@dataclass(frozen=True)
class Loaded:
    keys: frozenset[str]  # the file's keys that were used
    layers: frozenset[tuple[str, str]]  # (component, path) patched
    unused: frozenset[str]  # the file's keys nobody took


def model_layers(pipe) -> dict[tuple[str, str], Layer]:
    import torch

    out: dict[tuple[str, str], Layer] = {}
    for component in ("unet", "text_encoder", "text_encoder_2"):
        model = getattr(pipe, component, None)
        if model is None:
            continue
        for path, module in model.named_modules():
            if isinstance(module, torch.nn.Linear):
                out[(component, path)] = Layer(component, path, module.out_features, module.in_features)
            elif isinstance(module, torch.nn.Conv2d):
                out[(component, path)] = Layer(component, path, module.out_channels, module.in_channels)
    return out


def comfyui_prefixes(layers: Mapping[tuple[str, str], Layer]) -> dict[str, tuple[str, str]]:
    prefixes: dict[str, tuple[str, str]] = {}
    for (component, path) in layers:
        if component == "unet":
            prefixes["lora_unet_" + path.replace(".", "_")] = (component, path)
            diffusers = path.replace(".to_", ".processor.to_")
            if diffusers.endswith(".to_out.0"):
                diffusers = diffusers[:-2]
            prefixes[diffusers] = prefixes["unet." + diffusers] = (component, path)
            continue
        match = re.fullmatch(r"(?:text_model\.)?encoder\.layers\.(\d+)\.(.+)", path)
        if match is None or match[2] not in CLIP_LAYERS:
            continue  # ComfyUI maps only these CLIP layers
        block, layer = match[1], match[2]
        kohya = f"text_model_encoder_layers_{block}_{layer.replace('.', '_')}"
        if component == "text_encoder":
            names = [f"lora_te_{kohya}", f"lora_te1_{kohya}"]
        else:
            names = [f"lora_te2_{kohya}"]
        names.append(f"{component}.text_model.encoder.layers.{block}.{layer}")
        for name in names:
            prefixes[name] = (component, path)
    return prefixes


def comfyui_loads(shapes: Mapping[str, tuple[int, ...]], layers: Mapping[tuple[str, str], Layer]) -> Loaded:
    """What ComfyUI takes from a file whose keys have these ``shapes``; a pair of the wrong
    shape for its layer (ComfyUI: "WEIGHT NOT MERGED") fails the test at once."""
    used: set[str] = set()
    patched: set[tuple[str, str]] = set()
    for prefix, target in comfyui_prefixes(layers).items():
        if f"{prefix}.alpha" in shapes:
            used.add(f"{prefix}.alpha")
        for up_name, down_name in COMFY_PAIRS:
            up, down = up_name.format(prefix), down_name.format(prefix)
            if up not in shapes:
                continue
            assert down in shapes, f"ComfyUI would fail on {up}: no {down}"
            layer = layers[target]
            assert shapes[up][0] == layer.out_features and shapes[down][1] == layer.in_features, (up, layer)
            used |= {up, down}
            patched.add(target)
            break
    return Loaded(keys=frozenset(used), layers=frozenset(patched), unused=frozenset(set(shapes) - used))


def a1111_loads(keys: Iterable[str]) -> Loaded:
    """What A1111 takes (by module name grammar and LoRA parts; the tiny model has no
    compvis names to look the modules up in)."""
    parts: dict[str, set[str]] = {}
    used: set[str] = set()
    for key in keys:
        module, _, part = key.partition(".")
        if any(pattern.fullmatch(module) for pattern in A1111_MODULES) and part in A1111_PARTS:
            parts.setdefault(module, set()).add(part)
    complete = {module for module, found in parts.items() if {"lora_up.weight", "lora_down.weight"} <= found}
    for key in keys:
        module, _, part = key.partition(".")
        if module in complete and part in A1111_PARTS:
            used.add(key)
    all_keys = set(keys)
    return Loaded(keys=frozenset(used), layers=frozenset(("?", m) for m in complete),
                  unused=frozenset(all_keys - used))


def shapes_of(path) -> dict[str, tuple[int, ...]]:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as handle:
        return {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}

"""The Python API: prompt with flags plus keyword arguments, diffusers' names included."""

from __future__ import annotations

import pytest

from generation.api import build_request, generate
from generation.errors import RequestError
from generation.metadata import read_recipe
from generation.request import Hires, LoraRef


def test_keywords_override_inline_flags_and_accept_diffusers_names():
    request = build_request("a cat --steps 10 --cfg 3 --ar 3:2", num_inference_steps=30, guidance_scale=7.5,
                            width=64, height=96, negative_prompt="blurry", num_images_per_prompt=2)
    assert request.steps == 30 and request.cfg == 7.5
    assert request.size == (64, 96) and request.aspect is None
    assert request.negative_prompt == "blurry" and request.n == 2


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"hires": True}, Hires()),
        ({"hires": 1.5, "strength": 0.4}, Hires(scale=1.5, strength=0.4)),
        ({"hires_steps": 5}, Hires(steps=5)),
    ],
)
def test_hires_keywords(kwargs, expected):
    assert build_request("a cat", **kwargs).hires == expected


def test_lora_spellings():
    assert build_request("a", loras={"ink": 0.8}).loras == (LoraRef("ink", 0.8),)
    assert build_request("a", loras=["ink:0.8", ("paper", 0.5)]).loras == (LoraRef("ink", 0.8), LoraRef("paper", 0.5))


def test_mistakes():
    with pytest.raises(RequestError) as exc:
        build_request("a cat", steps=10, num_inference_steps=20)
    assert exc.value.code == "api.conflicting_arguments"
    with pytest.raises(RequestError) as exc:
        build_request("a cat", guidance=7)
    assert exc.value.code == "api.unknown_argument" and "guidance_scale" in exc.value.message()
    with pytest.raises(RequestError):
        build_request("a cat", num_inference_steps=0)


def test_generate_reproduces_from_its_own_recipe(tiny_engine, tmp_path):
    first = generate("a lighthouse --size 64x64", num_inference_steps=3, seed=11, engine=tiny_engine)[0]
    assert first.seed == 11 and first.image.size == (64, 64)
    again = generate(first.request.render(), engine=tiny_engine)[0]
    assert again.image.tobytes() == first.image.tobytes()
    path = first.save(tmp_path / "x.png")
    recipe = read_recipe(path)
    assert recipe.request == first.request
    assert "Seed: 11" in first.infotext and recipe.infotext == first.infotext

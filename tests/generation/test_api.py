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


def test_img2img_like_diffusers_and_reproducible_from_its_recipe(tiny_engine, tmp_path):
    import numpy as np
    from PIL import Image

    from generation.api import python_code

    start = generate("a harbour --size 96x64 --seed 2", steps=3, engine=tiny_engine)[0]
    path = start.save(tmp_path / "harbour.png")
    made = generate("a harbour at night", image=path, strength=0.3, steps=10, seed=5, engine=tiny_engine)[0]
    request = made.request
    assert request.image is not None and len(request.image) == 8
    assert request.hires.scale == 1.0 and request.hires.strength == 0.3
    assert request.size == (624, 416)  # the picture's 3:2 at the model's native area
    assert made.image.size == (624, 416)
    assert f"Init image: {request.image}" in made.infotext and "Denoising strength: 0.3" in made.infotext

    # The id comes from the pixels: the same picture as a PIL image gets the same id,
    # and the recipe plus image_files reproduces the image exactly.
    with Image.open(path) as picture:
        same = generate("a harbour at night", image=picture.copy(), strength=0.3, steps=10, seed=5,
                        engine=tiny_engine)[0]
    assert same.request == request and same.image.tobytes() == made.image.tobytes()
    again = generate(request.render(), image_files={request.image: path}, engine=tiny_engine)[0]
    assert again.image.tobytes() == made.image.tobytes()
    code = python_code(request)
    assert f"image_files={{{request.image!r}: '{request.image}.png'}}" in code

    # a gentle strength stays closer to the picture than a strong one
    base = np.asarray(Image.open(path).convert("RGB").resize((64, 64)), dtype=np.float32)
    near, far = (np.abs(np.asarray(generate("x --size 64x64", image=path, strength=s, steps=10, seed=1,
                                            engine=tiny_engine)[0].image, dtype=np.float32) - base).mean()
                 for s in (0.2, 0.9))
    assert near < far


def test_img2img_mistakes_in_the_api(tiny_engine, tmp_path):
    with pytest.raises(RequestError) as error:
        generate("a cat --image k3x9fq2a --size 64x64", steps=2, engine=tiny_engine)
    assert error.value.code == "api.image_file_missing" and "image_files" in error.value.message()
    (tmp_path / "not.png").write_bytes(b"not a picture")
    with pytest.raises(RequestError) as error:
        generate("a cat --size 64x64", image=tmp_path / "not.png", steps=2, engine=tiny_engine)
    assert error.value.code == "api.image_unreadable"
    from generation.models import ModelRegistry
    from generation.request import resolve

    with pytest.raises(RequestError) as error:  # nothing would run: img2img runs 2 steps × 0.3 < 1 of them
        resolve(build_request("a cat --image k3x9fq2a --strength 0.3 --steps 2"),
                ModelRegistry().profile("tiny"), model="tiny")
    assert error.value.code == "request.refine_no_steps" and "Raise --steps" in error.value.message()

"""LoRAs named per call (the queue's plan-time resolution) and the Python training API, on the tiny model."""

from __future__ import annotations

import hashlib
import io
import struct

import numpy as np
import pytest
from PIL import Image
from safetensors import safe_open

from generation import TrainedLora, generate, train_lora
from generation.errors import ModelError, RequestError
from generation.models.hashing import FileHasher
from generation.profiles import PROFILES
from generation.request import LoraRef, Request, resolve
from tests.generation import lora_loaders

pytestmark = pytest.mark.slow


def request(**fields) -> list[Request]:
    resolved, _ = resolve(Request(prompt="a lighthouse", width=64, height=64, steps=2, seed=77,
                                  sampler="Euler a", **fields), PROFILES["tiny"], model="tiny")
    return resolved.images()


def pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def lora_free(engine) -> bool:
    pipe = engine.load("tiny").txt2img
    return not any("lora" in n for part in (pipe.unet, pipe.text_encoder) for n, _ in part.named_modules())


def test_a_per_call_resolver_picks_the_file_and_leaves_nothing_behind(tiny_engine, make_lora, tmp_path):
    first, second = make_lora(tmp_path, "first", seed=1), make_lora(tmp_path, "second", seed=2)
    hasher = FileHasher(None)
    plain = tiny_engine.generate(request())[0]
    ref = (LoraRef("ink", 1.0),)
    one = tiny_engine.generate(request(loras=ref), lora_resolver=lambda name: (first, hasher.lora_hash(first)))[0]
    two = tiny_engine.generate(request(loras=ref), lora_resolver=lambda name: (second, hasher.lora_hash(second)))[0]
    assert one.lora_hashes == {"ink": hasher.lora_hash(first)} != two.lora_hashes
    assert not np.array_equal(pixels(one.image), pixels(two.image))  # the same name, each call its own file
    assert lora_free(tiny_engine)
    assert np.array_equal(pixels(tiny_engine.generate(request())[0].image), pixels(plain.image))
    with pytest.raises(ModelError):  # the engine's own resolver is untouched: it has none
        tiny_engine.generate(request(loras=ref))
    with pytest.raises(ModelError) as error:  # a name the call's resolver does not know
        tiny_engine.generate(request(loras=(LoraRef("other", 1.0),)), lora_resolver=lambda name: {}[name])
    assert error.value.code == "model.no_loras"
    assert lora_free(tiny_engine)


def _png(seed: int, size=(64, 64)) -> bytes:
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)).resize(size, Image.Resampling.BICUBIC)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def test_train_lora_from_a_folder_then_generate_with_it(tiny_engine, tmp_path):
    folder = tmp_path / "ink-wash"
    folder.mkdir()
    for i in range(3):
        (folder / f"{i:02d}.png").write_bytes(_png(i))
    (folder / "00.txt").write_text("a mountain above the clouds", encoding="utf-8")
    seen = []
    lora = train_lora(folder, out=tmp_path / "inkwash.safetensors", trigger_word="inkwash", steps=4, resolution=64,
                      rank=4, learning_rate=1e-2, engine=tiny_engine, kohya=True, on_progress=seen.append,
                      sample_every=2, sample_steps=2)
    assert isinstance(lora, TrainedLora) and lora.path.is_file() and lora.kohya_path.is_file()
    assert [p.step for p in seen] == [1, 2, 3, 4] and lora.steps == 4 and lora.loss is not None
    assert lora.before is not None and lora.after is not None
    assert lora.metadata["brushwork.trigger_words"] == '["inkwash"]' and lora.metadata["brushwork.dataset_size"] == "3"
    with safe_open(str(lora.path), "pt") as handle:
        assert handle.metadata()["brushwork.name"] == "inkwash"
    prompt = "inkwash, a lake --seed 5 --size 64x64 --steps 2"
    plain = generate(prompt, engine=tiny_engine)[0]
    styled = generate(f"{prompt} --lora inkwash:1", engine=tiny_engine, lora_files={"inkwash": lora.path})[0]
    by_folder = generate(f"{prompt} --lora inkwash:1", engine=tiny_engine, lora_files=tmp_path)[0]
    assert not np.array_equal(pixels(plain.image), pixels(styled.image))
    assert np.array_equal(pixels(styled.image), pixels(by_folder.image))
    assert styled.lora_hashes == {"inkwash": FileHasher(None).lora_hash(lora.path)}
    assert lora_free(tiny_engine)

    # the file made is the one to share: A1111 and ComfyUI take every key, and the image
    # records the hash A1111 and CivitAI compute from its bytes (sha256 after the header)
    layers = lora_loaders.model_layers(tiny_engine.load("tiny").txt2img)
    shapes = lora_loaders.shapes_of(lora.path)
    assert not lora_loaders.comfyui_loads(shapes, layers).unused and not lora_loaders.a1111_loads(shapes).unused
    data = lora.path.read_bytes()
    (header,) = struct.unpack("<Q", data[:8])
    shared_hash = hashlib.sha256(data[8 + header:]).hexdigest()[:12]
    assert styled.lora_hashes == {"inkwash": shared_hash}
    assert f'Lora hashes: "inkwash: {shared_hash}"' in styled.infotext
    kohya = lora.kohya_path.read_bytes()
    (header,) = struct.unpack("<Q", kohya[:8])
    assert hashlib.sha256(kohya[8 + header:]).hexdigest()[:12] == shared_hash  # the kohya copy: the same file


def test_train_lora_checks_its_images(tiny_engine, tmp_path):
    with pytest.raises(RequestError) as error:
        train_lora(tmp_path, out=tmp_path / "x.safetensors", engine=tiny_engine)
    assert error.value.code == "api.training_images"
    from generation.datasets import DatasetError

    with pytest.raises(DatasetError) as error:
        train_lora([(b"not an image", "caption")], out=tmp_path / "x.safetensors", engine=tiny_engine)
    assert error.value.code == "dataset.not_an_image"

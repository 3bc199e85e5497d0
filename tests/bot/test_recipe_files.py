"""Recipes read from image files: a model found by its hash, what cannot be reproduced said
everywhere the recipe is used (``brushwork show``, tweak from a file, ``/info file:``)."""

from __future__ import annotations

import json

import pytest
from PIL import Image, PngImagePlugin

from bot.cli import main
from bot.discord_app.delivery import file_info_card
from generation.engine import Engine
from generation.models import ModelRegistry, ModelSpec
from generation.models.hashing import sha256_file
from storage.records import Scope

A1111 = (
    "{prompt}\n"
    "Steps: 20, Sampler: Restart, Schedule type: Karras, CFG scale: 6, Seed: 77, Size: 512x768, "
    "Model hash: {hash}, Model: {model}, ENSD: 31337, Hires upscale: 2, Hires upscaler: Latent, Version: v1.10.1"
)


@pytest.fixture
def checkpoint(tmp_path):
    """A small SD1-layout single-file checkpoint (its header says SD1; no weights are loaded)."""
    import torch
    from safetensors.torch import save_file

    path = tmp_path / "anything-v5.safetensors"
    save_file({"cond_stage_model.transformer.w": torch.zeros(4)}, str(path))
    return path


def a1111_png(path, *, model_hash: str, model: str = "v1-5-pruned-emaonly",
              prompt: str = "a lighthouse, <lora:glow:0.8>, stormy sea") -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", A1111.format(prompt=prompt, hash=model_hash, model=model))
    Image.new("RGB", (8, 8)).save(path, pnginfo=info)


def test_engine_finds_a_registered_model_by_its_a1111_hash(checkpoint, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the hub models are not downloaded: skipped, never fetched
    engine = Engine(ModelRegistry([ModelSpec("mine", str(checkpoint))]), device="cpu")
    digest = sha256_file(checkpoint)
    assert engine.model_for_hash(digest[:10]) == "mine"
    assert engine.model_for_hash(digest.upper()) == "mine"  # a full sha256, any case
    assert engine.model_for_hash("0123456789") is None
    assert engine.model_for_hash(digest[:8]) is None  # A1111's old hash is another algorithm


@pytest.fixture
def home(tmp_path, monkeypatch, checkpoint):
    home = tmp_path / "home"
    monkeypatch.setenv("BRUSHWORK_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    home.mkdir()
    (home / "brushwork.toml").write_text(f'[models.mine]\nsource = "{checkpoint.as_posix()}"\n', "utf-8")
    return home


@pytest.fixture
def container(home, make_container):
    return make_container(home=home)


def test_show_uses_the_model_with_that_hash_and_names_what_is_not_reproduced(home, container, checkpoint,
                                                                             tmp_path, capsys):
    assert "mine" in container.registry
    picture = tmp_path / "a1111.png"
    a1111_png(picture, model_hash=sha256_file(checkpoint)[:10])
    assert main(["show", str(picture)]) == 0  # never refused whole
    out = capsys.readouterr().out
    assert "model:     mine (the file says v1-5-pruned-emaonly; same model hash)" in out
    assert "not reproduced: Sampler: Restart; Schedule type: Karras; ENSD: 31337; Hires upscaler: Latent" in out
    assert "prompt:    a lighthouse, stormy sea\n" in out
    assert main(["show", str(picture), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["request"]["model"] == "mine" and shown["model_name"] == "v1-5-pruned-emaonly"
    assert shown["unreproduced"]["Sampler"] == "Restart"


def test_show_without_a_matching_hash_says_the_model_is_not_here(home, tmp_path, capsys):
    picture = tmp_path / "a1111.png"
    a1111_png(picture, model_hash="0123456789", model="My Model (v2)")
    assert main(["show", str(picture)]) == 0
    assert "model:     My Model (v2) (no model of that name here)" in capsys.readouterr().out


def test_tweak_from_a_file_says_what_it_does_not_reproduce(container, checkpoint, tmp_path):
    picture = tmp_path / "a1111.png"
    a1111_png(picture, model_hash=sha256_file(checkpoint)[:10], prompt="a lighthouse, stormy sea")
    scope = Scope.local_operator()
    plan = container.images.plan_tweak(str(picture), "--steps 10", scope)
    assert plan.request.model == "mine" and plan.request.steps == 10
    notes = [note.message() for note in plan.notes if note.code == "note.not_reproduced"]
    assert notes and "Sampler: Restart; Schedule type: Karras; ENSD: 31337; Hires upscaler: Latent" in notes[0]
    assert "{" not in plan.notes[-1].message("zh-CN")
    chosen = container.images.plan_tweak(str(picture), "--sampler Euler", scope)  # nearest, chosen explicitly
    (note,) = [n for n in chosen.notes if n.code == "note.not_reproduced"]
    assert chosen.request.sampler == "Euler" and "Sampler" not in note.message() and "ENSD: 31337" in note.message()


def test_info_file_card_names_what_is_not_reproduced(container, checkpoint, tmp_path):
    from bot.chat import FileRecipe

    picture = tmp_path / "a1111.png"
    a1111_png(picture, model_hash=sha256_file(checkpoint)[:10])
    recipe = container.images.recipe(picture.read_bytes())
    assert recipe.request.model == "mine"
    card = file_info_card(FileRecipe(filename="a1111.png", request=recipe.request, infotext=recipe.infotext,
                                     source=recipe.origin, version=recipe.version, usable_models=("mine",),
                                     unreproduced=recipe.unreproduced), "en")
    fields = dict(card.fields)
    assert fields["Not reproduced here"].startswith("Sampler: Restart; Schedule type: Karras")
    assert "Model here" not in fields  # found by its hash: it runs here
    zh = dict(file_info_card(FileRecipe(filename="a.png", request=recipe.request, infotext=None, source="a1111",
                                        version=None, usable_models=("mine",), unreproduced=recipe.unreproduced),
                             "zh-CN").fields)
    assert "此处无法复现" in zh

"""ModelScope sources with a fake ``modelscope`` package (the real one is an optional extra).

The fake records how ``snapshot_download`` is called and behaves like ModelScope where it
matters here: it logs through its own ``modelscope`` logger, whose handler writes to stderr
and whose level ModelScope's ``get_logger`` sets back to INFO on every call.
"""

from __future__ import annotations

import fnmatch
import logging
import shutil
import sys
import types
from pathlib import Path

import pytest

from generation.errors import ModelError
from generation.models.loading import (
    MODELSCOPE_OFFLINE_ENV,
    _modelscope_folder,
    local_folder_for_hash,
    modelscope_offline,
    pipeline_file_patterns,
)
from generation.models.spec import ModelSpec

SPEC = ModelSpec("ms", "modelscope:AI-ModelScope/stable-diffusion-v1-5", family="sd1")


@pytest.fixture
def offline_unset(monkeypatch):
    monkeypatch.delenv(MODELSCOPE_OFFLINE_ENV, raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)


def install_fake(monkeypatch, tmp_path: Path, *, keyword: str | None = "allow_patterns", fail: bool = False) -> list:
    """A ``modelscope`` module whose ``snapshot_download`` takes ``keyword`` for allow patterns
    (``allow_file_pattern`` in older releases, none in the oldest) and returns ``tmp_path``."""
    calls: list[dict] = []
    logger = logging.getLogger("modelscope")
    handler = logging.StreamHandler(sys.stderr)  # what ModelScope's get_logger attaches (capsys's stderr here)
    monkeypatch.setattr(logger, "handlers", [*logger.handlers, handler])  # all three restored after the test
    monkeypatch.setattr(logger, "propagate", False)
    monkeypatch.setattr(logger, "level", logger.level)

    def body(model_id, revision=None, cache_dir=None, local_files_only=False, **patterns):
        calls.append({"model_id": model_id, "revision": revision, "local_files_only": local_files_only, **patterns})
        logger.setLevel(logging.INFO)  # get_logger() on every call
        logger.warning("Downloading: model_index.json failed, reason: timed out, will retry")
        logger.warning("We can not confirm the cached file is for revision: %s", revision)
        if fail:
            raise ValueError("Cannot find the requested files in the cached path and outgoing traffic has been disabled.")
        return str(tmp_path)

    if keyword == "allow_patterns":
        def snapshot_download(model_id, revision=None, cache_dir=None, local_files_only=False, allow_patterns=None):
            return body(model_id, revision, cache_dir, local_files_only, allow_patterns=allow_patterns)
    elif keyword == "allow_file_pattern":
        def snapshot_download(model_id, revision=None, cache_dir=None, local_files_only=False,
                              allow_file_pattern=None):
            return body(model_id, revision, cache_dir, local_files_only, allow_file_pattern=allow_file_pattern)
    else:
        def snapshot_download(model_id, revision=None, cache_dir=None, local_files_only=False):
            return body(model_id, revision, cache_dir, local_files_only)

    module = types.ModuleType("modelscope")
    module.snapshot_download = snapshot_download  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "modelscope", module)
    return calls


@pytest.mark.parametrize("switch", [MODELSCOPE_OFFLINE_ENV, "HF_HUB_OFFLINE"])
def test_offline_uses_what_is_downloaded_and_fetches_nothing(monkeypatch, tmp_path, capsys, offline_unset, switch):
    calls = install_fake(monkeypatch, tmp_path)
    monkeypatch.setenv(switch, "1")
    assert modelscope_offline()
    assert _modelscope_folder(SPEC, allow_download=True) == tmp_path
    assert calls == [{"model_id": "AI-ModelScope/stable-diffusion-v1-5", "revision": None, "local_files_only": True,
                      "allow_patterns": pipeline_file_patterns(None)}]
    assert capsys.readouterr().err == ""  # ModelScope's warnings are not the user's to act on


def test_online_downloads_only_the_pipeline_files(monkeypatch, tmp_path, capsys, offline_unset):
    calls = install_fake(monkeypatch, tmp_path)
    spec = ModelSpec("ms", SPEC.source, family="sd1", variant="fp16", revision="v1.0")
    assert _modelscope_folder(spec, allow_download=True) == tmp_path
    (call,) = calls
    assert call["local_files_only"] is False and call["revision"] == "v1.0"
    patterns = call["allow_patterns"]
    wanted = ["model_index.json", "scheduler/scheduler_config.json", "tokenizer/vocab.json", "tokenizer/merges.txt",
              "unet/config.json", "unet/diffusion_pytorch_model.fp16.safetensors", "vae/config.json",
              "text_encoder/model.fp16.safetensors", "text_encoder_2/model.fp16.safetensors"]
    unwanted = ["unet/diffusion_pytorch_model.safetensors", "unet/diffusion_pytorch_model.fp16.bin",
                "safety_checker/model.fp16.safetensors", "feature_extractor/preprocessor_config.json",
                "v1-5-pruned.ckpt", "v1-5-pruned-emaonly.safetensors", "README.md"]
    assert all(any(fnmatch.fnmatch(path, p) for p in patterns) for path in wanted)
    assert not any(fnmatch.fnmatch(path, p) for path in unwanted for p in patterns)
    assert capsys.readouterr().err == ""


def test_the_hash_lookup_never_downloads(monkeypatch, tmp_path, offline_unset):
    calls = install_fake(monkeypatch, tmp_path)
    assert local_folder_for_hash(SPEC) == tmp_path
    assert calls[0]["local_files_only"] is True


@pytest.mark.parametrize(("keyword", "expected"), [("allow_file_pattern", "allow_file_pattern"), (None, None)])
def test_older_modelscope_releases(monkeypatch, tmp_path, offline_unset, keyword, expected):
    calls = install_fake(monkeypatch, tmp_path, keyword=keyword)
    _modelscope_folder(SPEC, allow_download=True)
    (call,) = calls
    if expected is None:  # the oldest releases cannot be told: they fetch the whole repository
        assert set(call) == {"model_id", "revision", "local_files_only"}
    else:
        assert call[expected] == pipeline_file_patterns(None)


def test_not_downloaded_while_offline_says_how_to_get_it(monkeypatch, tmp_path, capsys, offline_unset):
    install_fake(monkeypatch, tmp_path, fail=True)
    monkeypatch.setenv(MODELSCOPE_OFFLINE_ENV, "1")
    with pytest.raises(ModelError) as error:
        _modelscope_folder(SPEC, allow_download=True)
    assert error.value.code == "model.modelscope_not_cached"
    message = error.value.message()
    assert "modelscope download --model AI-ModelScope/stable-diffusion-v1-5" in message and "MODELSCOPE_OFFLINE" in message
    assert "{" not in error.value.message("zh-CN")
    assert capsys.readouterr().err == ""


def test_loggers_are_restored_and_errors_still_show(monkeypatch, tmp_path, offline_unset):
    install_fake(monkeypatch, tmp_path)
    logger = logging.getLogger("modelscope")
    logger.setLevel(logging.DEBUG)
    before = (list(logger.filters), [list(h.filters) for h in logger.handlers])
    _modelscope_folder(SPEC, allow_download=True)
    assert logger.level == logging.DEBUG
    assert (list(logger.filters), [list(h.filters) for h in logger.handlers]) == before


@pytest.mark.slow
def test_the_pattern_files_are_enough_to_load_the_pipeline(tmp_path):
    """Save the tiny model as a diffusers folder, keep only what the patterns select, load that."""
    import torch

    from generation.models.loading import _load_folder
    from generation.models.tiny import tiny_pipeline

    full, kept = tmp_path / "full", tmp_path / "kept"
    tiny_pipeline().save_pretrained(full)
    patterns = pipeline_file_patterns(None)
    copied = []
    for path in full.rglob("*"):
        relative = path.relative_to(full).as_posix()
        if path.is_file() and any(fnmatch.fnmatch(relative, p) for p in patterns):
            (kept / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, kept / relative)
            copied.append(relative)
    assert "unet/diffusion_pytorch_model.safetensors" in copied
    pipe = _load_folder(ModelSpec("kept", str(kept), family="tiny"), kept, "tiny", torch.float32)
    assert type(pipe).__name__ == "StableDiffusionPipeline"

"""Admission rules, and what the engine offers the queue: OOM as a typed error, a per-call
VAE tiling switch, previews of a subset of a batch, a model cache bounded by memory."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from generation.errors import OutOfMemoryError, QueueError
from generation.queue import DailyUsage, PendingCounts, QueueLimits, Submission, check_admission
from generation.queue.limits import hours_until_midnight_utc, minutes
from generation.request import Request

NOON = datetime(2025, 6, 1, 12, 0, tzinfo=UTC).timestamp()


def ask(guild=5, images=1):
    return Submission(kind="generate", owner=1, guild=guild, payload={}, images=images)


def test_server_settings_override_the_defaults():
    limits = QueueLimits(per_user=5, per_guild=50).merged({"queued_per_user": 2, "daily_images": 100, "junk": 1})
    assert (limits.per_user, limits.per_guild, limits.daily_images) == (2, 50, 100)
    assert QueueLimits().merged(None) == QueueLimits()


@pytest.mark.parametrize(("limits", "counts", "usage", "code"), [
    (QueueLimits(per_user=1), PendingCounts(user=1, total=7), None, "queue.user_full"),
    (QueueLimits(per_guild=3), PendingCounts(guild=3, total=7), None, "queue.guild_full"),
    (QueueLimits(total=7), PendingCounts(total=7), None, "queue.full"),
    (QueueLimits(daily_images=10), PendingCounts(guild_images=4), DailyUsage(images=6), "queue.quota_images"),
    (QueueLimits(daily_gpu_seconds=60), PendingCounts(), DailyUsage(gpu_seconds=61.5), "queue.quota_gpu"),
])
def test_each_limit_refuses_with_its_own_message(limits, counts, usage, code):
    with pytest.raises(QueueError) as error:
        check_admission(ask(), limits, counts, usage, queue_eta_s=150, now=NOON)
    assert error.value.code == code
    english, chinese = error.value.message(), error.value.message("zh-CN")
    assert "{" not in english and "{" not in chinese
    if code.endswith("full"):
        assert "Queue full — 7 jobs ahead, about 3 min" in english and "3 分钟" in chinese
    else:
        assert "00:00 UTC, in about 12 h" in english


def test_within_limits_and_direct_messages_have_no_server_quota():
    check_admission(ask(), QueueLimits(daily_images=10), PendingCounts(guild_images=4), DailyUsage(images=5),
                    queue_eta_s=None, now=NOON)
    check_admission(ask(guild=None), QueueLimits(per_guild=1, daily_images=1), PendingCounts(guild=5),
                    DailyUsage(images=9), queue_eta_s=None, now=NOON)


def test_time_words():
    assert minutes(None) == 1 and minutes(1) == 1 and minutes(61) == 2
    assert hours_until_midnight_utc(datetime(2025, 6, 1, 23, 30, tzinfo=UTC).timestamp()) == 1


# ---------------------------------------------------------------------- engine hooks


def tiny(n=2, **fields):
    request = Request(prompt="a fox", seed=5, steps=2, cfg=7.0, sampler="Euler", width=64, height=64, model="tiny",
                      n=n, **fields)
    return request.images()


def test_out_of_memory_becomes_a_typed_error_and_the_engine_recovers(tiny_engine, monkeypatch):
    import torch

    model = tiny_engine.load("tiny")
    calls = []

    def explode(*args, **kwargs):
        calls.append(1)
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(type(model.txt2img), "__call__", explode)
    with pytest.raises(OutOfMemoryError) as error:
        tiny_engine.generate(tiny())
    assert error.value.code == "engine.out_of_memory" and "2 image" in error.value.message()
    assert calls
    monkeypatch.undo()
    assert len(tiny_engine.generate(tiny())) == 2  # nothing left behind


def test_out_of_memory_while_loading_unloads_the_other_models_then_says_the_model_does_not_fit(monkeypatch):
    import torch

    import generation.engine.engine as engine_module
    from generation.engine import Engine
    from generation.models import ModelRegistry, ModelSpec

    engine = Engine(ModelRegistry([ModelSpec("tiny", "builtin:tiny"), ModelSpec("other", "builtin:tiny")]),
                    device="cpu", max_loaded_models=2)
    engine.load("tiny")
    real_load = engine_module.load_model
    failures = {"other": 1}
    attempts = []

    def load_model(spec, **kwargs):
        attempts.append((spec.name, tuple(engine.loaded_models())))
        if failures.get(spec.name, 0) > 0:
            failures[spec.name] -= 1
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 3.00 GiB")
        return real_load(spec, **kwargs)

    monkeypatch.setattr(engine_module, "load_model", load_model)
    assert engine.load("other").spec.name == "other"  # fitted once "tiny" was unloaded
    assert attempts == [("other", ("tiny",)), ("other", ())]
    assert engine.loaded_models() == ["other"]

    failures["tiny"] = 2  # never fits, even alone
    attempts.clear()
    with pytest.raises(OutOfMemoryError) as error:
        engine.generate(tiny())
    assert error.value.code == "engine.out_of_memory_loading"
    assert "`tiny`" in error.value.message() and "float16" in error.value.message()
    assert "显存" in error.value.message("zh-CN")
    assert attempts == [("tiny", ("other",)), ("tiny", ())]  # one retry with everything else unloaded


def test_per_call_vae_tiling_and_previews_of_one_jobs_images(tiny_engine):
    seen = []
    requests = tiny(n=3)
    tiny_engine.generate(requests, on_step=seen.append, vae_tiling=True)
    last = seen[-1]
    assert last.images == (0, 1, 2)
    assert last.preview().size == (16, 16)  # three images: a 2×2 grid of 8×8 latents
    assert last.preview(only=[1]).size == (8, 8)  # just the second image
    assert last.preview(only=[7]) is None
    vae = tiny_engine.load("tiny").txt2img.vae
    assert not getattr(vae, "use_tiling", False)  # the switch was for that call only


def test_model_cache_can_be_bounded_by_memory():
    from generation.models import ModelCache

    released = []
    cache = ModelCache(4, max_bytes=100, size_of=len, on_evict=lambda key, value: released.append(key))
    cache.get_or_load("a", lambda: "x" * 60)
    cache.get_or_load("b", lambda: "x" * 30)
    assert cache.keys() == ["a", "b"] and cache.loaded_bytes() == 90
    cache.get_or_load("c", lambda: "x" * 50)  # 140 > 100: the least recently used goes
    assert cache.keys() == ["b", "c"] and released == ["a"]
    cache.get_or_load("a", lambda: "x" * 60)  # its size is remembered: room is made before loading
    assert cache.keys() == ["a"] and released == ["a", "b", "c"]
    with pytest.raises(ValueError):
        ModelCache(1, max_bytes=10)

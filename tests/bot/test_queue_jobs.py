"""The queue on the database with the tiny model: batching equivalence, progress and private
previews, OOM back-off through the real runner, LoRAs per job, limits and quotas from
server settings, and the ``queue``/``cancel`` commands."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from bot.cli import main
from bot.jobs import plan_submission
from generation.errors import OutOfMemoryError, QueueError
from generation.metadata import read_recipe
from generation.queue import JobProgress, JobState
from storage.records import JobStatus, Scope

GUILD = 4242
ALICE, BOB, CAROL = 11, 12, 13
WAIT = 120.0


@pytest.fixture
def container(make_container, tiny_engine):
    return make_container(engine=tiny_engine)  # the session's tiny engine: no second model build


@pytest.fixture
def calls(tiny_engine, monkeypatch):
    """Every engine call's number of images (the runner's pipeline calls)."""
    seen: list[int] = []
    original = tiny_engine.generate

    def recording(requests, **kwargs):
        seen.append(len(requests))
        return original(requests, **kwargs)

    monkeypatch.setattr(tiny_engine, "generate", recording)
    return seen


def submit(container, text: str, user: int, guild: int | None = GUILD):
    scope = Scope(user_id=user, guild_id=guild)
    plan = container.images.plan_generate(text, scope)
    return container.queue.submit(plan_submission(plan, scope)), plan


def pixels(path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.float64)


def test_compatible_requests_run_as_one_call_and_match_each_run_alone(container, tiny_engine, calls):
    texts = [("a red fox --seed 1 --n 2", ALICE), ("a blue whale, oil painting --seed 2", BOB),
             ("一座山 --seed 3 --no fog", CAROL)]
    jobs = [submit(container, f"{text} --size 64x64 --steps 4 --sampler euler_a", user) for text, user in texts]
    container.start_workers()
    results = [handle.wait(timeout=WAIT) for handle, _plan in jobs]
    assert calls == [4]  # 2 + 1 + 1 images, one pipeline call
    for (handle, plan), saved in zip(jobs, results, strict=True):
        assert len(saved) == plan.request.count
        alone = tiny_engine.generate(plan.request.images())
        for item, single in zip(saved, alone, strict=True):
            difference = np.abs(pixels(item.path) - np.asarray(single.image, dtype=np.float64)).mean() / 255
            assert difference <= 1 / 255
            assert item.record.job_public_id == handle.job_id
            assert read_recipe(item.path).request == item.request
    with container.unit_of_work() as uow:
        for (handle, _plan), saved in zip(jobs, results, strict=True):
            job = uow.jobs.get(handle.job_id, Scope.local_operator())
            assert job.status is JobStatus.DONE and job.attempts == 1
            assert job.result_image_ids == [item.record.public_id for item in saved]
            assert job.gpu_seconds > 0


def test_progress_events_and_each_job_sees_only_its_own_preview(container):
    first, _ = submit(container, "a cat --seed 4 --size 64x64 --steps 5", ALICE)
    second, _ = submit(container, "a dog --seed 5 --size 64x64 --steps 5", BOB)
    watched = []
    stream = first.iter_events(timeout=WAIT)
    watched.append(next(stream))
    subscription = container.queue.subscribe(first.job_id, watched.append, previews=True)
    container.start_workers()
    list(stream)
    container.queue.unsubscribe(subscription)
    second.wait(timeout=WAIT)
    steps = [e for e in watched if isinstance(e, JobProgress)]
    assert [(e.step, e.total) for e in steps][-1] == (5, 5)
    with_preview = [e for e in steps if e.preview is not None]
    assert with_preview and all(e.preview.size == (8, 8) for e in with_preview)  # one 64² image, not the batch


def test_out_of_memory_splits_the_batch_and_the_images_stay_the_same(container, tiny_engine, monkeypatch):
    original = tiny_engine.generate
    sizes: list[int] = []

    def tight(requests, **kwargs):
        sizes.append(len(requests))
        if len(requests) > 1:
            raise OutOfMemoryError("engine.out_of_memory", images=len(requests), device="cpu")
        return original(requests, **kwargs)

    monkeypatch.setattr(tiny_engine, "generate", tight)
    jobs = [submit(container, f"a boat --seed {seed} --size 64x64 --steps 3", user)
            for seed, user in ((7, ALICE), (8, BOB), (9, CAROL))]
    container.start_workers()
    results = [handle.wait(timeout=WAIT)[0] for handle, _ in jobs]
    assert sizes == [3, 1, 1, 1]
    monkeypatch.undo()
    for (_handle, plan), saved in zip(jobs, results, strict=True):
        assert np.array_equal(pixels(saved.path), np.asarray(original(plan.request.images())[0].image, np.float64))


def test_a_lora_never_leaks_into_the_next_job(make_container, make_lora):
    container = make_container()
    try:
        container.settings.loras_dir.mkdir(parents=True)
        make_lora(container.settings.loras_dir, "inkwash")
        scope = Scope(user_id=ALICE, guild_id=GUILD)
        styled = container.images.plan_generate("a cat --seed 4 --size 64x64 --steps 3 --lora inkwash:0.9", scope)
        plain = container.images.plan_generate("a cat --seed 4 --size 64x64 --steps 3", scope)
        handles = [container.queue.submit(plan_submission(plan, scope)) for plan in (styled, plain)]
        container.start_workers()
        styled_image, plain_image = (handle.wait(timeout=WAIT)[0] for handle in handles)
        reference = container.engine().generate(plain.request.images())[0].image
        assert np.array_equal(pixels(plain_image.path), np.asarray(reference, np.float64))
        assert not np.array_equal(pixels(styled_image.path), pixels(plain_image.path))
        assert set(styled_image.record.lora_hashes) == {"inkwash"} and plain_image.record.lora_hashes == {}
    finally:
        container.close()


def test_server_limits_and_daily_quota_come_from_the_database(container):
    with container.unit_of_work() as uow:
        uow.settings.set_guild(GUILD, limits={"queued_per_user": 1, "daily_images": 3})
        uow.commit()
    waiting, _ = submit(container, "a cat --seed 1 --size 64x64 --steps 2 --n 2", ALICE)
    with pytest.raises(QueueError) as error:
        submit(container, "a cat --seed 2 --size 64x64 --steps 2", ALICE)
    assert error.value.code == "queue.user_full" and "at most 1 per person" in error.value.message()
    with pytest.raises(QueueError) as error:
        submit(container, "a cat --seed 3 --size 64x64 --steps 2 --n 2", BOB)  # 2 waiting + 2 > 3
    assert error.value.code == "queue.quota_images"
    container.start_workers()
    waiting.wait(timeout=WAIT)
    with container.unit_of_work() as uow:
        from datetime import UTC, datetime

        assert uow.usage.get(GUILD, datetime.now(UTC).date()).images == 2
    submit(container, "a cat --seed 4 --size 64x64 --steps 2", BOB)[0].wait(timeout=WAIT)
    with pytest.raises(QueueError) as error:
        submit(container, "a cat --seed 5 --size 64x64 --steps 2", CAROL)
    assert error.value.code == "queue.quota_images"
    assert "每天最多生成 3 张图片" in error.value.message("zh-CN")


def test_queue_and_cancel_commands(container, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("BRUSHWORK_HOME", str(tmp_path / "home"))
    waiting, _ = submit(container, "a lighthouse --seed 1 --size 64x64 --steps 2", ALICE, guild=None)
    other, _ = submit(container, "a lighthouse --seed 2 --size 64x64 --steps 2", BOB, guild=None)
    assert main(["queue"]) == 0
    out = capsys.readouterr().out
    assert "none running" in out and waiting.job_id in out and other.job_id in out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.split()[0] in (waiting.job_id, other.job_id)}
    assert [rows[waiting.job_id][2], rows[other.job_id][2]] == ["1", "2"]  # POS: 1 is next
    assert all(line.endswith("(estimate)") for line in map(" ".join, rows.values()))  # nothing measured yet
    assert main(["queue", "--json"]) == 0
    import json

    listed = json.loads(capsys.readouterr().out)
    assert [job["position"] for job in listed["jobs"]] == [1, 2]  # the same numbering as the table
    assert [job["eta_measured"] for job in listed["jobs"]] == [False, False]
    assert main(["cancel", waiting.job_id.upper()]) == 0
    assert "cancelled" in capsys.readouterr().out
    assert waiting.status is JobState.CANCELLED
    assert main(["cancel", waiting.job_id]) == 0
    assert main(["cancel", "zzzzzzzz"]) == 2
    assert "No job" in capsys.readouterr().err


def test_both_job_stores_implement_every_member_of_the_protocol_with_its_signature():
    """The JobStore protocol is the seam: MemoryJobStore (tests) and SqlJobStore (the database)
    implement all of it — ``dispatch`` included — with the protocol's parameters."""
    import inspect

    from bot.jobs import SqlJobStore
    from generation.queue import JobStore, MemoryJobStore

    members = [name for name in vars(JobStore) if not name.startswith("_")]
    assert "dispatch" in members
    for store in (MemoryJobStore, SqlJobStore):
        for name in members:
            declared, implemented = inspect.signature(getattr(JobStore, name)), inspect.signature(getattr(store, name))
            assert list(implemented.parameters) == list(declared.parameters), (store.__name__, name)

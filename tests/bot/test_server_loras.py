"""Server LoRAs end to end on the tiny model (CPU, 64 px, a few steps): a dataset from files and a
zip → a training job on the queue → a ready LoRA that changes the image of the same seed and is
recorded in its metadata; isolation between servers (services and planning); two servers' ``ink``
in one queue; export/import; rights; a generation during training; cancel; restart and resume."""

from __future__ import annotations

import io
import json
import pickle
import threading
import time
import zipfile
from datetime import UTC, datetime
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from bot.jobs import plan_submission
from bot.lora_services import ServerLoraError, TrainOptions, Upload, before_after_png
from generation.errors import Cancelled, ModelError
from generation.metadata import read_recipe
from generation.models.hashing import FileHasher
from generation.queue import JobProgress, JobRequeued, JobStarted, JobState
from generation.training import LoraFileError, TrainingError
from generation.training.lora_files import KOHYA_KEY
from storage.records import LoraStatus, Scope

pytestmark = pytest.mark.slow

GUILD_A, GUILD_B = 501, 502
ALICE, BOB = 21, 22
A = Scope(user_id=ALICE, guild_id=GUILD_A)
B = Scope(user_id=BOB, guild_id=GUILD_B)
DM = Scope(user_id=ALICE)
WAIT = 180.0
SMALL = {"steps": 6, "resolution": 64, "rank": 4, "learning_rate": 1e-2, "trigger_word": "inkwash"}
PROMPT = "inkwash, a mountain above the clouds --seed 1234 --size 64x64 --steps 3 --sampler euler_a"


def picture(seed: int, size=(64, 64)) -> bytes:
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)).resize(size, Image.Resampling.BICUBIC)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def kohya_zip() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("ink/10.png", picture(10, (96, 64)))
        archive.writestr("ink/10.txt", "a river at dawn")
        archive.writestr("ink/11.png", picture(11, (64, 96)))
    return out.getvalue()


def make_dataset(container, scope: Scope, name: str = "ink") -> None:
    container.datasets.create(scope, name)
    container.datasets.add_images(scope, name, [Upload(f"{i}.png", picture(i)) for i in range(3)],
                                  caption="a mountain above the clouds")
    container.datasets.add_images(scope, name, [Upload("more.zip", kohya_zip())])


def pixels(path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.int16)


def wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def run_jobs(container, handles):
    """Start the (stopped) queue, wait for the jobs, stop it again: jobs submitted while it was
    stopped are all waiting when it starts, so compatible ones can share a run."""
    container.queue.start()
    try:
        return [handle.wait(timeout=WAIT) for handle in handles]
    finally:
        container.queue.stop()


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_engine, make_module_container):
    """Guild A trained `ink` (6 steps in chunks of 4) from three uploads and a zip; the queue is stopped."""
    home = tmp_path_factory.mktemp("server-loras") / "home"
    container = make_module_container(home=home, engine=tiny_engine, training_chunk_steps=4)
    make_dataset(container, A)
    started = container.loras.train(A, TrainOptions(name="ink", dataset="ink", **SMALL), can_manage=True)
    assert started.lora.status is LoraStatus.TRAINING
    assert container.loras.info(A, "ink").progress.state == "queued"
    events: list = []
    container.start_workers()
    result = started.handle.wait(timeout=WAIT, on_event=events.append)
    container.queue.stop()
    yield SimpleNamespace(container=container, result=result, events=events, started=started)
    container.close()


def test_training_runs_in_chunks_reports_progress_and_records_a_ready_lora(world):
    result, container = world.result, world.container
    steps = [e for e in world.events if isinstance(e, JobProgress)]
    assert [e.step for e in steps] == [1, 2, 3, 4, 5, 6] and {e.total for e in steps} == {6}
    assert all(isinstance(e.detail["loss"], float) and e.eta_s is not None for e in steps)
    assert steps[-1].detail["sample_path"].endswith("step_000006.png")
    assert [e.reason for e in world.events if isinstance(e, JobRequeued)] == ["chunk"]  # 4 steps, then 2
    assert sum(isinstance(e, JobStarted) for e in world.events) == 2

    lora = result.lora
    assert lora.status is LoraStatus.READY and lora.job_public_id == world.started.job_id
    path = container.loras.files.absolute(lora.file_path)
    assert lora.sha256 == FileHasher(None).sha256(path) and lora.short_hash == FileHasher(None).lora_hash(path)
    assert (lora.rank, lora.steps, lora.dataset_size, lora.trigger_words) == (4, 6, 5, ["inkwash"])
    assert lora.base_model == "tiny" and len(lora.base_model_hash) == 10
    with safe_open(str(path), "pt") as handle:
        meta = handle.metadata()
    assert meta["brushwork.base_model"] == "tiny" and meta["brushwork.base_model_hash"] == lora.base_model_hash
    assert (meta["brushwork.rank"], meta["brushwork.steps"], meta["brushwork.dataset_size"]) == ("4", "6", "5")
    assert json.loads(meta["brushwork.trigger_words"]) == ["inkwash"]
    assert result.before.name == "step_000000.png" and result.after.name == "step_000006.png"
    assert not np.array_equal(pixels(result.before), pixels(result.after))  # the LoRA shows in the samples
    workdir = container.settings.training_dir / lora.public_id
    assert sorted(p.name for p in workdir.iterdir()) == ["samples"]  # checkpoint and snapshot tidied away
    info = container.loras.info(A, "ink")
    assert info.path == path and info.before == result.before and info.after == result.after
    assert container.loras.result(world.started.job_id).lora.public_id == lora.public_id
    with Image.open(io.BytesIO(before_after_png(result.before, result.after, labels=("之前", "after")))) as pair:
        assert pair.width > 2 * 64 and pair.height > 64
    with container.unit_of_work() as uow:  # every chunk's GPU time counts against the server's day
        job = uow.jobs.get(world.started.job_id, Scope.local_operator())
        usage = uow.usage.get(GUILD_A, datetime.now(UTC).date())
    assert job.gpu_seconds > 0 and usage.gpu_seconds == pytest.approx(job.gpu_seconds)


def test_the_lora_changes_the_image_of_the_same_seed_and_is_recorded(world, tiny_engine):
    container = world.container
    styled = container.images.plan_generate(f"{PROMPT} --lora ink:1", A)
    plain = container.images.plan_generate(PROMPT, A)
    assert [(p.name, p.source, p.short_hash) for p in styled.loras] == [("ink", "server", world.result.lora.short_hash)]
    saved = run_jobs(container, [container.queue.submit(plan_submission(plan, A)) for plan in (styled, plain)])
    (styled_image,), (plain_image,) = saved
    assert not np.array_equal(pixels(styled_image.path), pixels(plain_image.path))
    alone = tiny_engine.generate(plain.request.images())[0].image
    assert np.array_equal(pixels(plain_image.path), np.asarray(alone, dtype=np.int16))  # no LoRA leaked
    short = world.result.lora.short_hash
    assert styled_image.record.lora_hashes == {"ink": short} and plain_image.record.lora_hashes == {}
    recipe = read_recipe(styled_image.path)
    assert recipe.lora_hashes == {"ink": short}
    assert "<lora:ink:1>" in recipe.infotext and f"Lora hashes: \"ink: {short}\"" in recipe.infotext


def test_another_server_cannot_see_use_delete_or_export_it(world):
    container = world.container
    loras = container.loras
    for scope in (B, DM, Scope(user_id=BOB, guild_id=GUILD_B)):
        assert loras.list(scope) == [] and loras.names(scope) == []
        for call in (lambda s=scope: loras.info(s, "ink"), lambda s=scope: loras.export(s, "ink"),
                     lambda s=scope: loras.delete(s, "ink", can_manage=True),
                     lambda s=scope: loras.cancel(s, "ink", can_manage=True)):
            with pytest.raises(ServerLoraError) as error:
                call()
            assert error.value.code == "server_lora.none_here"
        with pytest.raises(ModelError) as error:  # planning resolves names for the caller's scope only
            container.images.plan_generate(f"{PROMPT} --lora ink:0.8", scope)
        assert error.value.code == "model.no_loras"
    assert loras.names(A, "i") == ["ink"] and loras.get(A, "INK").status is LoraStatus.READY


def test_two_servers_each_with_an_ink_get_their_own_adapter(world, tiny_engine, make_lora, tmp_path,
                                                             monkeypatch):
    container = world.container
    other = make_lora(tmp_path, "other-ink", seed=9)
    imported = container.loras.import_lora(B, "ink.safetensors", other.read_bytes(), can_manage=True)
    assert imported.name == "ink" and imported.short_hash != world.result.lora.short_hash
    a1 = container.images.plan_generate(f"{PROMPT} --lora ink:0.9", A)
    a2 = container.images.plan_generate(f"{PROMPT.replace('1234', '99')} --lora ink:0.9", A)
    b1 = container.images.plan_generate(f"{PROMPT} --lora ink:0.9", B)
    assert a1.request.loras == b1.request.loras  # the same request text…
    assert plan_submission(a1, A).batch_key == plan_submission(a2, A).batch_key
    assert plan_submission(a1, A).batch_key != plan_submission(b1, B).batch_key  # …other files: never batched
    calls: list[tuple[int, object]] = []
    original = tiny_engine.generate

    def recording(requests, **kwargs):
        calls.append((len(requests), kwargs.get("lora_resolver")))
        return original(requests, **kwargs)

    monkeypatch.setattr(tiny_engine, "generate", recording)
    handles = [container.queue.submit(plan_submission(plan, scope)) for plan, scope in ((a1, A), (b1, B), (a2, A))]
    (ia1,), (ib1,), (ia2,) = run_jobs(container, handles)
    monkeypatch.undo()
    assert sorted(size for size, _ in calls) == [1, 2]  # A's two jobs share a run; B's runs alone
    assert all(resolver is not None for _, resolver in calls)
    for image, plan in ((ia1, a1), (ib1, b1), (ia2, a2)):
        alone = tiny_engine.generate(plan.request.images(), lora_resolver=plan.lora_resolver())[0].image
        assert np.abs(pixels(image.path) - np.asarray(alone, dtype=np.int16)).mean() <= 1
    assert not np.array_equal(pixels(ia1.path), pixels(ib1.path))
    assert ia1.record.lora_hashes == {"ink": world.result.lora.short_hash}
    assert ib1.record.lora_hashes == {"ink": imported.short_hash}


def test_export_both_formats_and_import_checks(world, tiny_engine, tmp_path):
    loras = world.container.loras
    plain = loras.export(A, "ink")
    assert plain.filename == "ink.safetensors" and plain.path == loras.files.absolute(world.result.lora.file_path)
    kohya = loras.export(A, "ink", kohya=True)
    assert kohya.filename == "ink-kohya.safetensors" and loras.export(A, "ink", kohya=True).path == kohya.path
    with safe_open(str(kohya.path), "pt") as handle:
        keys, meta = list(handle.keys()), handle.metadata()
    assert keys and all(KOHYA_KEY.match(key) for key in keys)
    assert meta["ss_network_dim"] == "4" and meta["ss_sd_model_name"] == "tiny" and meta["ss_output_name"] == "ink"

    # the kohya file imports into another server and draws what the original draws
    again = loras.import_lora(B, "ink-kohya.safetensors", kohya.path, name="ink2", can_manage=True)
    assert again.status is LoraStatus.READY and again.rank == 4 and again.trigger_words == ["inkwash"]
    container = world.container
    mine = container.images.plan_generate(f"{PROMPT} --lora ink:1", A)
    theirs = container.images.plan_generate(f"{PROMPT} --lora ink2:1", B)
    one = tiny_engine.generate(mine.request.images(), lora_resolver=mine.lora_resolver())[0].image
    two = tiny_engine.generate(theirs.request.images(), lora_resolver=theirs.lora_resolver())[0].image
    assert np.abs(np.asarray(one, np.int16) - np.asarray(two, np.int16)).mean() <= 1

    # refused: pickles (by name before download, by content), wrong shapes, too large, no right
    with pytest.raises(LoraFileError) as error:
        loras.check_import_size("style.ckpt", 1000)
    assert error.value.code == "lora.pickle_refused"
    with pytest.raises(LoraFileError) as error:
        loras.import_lora(B, "style.safetensors", pickle.dumps({"weights": [1, 2, 3]}, protocol=4), can_manage=True)
    assert error.value.code == "lora.pickle_refused" and "arbitrary code" in error.value.message()
    with pytest.raises(LoraFileError) as error:
        loras.check_import_size("big.safetensors", 10**10)
    assert error.value.code == "lora.too_large"
    import torch

    with safe_open(str(plain.path), "pt") as handle:
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    down = next(key for key in tensors if key.endswith("down.weight"))
    tensors[down] = torch.zeros(tensors[down].shape[0], tensors[down].shape[1] + 3)
    wrong = tmp_path / "wrong.safetensors"
    save_file(tensors, str(wrong))
    with pytest.raises(LoraFileError) as error:
        loras.import_lora(B, "wrong.safetensors", wrong, can_manage=True)
    assert error.value.code == "lora.shape_mismatch" and down in error.value.message()
    with pytest.raises(ServerLoraError) as error:
        loras.import_lora(B, "x.safetensors", plain.path, can_manage=False)
    assert error.value.code == "server_lora.not_allowed"
    with pytest.raises(ServerLoraError) as error:
        loras.import_lora(B, "ink2.safetensors", plain.path, can_manage=True)
    assert error.value.code == "server_lora.name_taken"
    assert [r.name for r in loras.list(B)] == ["ink", "ink2"]


def test_rights_names_and_options_are_checked_before_anything_is_queued(world):
    container = world.container
    loras = container.loras
    options = TrainOptions(name="ink3", dataset="ink", **SMALL)
    with pytest.raises(ServerLoraError) as error:
        loras.train(A, options)  # no Manage Server, no trainer role
    assert error.value.code == "server_lora.not_allowed"
    loras.set_trainer_role(GUILD_A, 777)
    assert loras.may_manage(GUILD_A, manage_guild=False, role_ids=[5, 777])
    assert not loras.may_manage(GUILD_A, manage_guild=False, role_ids=[5])
    assert loras.may_manage(GUILD_A, manage_guild=True) and loras.may_manage(None, manage_guild=False)
    for changes, code in (({"name": "ink"}, "server_lora.name_taken"), ({"name": "two words"}, "server_lora.bad_name"),
                          ({"dataset": "nope"}, "server_dataset.not_found"), ({"steps": 6000}, "server_lora.too_many_steps"),
                          ({"resolution": 100}, "training.resolution_step"), ({"model": "nope"}, "model.unknown"),
                          ({"trigger_word": "a, b"}, "training.bad_trigger")):
        values = {**SMALL, "name": "ink3", "dataset": "ink", **changes}
        with pytest.raises((ServerLoraError, TrainingError, ModelError)) as error:
            loras.train(A, TrainOptions(**values), can_manage=True)
        assert error.value.code == code, changes
    with pytest.raises(ServerLoraError) as error:
        loras.delete(A, "ink")
    assert error.value.code == "server_lora.not_allowed"
    assert [job for job in container.queue.jobs() if job.kind == "train"] == []
    assert [r.name for r in loras.list(A)] == ["ink"]


def test_deleting_frees_the_name_and_the_file(world, make_lora, tmp_path):
    loras = world.container.loras
    record = loras.import_lora(A, "gone.safetensors", make_lora(tmp_path, "gone").read_bytes(), can_manage=True)
    path = loras.files.absolute(record.file_path)
    assert path.is_file() and "gone" in loras.names(A)
    loras.delete(A, "gone", can_manage=True)
    assert not path.exists() and "gone" not in loras.names(A)
    with pytest.raises(ModelError):
        world.container.images.plan_generate(f"{PROMPT} --lora gone", A)
    assert loras.import_lora(A, "gone.safetensors", make_lora(tmp_path, "gone").read_bytes(),
                             can_manage=True).status is LoraStatus.READY


@pytest.mark.filterwarnings("ignore:Already found a `peft_config`:UserWarning")  # PEFT, on a 2nd adapter
def test_folder_loras_are_shared_unless_a_server_turns_them_off(world, make_lora, tiny_engine):
    container = world.container
    folder = container.settings.loras_dir
    folder.mkdir(parents=True, exist_ok=True)
    make_lora(folder, "house")
    make_lora(folder, "ink", seed=3)  # shadowed by guild A's own ink there
    assert "house" in container.loras.names(B) and container.loras.names(A).count("ink") == 1
    plan = container.images.plan_generate(f"{PROMPT} --lora house:0.5", Scope(user_id=9, guild_id=999))
    assert plan.loras[0].source == "folder" and plan.loras[0].path == str(folder / "house.safetensors")
    assert container.images.plan_generate(f"{PROMPT} --lora ink", A).loras[0].source == "server"
    both = container.images.plan_generate(f"{PROMPT} --lora ink:0.6 --lora house:0.4", A)  # several at once
    assert [(p.name, p.source) for p in both.loras] == [("ink", "server"), ("house", "folder")]
    made = tiny_engine.generate(both.request.images(), lora_resolver=both.lora_resolver())[0]
    assert made.lora_hashes == {"ink": world.result.lora.short_hash, "house": both.loras[1].short_hash}
    container.loras.set_folder_loras(999, False)
    with pytest.raises(ModelError):
        container.images.plan_generate(f"{PROMPT} --lora house:0.5", Scope(user_id=9, guild_id=999))
    for path in folder.iterdir():
        path.unlink()


# ---------------------------------------------------------------------- the queue around training


def _recorder():
    log: list[tuple[str, object]] = []
    lock = threading.Lock()

    def follow(tag: str):
        def deliver(event):
            with lock:
                log.append((tag, event))
        return deliver

    return log, lock, follow


def test_a_generation_submitted_during_training_starts_within_one_chunk(make_container, tiny_engine):
    container = make_container(engine=tiny_engine, training_chunk_seconds=600,
                              training_max_steps=100_000, training_sample_every=0)
    try:
        make_dataset(container, A)
        long = TrainOptions(name="ink", dataset="ink", steps=100_000, resolution=64, rank=4)
        started = container.loras.train(A, long, can_manage=True)
        log, lock, follow = _recorder()
        first_step = threading.Event()

        def training_events(event):
            follow("train")(event)
            if isinstance(event, JobProgress):
                first_step.set()

        container.queue.subscribe(started.job_id, training_events)
        container.start_workers()
        assert first_step.wait(WAIT)
        plan = container.images.plan_generate("a boat --seed 5 --size 64x64 --steps 2", A)
        handle = container.queue.submit(plan_submission(plan, A))
        with lock:
            log.append(("test", None))  # the generation is waiting from here on
        container.queue.subscribe(handle.job_id, follow("generate"))
        handle.wait(timeout=WAIT)
        second_chunk = threading.Event()
        container.queue.subscribe(started.job_id, lambda e: isinstance(e, JobProgress) and second_chunk.set())
        assert second_chunk.wait(WAIT)
        assert container.loras.cancel(A, "ink", can_manage=True).status is LoraStatus.FAILED
        with pytest.raises(Cancelled):
            started.handle.wait(timeout=WAIT)
        with lock:
            order = [(tag, type(event).__name__, getattr(event, "reason", "")) for tag, event in log]
        mark = order.index(("test", "NoneType", ""))
        after = order[mark + 1:]
        steps_after = [i for i, item in enumerate(after) if item[:2] == ("train", "JobProgress")]
        requeued = after.index(("train", "JobRequeued", "chunk"))
        gen_started = after.index(("generate", "JobStarted", ""))
        gen_done = after.index(("generate", "JobDone", ""))
        restarted = after.index(("train", "JobStarted", ""))
        # at most the step already running when the generation arrived, then the chunk ends…
        assert len([i for i in steps_after if i < requeued]) <= 1
        # …and the generation runs before the training's next chunk starts
        assert requeued < gen_started < gen_done < restarted
        # the running chunk stops at its next step and removes the unfinished run
        workdir = container.settings.training_dir / started.lora.public_id
        wait_for(lambda: not workdir.exists(), "the cancelled run's folder to go")
        assert container.loras.get(A, "ink").status is LoraStatus.FAILED
    finally:
        container.close()


def test_a_restart_during_training_resumes_from_the_checkpoint(tmp_path, tiny_engine, make_container):
    home = tmp_path / "home"
    first = make_container(home=home, engine=tiny_engine, training_chunk_steps=2)
    try:
        make_dataset(first, A)
        started = first.loras.train(A, TrainOptions(name="ink", dataset="ink", **SMALL), can_manage=True)
        requeued = threading.Event()
        steps_before: list[int] = []

        def watch(event):
            if isinstance(event, JobProgress):
                steps_before.append(event.step)
            if isinstance(event, JobRequeued):
                requeued.set()

        first.queue.subscribe(started.job_id, watch)
        first.start_workers()
        assert requeued.wait(WAIT)
    finally:
        first.close()  # the whole process's queue stops: a running chunk ends at its next step
    checkpoint = first.loras.info(A, "ink").progress
    assert checkpoint.state == "queued" and checkpoint.step == steps_before[-1] >= 2
    assert first.queue.store.snapshot(started.job_id).state is JobState.QUEUED

    second = make_container(home=home, engine=tiny_engine, training_chunk_steps=2)
    try:
        steps_after: list[int] = []
        second.queue.subscribe(started.job_id, lambda e: isinstance(e, JobProgress) and steps_after.append(e.step))
        second.start_workers()
        result = second.queue.handle(started.job_id).wait(timeout=WAIT)
        assert steps_after == list(range(checkpoint.step + 1, 7))  # nothing retrained
        assert result.lora.status is LoraStatus.READY and result.lora.steps == 6
        assert second.loras.get(A, "ink").status is LoraStatus.READY
    finally:
        second.close()


def test_cancelling_a_waiting_training_keeps_nothing(make_container, tiny_engine):
    container = make_container(engine=tiny_engine)
    try:
        make_dataset(container, A)
        started = container.loras.train(A, TrainOptions(name="ink", dataset="ink", **SMALL), can_manage=True)
        workdir = container.settings.training_dir / started.lora.public_id
        assert sorted(p.name for p in (workdir / "dataset").iterdir()) == [f"{i:04d}.png" for i in range(1, 6)]
        container.loras.cancel(A, "ink", can_manage=True)
        assert started.handle.status is JobState.CANCELLED and not workdir.exists()
        assert container.loras.get(A, "ink").status is LoraStatus.FAILED
        with pytest.raises(ServerLoraError) as error:
            container.images.plan_generate(f"{PROMPT} --lora ink", A)
        assert error.value.code == "server_lora.failed"
        # the name is free for another try, which replaces the failed one
        again = container.loras.train(A, TrainOptions(name="ink", dataset="ink", **SMALL), can_manage=True)
        assert container.loras.get(A, "ink").public_id == again.lora.public_id
        assert [(r.name, r.status) for r in container.loras.list(A)] == [("ink", LoraStatus.TRAINING)]
        with pytest.raises(ServerLoraError) as error:
            container.images.plan_generate(f"{PROMPT} --lora ink", A)
        assert error.value.code == "server_lora.still_training"
        container.loras.delete(A, "ink", can_manage=True)  # a training LoRA: cancelled, then deleted
        assert again.handle.status is JobState.CANCELLED and container.loras.list(A) == []
    finally:
        container.close()


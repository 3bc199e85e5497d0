"""Datasets and LoRAs in the database: namespaces, isolation, names, statuses, cascades; the asset store."""

from __future__ import annotations

from datetime import timedelta

import pytest

from storage.assets import AssetStore, dataset_image_path, lora_file_path
from storage.errors import FileExists, InvalidValue, NameTaken, NotFound, StaleState, UnsafePath
from storage.lora_repositories import SUBMIT_GRACE, effective_status
from storage.models import utcnow
from storage.records import (
    JobKind,
    LoraSource,
    LoraStatus,
    NewDatasetImage,
    NewJob,
    NewLora,
    Scope,
    scope_key,
)

GUILD_A, GUILD_B = 101, 202
ALICE, BOB = 1, 2
A = Scope(user_id=ALICE, guild_id=GUILD_A)
B = Scope(user_id=BOB, guild_id=GUILD_B)
A_BOB = Scope(user_id=BOB, guild_id=GUILD_A)
DM_ALICE = Scope(user_id=ALICE)
DM_BOB = Scope(user_id=BOB)
OPERATOR = Scope.local_operator()


def image(n: int, **changes) -> NewDatasetImage:
    values = {"file_path": f"d/{n}.png", "sha256": f"{n:064x}", "width": 64, "height": 64, "bytes": 100 + n,
              "caption": f"caption {n}", "original_name": f"{n}.png"}
    values.update(changes)
    return NewDatasetImage(**values)


def lora(name: str, **changes) -> NewLora:
    values = {"name": name, "owner_id": ALICE, "base_model": "tiny", "family": "tiny", "rank": 4, "alpha": 4.0}
    values.update(changes)
    return NewLora(**values)


def ready(name: str, **changes) -> NewLora:
    return lora(name, status=LoraStatus.READY, source=LoraSource.IMPORTED, file_path=f"{name}.safetensors",
                sha256="a" * 64, short_hash="a" * 12, size_bytes=10, **changes)


def test_namespaces():
    assert scope_key(A) == scope_key(A_BOB) == f"g:{GUILD_A}"
    assert scope_key(DM_ALICE) == f"u:{ALICE}" != scope_key(DM_BOB)
    assert scope_key(OPERATOR) == "u:0"


def test_dataset_names_are_per_namespace_and_case_insensitive(uow_factory):
    with uow_factory() as uow:
        ink = uow.datasets.create(A, "Ink")
        uow.datasets.create(B, "ink")  # another server: its own
        uow.datasets.create(DM_ALICE, "ink")  # Alice's own, outside servers
        uow.commit()
    with uow_factory() as uow, pytest.raises(NameTaken):
        uow.datasets.create(A_BOB, "INK")  # the same server, whoever asks
    with uow_factory() as uow:
        assert uow.datasets.get(A_BOB, "iNk").public_id == ink.public_id
        assert [d.name for d in uow.datasets.list(A)] == ["Ink"]
        assert [d.guild_id for d in uow.datasets.list(B)] == [GUILD_B]
        assert uow.datasets.list(DM_BOB) == []


def test_another_server_cannot_see_or_change_a_dataset(uow_factory):
    with uow_factory() as uow:
        uow.datasets.create(A, "ink")
        added = uow.datasets.add_images(A, "ink", [("aaaaaaaa", image(1))])
        uow.commit()
    for scope in (B, DM_ALICE, OPERATOR):  # the operator sees all, but names live in namespaces
        with uow_factory() as uow:
            repo, image_id = uow.datasets, added[0].public_id
            for call, args in ((repo.get, ()), (repo.images, ()), (repo.set_caption, (image_id, "x")),
                               (repo.remove_image, (image_id,)), (repo.delete, ())):
                with pytest.raises(NotFound):
                    call(scope, "ink", *args)


def test_dataset_images_duplicates_counts_cascade(uow_factory):
    with uow_factory() as uow:
        uow.datasets.create(A, "ink")
        ids = uow.datasets.free_image_ids(2)
        uow.datasets.add_images(A, "ink", [(ids[0], image(1)), (ids[1], image(2))])
        uow.commit()
    with uow_factory() as uow, pytest.raises(NameTaken):
        uow.datasets.add_images(A, "ink", [("cccccccc", image(3, sha256=f"{1:064x}"))])  # same pixels as #1
    with uow_factory() as uow:
        record = uow.datasets.get(A, "ink")
        assert (record.image_count, record.total_bytes) == (2, 101 + 102)
        assert uow.datasets.usage(A) == (1, 2, 203)
        assert set(uow.datasets.find_pictures(A, "ink", [f"{2:064x}", f"{9:064x}"])) == {f"{2:064x}"}
        changed = uow.datasets.set_caption(A, "ink", ids[1], None)
        assert changed.caption is None and changed.dataset_public_id == record.public_id
        uow.loras.add(A, lora("ink", dataset_public_id=record.public_id, dataset_name="ink"))
        uow.commit()
    with uow_factory() as uow:
        deleted, paths = uow.datasets.delete(A, "ink")
        uow.commit()
    assert sorted(paths) == ["d/1.png", "d/2.png"]
    with uow_factory() as uow:
        assert uow.datasets.usage(A) == (0, 0, 0)  # the images went with it
        kept = uow.loras.get(A, "ink")
        assert kept.dataset_public_id is None and kept.dataset_name == "ink"  # SET NULL, the name stays


def test_lora_names_statuses_and_soft_delete(uow_factory):
    with uow_factory() as uow:
        training = uow.loras.add(A, lora("Ink"))
        uow.loras.add(B, ready("ink"))
        uow.commit()
    assert training.status is LoraStatus.TRAINING and training.job_public_id is None
    with uow_factory() as uow, pytest.raises(NameTaken):
        uow.loras.add(A_BOB, ready("ink"))  # reserved while training
    with uow_factory() as uow:
        job = uow.jobs.add(NewJob(kind=JobKind.TRAIN, owner_id=ALICE, request={}, guild_id=GUILD_A))
        uow.loras.attach_job(training.public_id, job.public_id)
        done = uow.loras.finish_training(training.public_id, file_path="x.safetensors", sha256="b" * 64,
                                         short_hash="b" * 12, size_bytes=5, steps=6)
        uow.commit()
    assert done.status is LoraStatus.READY and done.short_hash == "b" * 12 and done.steps == 6
    with uow_factory() as uow, pytest.raises(StaleState):
        uow.loras.finish_training(training.public_id, file_path="x", sha256="c" * 64, short_hash="c" * 12,
                                  size_bytes=1, steps=1)  # only a training LoRA can finish
    with uow_factory() as uow:
        assert [r.name for r in uow.loras.list(A)] == ["Ink"]
        assert uow.loras.usage(A) == (1, 5)
        uow.loras.soft_delete(training.public_id)
        uow.commit()
    with uow_factory() as uow:
        with pytest.raises(NotFound):
            uow.loras.get(A, "ink")
        assert uow.loras.list(A) == []
        with pytest.raises(NotFound):
            uow.loras.get_by_id(training.public_id, A)  # deleted: only the operator
        assert uow.loras.get_by_id(training.public_id, OPERATOR).status is LoraStatus.DELETED
        with pytest.raises(NotFound):
            uow.loras.get_by_id(uow.loras.get(B, "ink").public_id, A)  # another server's: not found
        again = uow.loras.add(A, ready("ink"))  # the name is free again
        uow.commit()
    assert again.status is LoraStatus.READY


def test_a_training_lora_whose_job_ended_is_failed_and_gives_its_name_up(uow_factory):
    with uow_factory() as uow:
        first = uow.loras.add(A, lora("ink"))
        job = uow.jobs.add(NewJob(kind=JobKind.TRAIN, owner_id=ALICE, request={}, guild_id=GUILD_A))
        uow.loras.attach_job(first.public_id, job.public_id)
        uow.commit()
    with uow_factory() as uow:
        assert uow.loras.get(A, "ink").status is LoraStatus.TRAINING
        uow.jobs.request_cancel(job.public_id)  # e.g. `brushwork cancel JOB` while it waited
        uow.commit()
    with uow_factory() as uow:
        assert uow.loras.get(A, "ink").status is LoraStatus.FAILED
        second = uow.loras.add(A, lora("ink"))
        uow.commit()
    with uow_factory() as uow:
        assert uow.loras.get(A, "ink").public_id == second.public_id
        assert uow.loras.get_by_id(first.public_id).status is LoraStatus.FAILED


def test_effective_status_rules():
    now = utcnow()
    assert effective_status("training", "running", "j", now, now) is LoraStatus.TRAINING
    assert effective_status("training", "queued", "j", now, now) is LoraStatus.TRAINING
    for ended in ("done", "failed", "cancelled", None):
        assert effective_status("training", ended, "j", now, now) is LoraStatus.FAILED
    assert effective_status("training", None, None, now, now) is LoraStatus.TRAINING  # being submitted
    assert effective_status("training", None, None, now - SUBMIT_GRACE - timedelta(seconds=1), now) \
        is LoraStatus.FAILED
    assert effective_status("ready", "cancelled", "j", now, now) is LoraStatus.READY


def test_new_records_are_validated():
    with pytest.raises(InvalidValue):
        lora("x", status="ready")  # a ready LoRA needs its file and hashes
    with pytest.raises(InvalidValue):
        lora("x", status="deleted")
    with pytest.raises(InvalidValue):
        image(1, width=0)


def test_guild_settings_keep_the_trainer_role_and_folder_switch(uow_factory):
    with uow_factory() as uow:
        assert uow.settings.get_guild(GUILD_A).folder_loras is True
        uow.settings.set_guild(GUILD_A, trainer_role_id=555, folder_loras=False)
        uow.commit()
    with uow_factory() as uow:
        record = uow.settings.get_guild(GUILD_A)
        assert (record.trainer_role_id, record.folder_loras) == (555, False)
        uow.settings.set_guild(GUILD_A, defaults="--steps 5")
        uow.commit()
    with uow_factory() as uow:
        assert uow.settings.get_guild(GUILD_A).trainer_role_id == 555


def test_asset_store_is_atomic_checked_and_never_overwrites(tmp_path):
    store = AssetStore(tmp_path / "assets")
    path = dataset_image_path("abcdefgh", "jkmnpqrs")
    stored = store.write(path, b"png bytes")
    assert store.read(path) == b"png bytes" and stored.size == 9 and len(stored.sha256) == 64
    with pytest.raises(FileExists):
        store.write(path, b"other")
    source = tmp_path / "export.safetensors"
    source.write_bytes(b"x" * 3000)
    adopted = store.adopt(lora_file_path("abcdefgh"), source)
    assert adopted.size == 3000 and source.exists() and store.exists("abcdefgh.safetensors")
    assert not list((tmp_path / "assets").rglob("*.tmp"))
    for bad in ("../escape.png", "/etc/passwd", "a/../../b", "C:/x", "a\\b", ""):
        with pytest.raises(UnsafePath):
            store.absolute(bad)
    for bad in ("../x", "UPPER", "a/b"):
        with pytest.raises(InvalidValue):
            dataset_image_path(bad, "abcdefgh")
    assert store.delete_folder("abcdefgh") and not store.exists(path)
    assert store.delete("abcdefgh.safetensors") and not store.delete("abcdefgh.safetensors")

"""``storage.integrity``: stray files (no row) and missing files (a row without its file), per area."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

from storage.archive import save_image
from storage.integrity import Roots, check, remove_strays
from storage.records import NewDatasetImage, NewLora, Scope

OLD = (datetime.now(UTC) - timedelta(days=3)).timestamp()
SCOPE = Scope(user_id=7, guild_id=42)


def aged(path, data: bytes = b"x" * 100):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, (OLD, OLD))
    return path


def by_area(reports):
    return {report.area: report for report in reports}


def test_strays_and_missing_files_in_every_area_and_clean_removes_only_old_strays(
        tmp_path, uow_factory, store, make_new_image):
    roots = Roots(images=store.root, datasets=tmp_path / "datasets", loras=tmp_path / "server_loras",
                  training=tmp_path / "training")
    kept = save_image(uow_factory, store, b"\x89PNG kept", make_new_image())
    gone = save_image(uow_factory, store, b"\x89PNG gone", make_new_image())
    store.absolute(gone.file_path).unlink()  # removed by hand: a row without its file
    stray = aged(store.root / "2000" / "01" / "zzzzzzzz.png")  # a crash between file and row
    temp = aged(store.root / "2000" / "01" / ".k3x9fq2a.png.1a2b3c4d.tmp", b"half")  # an interrupted write
    young = store.root / "2000" / "02" / "yyyyyyyy.png"  # its row may be being written right now
    # (folders of a fixed past month: save_image makes today's, which must not collide)
    young.parent.mkdir(parents=True)
    young.write_bytes(b"new")

    with uow_factory() as uow:
        dataset = uow.datasets.create(SCOPE, "ink")
        (image,) = uow.datasets.add_images(SCOPE, "ink", [("aaaaaaaa", NewDatasetImage(
            file_path=f"{dataset.public_id}/aaaaaaaa.png", sha256="1" * 64, width=8, height=8, bytes=3,
            caption=None, original_name="a.png"))])
        lora = uow.loras.add(SCOPE, NewLora(name="ink", owner_id=7, guild_id=42, base_model="tiny", family="sd15",
                                            rank=4, alpha=4, steps=10))
        uow.commit()
    aged(roots.datasets / image.file_path)
    dataset_stray = aged(roots.datasets / dataset.public_id / "bbbbbbbb.png")
    lora_stray = aged(roots.loras / "cccccccc.safetensors")
    aged(roots.training / lora.public_id / "checkpoint" / "state.pt")  # its LoRA is training: kept
    training_stray = aged(roots.training / "dddddddd" / "samples" / "step_000010.png", b"s" * 1000)

    reports = by_area(check(uow_factory, roots))
    images = reports["images"]
    assert (images.files, images.referenced, images.too_new) == (4, 2, 1)
    assert [s.path for s in images.strays] == sorted([stray, temp])
    assert [(m.public_id, m.path) for m in images.missing] == [(gone.public_id, store.absolute(gone.file_path))]
    assert [s.path for s in reports["dataset images"].strays] == [dataset_stray]
    assert reports["dataset images"].missing == []
    assert [s.path for s in reports["loras"].strays] == [lora_stray] and reports["loras"].referenced == 0
    training = reports["training folders"]
    assert [s.path for s in training.strays] == [roots.training / "dddddddd"]
    assert training.strays[0].size == 1000 and training.files == 2

    reports_list = check(uow_factory, roots)
    removed, freed = remove_strays(uow_factory, roots, reports_list)
    assert removed == 5 and freed == 100 + 4 + 100 + 100 + 1000
    for path in (stray, temp, dataset_stray, lora_stray, training_stray):
        assert not path.exists()
    assert young.exists() and store.absolute(kept.file_path).exists()
    assert not (roots.training / "dddddddd").exists()
    assert (roots.training / lora.public_id / "checkpoint" / "state.pt").exists()
    after = by_area(check(uow_factory, roots))
    assert sum(len(r.strays) for r in after.values()) == 0
    assert [m.public_id for m in after["images"].missing] == [gone.public_id]  # still reported, never "fixed"
    assert [s.path for s in check(uow_factory, roots, grace=timedelta(0))[0].strays] == [young]  # no grace


def test_a_file_that_gets_its_row_after_the_check_is_kept(tmp_path, uow_factory, store, make_new_image):
    roots = Roots(images=store.root, datasets=tmp_path / "d", loras=tmp_path / "l", training=tmp_path / "t")
    record = save_image(uow_factory, store, b"\x89PNG", make_new_image())
    path = store.absolute(record.file_path)
    os.utime(path, (OLD, OLD))
    with uow_factory() as uow:  # the report is taken while the row does not exist yet
        row_paths = uow.images.file_paths()
    assert record.file_path in row_paths
    from storage.integrity import AreaReport, Stray

    stale = [AreaReport("images", store.root, files=1, strays=[Stray("images", path, 4, datetime.now(UTC))])]
    assert remove_strays(uow_factory, roots, stale) == (0, 0)  # re-checked: it has a row now
    assert path.exists()


def test_purge_removes_the_files_of_images_deleted_long_enough_ago(tmp_path, uow_factory, store, make_new_image):
    from storage.integrity import purge_deleted

    roots = Roots(images=store.root, datasets=tmp_path / "d", loras=tmp_path / "l", training=tmp_path / "t")
    live, old, recent = (save_image(uow_factory, store, f"\x89PNG {i}".encode(), make_new_image()) for i in range(3))
    for record in (old, recent):
        with uow_factory() as uow:
            uow.images.soft_delete(record.public_id, Scope.local_operator())
            uow.commit()
    later = datetime.now(UTC) + timedelta(days=10)  # "old" and "recent" were both deleted 10 days before this
    assert purge_deleted(uow_factory, store.root, older_than=timedelta(days=30), now=later) == (0, 0)
    removed, freed = purge_deleted(uow_factory, store.root, older_than=timedelta(days=7), now=later)
    assert (removed, freed) == (2, 2 * len("\x89PNG 1".encode()))
    assert store.absolute(live.file_path).exists()
    assert not store.absolute(old.file_path).exists() and not store.absolute(recent.file_path).exists()
    assert purge_deleted(uow_factory, store.root, older_than=timedelta(days=7), now=later) == (0, 0)  # idempotent
    images = by_area(check(uow_factory, roots))["images"]
    assert images.missing == [] and images.strays == []  # a purged file is expected to be absent
    with uow_factory() as uow:  # the rows stay (lineage, job results)
        assert uow.images.get(old.public_id, Scope.local_operator(), include_deleted=True).deleted


def test_clean_keeps_a_folder_made_just_now_even_when_it_ends_up_empty(tmp_path, uow_factory, store):
    roots = Roots(images=store.root, datasets=tmp_path / "d", loras=tmp_path / "l", training=tmp_path / "t")
    old_folder, new_folder = store.root / "2025" / "01", store.root / "2027" / "01"
    stale, fresh = aged(old_folder / "aaaaaaaa.png"), aged(new_folder / "bbbbbbbb.png")
    for folder in (old_folder, old_folder.parent):
        os.utime(folder, (OLD, OLD))
    # new_folder was just made: a writer may be about to put its file there
    assert remove_strays(uow_factory, roots, check(uow_factory, roots)) == (2, 200)
    assert not stale.exists() and not fresh.exists()
    assert not (store.root / "2025").exists()  # emptied and old: gone
    assert new_folder.is_dir()  # emptied but new: kept

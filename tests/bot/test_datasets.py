"""DatasetService: uploads checked before they are trusted, quotas, duplicates, captions, the contact
sheet, rights and isolation — through the service the cogs and the command line call (no model)."""

from __future__ import annotations

import io
import time
import zipfile

import numpy as np
import pytest
from PIL import Image

from bot.lora_services import ServerLoraError, Upload, UploadRefused
from generation.datasets import DatasetError
from storage.records import Scope

GUILD_A, GUILD_B = 31, 32
ALICE, BOB = 7, 8
A = Scope(user_id=ALICE, guild_id=GUILD_A)
A_BOB = Scope(user_id=BOB, guild_id=GUILD_A)
B = Scope(user_id=BOB, guild_id=GUILD_B)


def picture(seed: int, size=(64, 64), fmt="PNG") -> bytes:
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)).resize(size, Image.Resampling.BICUBIC)
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


def zipped(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return out.getvalue()


@pytest.fixture
def container(make_container):
    return make_container(dataset_max_images=6, dataset_max_per_guild=2, dataset_max_image_mb=0.05,
                          dataset_max_mb_per_guild=0.2)


def codes(result) -> list[str]:
    return [refusal.error.code for refusal in result.refused]


def test_images_and_a_kohya_zip_become_a_dataset_with_captions_and_a_contact_sheet(container):
    datasets = container.datasets
    datasets.create(A, "Ink")
    first = datasets.add_images(A, "ink", [Upload("a.png", picture(1)), Upload("b.jpg", picture(2, fmt="JPEG"))],
                                caption="  ink   wash\nstyle ")
    assert [i.caption for i in first.added] == ["ink wash style"] * 2  # whitespace collapsed, as a caption file's
    archive = zipped({"set/01.png": picture(3), "set/01.txt": "水墨 mountain".encode(), "set/02.webp":
                      picture(4, fmt="WEBP"), "__MACOSX/._01.png": b"junk"})
    second = datasets.add_images(A_BOB, "ink", [Upload("set.zip", archive)])  # anyone in the server may add
    assert [(i.original_name, i.caption) for i in second.added] == [("set/01.png", "水墨 mountain"),
                                                                      ("set/02.webp", None)]
    assert second.dataset.image_count == 4
    images = datasets.images(A, "ink")
    for record in images:  # stored re-encoded as PNG under ids, never under the uploaded names
        path = datasets.image_path(record)
        assert path.name == f"{record.public_id}.png" and path.read_bytes().startswith(b"\x89PNG")
    sheet = datasets.show(A, "ink")
    with Image.open(io.BytesIO(sheet.png)) as image:
        assert image.format == "PNG" and image.width > 4 * 160
    assert [i.caption for i in sheet.images] == ["ink wash style", "ink wash style", "水墨 mountain", None]

    changed = datasets.set_caption(A, "ink", "#4", "bamboo, ink")
    assert changed.caption == "bamboo, ink"
    assert datasets.set_caption(A, "ink", images[0].public_id.upper(), "").caption is None  # by id; empty = none
    with pytest.raises(DatasetError) as error:
        datasets.set_caption(A, "ink", "2", "x" * 1001)
    assert error.value.code == "dataset.caption_too_long" and "#2" in error.value.message()
    removed = datasets.remove_image(A, "ink", "1")
    assert removed.public_id == images[0].public_id and not datasets.image_path(removed).exists()
    assert datasets.get(A, "ink").image_count == 3
    with pytest.raises(ServerLoraError) as error:
        datasets.remove_image(A, "ink", "9")
    assert error.value.code == "server_dataset.image_not_found" and "1–3" in error.value.message()


def test_bad_uploads_are_refused_each_with_its_reason(container):
    datasets = container.datasets
    datasets.create(A, "ink")
    gif = io.BytesIO()
    Image.new("RGB", (64, 64)).save(gif, format="GIF")
    result = datasets.add_images(A, "ink", [
        Upload("ok.png", picture(1)),
        Upload("huge.png", b"\x00" * 60_000),  # over the 0.05 MB cap: refused before it is decoded
        Upload("notes.png", b"just some text, not a picture"),
        Upload("anim.gif", gif.getvalue()),
        Upload("tiny.png", picture(2, size=(16, 16))),
        Upload("copy.png", picture(1)),  # the same picture as ok.png, in the same upload
        Upload("evil.zip", zipped({"../escape.png": picture(5)})),
    ])
    assert [i.original_name for i in result.added] == ["ok.png"]
    assert codes(result) == ["dataset.image_too_large", "dataset.not_an_image", "dataset.image_format",
                             "dataset.image_too_small", "server_dataset.duplicate_upload",
                             "dataset.zip_unsafe_name"]
    messages = [refusal.error.message() for refusal in result.refused]
    assert "huge.png" in messages[0] and "MB" in messages[0]
    assert "GIF" in messages[2] and "ok.png" in messages[4]

    # a later upload of a picture already in the dataset: refused, naming the image it repeats
    with pytest.raises(ServerLoraError) as error:
        datasets.add_images(A, "ink", [Upload("again.webp", _as_webp_lossless(picture(1)))])
    assert error.value.code == "server_dataset.duplicate"
    assert "#1" in error.value.message() and "ok.png" in error.value.message()
    assert "第 1 张" in error.value.message("zh-CN")

    # several files, every one refused: each reason is given, not only the first
    with pytest.raises(UploadRefused) as error:
        datasets.add_images(A, "ink", [Upload("again.png", picture(1)), Upload("words.png", b"not a picture")])
    assert [(r.filename, r.error.code) for r in error.value.refusals] == [
        ("again.png", "server_dataset.duplicate"), ("words.png", "dataset.not_an_image")]
    assert "2" in error.value.message() and "again.png" in error.value.message()

    # before downloading: announced sizes, and the count
    with pytest.raises(DatasetError) as error:
        datasets.check_upload(A, "ink", [("big.jpg", 10 * 1024 * 1024)])
    assert error.value.code == "dataset.image_too_large"
    with pytest.raises(DatasetError) as error:
        datasets.check_upload(A, "ink", [("all.zip", 500 * 1024 * 1024)])
    assert error.value.code == "dataset.zip_file_too_large" and "`all.zip`" in error.value.message()
    with pytest.raises(ServerLoraError) as error:
        datasets.check_upload(A, "ink", [(f"{i}.png", 100) for i in range(6)])
    assert error.value.code == "server_dataset.full"
    datasets.check_upload(A, "ink", [("fine.png", 40_000), ("fine.zip", 1_000_000)])


def _as_webp_lossless(png: bytes) -> bytes:
    with Image.open(io.BytesIO(png)) as image:
        out = io.BytesIO()
        image.save(out, format="WEBP", lossless=True)
        return out.getvalue()


def test_quotas_refuse_the_whole_upload(container):
    datasets = container.datasets
    datasets.create(A, "one")
    datasets.create(A, "two")
    with pytest.raises(ServerLoraError) as error:
        datasets.create(A, "three")
    assert error.value.code == "server_dataset.too_many" and "2" in error.value.message()
    datasets.add_images(A, "one", [Upload(f"{i}.png", picture(i)) for i in range(4)])
    with pytest.raises(ServerLoraError) as error:
        datasets.add_images(A, "one", [Upload(f"{i}.png", picture(i)) for i in range(10, 13)])
    assert error.value.code == "server_dataset.full"  # 4 + 3 > 6
    assert datasets.get(A, "one").image_count == 4  # nothing of it was added
    # disk space: 0.2 MB per server; noisy 128² PNGs are ~40 KB each
    noisy = [Upload(f"n{i}.png", _noise(i)) for i in range(6)]
    with pytest.raises(ServerLoraError) as error:
        datasets.add_images(A, "two", noisy)
    assert error.value.code == "server_dataset.disk_quota" and "MB" in error.value.message()
    assert datasets.get(A, "two").image_count == 0
    assert not list((container.settings.datasets_dir / datasets.get(A, "two").public_id).glob("*"))


def _noise(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)).save(out, format="PNG")
    return out.getvalue()


def test_names_rights_and_isolation(container):
    datasets = container.datasets
    with pytest.raises(ServerLoraError) as error:
        datasets.create(A, "no spaces please")
    assert error.value.code == "server_dataset.bad_name"
    datasets.create(A, "ink")
    with pytest.raises(ServerLoraError) as error:
        datasets.create(A_BOB, "INK")
    assert error.value.code == "server_dataset.name_taken"
    datasets.add_images(A, "ink", [Upload("a.png", picture(1))])
    # another server: not found (as if it did not exist), whatever it tries
    for call in (lambda: datasets.get(B, "ink"), lambda: datasets.show(B, "ink"),
                 lambda: datasets.add_images(B, "ink", [Upload("b.png", picture(2))]),
                 lambda: datasets.set_caption(B, "ink", "1", "x"), lambda: datasets.remove_image(B, "ink", "1"),
                 lambda: datasets.delete(B, "ink", can_manage=True)):
        with pytest.raises(ServerLoraError) as error:
            call()
        assert error.value.code == "server_dataset.none_here"
    datasets.create(B, "other")
    with pytest.raises(ServerLoraError) as error:
        datasets.get(B, "ink")
    assert error.value.code == "server_dataset.not_found" and "other" in error.value.message()
    assert error.value.message().endswith("here: other.")  # another server's names never show
    # in its own server: captions and images by their creator or a manager; deleting by a manager
    with pytest.raises(ServerLoraError) as error:
        datasets.set_caption(A_BOB, "ink", "1", "mine now")
    assert error.value.code == "server_dataset.not_yours"
    assert datasets.set_caption(A_BOB, "ink", "1", "fixed", can_manage=True).caption == "fixed"
    with pytest.raises(ServerLoraError) as error:
        datasets.delete(A, "ink")  # even its creator needs Manage Server or the trainer role
    assert error.value.code == "server_lora.not_allowed"
    folder = container.settings.datasets_dir / datasets.get(A, "ink").public_id
    assert folder.is_dir()
    datasets.delete(A, "ink", can_manage=True)
    assert not folder.exists() and datasets.list(A) == []
    # outside servers each user has their own datasets, and manages them
    dm = Scope(user_id=ALICE)
    datasets.create(dm, "ink")
    assert [d.name for d in datasets.list(dm)] == ["ink"] and datasets.list(Scope(user_id=BOB)) == []
    datasets.delete(dm, "ink")


def test_one_upload_has_a_combined_size_cap_checked_before_downloading(make_container):
    """Sizes are checked file by file, in upload order: a file over its own limit, or one that
    no longer fits in the upload's combined cap, is refused by name; the others go on."""
    container = make_container(dataset_max_image_mb=0.05, dataset_max_upload_mb=0.1)
    try:
        datasets = container.datasets
        datasets.create(A, "ink")
        fine = datasets.check_upload(A, "ink", [("a.png", 40_000), ("b.png", 40_000)])  # 80 KB: fine
        assert fine.accepted == (0, 1) and fine.refused == ()
        # three 40 KB images: each fits, the third no longer fits with the other two
        checked = datasets.check_upload(A, "ink", [("a.png", 40_000), ("b.png", 40_000), ("c.png", 40_000)])
        assert checked.accepted == (0, 1) and [r.filename for r in checked.refused] == ["c.png"]
        error = checked.refused[0].error
        assert error.code == "server_dataset.over_upload_total"
        assert "`c.png`" in error.message() and "zip" in error.message() and "zip" in error.message("zh-CN")
        # one file far over the image limit: only that one is refused
        checked = datasets.check_upload(A, "ink", [("04.png", 30_000), ("huge.png", 21_000_000)])
        assert checked.accepted == (0,) and checked.refused[0].error.code == "dataset.image_too_large"
        assert "`huge.png`" in checked.refused[0].error.message()
        with pytest.raises(ServerLoraError) as refused:  # nothing passes: every reason
            datasets.check_upload(A, "ink", [("big.png", 60_000), ("huge.png", 21_000_000)])
        assert isinstance(refused.value, UploadRefused) and len(refused.value.refusals) == 2
        checked = datasets.check_upload(A, "ink", [("set.zip", 150_000), ("a.png", 40_000)])  # a zip: its own cap
        assert checked.accepted == (0, 1)
        # the same rule when the bytes are already here: the images that fit are added
        noise = [Upload(f"n{i}.png", _noise(i)) for i in range(3)]
        sizes = [len(u.data) for u in noise]
        assert all(size <= 0.05 * 2**20 for size in sizes) and sum(sizes) > 0.1 * 2**20, sizes
        result = datasets.add_images(A, "ink", noise)
        fitting = 2 if sizes[0] + sizes[1] <= 100_000 else 1
        assert len(result.added) == fitting and datasets.get(A, "ink").image_count == fitting
        assert [r.error.code for r in result.refused] == ["server_dataset.over_upload_total"] * (3 - fitting)
    finally:
        container.close()


def test_concurrent_uploads_cannot_both_pass_one_quota(container, monkeypatch):
    import threading

    datasets = container.datasets
    datasets.create(A, "ink")
    write = datasets.files.write
    started = threading.Barrier(4, timeout=5)

    def slow_write(*args, **kwargs):  # widen the window between the quota check and the rows
        time.sleep(0.05)
        return write(*args, **kwargs)

    monkeypatch.setattr(datasets.files, "write", slow_write)
    outcomes: list[str] = []

    def upload(start: int) -> None:
        started.wait()
        try:
            datasets.add_images(A if start % 2 else A_BOB, "ink",
                                [Upload(f"{start}-{i}.png", picture(100 * start + i)) for i in range(2)])
            outcomes.append("added")
        except ServerLoraError as error:
            outcomes.append(error.code)

    threads = [threading.Thread(target=upload, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["added"] * 3 + ["server_dataset.full"]  # 3 × 2 = the limit of 6
    assert datasets.get(A, "ink").image_count == 6

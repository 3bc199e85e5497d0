"""Issue 17.10: a dataset zip is read member by member with bounded memory, and the disk quota is
checked from the members' declared sizes before any of them is decoded."""

from __future__ import annotations

import io
import tracemalloc
import zipfile

import numpy as np
import pytest
from PIL import Image

import generation.datasets.archive as archive
from bot.container import build_container
from bot.lora_services import ServerLoraError, Upload
from bot.settings import load_settings
from storage.records import Scope

A = Scope(user_id=7, guild_id=31)


def noise_png(seed: int, side: int) -> bytes:
    rng = np.random.default_rng(seed)
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(out, format="PNG")
    return out.getvalue()


def write_zip(path, count: int, side: int, first: int = 0):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as out:  # noise does not compress: stored
        for index in range(first, first + count):
            out.writestr(f"{index:03}.png", noise_png(index, side))
            out.writestr(f"{index:03}.txt", f"picture {index}")
    return path


@pytest.fixture
def decoded(monkeypatch) -> list[str]:
    """The names of the zip members decoded (validate_image called on them)."""
    names: list[str] = []
    original = archive.validate_image

    def counting(data, **kwargs):
        names.append(kwargs.get("name", "?"))
        return original(data, **kwargs)

    monkeypatch.setattr(archive, "validate_image", counting)
    return names


def test_a_zip_declaring_more_than_the_quota_is_refused_before_a_member_is_decoded(tmp_path, decoded):
    container = build_container(load_settings(home=tmp_path / "home", dataset_max_image_mb=0.05,
                                              dataset_max_mb_per_guild=0.2))
    try:
        datasets = container.datasets
        datasets.create(A, "ink")
        big = write_zip(tmp_path / "big.zip", 6, 128)  # 6 × ~49 KB declared > 0.2 MB
        with pytest.raises(ServerLoraError) as error:
            datasets.add_zip(A, "ink", big)
        assert error.value.code == "server_dataset.disk_quota" and "MB" in error.value.message()
        with pytest.raises(ServerLoraError) as error:
            datasets.add_images(A, "ink", [Upload("big.zip", big.read_bytes())])
        assert error.value.code == "server_dataset.disk_quota"
        assert decoded == []  # judged from the central directory alone
        assert datasets.get(A, "ink").image_count == 0
        assert not any((container.settings.datasets_dir).rglob("*.png"))
        small = write_zip(tmp_path / "small.zip", 2, 128)
        assert len(datasets.add_zip(A, "ink", small).added) == 2 and len(decoded) == 2
    finally:
        container.close()


def test_memory_does_not_grow_with_the_number_of_members(tmp_path):
    container = build_container(load_settings(home=tmp_path / "home", dataset_max_image_mb=1,
                                              dataset_max_mb_per_guild=100, dataset_max_images=200))
    try:
        datasets = container.datasets
        member = len(noise_png(0, 384))  # ~440 KB each, re-encoded to about as much
        peaks = {}
        for count, first in ((2, 0), (4, 100), (16, 200)):  # the first run warms caches up
            name = f"set{count}"
            datasets.create(A, name)
            path = write_zip(tmp_path / f"{name}.zip", count, 384, first)
            tracemalloc.start()
            try:
                added = datasets.add_zip(A, name, path)
                peaks[count] = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
            assert len(added.added) == count
        print(f"peak Python memory: {peaks} (one member ~{member} bytes)")
        # holding every decoded member (as before) adds 12 members' PNGs (~5 MB) between 4 and 16
        assert peaks[16] - peaks[4] < 2 * member
    finally:
        container.close()

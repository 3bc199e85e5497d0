"""ImageStore: layout, atomic writes, no overwrites, and no way out of the root."""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime, timedelta, timezone

import pytest

from storage.errors import FileExists, InvalidValue, UnsafePath
from storage.files import ImageStore

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
WHEN = datetime(2025, 3, 9, 23, 30, tzinfo=UTC)


def _all_files(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_write_stores_bytes_under_year_and_month(store):
    stored = store.write("abcd2345", PNG, WHEN)
    assert stored.relative_path == "2025/03/abcd2345.png"
    assert stored.sha256 == hashlib.sha256(PNG).hexdigest() and stored.size == len(PNG)
    assert store.read(stored.relative_path) == PNG
    with store.open(stored.relative_path) as handle:
        assert handle.read() == PNG
    assert store.absolute(stored.relative_path) == store.root / "2025" / "03" / "abcd2345.png"
    assert _all_files(store.root) == ["2025/03/abcd2345.png"]  # no temporary file left


def test_the_folder_is_the_utc_month(store):
    # 1 April 01:00 in Beijing is still 31 March in UTC.
    stored = store.write("abcd2345", PNG, datetime(2025, 4, 1, 1, 0, tzinfo=timezone(timedelta(hours=8))))
    assert stored.relative_path == "2025/03/abcd2345.png"


def test_an_existing_file_is_never_overwritten(store):
    store.write("abcd2345", PNG, WHEN)
    with pytest.raises(FileExists):
        store.write("abcd2345", b"other", WHEN)
    assert store.read("2025/03/abcd2345.png") == PNG
    assert _all_files(store.root) == ["2025/03/abcd2345.png"]


def test_a_failed_write_leaves_nothing(store, monkeypatch):
    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(OSError, match="disk full"):
        store.write("abcd2345", PNG, WHEN)
    assert _all_files(store.root) == []


def test_a_failed_rename_leaves_nothing(store, monkeypatch):
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError("rename failed")))
    with pytest.raises(OSError, match="rename failed"):
        store.write("abcd2345", PNG, WHEN)
    assert _all_files(store.root) == []


@pytest.mark.parametrize(
    ("public_id", "created"),
    [("../../etc", WHEN), ("a/b", WHEN), ("", WHEN), ("ABCD", WHEN), ("abcd2345", datetime(2025, 3, 9))],
)
def test_write_refuses_odd_ids_and_naive_times(store, public_id, created):
    with pytest.raises(InvalidValue):
        store.write(public_id, PNG, created)


@pytest.mark.parametrize(
    "path",
    [
        "../outside.png",
        "2025/../../outside.png",
        "/etc/passwd",
        "2025/03/../../../x.png",
        "",
        ".",
        "2025//x.png",
        "2025/./x.png",
        "..\\outside.png",
        "C:/Windows/x.png",
        "2025/03/x.png\x00.txt",
    ],
)
def test_paths_that_could_leave_the_root_are_refused(store, path):
    with pytest.raises(UnsafePath) as caught:
        store.absolute(path)
    assert caught.value.code == "storage.unsafe_path"
    for call in (store.read, store.delete, store.exists):
        with pytest.raises(UnsafePath):
            call(path)


def test_a_symbolic_link_out_of_the_root_is_refused(store, tmp_path):
    outside = tmp_path / "secret"
    outside.mkdir()
    (outside / "key.png").write_bytes(b"secret")
    store.root.mkdir(parents=True)
    try:
        (store.root / "2025").symlink_to(outside, target_is_directory=True)
    except OSError:
        pytest.skip("symbolic links are not available here")
    with pytest.raises(UnsafePath):
        store.read("2025/key.png")


def test_delete(store):
    stored = store.write("abcd2345", PNG, WHEN)
    assert store.exists(stored.relative_path)
    assert store.delete(stored.relative_path) is True
    assert store.delete(stored.relative_path) is False
    assert not store.exists(stored.relative_path)


def test_a_relative_root_is_fixed_at_construction(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = ImageStore("images")
    monkeypatch.chdir("/")
    stored = store.write("abcd2345", PNG, WHEN)
    assert (tmp_path / "images" / stored.relative_path).read_bytes() == PNG

"""Dataset images and LoRA files on disk: one root each, atomic writes, checked paths.

Like :class:`~storage.files.ImageStore`: a file is written to a temporary name, synced and
renamed, so it is there whole or not at all; it is never overwritten; every relative path
is checked before use (:func:`~storage.files.safe_path`).  Names are built from public ids
only — never from an uploaded file's or archive member's name.

Layouts (relative POSIX paths, stored in the rows):

* datasets (``$BRUSHWORK_HOME/datasets``): ``<dataset id>/<image id>.png``;
* server LoRAs (``$BRUSHWORK_HOME/server_loras``): ``<lora id>.safetensors``.

"File first, then the row" is the callers' rule (``bot/lora_services.py``): write, then
insert and commit; on failure remove the file again.  Deleting goes the other way: the row
first, then the file (a crash in between leaves an unreferenced file, never a dangling row).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from storage.errors import FileExists, InvalidValue, UnsafePath
from storage.files import StoredFile, _fsync_dir, safe_path, write_atomically
from storage.ids import ALPHABET

_ID_CHARS = frozenset(ALPHABET)


def _check_id(value: str, name: str) -> str:
    if not value or not set(value) <= _ID_CHARS:
        raise InvalidValue(name, value, f"characters from {ALPHABET!r}")
    return value


def dataset_image_path(dataset_id: str, image_id: str) -> str:
    return f"{_check_id(dataset_id, 'dataset_id')}/{_check_id(image_id, 'image_id')}.png"


def lora_file_path(lora_id: str) -> str:
    return f"{_check_id(lora_id, 'lora_id')}.safetensors"


class AssetStore:
    """Files below ``root``; every relative path is checked (see the module docstring)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().absolute()

    def __repr__(self) -> str:
        return f"AssetStore({str(self.root)!r})"

    def absolute(self, relative_path: str) -> Path:
        return safe_path(self.root, relative_path)

    def write(self, relative_path: str, data: bytes) -> StoredFile:
        """Write ``data`` atomically; :class:`FileExists` if something is there already."""
        sha256, size = write_atomically(self._fresh_target(relative_path), [data])
        return StoredFile(relative_path, sha256, size)

    def adopt(self, relative_path: str, source: str | os.PathLike[str]) -> StoredFile:
        """Move a finished file (e.g. a LoRA just exported elsewhere) into the store, atomically:
        copied next to its target under a temporary name, synced, then renamed; ``source`` is
        left as it was."""
        target = self._fresh_target(relative_path)
        with open(source, "rb") as src:
            sha256, size = write_atomically(target, iter(lambda: src.read(1 << 20), b""))
        return StoredFile(relative_path, sha256, size)

    def read(self, relative_path: str) -> bytes:
        return self.absolute(relative_path).read_bytes()

    def exists(self, relative_path: str) -> bool:
        return self.absolute(relative_path).is_file()

    def delete(self, relative_path: str) -> bool:
        """Remove a file; False if it was not there."""
        path = self.absolute(relative_path)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        _fsync_dir(path.parent)
        return True

    def delete_folder(self, relative_path: str) -> bool:
        """Remove a folder and everything in it (a dataset's images); False if it was not there."""
        path = self.absolute(relative_path)
        if path == self.root or not path.is_dir() or path.is_symlink():
            return False
        shutil.rmtree(path, ignore_errors=True)
        return True

    def _fresh_target(self, relative_path: str) -> Path:
        target = self.absolute(relative_path)
        if target == self.root:
            raise UnsafePath(relative_path)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            raise FileExists(relative_path)
        return target

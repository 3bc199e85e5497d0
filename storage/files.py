"""Image files on disk, under one root, written atomically and never overwritten.

Layout: ``YYYY/MM/<public_id>.png`` (UTC creation month), stored in the database as that
relative POSIX path so the root can move.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from storage.errors import FileExists, InvalidValue, UnsafePath
from storage.ids import ALPHABET

_ID_CHARS = frozenset(ALPHABET)


@dataclass(frozen=True, slots=True)
class StoredFile:
    relative_path: str
    sha256: str
    size: int


def _fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in ``path`` durable (not possible on every platform)."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
    try:
        fd = os.open(path, flags)
    except OSError:  # e.g. Windows cannot open folders
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomically(target: Path, chunks: Iterable[bytes]) -> tuple[str, int]:
    """Write ``chunks`` to ``target`` whole or not at all: a temporary name beside it, fsync,
    rename, fsync the folder.  Never overwrites: the temporary file is created exclusively and
    the caller checks ``target`` first.  Returns the sha256 and size of what was written."""
    temp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    digest = hashlib.sha256()
    size = 0
    try:
        with open(temp, "xb") as handle:
            for chunk in chunks:
                digest.update(chunk)
                size += len(chunk)
                handle.write(chunk)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
        raise
    _fsync_dir(target.parent)
    return digest.hexdigest(), size


def safe_path(root: Path, relative_path: str) -> Path:
    """``root / relative_path``, or :class:`UnsafePath` if the path could leave ``root``
    (absolute, ``..``, empty parts, Windows separators or drives, NUL, or a symbolic link
    inside the root that leads out of it)."""
    if not isinstance(relative_path, str) or not relative_path or "\x00" in relative_path:
        raise UnsafePath(relative_path)
    if "\\" in relative_path or ":" in relative_path:  # Windows separators and drives
        raise UnsafePath(relative_path)
    pure = PurePosixPath(relative_path)
    if pure.is_absolute() or any(part in ("..", ".", "") for part in relative_path.split("/")):
        raise UnsafePath(relative_path)
    candidate = root.joinpath(*pure.parts)
    # Symbolic links inside the store must not lead out of it either.
    if not candidate.resolve().is_relative_to(root.resolve()):
        raise UnsafePath(relative_path)
    return candidate


class ImageStore:
    """Reads and writes image files below ``root``; every relative path is checked."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().absolute()

    def __repr__(self) -> str:
        return f"ImageStore({str(self.root)!r})"

    @staticmethod
    def relative_path_for(public_id: str, created: datetime) -> str:
        if not public_id or not set(public_id) <= _ID_CHARS:
            raise InvalidValue("public_id", public_id, f"characters from {ALPHABET!r}")
        if created.tzinfo is None or created.utcoffset() is None:
            raise InvalidValue("created", created, "a timezone-aware datetime")
        utc = created.astimezone(UTC)
        return f"{utc.year:04d}/{utc.month:02d}/{public_id}.png"

    def write(self, public_id: str, data: bytes, created: datetime) -> StoredFile:
        """Write ``data`` as the file of ``public_id``; all of it or nothing is ever visible.

        Raises :class:`FileExists` if that file exists already (a public id collision).
        """
        relative = self.relative_path_for(public_id, created)
        target = self.absolute(relative)
        self._make_folders(target.parent)
        if target.exists():
            raise FileExists(relative)
        sha256, size = write_atomically(target, [data])
        return StoredFile(relative, sha256, size)

    def _make_folders(self, folder: Path) -> None:
        missing = []
        current = folder
        while not current.exists() and current != current.parent:
            missing.append(current)
            current = current.parent
        folder.mkdir(parents=True, exist_ok=True)
        for created in reversed(missing):  # each new entry made durable in its parent
            _fsync_dir(created.parent)

    def absolute(self, relative_path: str) -> Path:
        """The absolute path of a stored file; :class:`UnsafePath` if it could leave the root."""
        return safe_path(self.root, relative_path)

    def exists(self, relative_path: str) -> bool:
        return self.absolute(relative_path).is_file()

    def open(self, relative_path: str) -> BinaryIO:
        return open(self.absolute(relative_path), "rb")

    def read(self, relative_path: str) -> bytes:
        return self.absolute(relative_path).read_bytes()

    def delete(self, relative_path: str) -> bool:
        """Remove a stored file; False if it was not there."""
        path = self.absolute(relative_path)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        _fsync_dir(path.parent)
        return True

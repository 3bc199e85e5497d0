"""File hashes for the PNG recipe: A1111's model hash, LoRA hashes, folder hashes.

Hashing a 7 GB checkpoint takes seconds, so results are remembered in a JSON file under
the cache folder, keyed by (absolute path, size, mtime_ns): a file replaced in place gets
a new mtime and is hashed again.  Files are streamed, never read whole into memory.

* A1111's short **model hash** is the first 10 hex digits of the file's sha256.
* A1111's **LoRA hash** ("Lora hashes") is the first 12 hex digits of the sha256 of a
  safetensors file's tensor data, i.e. everything after its header (the "addnet" hash, which
  CivitAI also shows), so editing the metadata does not change it.  Other files: the whole file.
* A diffusers **folder** has no A1111 hash: Brushwork uses the sha256 of the sorted list of
  ``relative path + sha256`` of its weight files (first 10 hex digits), stable across copies.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import tempfile
import threading
from pathlib import Path
from typing import Any

CACHE_FILE = "hashes.json"
CACHE_VERSION = 1
MODEL_HASH_LENGTH = 10
LORA_HASH_LENGTH = 12
_CHUNK = 1 << 20
_SHA256_NAME = re.compile(r"[0-9a-f]{64}")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth", ".msgpack", ".onnx")


def sha256_file(path: Path, *, offset: int = 0) -> str:
    """sha256 of a file from ``offset`` on, streamed in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        handle.seek(offset)
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def safetensors_data_offset(path: Path) -> int | None:
    """Where a safetensors file's tensor data starts, or None if it is not one."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read(8)
    except OSError:
        return None
    if len(raw) != 8:
        return None
    (length,) = struct.unpack("<Q", raw)
    size = path.stat().st_size
    return 8 + length if 8 + length <= size else None


class FileHasher:
    """sha256 of files with a persistent, thread-safe cache (``cache_dir=None``: memory only)."""

    def __init__(self, cache_dir: Path | str | None = None) -> None:
        self._file = Path(cache_dir).expanduser() / CACHE_FILE if cache_dir is not None else None
        self._lock = threading.Lock()
        self._entries: dict[str, dict[str, Any]] | None = None
        self.computed = 0  # how many hashes were really computed (the tests read it)

    # ------------------------------------------------------------------ public
    def sha256(self, path: Path | str) -> str:
        resolved = Path(path).expanduser().resolve()
        if resolved.parent.name == "blobs" and _SHA256_NAME.fullmatch(resolved.name):
            # a Hugging Face cache blob of an LFS file is named after its sha256: no need to read 7 GB
            return resolved.name
        return self._cached(resolved, "sha256", lambda p: sha256_file(p))

    def model_hash(self, path: Path | str) -> str:
        """A1111's "Model hash" of a single-file checkpoint."""
        return self.sha256(path)[:MODEL_HASH_LENGTH]

    def lora_hash(self, path: Path | str) -> str:
        """A1111's short LoRA hash (see the module docstring)."""
        path = Path(path)

        def compute(p: Path) -> str:
            offset = safetensors_data_offset(p) if p.suffix.lower() == ".safetensors" else None
            return sha256_file(p, offset=offset or 0)

        return self._cached(path, "addnet", compute)[:LORA_HASH_LENGTH]

    def folder_hash(self, folder: Path | str, *, variant: str | None = None) -> str:
        """A stable hash of a diffusers folder's weight files (first 10 hex digits)."""
        folder = Path(folder)
        files = weight_files(folder, variant=variant)
        digest = hashlib.sha256()
        for path in files:
            digest.update(path.relative_to(folder).as_posix().encode("utf-8"))
            digest.update(b"\0")
            digest.update(self.sha256(path).encode("ascii"))
            digest.update(b"\n")
        return digest.hexdigest()[:MODEL_HASH_LENGTH]

    # ------------------------------------------------------------------ cache
    def _cached(self, path: Path, kind: str, compute) -> str:
        resolved = path.expanduser().resolve()
        stat = resolved.stat()  # FileNotFoundError is the caller's to explain
        key = f"{kind}:{resolved}"
        with self._lock:
            entries = self._load()
            entry = entries.get(key)
            if entry and entry.get("size") == stat.st_size and entry.get("mtime_ns") == stat.st_mtime_ns:
                return str(entry["hash"])
        value = compute(resolved)  # outside the lock: other files can be hashed meanwhile
        with self._lock:
            self.computed += 1
            entries = self._load()
            entries[key] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "hash": value}
            self._save(entries)
        return value

    def _load(self) -> dict[str, dict[str, Any]]:
        if self._entries is None:
            self._entries = {}
            if self._file is not None and self._file.is_file():
                try:
                    data = json.loads(self._file.read_text("utf-8"))
                    if data.get("version") == CACHE_VERSION and isinstance(data.get("entries"), dict):
                        entries: dict[str, dict[str, Any]] = data["entries"]
                        self._entries = entries
                except (OSError, ValueError, AttributeError):
                    self._entries = {}  # a damaged cache only costs a re-hash
        return self._entries

    def _save(self, entries: dict[str, dict[str, Any]]) -> None:
        if self._file is None:
            return
        try:
            self._file.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".hashes-", suffix=".json", dir=self._file.parent)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump({"version": CACHE_VERSION, "entries": entries}, handle, indent=0, sort_keys=True)
            os.replace(tmp, self._file)  # atomic: a crash never leaves half a cache
        except OSError:
            pass  # a read-only cache folder only costs speed


def weight_files(folder: Path, *, variant: str | None = None) -> list[Path]:
    """The weight files a diffusers folder loads with, sorted (variant files when asked)."""
    found: list[Path] = []
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or not path.name.lower().endswith(WEIGHT_SUFFIXES):
            continue
        parts = path.name.split(".")
        file_variant = parts[-2] if len(parts) >= 3 else None
        if file_variant != variant:  # "x.fp16.safetensors" is the fp16 variant of "x.safetensors"
            continue
        found.append(path)
    safetensors = [p for p in found if p.suffix == ".safetensors"]
    if safetensors:  # diffusers prefers safetensors when both are there
        stems = {p.with_suffix("") for p in safetensors}
        found = [p for p in found if p.suffix == ".safetensors" or p.with_suffix("") not in stems]
    return found

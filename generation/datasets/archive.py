"""A dataset zip, read member by member under limits: :func:`read_zip`.

kohya's convention: images with same-named ``.txt`` captions (``01.png`` + ``01.txt``),
in any folders.  The archive is untrusted, so:

* its size is checked first, and its **entry count is read from the end-of-central-
  directory record before** Python's ``zipfile`` builds its list of entries;
* every entry is judged from the central directory before any byte is decompressed:
  unsafe names (absolute, drive letters, ``..``, NUL) are refused — and no member name is
  ever used as a path: only the file name's stem pairs an image with its caption;
  symlinks and special files, encrypted members, compression methods other than stored
  and deflate, nested archives and anything that is not a PNG/JPEG/WebP image or a
  ``.txt`` caption are refused, each by name; declared sizes are checked against the
  per-member cap, the running total and the compression ratio (zip bombs);
* members are then read in chunks, counting the bytes really produced (a lying header
  cannot make a member larger than allowed), and checked: images by
  :func:`~generation.datasets.images.validate_image`, captions as UTF-8 text under a
  length cap.  :func:`iter_zip` hands the images over one at a time (memory: one member,
  whatever the archive holds); :func:`plan_zip` says what an archive holds — images and
  their declared sizes — from the central directory alone, so a caller checks its quotas
  before a member is decoded;
* two images or two captions with the same stem, a caption without an image and two
  identical pictures (same pixels) are refused, naming both members.

Ignored without a word: folders, and the files operating systems add on their own
(``__MACOSX/``, ``._*``, ``.DS_Store``, ``Thumbs.db``, ``desktop.ini``).  An image
without a caption is fine (``caption=None``).  Whitespace in captions is collapsed to
single spaces (newlines included), since a caption is used as one prompt.

The first problem found is raised as a :class:`DatasetError` whose message names the
member and says what is allowed.  Nothing is written to disk.
"""

from __future__ import annotations

import io
import os
import re
import stat
import struct
import unicodedata
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from generation.datasets.errors import DatasetError
from generation.datasets.images import (
    ALLOWED_LABEL,
    DEFAULT_MAX_PIXELS,
    DEFAULT_MIN_SIDE,
    CleanImage,
    archive_kind,
    megabytes,
    validate_image,
)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
CAPTION_SUFFIXES = (".txt",)
ARCHIVE_SUFFIXES = (".zip", ".rar", ".7z", ".tar", ".gz", ".tgz", ".bz2", ".xz", ".zst", ".cbz", ".cbr", ".jar",
                    ".apk", ".iso", ".dmg")
ALLOWED_MEMBERS = ".png, .jpg, .jpeg, .webp, .txt"
# Other picture formats, refused by name (the message says what they are and what to convert to).
OTHER_IMAGE_SUFFIXES = {".gif": "GIF", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF", ".heic": "HEIC",
                        ".heif": "HEIF", ".avif": "AVIF", ".jxl": "JPEG XL", ".ico": "ICO", ".psd": "PSD",
                        ".svg": "SVG", ".jp2": "JPEG 2000", ".tga": "TGA", ".exr": "OpenEXR", ".raw": "RAW",
                        ".dng": "DNG", ".cr2": "RAW", ".nef": "RAW"}
JUNK_NAMES = frozenset({".ds_store", "thumbs.db", "desktop.ini"})
_READ_CHUNK = 64 * 1024
_COMPRESSIONS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate"}
_COMPRESSION_NAMES = {zipfile.ZIP_BZIP2: "bzip2", zipfile.ZIP_LZMA: "LZMA", 9: "deflate64", 93: "zstd",
                      99: "AES"}
_DRIVE = re.compile(r"^[A-Za-z]:")
_EOCD = b"PK\x05\x06"
_EOCD64_LOCATOR = b"PK\x06\x07"
_EOCD64 = b"PK\x06\x06"
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, struct.error, NotImplementedError)


@dataclass(frozen=True, slots=True)
class ZipLimits:
    """What an archive may hold.  Sizes are bytes; members' sizes are uncompressed.

    ``max_ratio`` (uncompressed ÷ compressed) is checked on members of at least
    ``ratio_floor_bytes``: PNG/JPEG/WebP barely compress, so a large member that shrank
    100× is a bomb, while a short caption of repeated words may legitimately shrink a lot.
    """

    max_archive_bytes: int = 200 * 1024 * 1024
    max_entries: int = 1000
    max_images: int = 200
    max_member_bytes: int = 20 * 1024 * 1024
    max_total_bytes: int = 1024 * 1024 * 1024
    max_ratio: float = 100.0
    ratio_floor_bytes: int = 1024 * 1024
    max_pixels: int = DEFAULT_MAX_PIXELS
    min_side: int = DEFAULT_MIN_SIDE
    max_caption_chars: int = 1000

    @property
    def max_caption_bytes(self) -> int:
        return self.max_caption_chars * 4  # UTF-8 needs at most 4 bytes per character


@dataclass(frozen=True, slots=True)
class ZipMember:
    """One training image of an archive, with its caption (None when it has no ``.txt``).

    ``name`` is the member's full name in the archive, made printable (for messages and
    display only, never a path); ``stem`` is the file name without folder and extension.
    """

    name: str
    stem: str
    image: CleanImage
    caption: str | None


@dataclass(frozen=True, slots=True)
class _Entry:
    info: zipfile.ZipInfo
    name: str  # display name
    stem: str
    kind: str  # "image" or "caption"


@dataclass(frozen=True, slots=True)
class ZipPlan:
    """What an archive holds, from its central directory alone (no member decompressed).

    ``declared_bytes`` is the images' declared (uncompressed) sizes together: what quotas
    are checked against before anything is decoded.  Reading can only make a member
    *smaller* than declared (more raises), so the plan bounds what the archive brings.
    """

    images: int
    captions: int
    declared_bytes: int


def read_zip(source: bytes | bytearray | memoryview | str | os.PathLike[str] | IO[bytes], *,
             limits: ZipLimits | None = None) -> list[ZipMember]:
    """The images (with captions) of a dataset archive, in natural name order; see the module docstring.

    Every image is held in memory: for a large archive use :func:`iter_zip`, which hands
    them over one at a time.
    """
    return list(iter_zip(source, limits=limits))


def plan_zip(source: bytes | bytearray | memoryview | str | os.PathLike[str] | IO[bytes], *,
             limits: ZipLimits | None = None) -> ZipPlan:
    """Judge an archive from its central directory (every check of :func:`read_zip` that
    needs no decompression) and say what it holds; nothing is decoded."""
    limits = limits or ZipLimits()
    with _archive(source, limits) as (_archive_file, images, captions):
        return ZipPlan(images=len(images), captions=len(captions),
                       declared_bytes=sum(entry.info.file_size for entry in images))


def iter_zip(source: bytes | bytearray | memoryview | str | os.PathLike[str] | IO[bytes], *,
             limits: ZipLimits | None = None) -> Iterator[ZipMember]:
    """:func:`read_zip` one member at a time: each image is read, decoded and checked only
    when the next one is asked for, so memory holds one member whatever the archive's size.

    The whole archive is judged from its central directory before the first member is
    handed over, and every caption (small: at most ``max_caption_bytes`` each) is read and
    checked first; an image's problem is raised when that image is reached.
    """
    limits = limits or ZipLimits()
    with _archive(source, limits) as (archive, images, captions):
        texts = {key: _read_caption(archive, entry, limits) for key, entry in captions.items()}
        seen: dict[str, str] = {}
        for entry in images:
            image = _read_image(archive, entry, limits)
            if image.sha256 in seen:
                raise DatasetError("dataset.duplicate_image", name=entry.name, other=seen[image.sha256])
            seen[image.sha256] = entry.name
            yield ZipMember(name=entry.name, stem=entry.stem, image=image, caption=texts.get(entry.stem.casefold()))


@contextmanager
def _archive(source, limits: ZipLimits) -> Iterator[tuple[zipfile.ZipFile, list[_Entry], dict[str, _Entry]]]:
    """The opened archive and its plan: images in natural order, captions by stem."""
    with _opened(source, limits) as handle:
        _check_entry_count(handle, limits)
        try:
            archive = zipfile.ZipFile(handle)
        except _ZIP_ERRORS as exc:
            raise DatasetError("dataset.zip_invalid", detail=_detail(exc)) from None
        with archive:
            infos = archive.infolist()
            if len(infos) > limits.max_entries:  # the EOCD may lie; the real list is what counts
                raise DatasetError("dataset.zip_too_many_entries", count=len(infos), limit=limits.max_entries)
            images, captions = _plan(infos, limits)
            yield archive, images, captions


# ---------------------------------------------------------------------- opening


@contextmanager
def _opened(source, limits: ZipLimits) -> Iterator[IO[bytes]]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        _check_archive_size(len(source), limits)
        yield io.BytesIO(bytes(source))
        return
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise DatasetError("dataset.zip_invalid", detail=_detail(exc)) from None
        _check_archive_size(size, limits)
        with open(path, "rb") as handle:
            yield handle
        return
    handle = source
    size = handle.seek(0, os.SEEK_END)
    handle.seek(0)
    _check_archive_size(size, limits)
    yield handle


def _check_archive_size(size: int, limits: ZipLimits) -> None:
    if size > limits.max_archive_bytes:
        raise DatasetError("dataset.zip_too_large", size=megabytes(size), limit=megabytes(limits.max_archive_bytes))
    if size == 0:
        raise DatasetError("dataset.zip_invalid", detail="empty file")


def _check_entry_count(handle: IO[bytes], limits: ZipLimits) -> None:
    """Refuse an archive announcing too many entries before zipfile reads them all into memory."""
    count = declared_entry_count(handle)
    if count is not None and count > limits.max_entries:
        raise DatasetError("dataset.zip_too_many_entries", count=count, limit=limits.max_entries)


def declared_entry_count(handle: IO[bytes]) -> int | None:
    """The entry count of the end-of-central-directory record (zip64 aware); None if not found."""
    size = handle.seek(0, os.SEEK_END)
    tail_size = min(size, 22 + 65535 + 20)
    handle.seek(size - tail_size)
    tail = handle.read(tail_size)
    handle.seek(0)
    at = tail.rfind(_EOCD)
    if at < 0 or len(tail) - at < 22:
        return None
    count = struct.unpack_from("<H", tail, at + 10)[0]
    if count != 0xFFFF or at < 20 or tail[at - 20:at - 16] != _EOCD64_LOCATOR:
        return count
    offset = struct.unpack_from("<Q", tail, at - 20 + 8)[0]
    if offset + 56 > size:
        return None
    handle.seek(offset)
    record = handle.read(56)
    handle.seek(0)
    if len(record) < 56 or not record.startswith(_EOCD64):
        return None
    return struct.unpack_from("<Q", record, 32)[0]


# ---------------------------------------------------------------------- the plan (central directory only)


def _plan(infos: list[zipfile.ZipInfo], limits: ZipLimits) -> tuple[list[_Entry], dict[str, _Entry]]:
    images: dict[str, _Entry] = {}
    captions: dict[str, _Entry] = {}
    total = 0
    for info in infos:
        name = display_name(info.orig_filename)
        if not safe_member_name(info.orig_filename):
            raise DatasetError("dataset.zip_unsafe_name", name=name)
        parts = [p for p in re.split(r"[/\\]", info.filename) if p]
        if info.is_dir() or info.filename.endswith(("/", "\\")) or not parts:
            continue
        base = parts[-1]
        if _is_junk(parts):
            continue
        _check_file_type(info, name)
        if info.flag_bits & 0x1 or info.compress_type == 99:
            raise DatasetError("dataset.zip_encrypted", name=name)
        if info.compress_type not in _COMPRESSIONS:
            method = _COMPRESSION_NAMES.get(info.compress_type, str(info.compress_type))
            raise DatasetError("dataset.zip_compression", name=name, method=method)
        stem, suffix = os.path.splitext(base)
        suffix = suffix.lower()
        if suffix in ARCHIVE_SUFFIXES:
            raise DatasetError("dataset.nested_archive", name=name, kind=suffix.lstrip(".").upper())
        if suffix in OTHER_IMAGE_SUFFIXES:
            raise DatasetError("dataset.image_format", name=name, format=OTHER_IMAGE_SUFFIXES[suffix],
                               allowed=ALLOWED_LABEL)
        if suffix in IMAGE_SUFFIXES:
            kind, table, cap = "image", images, limits.max_member_bytes
        elif suffix in CAPTION_SUFFIXES:
            kind, table, cap = "caption", captions, limits.max_caption_bytes
        else:
            raise DatasetError("dataset.zip_unsupported_member", name=name, allowed=ALLOWED_MEMBERS)
        if info.file_size > cap:
            raise DatasetError("dataset.zip_member_too_large", name=name, size=megabytes(info.file_size),
                               limit=megabytes(cap))
        if info.file_size >= limits.ratio_floor_bytes and info.file_size > limits.max_ratio * max(
                info.compress_size, 1):
            raise DatasetError("dataset.zip_ratio", name=name, ratio=int(info.file_size / max(info.compress_size, 1)),
                               limit=int(limits.max_ratio))
        total += info.file_size
        if total > limits.max_total_bytes:
            raise DatasetError("dataset.zip_total_too_large", name=name, limit=megabytes(limits.max_total_bytes))
        display_stem = display_name(stem)
        key = stem.casefold()
        if key in table and kind == "image":
            raise DatasetError("dataset.zip_duplicate_image_name", name=name, other=table[key].name, stem=display_stem)
        if key in table:
            raise DatasetError("dataset.zip_duplicate_caption_name", name=name, other=table[key].name,
                               stem=display_stem)
        table[key] = _Entry(info=info, name=name, stem=display_stem, kind=kind)
    if len(images) > limits.max_images:
        raise DatasetError("dataset.too_many_images", count=len(images), limit=limits.max_images)
    for key, entry in captions.items():
        if key not in images:
            raise DatasetError("dataset.caption_unpaired", name=entry.name, stem=entry.stem)
    if not images:
        raise DatasetError("dataset.zip_empty", allowed=ALLOWED_MEMBERS)
    ordered = sorted(images.values(), key=lambda e: (_natural_key(e.stem), e.name))
    return ordered, captions


def safe_member_name(raw: str) -> bool:
    """False for names that would escape a folder if used as a path (they never are: defence in depth)."""
    if not raw or "\x00" in raw or raw.startswith(("/", "\\")) or _DRIVE.match(raw):
        return False
    return all(part != ".." for part in re.split(r"[/\\]", raw))


def display_name(raw: str) -> str:
    """A member name fit for a message: control and bidi-override characters shown as ``?``, 120 chars."""
    cleaned = "".join("?" if unicodedata.category(ch) in ("Cc", "Cf") else ch for ch in raw)
    return cleaned if len(cleaned) <= 120 else cleaned[:117] + "…"


def _is_junk(parts: list[str]) -> bool:
    base = parts[-1]
    return (any(p == "__MACOSX" for p in parts[:-1]) or base.startswith("._")
            or base.casefold() in JUNK_NAMES)


def _check_file_type(info: zipfile.ZipInfo, name: str) -> None:
    mode = info.external_attr >> 16
    if not mode:
        return  # no Unix attributes (Windows tools): a plain file
    if stat.S_ISLNK(mode):
        raise DatasetError("dataset.zip_symlink", name=name)
    if stat.S_IFMT(mode) and not stat.S_ISREG(mode):
        raise DatasetError("dataset.zip_special_file", name=name)


def _natural_key(text: str) -> tuple:
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part.casefold())
                 for part in re.split(r"(\d+)", text) if part)


# ---------------------------------------------------------------------- reading


def _read_member(archive: zipfile.ZipFile, entry: _Entry, cap: int) -> bytes:
    """The member's bytes, stopping as soon as more than ``cap`` come out."""
    out = bytearray()
    try:
        with archive.open(entry.info) as stream:
            while chunk := stream.read(_READ_CHUNK):
                out += chunk
                if len(out) > cap:
                    raise DatasetError("dataset.zip_member_too_large", name=entry.name,
                                       size=megabytes(len(out)), limit=megabytes(cap))
    except DatasetError:
        raise
    except RuntimeError as exc:  # zipfile's "File ... is encrypted, password required"
        if "encrypted" in str(exc):
            raise DatasetError("dataset.zip_encrypted", name=entry.name) from None
        raise DatasetError("dataset.zip_corrupt_member", name=entry.name, detail=_detail(exc)) from None
    except _ZIP_ERRORS as exc:
        raise DatasetError("dataset.zip_corrupt_member", name=entry.name, detail=_detail(exc)) from None
    return bytes(out)


def _read_image(archive: zipfile.ZipFile, entry: _Entry, limits: ZipLimits) -> CleanImage:
    data = _read_member(archive, entry, limits.max_member_bytes)
    nested = archive_kind(data[:16])
    if nested is not None:
        raise DatasetError("dataset.nested_archive", name=entry.name, kind=nested)
    return validate_image(data, max_bytes=limits.max_member_bytes, max_pixels=limits.max_pixels,
                          min_side=limits.min_side, name=entry.name)


def _read_caption(archive: zipfile.ZipFile, entry: _Entry, limits: ZipLimits) -> str | None:
    return clean_caption(_read_member(archive, entry, limits.max_caption_bytes), name=entry.name,
                         max_chars=limits.max_caption_chars)


def clean_caption(data: bytes, *, name: str, max_chars: int) -> str | None:
    """A caption file's text: UTF-8 (a BOM is fine), no control characters, whitespace collapsed.

    Returns None for an empty caption.  Also what caption editing should use for typed text.
    """
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DatasetError("dataset.caption_encoding", name=name) from None
    if any(unicodedata.category(ch) == "Cc" and not ch.isspace() for ch in text):
        raise DatasetError("dataset.caption_not_text", name=name)
    text = " ".join(text.split())
    if len(text) > max_chars:
        raise DatasetError("dataset.caption_too_long", name=name, length=len(text), limit=max_chars)
    return text or None


def _detail(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]

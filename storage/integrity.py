"""Files and rows that should agree, checked: ``brushwork db check``.

Brushwork writes a file before the row that points to it, so a crash between the two leaves
a file no row knows (a *stray*), never a row without its file.  Strays cost disk space only;
this module finds them, and rows whose file went missing anyway (a disk restored from an old
backup, a file removed by hand), in every area that stores files:

* ``images`` — generated images (``images.file_path``, below the image store);
* ``dataset images`` — training images (``dataset_images.file_path``, below ``datasets/``);
* ``loras`` — trained or imported server LoRAs (``loras.file_path``, below ``server_loras/``);
* ``training folders`` — a training's work folder (``training/<lora id>/``) whose LoRA is gone;
* ``uploads`` — pictures sent to start an image from (``uploads.file_path``, below ``uploads/``).

A file younger than ``grace`` is never called stray: its row may be being written right now.
Leftover temporary files of an interrupted atomic write (``.<name>.<hex>.tmp``) are strays
like any other.  :func:`remove_strays` deletes what a report found, re-checking each one
against the database first.  :func:`purge_deleted` removes the files of images deleted
(🗑) long enough ago; their rows stay, and a deleted image's absent file is never "missing".
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from storage.errors import UnsafePath
from storage.files import safe_path
from storage.unit_of_work import UnitOfWork

DEFAULT_GRACE = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class Stray:
    """A file (or a training folder) that no row points to."""

    area: str
    path: Path
    size: int
    modified: datetime


@dataclass(frozen=True, slots=True)
class Missing:
    """A row whose file is not there."""

    area: str
    public_id: str
    path: Path


@dataclass(slots=True)
class AreaReport:
    area: str
    root: Path
    files: int = 0  # files (or folders) found below the root
    referenced: int = 0  # rows that point into this area
    too_new: int = 0  # unreferenced, but younger than the grace period
    strays: list[Stray] = field(default_factory=list)
    missing: list[Missing] = field(default_factory=list)

    @property
    def stray_bytes(self) -> int:
        return sum(stray.size for stray in self.strays)


@dataclass(frozen=True, slots=True)
class Roots:
    """Where each area keeps its files."""

    images: Path
    datasets: Path
    loras: Path
    training: Path
    uploads: Path | None = None  # pictures sent to start from


def check(uow_factory: Callable[[], UnitOfWork], roots: Roots, *, grace: timedelta = DEFAULT_GRACE,
          now: datetime | None = None) -> list[AreaReport]:
    """One report per area (see the module docstring); reads only."""
    now = now or datetime.now(UTC)
    with uow_factory() as uow:
        images = uow.images.file_paths()
        deleted = uow.images.file_paths(deleted=True)  # their files may have been purged: never "missing"
        dataset_images = uow.datasets.image_file_paths()
        loras = uow.loras.file_paths()
        uploads = uow.uploads.file_paths()
    lora_files = {path: public_id for public_id, path in loras.items() if path}
    reports = [
        _files("images", roots.images, images, grace, now, purgeable=set(deleted)),
        _files("dataset images", roots.datasets, dataset_images, grace, now),
        _files("loras", roots.loras, lora_files, grace, now),
        _folders("training folders", roots.training, set(loras), grace, now),
    ]
    if roots.uploads is not None:
        reports.append(_files("uploads", roots.uploads, uploads, grace, now))
    return reports


def purge_deleted(uow_factory: Callable[[], UnitOfWork], images_root: Path, *, older_than: timedelta,
                  now: datetime | None = None) -> tuple[int, int]:
    """Delete the files of images deleted (🗑, ``soft_delete``) more than ``older_than`` ago;
    their rows stay as tombstones (lineage, job results).  Returns (files removed, bytes freed)."""
    cutoff = (now or datetime.now(UTC)) - older_than
    with uow_factory() as uow:
        doomed = uow.images.deleted_before(cutoff)
    removed = freed = 0
    for _public_id, relative in doomed:
        try:
            path = safe_path(images_root, relative)
        except UnsafePath:
            continue  # never follow a path out of the image folder, whatever a row says
        folders = _old_folders(path.parent, images_root, DEFAULT_GRACE)  # before the unlink touches them
        try:
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            continue  # purged before
        removed += 1
        freed += size
        _prune(folders)
    return removed, freed


def remove_strays(uow_factory: Callable[[], UnitOfWork], roots: Roots, reports: list[AreaReport], *,
                  grace: timedelta = DEFAULT_GRACE) -> tuple[int, int]:
    """Delete the strays of ``reports`` that are still strays now (checked again); returns
    (files or folders removed, bytes freed).  Empty folders left behind go too."""
    fresh = {report.area: {stray.path for stray in report.strays} for report in check(uow_factory, roots, grace=grace)}
    removed = freed = 0
    for report in reports:
        for stray in report.strays:
            if stray.path not in fresh.get(report.area, set()):
                continue  # claimed by a row meanwhile, or gone
            folders = _old_folders(stray.path.parent, report.root, grace)  # before the removal touches them
            with contextlib.suppress(FileNotFoundError):
                if stray.path.is_dir():
                    shutil.rmtree(stray.path)
                else:
                    stray.path.unlink()
                removed += 1
                freed += stray.size
                _prune(folders)
    return removed, freed


# ---------------------------------------------------------------------- walking


def _files(area: str, root: Path, referenced: dict[str, str], grace: timedelta, now: datetime, *,
           purgeable: Collection[str] = frozenset()) -> AreaReport:
    report = AreaReport(area, root, referenced=len(referenced))
    seen: set[str] = set()
    for path in _walk(root):
        report.files += 1
        relative = path.relative_to(root).as_posix()
        if relative in referenced:
            seen.add(relative)
            continue
        stat = path.stat()
        modified = datetime.fromtimestamp(stat.st_mtime, UTC)
        if now - modified < grace:
            report.too_new += 1
        else:
            report.strays.append(Stray(area, path, stat.st_size, modified))
    for relative, public_id in referenced.items():
        if relative not in seen and relative not in purgeable:
            report.missing.append(Missing(area, public_id, root / relative))
    report.strays.sort(key=lambda stray: stray.path)
    report.missing.sort(key=lambda missing: missing.public_id)
    return report


def _folders(area: str, root: Path, owners: set[str], grace: timedelta, now: datetime) -> AreaReport:
    report = AreaReport(area, root, referenced=len(owners))
    if not root.is_dir():
        return report
    for entry in sorted(root.iterdir()):
        if not entry.is_dir() or entry.is_symlink():
            continue
        report.files += 1
        if entry.name in owners:
            continue
        files = list(_walk(entry))
        newest = max(f.stat().st_mtime for f in files) if files else entry.stat().st_mtime  # its last write
        modified = datetime.fromtimestamp(newest, UTC)
        if now - modified < grace:
            report.too_new += 1
        else:
            report.strays.append(Stray(area, entry, sum(f.stat().st_size for f in files), modified))
    return report


def _walk(root: Path) -> Iterator[Path]:
    """Regular files below ``root``; symbolic links are neither followed nor reported."""
    if not root.is_dir():
        return
    for folder, folders, files in os.walk(root, followlinks=False):
        base = Path(folder)
        folders.sort()
        for name in sorted(files):
            path = base / name
            if not path.is_symlink() and path.is_file():
                yield path


def _old_folders(folder: Path, root: Path, grace: timedelta) -> list[Path]:
    """``folder`` and its parents below ``root``, innermost first, as far as each was last
    changed before ``grace`` ago: the ones that may be removed once empty.  A folder touched
    more recently may have just been made by a writer for a file it is about to write."""
    cutoff = datetime.now(UTC).timestamp() - grace.total_seconds()
    chain = []
    while folder != root and folder.is_relative_to(root):
        try:
            if folder.stat().st_mtime >= cutoff:
                break
        except OSError:
            break
        chain.append(folder)
        folder = folder.parent
    return chain


def _prune(folders: list[Path]) -> None:
    """Remove the folders (innermost first) while they are empty."""
    for folder in folders:
        try:
            folder.rmdir()  # only if empty
        except OSError:
            return


__all__ = ["DEFAULT_GRACE", "AreaReport", "Missing", "Roots", "Stray", "check", "purge_deleted", "remove_strays"]

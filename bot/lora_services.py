"""Server LoRAs: datasets, training, use, export and import — what the CLI and the cogs call.

Two services, Discord-free (the ``/lora`` cogs and ``brushwork lora`` parse, call one
method, and reply):

* :class:`DatasetService` — create a dataset; add images (``(filename, bytes)`` uploads,
  zips with kohya's same-named ``.txt`` captions among them), each checked before it is
  trusted (size before decoding, format, bombs, re-encoding: ``generation.datasets``),
  against the server's quotas and for duplicates; a contact sheet; captions; remove an
  image; delete a dataset.
* :class:`LoraService` — train (a long job on the shared queue, ``bot/training_jobs.py``),
  cancel, list, info, delete, export (diffusers or kohya keys), import (a ``.safetensors``
  checked against its base model), and :meth:`LoraService.resolver_for`: what a
  ``--lora`` name means for a scope, used when a generation is planned.

**Names and visibility.**  A server's datasets and LoRAs are named in that server's
namespace and visible there only; outside servers (direct messages, the command line),
each user has their own (``storage.records.scope_key``).  Another server's ``ink`` is
simply not there: "not found", like a missing one.

**Which LoRA a name means** (:class:`ScopedLoraResolver`): the scope's own ready LoRA of
that name (case-insensitive) first; else a file of that name in the operator's LoRA
folder (``$BRUSHWORK_HOME/loras``), which every scope may use — unless the server turned
its ``folder_loras`` setting off.  A server LoRA shadows a folder LoRA of the same name.
The answer (file, sha256, A1111 short hash) is stored in the generation plan, so the job
uses exactly that file whatever runs next to it.

**Rights.**  Training, importing and deleting (LoRAs and datasets) need ``can_manage``:
the Discord layer passes Manage Server or the server's trainer role
(:meth:`LoraService.may_manage` reads the role from ``guild_settings.trainer_role_id``).
Outside servers a user manages their own namespace; the local operator manages everything.
Anyone in a server may create datasets and add images (quotas bound them); a dataset's
captions and images may be changed by its creator or a manager.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import dataclass, field
from difflib import get_close_matches
from pathlib import Path
from typing import TYPE_CHECKING, Any

from generation.datasets import (
    CleanImage,
    DatasetError,
    ZipLimits,
    clean_caption,
    contact_sheet,
    iter_zip,
    plan_zip,
    validate_image,
)
from generation.datasets.images import archive_kind, megabytes
from generation.errors import BrushworkError, ModelError, echo
from generation.i18n import register_catalogue
from generation.request import NAME_PATTERN
from generation.training.config import TrainingConfig
from generation.training.errors import LoraFileError, TrainingError
from storage.assets import AssetStore, dataset_image_path, lora_file_path
from storage.errors import NameTaken, NotFound
from storage.ids import is_public_id, normalize_public_id
from storage.lora_repositories import name_key
from storage.records import (
    DatasetImageRecord,
    DatasetRecord,
    LoraRecord,
    LoraSource,
    LoraStatus,
    NewDatasetImage,
    NewLora,
    Scope,
    scope_key,
)
from storage.unit_of_work import UnitOfWork

if TYPE_CHECKING:
    from bot.services import PlannedLora
    from bot.training_jobs import TrainingResult
    from generation.engine import Engine
    from generation.models import ModelRegistry
    from generation.queue import JobHandle, JobQueue

MB = 1024 * 1024
LORA_SUFFIX = ".safetensors"
MAX_CAPTION_CHARS = 1000


class ServerLoraError(BrushworkError, ValueError):
    """A dataset or LoRA action was refused; codes in ``bot/locales/*/loras.json``."""

    code = "server_lora.invalid"

    def __init__(self, code: str | None = None, /, **params: Any) -> None:
        register_catalogue("bot")  # the command line uses these texts too, not only the bot
        super().__init__(code, **params)


def may_manage(scope: Scope, can_manage: bool) -> bool:
    """The right to train, import and delete: given by the caller in a server (Manage Server or
    the trainer role); implied outside servers (your own namespace) and for the operator."""
    return can_manage or scope.operator or scope.guild_id is None


def _require_manage(scope: Scope, can_manage: bool) -> None:
    if not may_manage(scope, can_manage):
        raise ServerLoraError("server_lora.not_allowed")


def _check_name(name: str, code: str) -> str:
    """A dataset's or LoRA's name, surrounding spaces dropped; any control character (a line
    break included) refuses it, and the refusal repeats it on one line (``a\\nb``)."""
    text = (name or "").strip(" ")
    if not NAME_PATTERN.fullmatch(text):
        raise ServerLoraError(code, name=echo(text, 80))
    return text


# ====================================================================== datasets


@dataclass(frozen=True, slots=True)
class Upload:
    """One uploaded file: its name (display only, never a path) and its bytes."""

    filename: str
    data: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class DatasetLimits:
    max_datasets: int = 20  # per namespace (a server)
    max_images: int = 200  # per dataset
    max_bytes: int = 1024 * MB  # stored dataset images per namespace
    max_image_bytes: int = 20 * MB  # one uploaded image, checked before it is decoded
    max_zip_bytes: int = 200 * MB
    max_upload_bytes: int = 100 * MB  # the loose images of one upload together (a zip has its own cap)
    max_caption_chars: int = MAX_CAPTION_CHARS

    def zip_limits(self) -> ZipLimits:
        return ZipLimits(max_archive_bytes=self.max_zip_bytes, max_images=self.max_images,
                         max_member_bytes=self.max_image_bytes, max_caption_chars=self.max_caption_chars)


@dataclass(frozen=True, slots=True)
class Refusal:
    """One file of an upload that was not added, and why (the error names the file)."""

    filename: str
    error: BrushworkError


class UploadRefused(ServerLoraError):
    """Every file of a multi-file upload was refused: ``refusals`` holds each file's reason."""

    def __init__(self, refusals: Sequence[Refusal]) -> None:
        self.refusals = tuple(refusals)
        super().__init__("server_dataset.all_refused", count=len(self.refusals),
                         first=self.refusals[0].error)

    def __reduce__(self):
        return (UploadRefused, (self.refusals,))


def _raise_refusals(refusals: Sequence[Refusal]) -> None:
    """Nothing of an upload can be added: one file's own error, or every file's reason."""
    if len(refusals) > 1:
        raise UploadRefused(refusals)
    if refusals:
        raise refusals[0].error
    raise ServerLoraError("server_dataset.nothing_to_add")


@dataclass(frozen=True, slots=True)
class SizeCheck:
    """An upload's sizes checked: the files to read (indexes, in upload order) and the refused ones."""

    accepted: tuple[int, ...]
    refused: tuple[Refusal, ...]


@dataclass(frozen=True, slots=True)
class AddResult:
    dataset: DatasetRecord
    added: tuple[DatasetImageRecord, ...]
    refused: tuple[Refusal, ...] = ()


@dataclass(frozen=True, slots=True)
class DatasetSheet:
    """``dataset show``: a contact sheet (PNG: numbered thumbnails with captions) and the images."""

    dataset: DatasetRecord
    images: tuple[DatasetImageRecord, ...]
    png: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class _Candidate:
    name: str
    image: CleanImage
    caption: str | None
    order: int = 0  # the upload it came from (refusals are listed in upload order)


@dataclass(frozen=True, slots=True)
class _Source:
    """One file of an upload, decoded only when its turn comes (a zip: one member at a time).

    ``declared``: the bytes it brings as far as can be known before decoding — a loose
    image's size, a zip's images' declared sizes (``ZipInfo.file_size``); ``count``: images.
    """

    filename: str
    order: int
    declared: int
    count: int
    candidates: Callable[[], Generator[_Candidate, None, None]]
    refusable: bool = True  # a refused file is listed and the others go on (add_zip: all or nothing)


class NamespaceLocks:
    """One lock per namespace (a server, or one user's direct messages and command line).  A
    quota check and the writes it admits happen under it, so two uploads or trainings at the
    same moment cannot both pass one quota.  In-process: a second process on the same database
    (the command line beside the bot) is not serialised with it."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}

    def __call__(self, scope: Scope) -> threading.Lock:
        key = scope_key(scope)
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())


class DatasetService:
    def __init__(self, *, uow_factory: Callable[[], UnitOfWork], files: AssetStore,
                 limits: DatasetLimits | None = None) -> None:
        self._uow = uow_factory
        self.files = files
        self.limits = limits or DatasetLimits()
        self.locks = NamespaceLocks()

    # -- datasets ----------------------------------------------------------------------
    def create(self, scope: Scope, name: str) -> DatasetRecord:
        name = _check_name(name, "server_dataset.bad_name")
        try:
            with self.locks(scope), self._uow() as uow:
                count = len(uow.datasets.list(scope))
                if count >= self.limits.max_datasets:
                    raise ServerLoraError("server_dataset.too_many", count=count, limit=self.limits.max_datasets)
                record = uow.datasets.create(scope, name)
                uow.commit()
        except NameTaken:
            raise ServerLoraError("server_dataset.name_taken", name=name) from None
        return record

    def list(self, scope: Scope) -> list[DatasetRecord]:
        with self._uow() as uow:
            return uow.datasets.list(scope)

    def get(self, scope: Scope, name: str) -> DatasetRecord:
        with self._uow() as uow:
            return self._dataset(uow, scope, name)

    def images(self, scope: Scope, name: str) -> list[DatasetImageRecord]:
        with self._uow() as uow:
            self._dataset(uow, scope, name)
            return uow.datasets.images(scope, name)

    def image_path(self, image: DatasetImageRecord) -> Path:
        return self.files.absolute(image.file_path)

    def delete(self, scope: Scope, name: str, *, can_manage: bool = False) -> DatasetRecord:
        """Delete a dataset and its images (rows first, then files).  Needs ``can_manage``."""
        _require_manage(scope, can_manage)
        with self._uow() as uow:
            self._dataset(uow, scope, name)
            record, _paths = uow.datasets.delete(scope, name)
            uow.commit()
        self.files.delete_folder(record.public_id)
        return record

    # -- adding images -------------------------------------------------------------------
    def check_upload(self, scope: Scope, name: str, files: Sequence[tuple[str, int]]) -> SizeCheck:
        """Before downloading: the dataset exists, and each file's announced size is within its
        limit (an image, a zip) and within the images' combined cap (in upload order).  The files
        that pass are the ones to download (``accepted``, indexes into ``files``); each other one
        is in ``refused`` with its reason.  Nothing passes: one file's own error, or
        :class:`UploadRefused` with every reason.  The images that pass must fit in the dataset."""
        with self._uow() as uow:
            dataset = self._dataset(uow, scope, name)
        if not files:
            raise ServerLoraError("server_dataset.nothing_to_add")
        checked = self._sizes([(filename, size, filename.lower().endswith(".zip")) for filename, size in files])
        if not checked.accepted:
            _raise_refusals(checked.refused)
        self._check_count(dataset, sum(1 for i in checked.accepted if not files[i][0].lower().endswith(".zip")))
        return checked

    def _sizes(self, files: Sequence[tuple[str, int, bool]]) -> SizeCheck:
        """(name, bytes, is a zip) in upload order → which pass their own limit and the combined one."""
        accepted: list[int] = []
        refused: list[Refusal] = []
        total = 0
        for index, (filename, size, is_zip) in enumerate(files):
            error: BrushworkError | None = None
            if is_zip:
                if size > self.limits.max_zip_bytes:
                    error = DatasetError("dataset.zip_file_too_large", name=filename, size=megabytes(size),
                                         limit=megabytes(self.limits.max_zip_bytes))
            elif size > self.limits.max_image_bytes:
                error = DatasetError("dataset.image_too_large", name=filename, size=megabytes(size),
                                     limit=megabytes(self.limits.max_image_bytes))
            elif total + size > self.limits.max_upload_bytes:
                error = ServerLoraError("server_dataset.over_upload_total", name=filename, size=megabytes(size),
                                        limit=megabytes(self.limits.max_upload_bytes),
                                        zip_limit=megabytes(self.limits.max_zip_bytes))
            else:
                total += size
            if error is None:
                accepted.append(index)
            else:
                refused.append(Refusal(filename, error))
        return SizeCheck(accepted=tuple(accepted), refused=tuple(refused))

    def add_images(self, scope: Scope, name: str, uploads: Sequence[Upload], *,
                   caption: str | None = None, before: Sequence[Refusal] = ()) -> AddResult:
        """Add uploaded images — and the images of any zip among them (captions from its
        ``.txt`` files) — to a dataset.  ``caption`` goes to images that bring none.

        Every file is checked (size before decoding, format, pixels, duplicates); a file
        that fails is listed in ``refused`` with its reason and the others are added.  If
        nothing could be added: one refused file raises its own error, several raise
        :class:`UploadRefused` carrying every reason.  Quotas (images per dataset,
        the server's disk space) refuse the whole upload.  Files are written before rows.
        """
        with self._uow() as uow:
            self._dataset(uow, scope, name)
        if not uploads:
            raise ServerLoraError("server_dataset.nothing_to_add")
        checked = self._sizes([(u.filename, len(u.data), archive_kind(u.data[:16]) == "ZIP") for u in uploads])
        default_caption = self.clean_caption(caption, label="caption") if caption else None
        sources: list[_Source] = []
        # Files refused before they were read (``refused``: what check_upload said) come first.
        refused: list[tuple[int, Refusal]] = [(-1, refusal) for refusal in (*before, *checked.refused)]
        for order, upload in enumerate(uploads):
            if order not in checked.accepted:
                continue
            try:
                sources.append(self._source(upload, default_caption, order))
            except DatasetError as error:
                refused.append((order, Refusal(upload.filename, error)))
        return self._add(scope, name, sources, refused)

    def add_zip(self, scope: Scope, name: str, source: bytes | str | os.PathLike[str], *,
                caption: str | None = None) -> AddResult:
        """Add a dataset zip (see :func:`generation.datasets.read_zip`): all of it or nothing.
        Its central directory is judged and its declared sizes checked against the quota before
        a member is decoded; then one member at a time is decoded and written."""
        with self._uow() as uow:
            self._dataset(uow, scope, name)
        default_caption = self.clean_caption(caption, label="caption") if caption else None
        limits = self.limits.zip_limits()
        plan = plan_zip(source, limits=limits)

        def members() -> Generator[_Candidate, None, None]:
            for member in iter_zip(source, limits=limits):
                yield _Candidate(member.name, member.image, member.caption or default_caption)

        label = Path(source).name if isinstance(source, (str, os.PathLike)) else "dataset.zip"
        return self._add(scope, name, [_Source(label, 0, plan.declared_bytes, plan.images, members,
                                               refusable=False)], [])

    def _source(self, upload: Upload, caption: str | None, order: int) -> _Source:
        """What one uploaded file brings, judged without decoding (a zip: its central directory)."""
        data = upload.data
        if archive_kind(data[:16]) == "ZIP":
            limits = self.limits.zip_limits()
            plan = plan_zip(data, limits=limits)

            def members() -> Generator[_Candidate, None, None]:
                for member in iter_zip(data, limits=limits):
                    yield _Candidate(member.name, member.image, member.caption or caption, order)

            return _Source(upload.filename, order, plan.declared_bytes, plan.images, members)
        if len(data) > self.limits.max_image_bytes:  # before a byte is decoded
            raise DatasetError("dataset.image_too_large", name=upload.filename, size=megabytes(len(data)),
                               limit=megabytes(self.limits.max_image_bytes))

        def image() -> Generator[_Candidate, None, None]:
            yield _Candidate(upload.filename, validate_image(data, max_bytes=self.limits.max_image_bytes,
                                                             name=upload.filename), caption, order)

        return _Source(upload.filename, order, len(data), 1, image)

    def _add(self, scope: Scope, name: str, sources: list[_Source],
             refused: list[tuple[int, Refusal]]) -> AddResult:
        """Quotas checked from the declared sizes, then each image decoded, checked for
        duplicates, written and forgotten (memory: one image at a time), then the rows added:
        all under the namespace's lock, so concurrent uploads are counted one after the other."""
        with self.locks(scope):
            return self._add_locked(scope, name, sources, refused)

    def _add_locked(self, scope: Scope, name: str, sources: list[_Source],
                    refused: list[tuple[int, Refusal]]) -> AddResult:
        with self._uow() as uow:
            dataset = self._dataset(uow, scope, name)
            numbers = {image.public_id: index + 1 for index, image in enumerate(uow.datasets.images(scope, name))}
            usage = uow.datasets.usage(scope)
        free = self.limits.max_bytes - usage[2]
        declared = sum(source.declared for source in sources)
        if declared > free:  # before anything is decoded: what the files say they hold
            raise self._disk_quota(declared, free)
        planned = sum(source.count for source in sources)
        with self._uow() as uow:
            ids = iter(uow.datasets.free_image_ids(planned)) if planned else iter(())
        written: list[tuple[str, int]] = []  # (relative path, bytes) of every file written so far
        rows: list[tuple[str, NewDatasetImage]] = []
        seen: dict[str, str] = {}
        names: list[str] = []
        try:
            remaining = planned
            for source in sources:
                first_file, first_row = len(written), len(rows)
                try:
                    with contextlib.closing(source.candidates()) as candidates:
                        for candidate in candidates:
                            remaining -= 1
                            if not self._fresh(scope, name, dataset, candidate, numbers, seen, refused):
                                continue
                            if dataset.image_count + len(rows) + 1 > self.limits.max_images:
                                self._check_count(dataset, len(rows) + 1 + remaining)
                            public_id = next(ids)
                            stored = self.files.write(dataset_image_path(dataset.public_id, public_id),
                                                      candidate.image.png)
                            written.append((stored.relative_path, stored.size))
                            if sum(size for _, size in written) > free:
                                raise self._disk_quota(sum(size for _, size in written), free)
                            seen[candidate.image.sha256] = candidate.name
                            names.append(candidate.name)
                            rows.append((public_id, NewDatasetImage(
                                file_path=stored.relative_path, sha256=candidate.image.sha256,
                                width=candidate.image.width, height=candidate.image.height, bytes=stored.size,
                                caption=candidate.caption, original_name=candidate.name)))
                except DatasetError as error:
                    if not source.refusable:
                        raise
                    for path, _size in written[first_file:]:  # that file is refused whole
                        with contextlib.suppress(OSError):
                            self.files.delete(path)
                    for _public_id, row in rows[first_row:]:
                        seen.pop(row.sha256, None)
                    del written[first_file:], rows[first_row:], names[first_row:]
                    refused.append((source.order, Refusal(source.filename, error)))
            refusals = tuple(refusal for _order, refusal in sorted(refused, key=lambda item: item[0]))
            if not rows:
                _raise_refusals(refusals)
            self._check_count(dataset, len(rows))
            with self._uow() as uow:
                added = uow.datasets.add_images(scope, name, rows)
                record = uow.datasets.get(scope, name)
                uow.commit()
        except BaseException as error:
            for path, _size in written:
                with contextlib.suppress(OSError):
                    self.files.delete(path)
            if isinstance(error, NameTaken):  # the same picture was added by someone else meanwhile
                raise ServerLoraError("server_dataset.duplicate_upload", name=names[0] if names else "?",
                                      other=dataset.name) from None
            if isinstance(error, NotFound):
                raise self._not_found(scope, name) from None
            raise
        return AddResult(dataset=record, added=tuple(added), refused=refusals)

    def _fresh(self, scope: Scope, name: str, dataset: DatasetRecord, candidate: _Candidate,
               numbers: dict[str, int], seen: dict[str, str], refused: list[tuple[int, Refusal]]) -> bool:
        """False (and the refusal listed) for a picture the dataset or this upload has already."""
        sha = candidate.image.sha256
        with self._uow() as uow:
            existing = uow.datasets.find_pictures(scope, name, [sha])
        if sha in existing:
            other = existing[sha]
            refused.append((candidate.order, Refusal(candidate.name, ServerLoraError(
                "server_dataset.duplicate", name=candidate.name, number=numbers.get(other.public_id, "?"),
                other=other.original_name or other.public_id, dataset=dataset.name))))
            return False
        if sha in seen:
            refused.append((candidate.order, Refusal(candidate.name, ServerLoraError(
                "server_dataset.duplicate_upload", name=candidate.name, other=seen[sha]))))
            return False
        return True

    def _disk_quota(self, needed: int, free: int) -> ServerLoraError:
        return ServerLoraError("server_dataset.disk_quota", size=megabytes(needed), free=megabytes(max(0, free)),
                               limit=megabytes(self.limits.max_bytes))

    def _check_count(self, dataset: DatasetRecord, adding: int) -> None:
        if dataset.image_count + adding > self.limits.max_images:
            raise ServerLoraError("server_dataset.full", name=dataset.name, count=dataset.image_count,
                                  adding=adding, limit=self.limits.max_images)

    # -- looking at it, editing it --------------------------------------------------------
    def show(self, scope: Scope, name: str, *, columns: int = 5, thumb: int = 160) -> DatasetSheet:
        """The contact sheet: every image numbered (#1 is the first added), with its caption."""
        from PIL import Image

        with self._uow() as uow:
            dataset = self._dataset(uow, scope, name)
            images = uow.datasets.images(scope, name)
        if not images:
            raise ServerLoraError("server_dataset.empty", name=dataset.name)
        items = []
        for image in images:
            with Image.open(self.files.absolute(image.file_path), formats=["PNG"]) as opened:
                small = opened.convert("RGB")
                small.thumbnail((thumb, thumb))
            items.append((small, image.caption))
        sheet = contact_sheet(items, columns=columns, thumb=thumb)
        import io

        out = io.BytesIO()
        sheet.save(out, format="PNG")
        return DatasetSheet(dataset=dataset, images=tuple(images), png=out.getvalue())

    def clean_caption(self, text: str | None, *, label: str = "caption") -> str | None:
        """Typed caption text, as a caption file's would be read (UTF-8, no control characters,
        whitespace collapsed, length capped); None for an empty one."""
        if text is None:
            return None
        return clean_caption(text.encode("utf-8"), name=label, max_chars=self.limits.max_caption_chars)

    def set_caption(self, scope: Scope, name: str, image: str, text: str | None, *,
                    can_manage: bool = False) -> DatasetImageRecord:
        """Replace an image's caption (``image``: its number on the sheet, ``#3`` or ``3``, or its id)."""
        with self._uow() as uow:
            dataset = self._dataset(uow, scope, name)
            self._check_editor(scope, dataset, can_manage)
            target = self._image(uow, scope, dataset, image)
            caption = self.clean_caption(text, label=f"#{self._number(uow, scope, dataset, target)}")
            record = uow.datasets.set_caption(scope, name, target.public_id, caption)
            uow.commit()
        return record

    def remove_image(self, scope: Scope, name: str, image: str, *, can_manage: bool = False) -> DatasetImageRecord:
        """Remove one image (row first, then its file)."""
        with self._uow() as uow:
            dataset = self._dataset(uow, scope, name)
            self._check_editor(scope, dataset, can_manage)
            target = self._image(uow, scope, dataset, image)
            record = uow.datasets.remove_image(scope, name, target.public_id)
            uow.commit()
        with contextlib.suppress(OSError):
            self.files.delete(record.file_path)
        return record

    # -- helpers -------------------------------------------------------------------------
    def _dataset(self, uow: UnitOfWork, scope: Scope, name: str) -> DatasetRecord:
        try:
            return uow.datasets.get(scope, name)
        except NotFound:
            raise self._not_found(scope, name, uow) from None

    def _not_found(self, scope: Scope, name: str, uow: UnitOfWork | None = None) -> ServerLoraError:
        if uow is None:
            with self._uow() as fresh:
                known = [d.name for d in fresh.datasets.list(scope)]
        else:
            known = [d.name for d in uow.datasets.list(scope)]
        if not known:
            return ServerLoraError("server_dataset.none_here", name=name)
        return ServerLoraError("server_dataset.not_found", name=name, known=known)

    def _check_editor(self, scope: Scope, dataset: DatasetRecord, can_manage: bool) -> None:
        if not (may_manage(scope, can_manage) or dataset.owner_id == scope.user_id):
            raise ServerLoraError("server_dataset.not_yours", name=dataset.name)

    def _image(self, uow: UnitOfWork, scope: Scope, dataset: DatasetRecord, ref: str) -> DatasetImageRecord:
        images = uow.datasets.images(scope, dataset.name)
        text = str(ref).strip().lstrip("#")
        if text.isdigit() and 1 <= int(text) <= len(images):
            return images[int(text) - 1]
        ident = normalize_public_id(text)
        if is_public_id(ident):
            for image in images:
                if image.public_id == ident:
                    return image
        raise ServerLoraError("server_dataset.image_not_found", name=dataset.name, image=str(ref)[:40],
                              count=len(images))

    @staticmethod
    def _number(uow: UnitOfWork, scope: Scope, dataset: DatasetRecord, image: DatasetImageRecord) -> int:
        ids = [item.public_id for item in uow.datasets.images(scope, dataset.name)]
        return ids.index(image.public_id) + 1


# ====================================================================== LoRAs


@dataclass(frozen=True, slots=True)
class LoraLimits:
    max_loras: int = 50  # ready or training, per namespace
    max_import_bytes: int = 256 * MB
    max_steps: int = 5000
    sample_every: int | None = None  # None: the trainer's default for the device


@dataclass(frozen=True, slots=True)
class TrainOptions:
    """``/lora train``'s options (None: the default for the device)."""

    name: str
    dataset: str
    trigger_word: str | None = None
    steps: int | None = None
    rank: int | None = None
    learning_rate: float | None = None
    resolution: int | None = None
    model: str | None = None


@dataclass(frozen=True, slots=True)
class TrainingCheck:
    """What :meth:`ServerLoras.check_training` found acceptable."""

    name: str
    model: str
    family: str
    config: TrainingConfig
    dataset: DatasetRecord
    images: tuple[DatasetImageRecord, ...]


@dataclass(frozen=True, slots=True)
class TrainingStarted:
    lora: LoraRecord
    job_id: str
    handle: JobHandle = field(repr=False)
    config: TrainingConfig = field(repr=False)


@dataclass(frozen=True, slots=True)
class TrainingProgressInfo:
    """Where a training is, from its checkpoint and its job (no model loaded)."""

    state: str  # the job's: queued, running
    step: int
    total: int
    loss: float | None
    eta_s: float | None


@dataclass(frozen=True, slots=True)
class LoraDetails:
    """``/lora info``: the row, where the file is, progress while training, the samples."""

    lora: LoraRecord
    path: Path | None  # the .safetensors (ready LoRAs)
    progress: TrainingProgressInfo | None
    before: Path | None  # the sample drawn before training (step 0)
    after: Path | None  # the last sample (the finished LoRA's, once ready)
    samples: tuple[Path, ...] = ()


@dataclass(frozen=True, slots=True)
class LoraExport:
    path: Path  # read it, attach it, copy it; do not delete it (it is the stored file or a cached export)
    filename: str  # what to call it for the user: ``ink.safetensors``, ``ink-kohya.safetensors``
    size: int
    format: str = "kohya"  # its key names: "kohya" (A1111, ComfyUI, diffusers) or "diffusers" (not A1111)


class ScopedLoraResolver:
    """What ``--lora NAME`` means for one scope (see the module docstring): its own ready
    LoRAs first, then the operator's folder (unless the server turned it off)."""

    def __init__(self, own: Sequence[LoraRecord], files: AssetStore, folder: Path | None, hasher: Any) -> None:
        self._own = {name_key(record.name): record for record in own}
        self._files = files
        self._folder = folder
        self._hasher = hasher

    def _folder_files(self) -> dict[str, Path]:
        if self._folder is None or not self._folder.is_dir():
            return {}
        return {name_key(p.stem): p for p in sorted(self._folder.iterdir())
                if p.is_file() and p.name.lower().endswith(LORA_SUFFIX)}

    def names(self) -> list[str]:
        """What this scope may use: its ready LoRAs, then folder LoRAs they do not shadow."""
        ready = [r.name for r in self._own.values() if r.status is LoraStatus.READY]
        folder = [p.stem for key, p in self._folder_files().items() if key not in self._own
                  or self._own[key].status is not LoraStatus.READY]
        return sorted(ready, key=str.casefold) + sorted(folder, key=str.casefold)

    def resolve(self, name: str) -> PlannedLora:
        from bot.services import PlannedLora

        key = name_key(name)
        record = self._own.get(key)
        if record is not None and record.status is LoraStatus.READY and record.file_path:
            return PlannedLora(name=name, path=str(self._files.absolute(record.file_path)), sha256=record.sha256 or "",
                               short_hash=record.short_hash or "", source="server", lora_id=record.public_id)
        path = self._folder_files().get(key)
        if path is not None:
            return PlannedLora(name=name, path=str(path), sha256=self._hasher.sha256(path),
                               short_hash=self._hasher.lora_hash(path), source="folder")
        if record is not None and record.status is LoraStatus.TRAINING:
            raise ServerLoraError("server_lora.still_training", name=record.name)
        if record is not None:
            raise ServerLoraError("server_lora.failed", name=record.name)
        raise _unknown_lora(name, self.names())


def _unknown_lora(name: str, known: Sequence[str]) -> ModelError:
    """The engine's own "unknown LoRA" message, listing only what this scope may use."""
    if not known:
        return ModelError("model.no_loras", name=name)
    close = get_close_matches(name.casefold(), [k.casefold() for k in known], n=1, cutoff=0.5)
    suggestion = next((k for k in known if close and k.casefold() == close[0]), "")
    return ModelError("model.unknown_lora_suggest" if suggestion else "model.unknown_lora", name=name,
                      known=sorted(known, key=str.casefold), suggestion=suggestion)


class LoraService:
    def __init__(
        self,
        *,
        uow_factory: Callable[[], UnitOfWork],
        files: AssetStore,
        datasets: DatasetService,
        registry: ModelRegistry,
        engine: Callable[[], Engine],
        queue: Callable[[], JobQueue],
        folder: Path,
        training_dir: Path,
        cache_dir: Path,
        limits: LoraLimits | None = None,
        device_type: Callable[[], str] | None = None,
    ) -> None:
        self._uow = uow_factory
        self.files = files
        self._datasets = datasets
        self._registry = registry
        self._engine = engine
        self._queue = queue
        self._folder = Path(folder)
        self.training_dir = Path(training_dir)
        self._cache_dir = Path(cache_dir)
        self.limits = limits or LoraLimits()
        self._device_type = device_type or (lambda: self._engine().device.type)
        self._hasher: Any = None

    # -- rights --------------------------------------------------------------------------
    def trainer_role(self, guild_id: int) -> int | None:
        with self._uow() as uow:
            return uow.settings.get_guild(guild_id).trainer_role_id

    def may_manage(self, guild_id: int | None, *, manage_guild: bool, role_ids: Iterable[int] = ()) -> bool:
        """For the Discord layer: Manage Server, or the server's trainer role among ``role_ids``."""
        if guild_id is None or manage_guild:
            return True
        role = self.trainer_role(guild_id)
        return role is not None and role in set(role_ids)

    def set_trainer_role(self, guild_id: int, role_id: int | None) -> None:
        with self._uow() as uow:
            uow.settings.set_guild(guild_id, trainer_role_id=role_id)
            uow.commit()

    def set_folder_loras(self, guild_id: int, enabled: bool) -> None:
        """Whether the operator's folder LoRAs may be used in this server (default: yes)."""
        with self._uow() as uow:
            uow.settings.set_guild(guild_id, folder_loras=enabled)
            uow.commit()

    # -- resolution ----------------------------------------------------------------------
    def resolver_for(self, scope: Scope) -> ScopedLoraResolver:
        """What ``--lora`` names mean for ``scope`` (the planner stores the answer in the plan)."""
        with self._uow() as uow:
            own = uow.loras.list(scope, statuses=(LoraStatus.READY, LoraStatus.TRAINING, LoraStatus.FAILED))
            folder_on = scope.guild_id is None or uow.settings.get_guild(scope.guild_id).folder_loras
        return ScopedLoraResolver(own, self.files, self._folder if folder_on else None, self.hasher)

    def names(self, scope: Scope, prefix: str = "", *, limit: int = 25) -> list[str]:
        """Autocomplete: the LoRA names ``scope`` may use that start with (or contain) ``prefix``."""
        names = self.resolver_for(scope).names()
        wanted = prefix.strip().casefold()
        starts = [n for n in names if n.casefold().startswith(wanted)]
        contains = [n for n in names if wanted and wanted in n.casefold() and n not in starts]
        return (starts + contains)[:limit]

    @property
    def hasher(self) -> Any:
        if self._hasher is None:
            from generation.models.hashing import FileHasher

            self._hasher = FileHasher(self._cache_dir)
        return self._hasher

    # -- training ------------------------------------------------------------------------
    def check_training(self, scope: Scope, options: TrainOptions, *, can_manage: bool = False) -> TrainingCheck:
        """Every refusal of :meth:`train` that only reads: the rights, the name, the model, the
        settings, the dataset and the quota.  Front ends run it before they acknowledge publicly
        (Discord's "thinking…"), so that these refusals stay private; :meth:`train` runs it again."""
        _require_manage(scope, can_manage)
        name = _check_name(options.name, "server_lora.bad_name")
        model = options.model or self._registry.default
        spec = self._registry.get(model)  # ModelError naming the known models
        family = self._registry.family(spec.name)
        from generation.training.trainer import TRAINABLE_FAMILIES  # torch: training is near anyway

        if family not in TRAINABLE_FAMILIES:
            raise TrainingError("training.family_unsupported", model=spec.name, family=family,
                                supported=list(TRAINABLE_FAMILIES))
        config = self.training_config(options)
        with self._uow() as uow:
            dataset = self._datasets._dataset(uow, scope, options.dataset)
            images = uow.datasets.images(scope, dataset.name)
            count, _bytes = uow.loras.usage(scope)
        if not images:
            raise ServerLoraError("server_dataset.empty", name=dataset.name)
        if count >= self.limits.max_loras:
            raise ServerLoraError("server_lora.too_many", count=count, limit=self.limits.max_loras)
        return TrainingCheck(name=name, model=spec.name, family=family, config=config, dataset=dataset,
                             images=tuple(images))

    def train(self, scope: Scope, options: TrainOptions, *, can_manage: bool = False, channel_id: int | None = None,
              reply_ref: dict[str, Any] | None = None) -> TrainingStarted:
        """Check everything (:meth:`check_training`), reserve the name (a ``training`` row),
        snapshot the dataset and queue a long job; returns at once.  Follow ``started.handle``."""
        from bot.training_jobs import TrainingPayload, snapshot_dataset, training_submission

        checked = self.check_training(scope, options, can_manage=can_manage)
        name, config, dataset, images = checked.name, checked.config, checked.dataset, checked.images
        new = NewLora(name=name, owner_id=scope.user_id, guild_id=scope.guild_id, base_model=checked.model,
                      family=checked.family, rank=config.rank, alpha=config.alpha, steps=config.steps,
                      dataset_public_id=dataset.public_id, dataset_name=dataset.name, dataset_size=len(images),
                      trigger_words=(config.trigger_word,) if config.trigger_word else (),
                      settings={"training": config.to_dict()})
        lora, displaced = self._reserve(scope, new)
        for old in displaced:
            self._remove_workdir(old)
        workdir = self.training_dir / lora.public_id
        try:
            items = snapshot_dataset([(self._datasets.image_path(image), image.caption) for image in images],
                                     workdir)
            payload = TrainingPayload(lora_id=lora.public_id, name=name, model=checked.model, config=config.to_dict(),
                                      items=tuple(items), dataset_id=dataset.public_id, dataset_name=dataset.name,
                                      workdir=str(workdir))
            handle = self._queue().submit(training_submission(payload, scope, channel_id=channel_id,
                                                              reply_ref=reply_ref))
        except BaseException:
            with self._uow() as uow:
                uow.loras.soft_delete(lora.public_id)
                uow.commit()
            self._remove_workdir(lora.public_id)
            raise
        with self._uow() as uow:
            lora = uow.loras.attach_job(lora.public_id, handle.job_id)
            uow.commit()
        return TrainingStarted(lora=lora, job_id=handle.job_id, handle=handle, config=config)

    def training_config(self, options: TrainOptions) -> TrainingConfig:
        """The run's settings: the device's defaults (``TrainingConfig.for_device``) under the
        options given; TrainingError for a bad value, a refusal above the step cap."""
        overrides: dict[str, Any] = {}
        for key, value in (("steps", options.steps), ("rank", options.rank), ("alpha", options.rank),
                           ("learning_rate", options.learning_rate), ("resolution", options.resolution),
                           ("trigger_word", options.trigger_word)):
            if value is not None:
                overrides[key] = value
        if self.limits.sample_every is not None:
            overrides["sample_every"] = self.limits.sample_every
        config = TrainingConfig.for_device(self._device_type(), **overrides)
        if config.steps > self.limits.max_steps:
            raise ServerLoraError("server_lora.too_many_steps", value=config.steps, limit=self.limits.max_steps)
        return config

    def _reserve(self, scope: Scope, new: NewLora, public_id: str | None = None) -> tuple[LoraRecord, list[str]]:
        """Add the LoRA's row — the count quota checked again under the namespace's lock, so
        two trainings or imports at once cannot both take the last place.  A failed LoRA of
        the same name gives way; its id is returned so its files can go."""
        displaced: list[str] = []
        try:
            with self._datasets.locks(scope), self._uow() as uow:
                count, _bytes = uow.loras.usage(scope)
                if count >= self.limits.max_loras:
                    raise ServerLoraError("server_lora.too_many", count=count, limit=self.limits.max_loras)
                with contextlib.suppress(NotFound):
                    holder = uow.loras.get(scope, new.name)
                    if holder.status is LoraStatus.FAILED:
                        displaced.append(holder.public_id)
                lora = uow.loras.add(scope, new, public_id=public_id)
                uow.commit()
        except NameTaken:
            with self._uow() as uow:
                holder = uow.loras.get(scope, new.name)
            raise ServerLoraError("server_lora.name_taken", name=holder.name, status=holder.status.value) from None
        return lora, displaced

    def cancel(self, scope: Scope, name: str, *, can_manage: bool = False) -> LoraRecord:
        """Cancel a training: a waiting job is dropped now, a running one stops at its next
        step; the LoRA is marked failed and its unfinished files go.  The trainer who started
        it or a manager may."""
        from generation.queue import JobState

        record = self._get(scope, name)
        if record.status is not LoraStatus.TRAINING:
            raise ServerLoraError("server_lora.not_training", name=record.name, status=record.status.value)
        if not (may_manage(scope, can_manage) or record.owner_id == scope.user_id):
            raise ServerLoraError("server_lora.not_allowed")
        state = self._queue().cancel(record.job_public_id) if record.job_public_id else JobState.CANCELLED
        with self._uow() as uow:
            record = uow.loras.mark_failed(record.public_id)
            uow.commit()
        if state is not JobState.RUNNING:  # a running chunk cleans up after itself when it stops
            self._remove_workdir(record.public_id)
        return record

    # -- looking -------------------------------------------------------------------------
    def list(self, scope: Scope) -> list[LoraRecord]:
        """The scope's LoRAs (ready, training, failed), by name."""
        with self._uow() as uow:
            return uow.loras.list(scope)

    def get(self, scope: Scope, name: str) -> LoraRecord:
        return self._get(scope, name)

    def info(self, scope: Scope, name: str) -> LoraDetails:
        from bot.training_jobs import sample_paths

        record = self._get(scope, name)
        workdir = self.training_dir / record.public_id
        samples = tuple(sample_paths(workdir))
        progress = None
        if record.status is LoraStatus.TRAINING:
            progress = self._progress(record, workdir)
        path = self.files.absolute(record.file_path) if record.ready and record.file_path else None
        before = samples[0] if samples and samples[0].name == "step_000000.png" else None
        after = samples[-1] if samples and record.ready and samples[-1] != before else None
        return LoraDetails(lora=record, path=path, progress=progress, before=before, after=after, samples=samples)

    def result(self, job_id: str) -> TrainingResult | None:
        """The finished training of a job (what its ``JobDone`` carries), read again."""
        from bot.training_jobs import training_result

        with self._uow() as uow:
            job = uow.jobs.get(job_id, Scope.local_operator())
            return training_result(uow, job)

    def _progress(self, record: LoraRecord, workdir: Path) -> TrainingProgressInfo:
        from generation.training.trainer import checkpoint_info  # reads the header only

        info = None
        with contextlib.suppress(BrushworkError, OSError):
            info = checkpoint_info(workdir)
        total = info.total if info else int(record.steps)
        step = info.step if info else 0
        eta = (total - step) * info.seconds_per_step if info and info.seconds_per_step else None
        state = record.job_status.value if record.job_status else "queued"
        return TrainingProgressInfo(state=state, step=step, total=total, loss=info.loss if info else None, eta_s=eta)

    # -- deleting, exporting, importing ---------------------------------------------------
    def delete(self, scope: Scope, name: str, *, can_manage: bool = False) -> LoraRecord:
        """Delete a LoRA (soft: the row stays as ``deleted`` and frees the name; the file goes).
        A training one is cancelled first."""
        from generation.queue import JobState

        _require_manage(scope, can_manage)
        record = self._get(scope, name)
        running = False
        if record.status is LoraStatus.TRAINING and record.job_public_id:
            running = self._queue().cancel(record.job_public_id) is JobState.RUNNING
        with self._uow() as uow:
            record = uow.loras.soft_delete(record.public_id)
            uow.commit()
        if record.file_path:
            with contextlib.suppress(OSError):
                self.files.delete(record.file_path)
        with contextlib.suppress(OSError):
            self._kohya_cache(record).unlink(missing_ok=True)
        if not running:
            self._remove_workdir(record.public_id)
        return record

    def export(self, scope: Scope, name: str, *, kohya: bool = False) -> LoraExport:
        """The LoRA's file as stored: the file its images' ``Lora hashes`` name, so A1111 and
        CivitAI find it by that hash — for a LoRA trained here, a file with kohya's key names
        (AUTOMATIC1111, ComfyUI, diffusers); an imported one as it was uploaded.  ``kohya``:
        with kohya's key names — the stored file itself when it has them, else converted once
        and cached (a diffusers-format import, or a LoRA trained before exports were kohya)."""
        from generation.training.lora_files import key_format, read_header

        record = self._ready(scope, name)
        path = self.files.absolute(record.file_path or "")
        if not path.is_file():
            raise ServerLoraError("server_lora.file_missing", name=record.name)
        stored = key_format(read_header(path, name=f"{record.name}{LORA_SUFFIX}", max_bytes=1 << 62))
        if not kohya or stored == "kohya":
            filename = f"{record.name}-kohya{LORA_SUFFIX}" if kohya else f"{record.name}{LORA_SUFFIX}"
            return LoraExport(path=path, filename=filename, size=path.stat().st_size, format=stored)
        from generation.training import export_kohya

        target = self._kohya_cache(record)
        if not target.is_file():
            export_kohya(path, target, {"ss_output_name": record.name})
        return LoraExport(path=target, filename=f"{record.name}-kohya{LORA_SUFFIX}", size=target.stat().st_size)

    def check_import_size(self, filename: str, size: int) -> None:
        """Before downloading an attachment: pickles refused by name, the size capped."""
        from generation.models.spec import PICKLE_SUFFIXES

        if filename.lower().endswith(PICKLE_SUFFIXES):
            raise LoraFileError("lora.pickle_refused", name=filename)
        if size > self.limits.max_import_bytes:
            raise LoraFileError("lora.too_large", name=filename, size=megabytes(size),
                                limit=megabytes(self.limits.max_import_bytes))

    def import_lora(self, scope: Scope, filename: str, data: bytes | str | os.PathLike[str], *,
                    name: str | None = None, model: str | None = None, can_manage: bool = False) -> LoraRecord:
        """Add an existing ``.safetensors`` LoRA: size capped, pickles refused, the header read
        without loading anything, every key and shape checked against the base model
        (``generation.training.inspect_lora``), every weight a finite number; then stored (file
        first) as ``ready``.  What the header alone refuses (a LyCORIS LoHa/LoKr or DoRA file…)
        is refused before the base model is loaded."""
        from generation.training import inspect_lora
        from generation.training.lora_files import check_lora_file, check_lora_values

        _require_manage(scope, can_manage)
        if isinstance(data, (str, os.PathLike)):
            source = Path(data)
            self.check_import_size(filename, source.stat().st_size)
            data = source.read_bytes()
        else:
            self.check_import_size(filename, len(data))
        stem = Path(filename).name
        stem = stem[: -len(LORA_SUFFIX)] if stem.lower().endswith(LORA_SUFFIX) else Path(stem).stem
        if name is None and not NAME_PATTERN.fullmatch(stem):
            raise ServerLoraError("server_lora.import_name", filename=filename[:80])
        name = _check_name(name if name is not None else stem, "server_lora.bad_name")
        model = model or self._registry.default
        spec = self._registry.get(model)
        check_lora_file(data, name=filename, max_bytes=self.limits.max_import_bytes)  # before the model loads
        engine = self._engine()
        info = inspect_lora(data, engine.load(spec.name), max_bytes=self.limits.max_import_bytes, name=filename)
        check_lora_values(data, name=filename)  # NaN or infinite weights: black or noise images
        with self._uow() as uow:
            count, _bytes = uow.loras.usage(scope)
            with contextlib.suppress(NotFound):
                holder = uow.loras.get(scope, name)
                if holder.status is not LoraStatus.FAILED:
                    raise ServerLoraError("server_lora.name_taken", name=holder.name, status=holder.status.value)
            public_id = uow.loras.free_id()
        if count >= self.limits.max_loras:
            raise ServerLoraError("server_lora.too_many", count=count, limit=self.limits.max_loras)
        stored = self.files.write(lora_file_path(public_id), bytes(data))
        try:
            from generation.models.hashing import FileHasher

            short_hash = FileHasher(None).lora_hash(self.files.absolute(stored.relative_path))
            meta = info.metadata
            triggers = _trigger_words(meta)
            new = NewLora(name=name, owner_id=scope.user_id, guild_id=scope.guild_id, status=LoraStatus.READY,
                          source=LoraSource.IMPORTED, base_model=spec.name, family=self._registry.family(spec.name),
                          rank=info.rank, alpha=info.alpha, steps=_int(meta.get("brushwork.steps")
                                                                       or meta.get("ss_max_train_steps")),
                          base_model_hash=engine.model_hash(spec.name), trigger_words=tuple(triggers),
                          settings={"import": {"filename": filename[:255], "format": info.format,
                                               "modules": len(info.modules), "trained_on":
                                                   meta.get("brushwork.base_model") or meta.get("ss_sd_model_name")}},
                          file_path=stored.relative_path, sha256=stored.sha256, short_hash=short_hash,
                          size_bytes=stored.size,
                          dataset_size=_int(meta.get("brushwork.dataset_size") or meta.get("ss_num_train_images")))
            record, displaced = self._reserve(scope, new, public_id)
        except BaseException:
            with contextlib.suppress(OSError):
                self.files.delete(stored.relative_path)
            raise
        for old in displaced:
            self._remove_workdir(old)
        return record

    # -- helpers -------------------------------------------------------------------------
    def _get(self, scope: Scope, name: str) -> LoraRecord:
        with self._uow() as uow:
            try:
                return uow.loras.get(scope, name)
            except NotFound:
                known = [record.name for record in uow.loras.list(scope)]
        if not known:
            raise ServerLoraError("server_lora.none_here", name=name)
        raise ServerLoraError("server_lora.not_found", name=name, known=known)

    def _ready(self, scope: Scope, name: str) -> LoraRecord:
        record = self._get(scope, name)
        if record.status is LoraStatus.TRAINING:
            raise ServerLoraError("server_lora.still_training", name=record.name)
        if record.status is not LoraStatus.READY:
            raise ServerLoraError("server_lora.failed", name=record.name)
        return record

    def _kohya_cache(self, record: LoraRecord) -> Path:
        return self._cache_dir / "exports" / f"{record.public_id}-kohya{LORA_SUFFIX}"

    def _remove_workdir(self, lora_id: str) -> None:
        folder = self.training_dir / lora_id
        if folder.is_dir() and not folder.is_symlink():
            shutil.rmtree(folder, ignore_errors=True)


def before_after_png(before: str | os.PathLike[str], after: str | os.PathLike[str], *,
                     labels: tuple[str, str] = ("before", "after"), title: str | None = None) -> bytes:
    """The announcement's picture: a training's first and last samples side by side, labelled
    (pass the labels in the reader's language)."""
    import io

    from PIL import Image

    from generation.grid import labelled_grid

    with Image.open(before) as first, Image.open(after) as last:
        grid = labelled_grid([[first.convert("RGB"), last.convert("RGB")]], column_labels=list(labels), title=title)
    out = io.BytesIO()
    grid.save(out, format="PNG")
    return out.getvalue()


def _trigger_words(metadata: dict[str, str]) -> list[str]:
    import json

    raw = metadata.get("brushwork.trigger_words")
    if raw:
        with contextlib.suppress(ValueError, TypeError):
            words = json.loads(raw)
            if isinstance(words, list):
                return [str(w)[:64] for w in words if isinstance(w, str)][:10]
    return []


def _int(value: Any) -> int:
    try:
        return max(0, int(str(value)))
    except (TypeError, ValueError):
        return 0


__all__ = [
    "AddResult", "DatasetLimits", "DatasetService", "DatasetSheet", "LoraDetails", "LoraExport", "LoraLimits",
    "LoraService", "Refusal", "ScopedLoraResolver", "ServerLoraError", "TrainOptions", "TrainingProgressInfo",
    "TrainingStarted", "Upload", "before_after_png", "may_manage",
]

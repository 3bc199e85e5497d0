"""Saving generated images: the one place that orders "file first, then row".

A row must never point to a missing file, so the file is written (atomically) and only then
is the row inserted and committed.  If the insert fails, the file is removed again, unless
the row turns out to exist after all (a commit reported as failed that did happen).

:func:`save_job_images` does the same for a queue job's images, and marks the job done in
the *same* transaction, conditional on the worker's claim: either the job is done with all
its image rows, or nothing is recorded (a crash, or a claim taken over by another worker,
leaves at most orphan files, never a second set of rows).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from datetime import datetime

from sqlalchemy.exc import IntegrityError

from storage.errors import FileExists, IdsExhausted
from storage.files import ImageStore, StoredFile
from storage.ids import new_public_id
from storage.models import utcnow
from storage.records import ImageRecord, JobRecord, JobStatus, NewImage, Scope
from storage.unit_of_work import UnitOfWork

log = logging.getLogger(__name__)

MAX_ID_ATTEMPTS = 8


def save_image(
    uow_factory: Callable[[], UnitOfWork],
    store: ImageStore,
    data: bytes,
    new_image: NewImage,
    *,
    new_id: Callable[[], str] = new_public_id,
    clock: Callable[[], datetime] = utcnow,
) -> ImageRecord:
    """Store ``data`` as a new image and return its record.

    On failure nothing is left behind: no row, and no file unless its removal failed too.
    A public id that is already used (by a file or a row) is replaced by a fresh one.
    """
    for _ in range(MAX_ID_ATTEMPTS):
        public_id = new_id()
        created = clock()
        try:
            stored = store.write(public_id, data, created)
        except FileExists:
            continue
        try:
            with uow_factory() as uow:
                record = uow.images.add(new_image, public_id=public_id, stored=stored, created_at=created)
                uow.commit()
            return record
        except BaseException as error:
            owner = _row_owning(uow_factory, public_id)
            if owner == stored.relative_path:
                log.warning("insert of image %s reported %r but the row exists; keeping it", public_id, error)
                return _load(uow_factory, public_id)
            if owner is not _UNKNOWN:
                _discard(store, stored)
            if isinstance(error, IntegrityError) and owner not in (None, _UNKNOWN):
                continue  # the id belongs to another image: try a fresh one
            raise
    raise IdsExhausted("image", MAX_ID_ATTEMPTS)


_UNKNOWN = object()


def _row_owning(uow_factory: Callable[[], UnitOfWork], public_id: str) -> object:
    """The file path of the row with ``public_id``, None if there is none, _UNKNOWN if the
    database cannot say (then the file is kept: an orphan file is better than a dangling row)."""
    try:
        with uow_factory() as uow:
            return uow.images.stored_path(public_id)
    except Exception:
        log.exception("cannot check whether image %s was stored; keeping its file", public_id)
        return _UNKNOWN


def _load(uow_factory: Callable[[], UnitOfWork], public_id: str) -> ImageRecord:
    with uow_factory() as uow:
        return uow.images.get(public_id, Scope.local_operator(), include_deleted=True)


def _discard(store: ImageStore, stored: StoredFile) -> None:
    with contextlib.suppress(OSError):
        store.delete(stored.relative_path)


def save_job_images(
    uow_factory: Callable[[], UnitOfWork],
    store: ImageStore,
    images: Sequence[tuple[bytes, NewImage]],
    *,
    job_public_id: str,
    worker_id: str,
    attempt: int,
    gpu_seconds: float = 0.0,
    usage_guild_id: int | None = None,
    new_id: Callable[[], str] = new_public_id,
    clock: Callable[[], datetime] = utcnow,
) -> tuple[JobRecord, list[ImageRecord]]:
    """Write the files, then in one transaction: the image rows, the job marked done (only
    if ``worker_id``'s claim ``attempt`` still holds), and the server's daily usage.

    Raises :class:`~storage.errors.StaleState` if the claim was lost; then no row is
    written and the files are removed.  Each ``NewImage`` should name the job.
    """
    created = clock()
    ids = _free_ids(uow_factory, len(images), new_id)
    written: list[tuple[str, StoredFile]] = []
    try:
        for public_id, (data, _new) in zip(ids, images, strict=True):
            written.append(_write_fresh(store, public_id, data, created, new_id))
    except BaseException:
        for _public_id, stored in written:
            _discard(store, stored)
        raise
    public_ids = [public_id for public_id, _ in written]
    try:
        with uow_factory() as uow:
            records = [uow.images.add(new, public_id=public_id, stored=stored, created_at=created)
                       for (public_id, stored), (_data, new) in zip(written, images, strict=True)]
            job = uow.jobs.finish(job_public_id, worker_id=worker_id, attempt=attempt, status=JobStatus.DONE,
                                  gpu_seconds=gpu_seconds, result_image_ids=public_ids, now=created)
            if usage_guild_id is not None:
                uow.usage.add(usage_guild_id, created.date(), images=len(images), gpu_seconds=gpu_seconds)
            uow.commit()
        return job, records
    except BaseException as error:
        recorded = _job_results(uow_factory, job_public_id)
        if recorded == public_ids and public_ids:
            log.warning("completing job %s reported %r but it is recorded; keeping it", job_public_id, error)
            with uow_factory() as uow:
                job = uow.jobs.get(job_public_id, Scope.local_operator())
                return job, [uow.images.get(pid, Scope.local_operator(), include_deleted=True) for pid in public_ids]
        if recorded is not _UNKNOWN:
            for _public_id, stored in written:
                _discard(store, stored)
        raise


def _free_ids(uow_factory: Callable[[], UnitOfWork], count: int, new_id: Callable[[], str]) -> list[str]:
    """``count`` public ids used by no image row (so the insert cannot collide)."""
    ids: list[str] = []
    if count == 0:
        return ids
    with uow_factory() as uow:
        for _ in range(count):
            for _attempt in range(MAX_ID_ATTEMPTS):
                candidate = new_id()
                if candidate not in ids and uow.images.stored_path(candidate) is None:
                    ids.append(candidate)
                    break
            else:
                raise IdsExhausted("image", MAX_ID_ATTEMPTS)
    return ids


def _write_fresh(store: ImageStore, public_id: str, data: bytes, created: datetime,
                 new_id: Callable[[], str]) -> tuple[str, StoredFile]:
    for _ in range(MAX_ID_ATTEMPTS):
        try:
            return public_id, store.write(public_id, data, created)
        except FileExists:  # an orphan file (from a crash) holds the name: it is not ours to replace
            public_id = new_id()
    raise IdsExhausted("image", MAX_ID_ATTEMPTS)


def _job_results(uow_factory: Callable[[], UnitOfWork], public_id: str) -> object:
    """The result ids recorded for a done job, [] if not done, _UNKNOWN if unreadable."""
    try:
        with uow_factory() as uow:
            job = uow.jobs.get(public_id, Scope.local_operator())
            return list(job.result_image_ids) if job.status is JobStatus.DONE else []
    except Exception:
        log.exception("cannot check whether job %s was recorded; keeping its files", public_id)
        return _UNKNOWN

"""Saving a generated image: the one place that orders "file first, then row".

A row must never point to a missing file, so the file is written (atomically) and only then
is the row inserted and committed.  If the insert fails, the file is removed again, unless
the row turns out to exist after all (a commit reported as failed that did happen).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from datetime import datetime

from sqlalchemy.exc import IntegrityError

from storage.errors import FileExists, IdsExhausted
from storage.files import ImageStore, StoredFile
from storage.ids import new_public_id
from storage.models import utcnow
from storage.records import ImageRecord, NewImage, Scope
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

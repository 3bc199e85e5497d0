"""Uploads (``uploads`` table): pictures people send to start an image from.

Visible exactly where an image made in the same place would be (:meth:`Scope.can_see`); the
same picture sent twice in one place (``scope_key`` + ``sha256``) is one upload.  Public ids
share the images' id space: :meth:`UploadRepository.free_id` avoids both tables.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.errors import IdsExhausted, NotFound
from storage.ids import new_public_id
from storage.models import Image, Upload, utcnow
from storage.records import Scope, scope_key


@dataclass(frozen=True, slots=True)
class UploadRecord:
    id: int
    public_id: str
    owner_id: int
    guild_id: int | None
    sha256: str
    width: int
    height: int
    bytes: int
    file_path: str
    original_name: str
    created_at: datetime


def upload_path(public_id: str) -> str:
    """Where an upload's PNG lives, relative to the uploads folder."""
    return f"{public_id}.png"


class UploadRepository:
    def __init__(self, session: Session, *, new_id: Callable[[], str] = new_public_id) -> None:
        self._session = session
        self._new_id = new_id

    def get(self, public_id: str, scope: Scope) -> UploadRecord:
        row = self._session.scalar(select(Upload).where(Upload.public_id == public_id))
        if row is None or not scope.can_see(row.owner_id, row.guild_id):
            raise NotFound("upload", public_id)
        return _record(row)

    def find(self, scope: Scope, sha256: str) -> UploadRecord | None:
        """The upload of this picture already made in ``scope``'s place, if any."""
        row = self._session.scalar(select(Upload).where(Upload.scope_key == scope_key(scope),
                                                        Upload.sha256 == sha256))
        return None if row is None else _record(row)

    def add(self, scope: Scope, *, public_id: str, sha256: str, width: int, height: int, size: int,
            file_path: str, original_name: str) -> UploadRecord:
        row = Upload(public_id=public_id, owner_id=scope.user_id, guild_id=scope.guild_id,
                     scope_key=scope_key(scope), sha256=sha256, width=width, height=height, bytes=size,
                     file_path=file_path, original_name=original_name[:255], created_at=utcnow())
        self._session.add(row)
        self._session.flush()
        return _record(row)

    def free_id(self, attempts: int = 8) -> str:
        """A public id held by no upload and no image."""
        for _ in range(attempts):
            candidate = self._new_id()
            taken = (self._session.scalar(select(Upload.id).where(Upload.public_id == candidate)) is not None
                     or self._session.scalar(select(Image.id).where(Image.public_id == candidate)) is not None)
            if not taken:
                return candidate
        raise IdsExhausted("upload", attempts)

    def file_paths(self) -> dict[str, str]:
        """Every upload's file (relative path → public id): what ``brushwork db check`` compares."""
        return {path: public_id for public_id, path in self._session.execute(select(Upload.public_id,
                                                                                    Upload.file_path))}


def _record(row: Upload) -> UploadRecord:
    return UploadRecord(id=row.id, public_id=row.public_id, owner_id=row.owner_id, guild_id=row.guild_id,
                        sha256=row.sha256, width=row.width, height=row.height, bytes=row.bytes,
                        file_path=row.file_path, original_name=row.original_name, created_at=row.created_at)


__all__ = ["UploadRecord", "UploadRepository", "upload_path"]

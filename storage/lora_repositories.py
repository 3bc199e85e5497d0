"""Datasets and LoRAs as rows: named per namespace, visible by the images' Scope rule.

A dataset or LoRA made in a server belongs to that server (everyone in it may see and use
it; another server never does); one made outside a server belongs to its user.  Names are
looked up in the caller's namespace (:func:`~storage.records.scope_key`), so another
server's ``ink`` is simply not there: :class:`NotFound`, exactly like a missing one.
Repositories never commit (the unit of work does) and return records, never rows.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from storage.errors import IdsExhausted, NameTaken, NotFound, StaleState
from storage.ids import new_public_id
from storage.models import Dataset, DatasetImage, Lora, utcnow
from storage.records import (
    DatasetImageRecord,
    DatasetRecord,
    JobStatus,
    LoraRecord,
    LoraSource,
    LoraStatus,
    NamespaceUsage,
    NewDatasetImage,
    NewLora,
    Scope,
    scope_key,
)

#: A ``training`` row with no job yet is being submitted; after this long it is given up.
SUBMIT_GRACE = timedelta(minutes=10)
_ENDED = (JobStatus.DONE.value, JobStatus.FAILED.value, JobStatus.CANCELLED.value)


def name_key(name: str) -> str:
    """How names compare: case-insensitively, Unicode-aware (``Ink`` = ``ink``, ``ß`` = ``ss``)."""
    return name.casefold()


def _free_id(session: Session, model: Any, new_id: Callable[[], str], kind: str, attempts: int = 8) -> str:
    for _ in range(attempts):
        candidate = new_id()
        if session.scalar(select(model.id).where(model.public_id == candidate)) is None:
            return candidate
    raise IdsExhausted(kind, attempts)


# ---------------------------------------------------------------------- datasets


def _dataset_record(row: Dataset) -> DatasetRecord:
    return DatasetRecord(public_id=row.public_id, guild_id=row.guild_id, owner_id=row.owner_id, name=row.name,
                         image_count=int(row.image_count or 0), total_bytes=int(row.total_bytes or 0),
                         created_at=row.created_at, updated_at=row.updated_at)


def _image_record(row: DatasetImage) -> DatasetImageRecord:
    return DatasetImageRecord(public_id=row.public_id, dataset_public_id=row.dataset_public_id,
                              file_path=row.file_path, sha256=row.sha256, caption=row.caption, width=row.width,
                              height=row.height, original_name=row.original_name, bytes=row.bytes,
                              created_at=row.created_at)


class DatasetRepository:
    def __init__(self, session: Session, *, new_id: Callable[[], str] = new_public_id) -> None:
        self._session = session
        self._new_id = new_id

    # -- datasets ----------------------------------------------------------------------
    def create(self, scope: Scope, name: str) -> DatasetRecord:
        """A new, empty dataset in the scope's namespace; :class:`NameTaken` if the name is used."""
        key = scope_key(scope)
        if self._row(key, name) is not None:
            raise NameTaken("dataset", name)
        row = Dataset(public_id=_free_id(self._session, Dataset, self._new_id, "dataset"), guild_id=scope.guild_id,
                      owner_id=scope.user_id, scope_key=key, name=name, name_key=name_key(name))
        self._session.add(row)
        try:
            self._session.flush()
        except IntegrityError:  # created by someone else since the check above (the unit of work is spent)
            raise NameTaken("dataset", name) from None
        self._session.refresh(row)
        return _dataset_record(row)

    def get(self, scope: Scope, name: str) -> DatasetRecord:
        return _dataset_record(self._visible(scope, name))

    def list(self, scope: Scope) -> list[DatasetRecord]:
        query = select(Dataset).where(Dataset.scope_key == scope_key(scope)).order_by(Dataset.name_key)
        return [_dataset_record(row) for row in self._session.scalars(query)]

    def delete(self, scope: Scope, name: str) -> tuple[DatasetRecord, list[str]]:
        """Delete the dataset and its image rows; returns it and the files to remove *after* committing."""
        row = self._visible(scope, name)
        record = _dataset_record(row)
        paths = list(self._session.scalars(select(DatasetImage.file_path).where(DatasetImage.dataset_id == row.id)))
        self._session.delete(row)  # its images go with it (ON DELETE CASCADE); LoRAs keep a NULL dataset_id
        self._session.flush()
        return record, paths

    # -- images ------------------------------------------------------------------------
    def add_images(self, scope: Scope, name: str, images: Sequence[tuple[str, NewDatasetImage]]
                   ) -> list[DatasetImageRecord]:
        """Insert rows for images whose files are stored, each under the public id given
        (the file was named after it).  A picture already in the dataset raises
        :class:`NameTaken` (kind ``image``, with its sha256); check first for a friendly message."""
        dataset = self._visible(scope, name)
        rows = [DatasetImage(public_id=public_id, dataset_id=dataset.id, file_path=new.file_path, sha256=new.sha256,
                             caption=new.caption, width=new.width, height=new.height,
                             original_name=new.original_name[:255], bytes=new.bytes)
                for public_id, new in images]
        self._session.add_all(rows)
        try:
            self._session.flush()
        except IntegrityError:  # the unit of work is spent: it rolls back
            raise NameTaken("image", "same picture") from None
        dataset.updated_at = utcnow()
        self._session.flush()
        for row in rows:
            self._session.refresh(row)
        return [_image_record(row) for row in rows]

    def free_image_ids(self, count: int) -> list[str]:
        """``count`` public ids used by no dataset image (files are named after them)."""
        ids: list[str] = []
        while len(ids) < count:
            candidate = _free_id(self._session, DatasetImage, self._new_id, "dataset image")
            if candidate not in ids:
                ids.append(candidate)
        return ids

    def images(self, scope: Scope, name: str) -> list[DatasetImageRecord]:
        """The dataset's images in the order they were added (the contact sheet's #1, #2…)."""
        dataset = self._visible(scope, name)
        query = select(DatasetImage).where(DatasetImage.dataset_id == dataset.id).order_by(DatasetImage.id)
        return [_image_record(row) for row in self._session.scalars(query)]

    def find_pictures(self, scope: Scope, name: str, sha256s: Sequence[str]) -> dict[str, DatasetImageRecord]:
        """Images of the dataset with any of these pixel hashes (duplicate detection), by hash."""
        dataset = self._visible(scope, name)
        if not sha256s:
            return {}
        query = select(DatasetImage).where(DatasetImage.dataset_id == dataset.id,
                                           DatasetImage.sha256.in_(list(set(sha256s))))
        return {row.sha256: _image_record(row) for row in self._session.scalars(query)}

    def set_caption(self, scope: Scope, name: str, image_id: str, caption: str | None) -> DatasetImageRecord:
        row = self._image_row(scope, name, image_id)
        row.caption = caption
        self._touch(row.dataset_id)
        self._session.flush()
        return _image_record(row)

    def remove_image(self, scope: Scope, name: str, image_id: str) -> DatasetImageRecord:
        """Delete one image's row; returns it (remove its file after committing)."""
        row = self._image_row(scope, name, image_id)
        record = _image_record(row)
        self._touch(row.dataset_id)
        self._session.delete(row)
        self._session.flush()
        return record

    # -- quotas ------------------------------------------------------------------------
    def image_file_paths(self) -> dict[str, str]:
        """Every dataset image's file (relative path → public id), of every namespace."""
        query = select(DatasetImage.public_id, DatasetImage.file_path)
        return {path: public_id for public_id, path in self._session.execute(query)}

    def usage(self, scope: Scope) -> tuple[int, int, int]:
        """(datasets, images, image bytes) in the scope's namespace."""
        key = scope_key(scope)
        datasets = self._session.scalar(select(func.count()).select_from(Dataset).where(Dataset.scope_key == key))
        images, size = self._session.execute(
            select(func.count(DatasetImage.id), func.coalesce(func.sum(DatasetImage.bytes), 0))
            .join(Dataset, Dataset.id == DatasetImage.dataset_id).where(Dataset.scope_key == key)).one()
        return int(datasets or 0), int(images or 0), int(size or 0)

    # -- helpers -----------------------------------------------------------------------
    def _row(self, key: str, name: str) -> Dataset | None:
        return self._session.scalar(select(Dataset).where(Dataset.scope_key == key, Dataset.name_key == name_key(name)))

    def _visible(self, scope: Scope, name: str) -> Dataset:
        row = self._row(scope_key(scope), name)
        if row is None:
            raise NotFound("dataset", name)
        return row

    def _image_row(self, scope: Scope, name: str, image_id: str) -> DatasetImage:
        dataset = self._visible(scope, name)
        row = self._session.scalar(select(DatasetImage).where(DatasetImage.public_id == image_id,
                                                             DatasetImage.dataset_id == dataset.id))
        if row is None:
            raise NotFound("image", image_id)
        return row

    def _touch(self, dataset_id: int) -> None:
        self._session.execute(update(Dataset).where(Dataset.id == dataset_id).values(updated_at=utcnow())
                              .execution_options(synchronize_session=False))


# ---------------------------------------------------------------------- LoRAs


def effective_status(status: str, job_status: str | None, job_public_id: str | None, created_at: datetime,
                     now: datetime) -> LoraStatus:
    """A training LoRA whose job ended without finishing it (or that never got a job) is failed."""
    value = LoraStatus(status)
    if value is LoraStatus.TRAINING:
        if job_public_id is not None and (job_status is None or job_status in _ENDED):
            return LoraStatus.FAILED
        if job_public_id is None and now - created_at > SUBMIT_GRACE:
            return LoraStatus.FAILED
    return value


def _lora_record(row: Lora, now: datetime | None = None) -> LoraRecord:
    now = now or utcnow()
    return LoraRecord(
        public_id=row.public_id, guild_id=row.guild_id, owner_id=row.owner_id, name=row.name,
        status=effective_status(row.status, row.job_status, row.job_public_id, row.created_at, now),
        source=LoraSource(row.source), file_path=row.file_path, sha256=row.sha256, short_hash=row.short_hash,
        base_model=row.base_model, base_model_hash=row.base_model_hash, family=row.family, rank=row.rank,
        alpha=row.alpha, steps=row.steps, dataset_public_id=row.dataset_public_id, dataset_name=row.dataset_name,
        dataset_size=row.dataset_size, trigger_words=list(row.trigger_words or []), settings=dict(row.settings or {}),
        job_public_id=row.job_public_id, job_status=JobStatus(row.job_status) if row.job_status else None,
        size_bytes=row.size_bytes, created_at=row.created_at, updated_at=row.updated_at)


class LoraRepository:
    def __init__(self, session: Session, *, new_id: Callable[[], str] = new_public_id) -> None:
        self._session = session
        self._new_id = new_id

    # -- writing -----------------------------------------------------------------------
    def add(self, scope: Scope, new: NewLora, *, public_id: str | None = None) -> LoraRecord:
        """Insert a LoRA (``training`` reserves its name; ``ready`` for an imported file whose
        file, named after ``public_id``, is already stored).

        A failed LoRA of the same name gives its name up to the new one; a ready or
        training one raises :class:`NameTaken`.
        """
        key = scope_key(scope)
        holder = self._named(key, new.name)
        if holder is not None:
            if _lora_record(holder).status is not LoraStatus.FAILED:
                raise NameTaken("lora", new.name)
            holder.name_key = None
            holder.status = LoraStatus.FAILED.value
            self._session.flush()
        dataset_id = None
        if new.dataset_public_id is not None:
            dataset_id = self._session.scalar(select(Dataset.id).where(Dataset.public_id == new.dataset_public_id))
        row = Lora(public_id=public_id or _free_id(self._session, Lora, self._new_id, "lora"), guild_id=scope.guild_id,
                   owner_id=new.owner_id, scope_key=key, name=new.name, name_key=name_key(new.name),
                   status=new.status.value, source=new.source.value, file_path=new.file_path, sha256=new.sha256,
                   short_hash=new.short_hash, base_model=new.base_model, base_model_hash=new.base_model_hash,
                   family=new.family, rank=int(new.rank), alpha=float(new.alpha), steps=int(new.steps),
                   dataset_id=dataset_id, dataset_name=new.dataset_name, dataset_size=int(new.dataset_size),
                   trigger_words=list(new.trigger_words), settings=dict(new.settings),
                   job_public_id=new.job_public_id, size_bytes=int(new.size_bytes))
        self._session.add(row)
        try:
            self._session.flush()
        except IntegrityError:  # reserved by someone else meanwhile (the unit of work is spent)
            raise NameTaken("lora", new.name) from None
        self._session.refresh(row)
        return _lora_record(row)

    def attach_job(self, public_id: str, job_public_id: str) -> LoraRecord:
        row = self._by_id(public_id)
        row.job_public_id = job_public_id
        self._session.flush()
        self._session.refresh(row)
        return _lora_record(row)

    def finish_training(self, public_id: str, *, file_path: str, sha256: str, short_hash: str, size_bytes: int,
                        steps: int, base_model_hash: str | None = None,
                        settings: Mapping[str, Any] | None = None) -> LoraRecord:
        """training → ready with its file, only if it is still training under its name
        (:class:`StaleState` when it was deleted or given up meanwhile)."""
        values: dict[str, Any] = {"status": LoraStatus.READY.value, "file_path": file_path, "sha256": sha256,
                                  "short_hash": short_hash, "size_bytes": int(size_bytes), "steps": int(steps),
                                  "updated_at": utcnow()}
        if base_model_hash is not None:
            values["base_model_hash"] = base_model_hash
        if settings is not None:
            values["settings"] = dict(settings)
        # An UPDATE gives a CursorResult (rowcount); Session.execute() is typed for any statement.
        result = cast(CursorResult[Any], self._session.execute(
            update(Lora).where(Lora.public_id == public_id, Lora.status == LoraStatus.TRAINING.value,
                               Lora.name_key.is_not(None))
            .values(**values).execution_options(synchronize_session=False)))
        if not result.rowcount:
            row = self._by_id(public_id)
            raise StaleState("lora", public_id, "training", row.status)
        return self._reload(public_id)

    def mark_failed(self, public_id: str) -> LoraRecord:
        """training → failed (a cancelled or failed training); other states are left as they are."""
        self._session.execute(
            update(Lora).where(Lora.public_id == public_id, Lora.status == LoraStatus.TRAINING.value)
            .values(status=LoraStatus.FAILED.value, updated_at=utcnow()).execution_options(synchronize_session=False))
        return self._reload(public_id)

    def soft_delete(self, public_id: str) -> LoraRecord:
        """Mark deleted and free the name; returns the record as it was (remove its file after committing)."""
        row = self._by_id(public_id)
        record = _lora_record(row)
        row.status = LoraStatus.DELETED.value
        row.name_key = None
        row.updated_at = utcnow()
        self._session.flush()
        return record

    # -- reading -----------------------------------------------------------------------
    def get(self, scope: Scope, name: str) -> LoraRecord:
        """The LoRA holding ``name`` in the scope's namespace (any status but deleted)."""
        row = self._named(scope_key(scope), name)
        if row is None:
            raise NotFound("lora", name)
        return _lora_record(row)

    def get_by_id(self, public_id: str, scope: Scope | None = None) -> LoraRecord:
        """By public id; with a scope, only if that scope may see it (deleted ones: operator only)."""
        row = self._session.scalar(select(Lora).where(Lora.public_id == public_id))
        if row is None or (scope is not None and (not scope.can_see(row.owner_id, row.guild_id)
                                                  or (row.status == LoraStatus.DELETED.value and not scope.operator))):
            raise NotFound("lora", public_id)
        return _lora_record(row)

    def list(self, scope: Scope, *, statuses: Sequence[LoraStatus] | None = None) -> list[LoraRecord]:
        """The namespace's LoRAs (not deleted), by name; ``statuses`` filters on the effective status."""
        query = select(Lora).where(Lora.scope_key == scope_key(scope), Lora.name_key.is_not(None)).order_by(Lora.name_key)
        now = utcnow()
        records = [_lora_record(row, now) for row in self._session.scalars(query)]
        if statuses is not None:
            wanted = set(statuses)
            records = [record for record in records if record.status in wanted]
        return records

    def file_paths(self) -> dict[str, str | None]:
        """Every LoRA of every namespace: public id → its file (``None`` while training)."""
        return {public_id: path for public_id, path in self._session.execute(select(Lora.public_id, Lora.file_path))}

    def usage(self, scope: Scope) -> tuple[int, int]:
        """(LoRAs training or ready, their bytes) in the scope's namespace."""
        records = self.list(scope, statuses=(LoraStatus.TRAINING, LoraStatus.READY))
        return len(records), sum(record.size_bytes for record in records)

    # -- helpers -----------------------------------------------------------------------
    def _named(self, key: str, name: str) -> Lora | None:
        return self._session.scalar(select(Lora).where(Lora.scope_key == key, Lora.name_key == name_key(name)))

    def _by_id(self, public_id: str) -> Lora:
        row = self._session.scalar(select(Lora).where(Lora.public_id == public_id))
        if row is None:
            raise NotFound("lora", public_id)
        return row

    def free_id(self) -> str:
        """A public id no LoRA uses yet (an imported file is stored under it before its row)."""
        return _free_id(self._session, Lora, self._new_id, "lora")

    def _reload(self, public_id: str) -> LoraRecord:
        row = self._session.scalar(
            select(Lora).where(Lora.public_id == public_id).execution_options(populate_existing=True))
        if row is None:
            raise NotFound("lora", public_id)
        return _lora_record(row)


def namespace_usage(datasets: DatasetRepository, loras: LoraRepository, scope: Scope) -> NamespaceUsage:
    count, images, image_bytes = datasets.usage(scope)
    lora_count, lora_bytes = loras.usage(scope)
    return NamespaceUsage(datasets=count, images=images, image_bytes=image_bytes, loras=lora_count,
                          lora_bytes=lora_bytes)


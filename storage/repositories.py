"""Repositories: queries and changes on one session, returning records, never committing.

Access rules live here, next to the queries, so no caller can forget them:
``Scope.can_see`` for single rows and :func:`_visible_to` for lists say the same thing.
A row the scope may not see raises :class:`NotFound` exactly as a missing row does.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import date, datetime
from typing import Any, Final

from sqlalchemy import (
    ColumnElement,
    CursorResult,
    Result,
    String,
    and_,
    bindparam,
    cast,
    func,
    or_,
    select,
    text,
    true,
    update,
)
from sqlalchemy.orm import Session

from storage.errors import IdsExhausted, InvalidValue, NotFound, PermissionDenied, StaleState
from storage.files import StoredFile
from storage.ids import is_public_id, new_public_id
from storage.models import GuildSettings, GuildUsage, Image, Job, UserSettings, Worker, utcnow
from storage.records import (
    FinishedUsage,
    GuildSettingsRecord,
    ImageRecord,
    ImageRelation,
    JobClass,
    JobCounts,
    JobKind,
    JobRecord,
    JobRecovery,
    JobStatus,
    NewImage,
    NewJob,
    Scope,
    UsageRecord,
    UserSettingsRecord,
    WorkerRecord,
    WorkerState,
    coerce_enum,
)

MAX_PAGE = 100
#: Longest parent chain followed by ``lineage`` (a guard, chains are short in practice).
MAX_LINEAGE = 256

#: PostgreSQL advisory lock key of the queue's dispatch (``JobRepository.lock_dispatch``; "brushwq1").
DISPATCH_LOCK_KEY = int.from_bytes(b"brushwq1", "big") & 0x7FFF_FFFF_FFFF_FFFF


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


#: "Leave this field as it is" (``None`` is a value: it clears a nullable field).
UNSET: Final = _Unset()


def _rowcount(result: Result[Any]) -> int:
    """Rows an ``UPDATE`` matched (``Session.execute`` is typed for any statement; an UPDATE's
    result is a ``CursorResult``)."""
    return typing.cast(CursorResult[Any], result).rowcount


def _check_limit(limit: int) -> None:
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidValue("limit", limit, f"1 to {MAX_PAGE}")


def _visible_to(scope: Scope, owner: Any, guild: Any) -> ColumnElement[bool]:
    """SQL form of :meth:`Scope.can_see`."""
    if scope.operator:
        return true()
    if scope.guild_id is not None:
        return guild == scope.guild_id
    return and_(guild.is_(None), owner == scope.user_id)


def _image_record(row: Image) -> ImageRecord:
    return ImageRecord(
        id=row.id,
        public_id=row.public_id,
        owner_id=row.owner_id,
        guild_id=row.guild_id,
        channel_id=row.channel_id,
        message_id=row.message_id,
        job_public_id=row.job_public_id,
        parent_public_id=row.parent_public_id,
        relation=ImageRelation(row.relation) if row.relation is not None else None,
        batch_index=row.batch_index,
        prompt=row.prompt,
        negative_prompt=row.negative_prompt,
        seed=row.seed,
        steps=row.steps,
        cfg=row.cfg,
        sampler=row.sampler,
        width=row.width,
        height=row.height,
        model=row.model,
        model_hash=row.model_hash,
        lora_hashes=dict(row.lora_hashes),
        request=dict(row.request),
        canonical=row.canonical,
        file_path=row.file_path,
        content_sha256=row.content_sha256,
        file_size=row.file_size,
        created_at=row.created_at,
        deleted_at=row.deleted_at,
    )


class ImageRepository:
    def __init__(self, session: Session) -> None:
        self._session = session

    # -- writing -----------------------------------------------------------------------
    def add(
        self, new: NewImage, *, public_id: str, stored: StoredFile, created_at: datetime | None = None
    ) -> ImageRecord:
        """Insert the row of an image whose file is already stored (see ``storage.archive``).

        The parent and job are given by public id and must exist (:class:`NotFound`).
        Flushes, so a duplicate public id raises ``IntegrityError`` here.
        """
        parent_id = self._internal_id(new.parent_public_id) if new.parent_public_id else None
        job_id = None
        if new.job_public_id is not None:
            job_id = self._session.scalar(select(Job.id).where(Job.public_id == new.job_public_id))
            if job_id is None:
                raise NotFound("job", new.job_public_id)
        row = Image(
            public_id=public_id,
            owner_id=new.owner_id,
            guild_id=new.guild_id,
            channel_id=new.channel_id,
            message_id=new.message_id,
            job_id=job_id,
            parent_id=parent_id,
            relation=new.relation.value if new.relation is not None else None,
            batch_index=new.batch_index,
            prompt=new.prompt,
            negative_prompt=new.negative_prompt,
            seed=new.seed,
            steps=new.steps,
            cfg=new.cfg,
            sampler=new.sampler,
            width=new.width,
            height=new.height,
            model=new.model,
            model_hash=new.model_hash,
            lora_hashes=dict(new.lora_hashes),
            request=dict(new.request),
            canonical=new.canonical,
            file_path=stored.relative_path,
            content_sha256=stored.sha256,
            file_size=stored.size,
        )
        if created_at is not None:
            row.created_at = created_at
        self._session.add(row)
        self._session.flush()
        self._session.refresh(row)  # loads the linked public ids
        return _image_record(row)

    def attach_message(
        self, public_id: str, scope: Scope, *, channel_id: int, message_id: int
    ) -> ImageRecord:
        """Remember the chat message that shows the image (buttons and reactions find it again)."""
        row = self._visible_row(public_id, scope)
        row.channel_id = channel_id
        row.message_id = message_id
        self._session.flush()
        return _image_record(row)

    def soft_delete(self, public_id: str, scope: Scope, *, can_manage: bool = False) -> ImageRecord:
        """Hide an image from everyone but the operator; its file stays until a purge.

        Allowed to the owner, to the operator, and to a caller that says ``can_manage``
        (the bot passes a server manager's right).  Someone who can see the image but may
        not delete it gets :class:`PermissionDenied`; anyone else :class:`NotFound`.
        """
        row = self._visible_row(public_id, scope)
        if not (scope.operator or can_manage or row.owner_id == scope.user_id):
            raise PermissionDenied("image", public_id, "delete")
        row.deleted_at = utcnow()
        self._session.flush()
        return _image_record(row)

    # -- reading -----------------------------------------------------------------------
    def get(self, public_id: str, scope: Scope, *, include_deleted: bool = False) -> ImageRecord:
        """The image, if ``scope`` may see it; deleted images only for the operator who asks."""
        return _image_record(self._visible_row(public_id, scope, include_deleted=include_deleted))

    def file_paths(self, *, deleted: bool | None = None) -> dict[str, str]:
        """Images' files (relative path → public id): every image, or only the deleted ones
        (``deleted=True``) or only the others (``False``) — what ``brushwork db check`` compares
        the image folder with."""
        query = select(Image.public_id, Image.file_path)
        if deleted is not None:
            query = query.where(Image.deleted_at.is_not(None) if deleted else Image.deleted_at.is_(None))
        return {path: public_id for public_id, path in self._session.execute(query)}

    def deleted_before(self, cutoff: datetime) -> list[tuple[str, str]]:
        """(public id, file path) of the images deleted before ``cutoff``, oldest first: the
        files ``brushwork db purge`` removes (the rows stay, for lineage and job results)."""
        query = (select(Image.public_id, Image.file_path)
                 .where(Image.deleted_at.is_not(None), Image.deleted_at < cutoff)
                 .order_by(Image.deleted_at, Image.id))
        return [(public_id, path) for public_id, path in self._session.execute(query)]

    def history(
        self,
        scope: Scope,
        *,
        user_id: int | None = None,
        limit: int = 20,
        before: str | None = None,
        offset: int = 0,
    ) -> list[ImageRecord]:
        """Visible, undeleted images, newest first.

        ``user_id`` narrows to one author.  Page with ``before`` (the public id of the last
        image of the previous page: stable while new images arrive) or with ``offset``.
        """
        _check_limit(limit)
        if offset < 0:
            raise InvalidValue("offset", offset, "0 or more")
        query = select(Image).where(
            Image.deleted_at.is_(None), _visible_to(scope, Image.owner_id, Image.guild_id)
        )
        if user_id is not None:
            query = query.where(Image.owner_id == user_id)
        if before is not None:
            # The cursor may have been deleted since the previous page was shown.
            cursor = self._session.scalar(select(Image).where(Image.public_id == before))
            if cursor is None or not scope.can_see(cursor.owner_id, cursor.guild_id):
                raise NotFound("image", before)
            query = query.where(
                or_(
                    Image.created_at < cursor.created_at,
                    and_(Image.created_at == cursor.created_at, Image.id < cursor.id),
                )
            )
        query = query.order_by(Image.created_at.desc(), Image.id.desc()).offset(offset).limit(limit)
        return [_image_record(row) for row in self._session.scalars(query)]

    def lineage(self, public_id: str, scope: Scope) -> list[ImageRecord]:
        """The image, then its parent, grandparent… up to the first original, nearest first.

        The chain stops early at an ancestor that is deleted or that ``scope`` may not see.
        """
        row = self._visible_row(public_id, scope)
        chain = [_image_record(row)]
        seen = {row.id}
        while row.parent_id is not None and len(chain) < MAX_LINEAGE:
            parent = self._session.get(Image, row.parent_id)
            if (
                parent is None
                or parent.id in seen
                or parent.deleted_at is not None
                or not scope.can_see(parent.owner_id, parent.guild_id)
            ):
                break
            chain.append(_image_record(parent))
            seen.add(parent.id)
            row = parent
        return chain

    def children(self, public_id: str, scope: Scope) -> list[ImageRecord]:
        """Images made directly from this one (rerolls, tweaks…), oldest first."""
        row = self._visible_row(public_id, scope)
        query = (
            select(Image)
            .where(
                Image.parent_id == row.id,
                Image.deleted_at.is_(None),
                _visible_to(scope, Image.owner_id, Image.guild_id),
            )
            .order_by(Image.created_at, Image.id)
        )
        return [_image_record(child) for child in self._session.scalars(query)]

    def by_message(self, message_id: int, scope: Scope) -> list[ImageRecord]:
        """The images shown by one chat message, in batch order (for reactions on it)."""
        query = (
            select(Image)
            .where(
                Image.message_id == message_id,
                Image.deleted_at.is_(None),
                _visible_to(scope, Image.owner_id, Image.guild_id),
            )
            .order_by(Image.batch_index, Image.id)
        )
        return [_image_record(row) for row in self._session.scalars(query)]

    def stored_path(self, public_id: str) -> str | None:
        """The file path recorded for ``public_id``, deleted or not; None if no such row.

        Internal bookkeeping (no scope check): never answer a user with it.
        """
        return self._session.scalar(select(Image.file_path).where(Image.public_id == public_id))

    # -- helpers -----------------------------------------------------------------------
    def _internal_id(self, public_id: str) -> int:
        found = self._session.scalar(select(Image.id).where(Image.public_id == public_id))
        if found is None:
            raise NotFound("image", public_id)
        return found

    def _visible_row(self, public_id: str, scope: Scope, *, include_deleted: bool = False) -> Image:
        row = self._session.scalar(select(Image).where(Image.public_id == public_id))
        if (
            row is None
            or not scope.can_see(row.owner_id, row.guild_id)
            or (row.deleted_at is not None and not (include_deleted and scope.operator))
        ):
            raise NotFound("image", public_id)
        return row


def _job_record(row: Job) -> JobRecord:
    return JobRecord(
        id=row.id,
        public_id=row.public_id,
        kind=JobKind(row.kind),
        status=JobStatus(row.status),
        priority=row.priority,
        owner_id=row.owner_id,
        guild_id=row.guild_id,
        channel_id=row.channel_id,
        request=dict(row.request),
        attempts=row.attempts,
        max_attempts=row.max_attempts,
        progress=row.progress,
        error=row.error,
        result_image_ids=list(row.result_image_ids),
        reply_ref=dict(row.reply_ref) if row.reply_ref is not None else None,
        gpu_seconds=row.gpu_seconds,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        heartbeat_at=row.heartbeat_at,
        job_class=JobClass(row.job_class),
        batch_key=row.batch_key,
        images=row.images,
        work=row.work,
        cost_group=row.cost_group,
        worker_id=row.worker_id,
        cancel_requested=bool(row.cancel_requested),
        checkpoint=dict(row.checkpoint) if row.checkpoint is not None else None,
        error_code=row.error_code,
        error_params=dict(row.error_params) if row.error_params is not None else None,
    )


#: Statuses of jobs that still count against queue limits.
ACTIVE_STATUSES = (JobStatus.QUEUED.value, JobStatus.RUNNING.value)

#: Job fields that ``JobRepository.update`` may change, each with a converter.
_JOB_UPDATABLE: dict[str, Callable[[Any], Any]] = {
    "status": lambda value: coerce_enum(JobStatus, value, "status").value,
    "priority": int,
    "attempts": int,
    "max_attempts": int,
    "progress": float,
    "error": lambda value: value,
    "result_image_ids": lambda value: [str(item) for item in value],
    "reply_ref": lambda value: dict(value) if value is not None else None,
    "gpu_seconds": float,
    "started_at": lambda value: value,
    "finished_at": lambda value: value,
    "heartbeat_at": lambda value: value,
}


class JobRepository:
    """Jobs as rows, and the queue's state changes on them.

    Every change a concurrent writer could race is one conditional ``UPDATE``: claiming
    (only a queued job), finishing and re-queueing (only by the worker and attempt that
    claimed it), cancelling (queued → cancelled, else a flag on a running job).  So several
    processes can share the table, and a job never records two results.
    """

    def __init__(self, session: Session, *, new_id: Callable[[], str] = new_public_id) -> None:
        self._session = session
        self._new_id = new_id

    def add(self, new: NewJob, *, public_id: str | None = None) -> JobRecord:
        """Insert a queued job; ``public_id`` is used when it is a valid id nobody holds, else a
        fresh one is drawn (the record says which)."""
        return self.add_many([(new, public_id)])[0]

    def add_many(self, jobs: Sequence[tuple[NewJob, str | None]]) -> list[JobRecord]:
        """:meth:`add` for several jobs: one query for the ids asked for, one flush (SQLAlchemy
        sends the rows as one multi-row INSERT), records in order."""
        wanted = [public_id for _, public_id in jobs if public_id is not None and is_public_id(public_id)]
        taken = set(self._session.scalars(select(Job.public_id).where(Job.public_id.in_(wanted)))) if wanted else set()
        rows = []
        for new, public_id in jobs:
            if public_id is None or not is_public_id(public_id) or public_id in taken:
                public_id = self._free_public_id()
            taken.add(public_id)
            rows.append(Job(
                public_id=public_id,
                kind=new.kind.value,
                status=JobStatus.QUEUED.value,
                priority=new.priority,
                owner_id=new.owner_id,
                guild_id=new.guild_id,
                channel_id=new.channel_id,
                request=dict(new.request),
                max_attempts=new.max_attempts,
                reply_ref=dict(new.reply_ref) if new.reply_ref is not None else None,
                job_class=new.job_class.value,
                batch_key=new.batch_key,
                images=new.images,
                work=float(new.work),
                cost_group=new.cost_group,
            ))
        self._session.add_all(rows)
        self._session.flush()
        return [_job_record(row) for row in rows]

    def get(self, public_id: str, scope: Scope) -> JobRecord:
        row = self._session.scalar(select(Job).where(Job.public_id == public_id))
        if row is None or not scope.can_see(row.owner_id, row.guild_id):
            raise NotFound("job", public_id)
        return _job_record(row)

    def update(
        self,
        public_id: str,
        *,
        expected_status: JobStatus | str | Iterable[JobStatus | str] | None = None,
        **changes: Any,
    ) -> JobRecord:
        """Change fields of a job, atomically conditional on its status when asked.

        With ``expected_status`` the change is one ``UPDATE … WHERE status IN (…)``, so of
        two workers racing to move a job only one wins; the other gets :class:`StaleState`.
        Unknown fields raise :class:`InvalidValue`; a missing job :class:`NotFound`.
        """
        values = {}
        for name, value in changes.items():
            if name not in _JOB_UPDATABLE:
                raise InvalidValue("job field", name, ", ".join(sorted(_JOB_UPDATABLE)))
            values[name] = _JOB_UPDATABLE[name](value)

        statement = update(Job).where(Job.public_id == public_id)
        expected: list[str] = []
        if expected_status is not None:
            items = [expected_status] if isinstance(expected_status, str) else list(expected_status)
            expected = [coerce_enum(JobStatus, item, "expected_status").value for item in items]
            statement = statement.where(Job.status.in_(expected))
        matched = True
        if values:
            # Through the ORM so the column types (JSON, UTC datetimes) apply.
            result = self._session.execute(
                statement.values(**values).execution_options(synchronize_session="fetch")
            )
            matched = _rowcount(result) > 0

        row = self._session.scalar(
            select(Job).where(Job.public_id == public_id).execution_options(populate_existing=True)
        )
        if row is None:
            raise NotFound("job", public_id)
        stale = not matched if values else bool(expected) and row.status not in expected
        if stale:
            raise StaleState("job", public_id, " or ".join(expected), row.status)
        return _job_record(row)

    def list_by_status(self, *statuses: JobStatus | str, limit: int | None = None) -> list[JobRecord]:
        """Jobs in any of ``statuses``, in queue order: higher priority first, then oldest first."""
        if not statuses:
            raise InvalidValue("statuses", statuses, ", ".join(JobStatus))
        wanted = [coerce_enum(JobStatus, status, "status").value for status in statuses]
        query = (
            select(Job).where(Job.status.in_(wanted)).order_by(Job.priority.desc(), Job.created_at, Job.id)
        )
        if limit is not None:
            query = query.limit(limit)
        return [_job_record(row) for row in self._session.scalars(query)]

    def _free_public_id(self, attempts: int = 8) -> str:
        for _ in range(attempts):
            candidate = self._new_id()
            if self._session.scalar(select(Job.id).where(Job.public_id == candidate)) is None:
                return candidate
        raise IdsExhausted("job", attempts)

    # -- the queue ---------------------------------------------------------------------
    def finished_since(self, since: datetime, *, limit: int = 1000) -> list[JobRecord]:
        """Jobs that ended (done, failed, cancelled) at or after ``since`` and carry a reply
        reference, oldest first: answers a restarted bot may still owe."""
        finished = [status.value for status in JobStatus if status.finished]
        query = (
            select(Job)
            .where(Job.status.in_(finished), Job.finished_at >= since, Job.reply_ref.is_not(None),
                   cast(Job.reply_ref, String) != "null")  # JSON columns store None as JSON null
            .order_by(Job.finished_at, Job.id)
            .limit(limit)
        )
        return [_job_record(row) for row in self._session.scalars(query)]

    def counts(self, owner_id: int, guild_id: int | None) -> JobCounts:
        """Queued and running jobs of the user, of the server, of everyone.

        One round trip of three sub-queries, each answered from its own index (status; owner
        and status; server), so admission stays cheap with thousands of jobs waiting.
        """
        active = Job.status.in_(ACTIVE_STATUSES)
        total = select(func.count()).select_from(Job).where(active).scalar_subquery()
        user = select(func.count()).select_from(Job).where(Job.owner_id == owner_id, active).scalar_subquery()
        columns = [total, user]
        if guild_id is not None:
            in_guild = select(func.count(), func.coalesce(func.sum(Job.images), 0)).where(Job.guild_id == guild_id,
                                                                                       active).subquery()
            columns += [select(in_guild.c[0]).scalar_subquery(), select(in_guild.c[1]).scalar_subquery()]
        row = self._session.execute(select(*columns)).one()
        guild, images = (int(row[2]), int(row[3])) if guild_id is not None else (0, 0)
        return JobCounts(user=int(row[1]), guild=guild, total=int(row[0]), guild_images=images)

    def counts_many(self, keys: Sequence[tuple[int, int | None]]) -> dict[tuple[int, int | None], JobCounts]:
        """:meth:`counts` for several (owner, server) pairs in three grouped queries: admitting a
        burst of requests costs the same few round trips as admitting one."""
        active = Job.status.in_(ACTIVE_STATUSES)
        owners = sorted({owner for owner, _ in keys})
        guilds = sorted({guild for _, guild in keys if guild is not None})
        total = int(self._session.scalar(select(func.count()).select_from(Job).where(active)) or 0)
        per_owner = dict(self._session.execute(
            select(Job.owner_id, func.count()).where(active, Job.owner_id.in_(owners)).group_by(Job.owner_id)
        ).all()) if owners else {}
        per_guild = {guild: (int(count), int(images or 0)) for guild, count, images in self._session.execute(
            select(Job.guild_id, func.count(), func.coalesce(func.sum(Job.images), 0))
            .where(active, Job.guild_id.in_(guilds)).group_by(Job.guild_id)
        ).all()} if guilds else {}
        return {(owner, guild): JobCounts(user=int(per_owner.get(owner, 0)),
                                          guild=per_guild.get(guild, (0, 0))[0] if guild is not None else 0,
                                          total=total,
                                          guild_images=per_guild.get(guild, (0, 0))[1] if guild is not None else 0)
                for owner, guild in keys}

    def queued(self, after_id: int = 0) -> list[JobRecord]:
        """Queued jobs with an internal id above ``after_id``, oldest first."""
        query = select(Job).where(Job.status == JobStatus.QUEUED.value, Job.id > after_id).order_by(Job.id)
        return [_job_record(row) for row in self._session.scalars(query)]

    def active(self) -> list[JobRecord]:
        """Queued and running jobs, oldest first."""
        query = select(Job).where(Job.status.in_(ACTIVE_STATUSES)).order_by(Job.id)
        return [_job_record(row) for row in self._session.scalars(query)]

    def claim(self, public_ids: Sequence[str], worker_id: str, *, now: datetime | None = None) -> list[JobRecord]:
        """Queued → running for each job that is still queued; returns the ones taken."""
        if not public_ids:
            return []
        now = now or utcnow()
        self._session.execute(
            update(Job)
            .where(Job.public_id.in_(list(public_ids)), Job.status == JobStatus.QUEUED.value)
            .values(status=JobStatus.RUNNING.value, worker_id=worker_id, attempts=Job.attempts + 1,
                    started_at=now, heartbeat_at=now, progress=0.0, cancel_requested=False)
            .execution_options(synchronize_session=False)
        )
        query = select(Job).where(Job.public_id.in_(list(public_ids)), Job.status == JobStatus.RUNNING.value,
                                  Job.worker_id == worker_id, Job.started_at == now)
        rows = self._session.scalars(query.execution_options(populate_existing=True))
        return sorted((_job_record(row) for row in rows), key=lambda record: list(public_ids).index(record.public_id))

    def save_progress(self, progress: Mapping[str, float], *, now: datetime | None = None) -> None:
        """Progress (0–1) of running jobs; also their heartbeat."""
        now = now or utcnow()
        for public_id, fraction in progress.items():
            self._session.execute(
                update(Job)
                .where(Job.public_id == public_id, Job.status == JobStatus.RUNNING.value)
                .values(progress=float(fraction), heartbeat_at=now)
                .execution_options(synchronize_session=False)
            )

    def cancel_requested(self, public_ids: Iterable[str]) -> set[str]:
        """Which of these jobs someone asked to cancel (or that are cancelled already)."""
        ids = list(public_ids)
        if not ids:
            return set()
        query = select(Job.public_id).where(
            Job.public_id.in_(ids), or_(Job.cancel_requested.is_(True), Job.status == JobStatus.CANCELLED.value))
        return set(self._session.scalars(query))

    def request_cancel(self, public_id: str, *, now: datetime | None = None) -> JobStatus | None:
        """Queued → cancelled at once; running → ``cancel_requested`` for its worker.

        Returns the status afterwards (CANCELLED, RUNNING, or the finished state it already
        had); None when there is no such job.
        """
        now = now or utcnow()
        result = self._session.execute(
            update(Job).where(Job.public_id == public_id, Job.status == JobStatus.QUEUED.value)
            .values(status=JobStatus.CANCELLED.value, finished_at=now)
            .execution_options(synchronize_session=False))
        if _rowcount(result):
            return JobStatus.CANCELLED
        self._session.execute(
            update(Job).where(Job.public_id == public_id, Job.status == JobStatus.RUNNING.value)
            .values(cancel_requested=True)
            .execution_options(synchronize_session=False))
        status = self._session.scalar(select(Job.status).where(Job.public_id == public_id))
        return JobStatus(status) if status is not None else None

    def _claimed_by(self, public_id: str, worker_id: str, attempt: int):
        return update(Job).where(Job.public_id == public_id, Job.status == JobStatus.RUNNING.value,
                                 Job.worker_id == worker_id, Job.attempts == attempt)

    def _stale(self, public_id: str, worker_id: str, attempt: int) -> StaleState:
        row = self._session.execute(
            select(Job.status, Job.worker_id, Job.attempts).where(Job.public_id == public_id)).one_or_none()
        if row is None:
            raise NotFound("job", public_id)
        return StaleState("job", public_id, f"running (worker {worker_id}, attempt {attempt})",
                          f"{row.status} (worker {row.worker_id}, attempt {row.attempts})")

    def finish(
        self,
        public_id: str,
        *,
        worker_id: str,
        attempt: int,
        status: JobStatus | str,
        gpu_seconds: float = 0.0,
        result_image_ids: Sequence[str] | None = None,
        error: str | None = None,
        error_code: str | None = None,
        error_params: Mapping[str, Any] | None = None,
        now: datetime | None = None,
    ) -> JobRecord:
        """End a claimed job (done, failed or cancelled), only if that claim still holds.

        Raises :class:`StaleState` when the job was taken over (re-queued after its worker
        was presumed dead, or claimed again): nothing changes then.
        """
        final = coerce_enum(JobStatus, status, "status")
        if not final.finished:
            raise InvalidValue("status", final.value, "done, failed or cancelled")
        values: dict[str, Any] = {"status": final.value, "finished_at": now or utcnow(),
                                  "gpu_seconds": Job.gpu_seconds + float(gpu_seconds)}
        if final is JobStatus.DONE:
            values["progress"] = 1.0
        if result_image_ids is not None:
            values["result_image_ids"] = [str(item) for item in result_image_ids]
        if error_code is not None:
            values.update(error=error, error_code=error_code, error_params=dict(error_params or {}))
        result = self._session.execute(self._claimed_by(public_id, worker_id, attempt).values(**values)
                                       .execution_options(synchronize_session=False))
        if not _rowcount(result):
            raise self._stale(public_id, worker_id, attempt)
        return self._reload(public_id)

    def requeue(
        self,
        public_id: str,
        *,
        worker_id: str,
        attempt: int,
        refund_attempt: bool,
        gpu_seconds: float = 0.0,
        checkpoint: Mapping[str, Any] | None = None,
    ) -> JobRecord:
        """Running → queued again by the worker holding it (a chunk done, a shutdown).

        ``refund_attempt``: the run was interrupted on purpose, so it does not count
        towards ``max_attempts``.  A ``checkpoint`` replaces the stored one.
        """
        values: dict[str, Any] = {
            "status": JobStatus.QUEUED.value, "worker_id": None, "progress": 0.0,
            "attempts": Job.attempts - 1 if refund_attempt else Job.attempts,
            "gpu_seconds": Job.gpu_seconds + float(gpu_seconds),
        }
        if checkpoint is not None:
            values["checkpoint"] = dict(checkpoint)
        result = self._session.execute(self._claimed_by(public_id, worker_id, attempt).values(**values)
                                       .execution_options(synchronize_session=False))
        if not _rowcount(result):
            raise self._stale(public_id, worker_id, attempt)
        return self._reload(public_id)

    def recover(self, alive: Callable[[str | None], bool], *, crashed_error: str = "",
                now: datetime | None = None) -> JobRecovery:
        """Jobs left running by a worker that is not ``alive``: re-queued, or failed with
        ``queue.crashed`` once ``max_attempts`` runs were interrupted, or cancelled when
        that had been asked.  Each change is conditional on what was read, so a worker
        finishing at the same moment wins cleanly."""
        now = now or utcnow()
        rows = self._session.execute(
            select(Job.public_id, Job.worker_id, Job.attempts, Job.max_attempts, Job.cancel_requested)
            .where(Job.status == JobStatus.RUNNING.value)).all()
        requeued, failed, cancelled = [], [], []
        for row in rows:
            if alive(row.worker_id):
                continue
            same = update(Job).where(Job.public_id == row.public_id, Job.status == JobStatus.RUNNING.value,
                                     Job.attempts == row.attempts,
                                     Job.worker_id.is_(None) if row.worker_id is None else Job.worker_id == row.worker_id)
            if row.cancel_requested:
                values: dict[str, Any] = {"status": JobStatus.CANCELLED.value, "finished_at": now}
                target = cancelled
            elif row.attempts >= row.max_attempts:
                values = {"status": JobStatus.FAILED.value, "finished_at": now, "error": crashed_error or None,
                          "error_code": "queue.crashed", "error_params": {"attempts": row.attempts}}
                target = failed
            else:
                values = {"status": JobStatus.QUEUED.value, "worker_id": None, "progress": 0.0}
                target = requeued
            result = self._session.execute(same.values(**values).execution_options(synchronize_session=False))
            if _rowcount(result):
                target.append(row.public_id)
        return JobRecovery(tuple(requeued), tuple(failed), tuple(cancelled))

    def lock_dispatch(self) -> None:
        """Hold the queue's dispatch lock until this transaction ends: one process at a time
        chooses and claims the next jobs, on what every process has dispatched.

        PostgreSQL: a transaction-level advisory lock (other writers are not held up).  SQLite:
        the database's write lock, taken by a write that changes nothing — it must be the
        transaction's first statement, so the reads after it see every commit before it.
        """
        dialect = self._session.get_bind().dialect.name
        if dialect == "postgresql":
            self._session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": DISPATCH_LOCK_KEY})
        else:
            self._session.execute(update(Job).where(Job.id == -1).values(progress=Job.progress)
                                  .execution_options(synchronize_session=False))

    def running(self) -> list[JobRecord]:
        """Jobs running now, in any process."""
        query = select(Job).where(Job.status == JobStatus.RUNNING.value).order_by(Job.id)
        return [_job_record(row) for row in self._session.scalars(query)]

    def finished_usage(self, since: datetime) -> list[FinishedUsage]:
        """GPU time of jobs finished since ``since`` (fair-share memory after a restart)."""
        query = select(Job.owner_id, Job.guild_id, Job.gpu_seconds, Job.finished_at).where(
            Job.finished_at >= since, Job.gpu_seconds > 0)
        return [FinishedUsage(row.owner_id, row.guild_id, row.gpu_seconds, row.finished_at)
                for row in self._session.execute(query)]

    def _reload(self, public_id: str) -> JobRecord:
        row = self._session.scalar(
            select(Job).where(Job.public_id == public_id).execution_options(populate_existing=True))
        if row is None:
            raise NotFound("job", public_id)
        return _job_record(row)


def _worker_record(row: Worker) -> WorkerRecord:
    return WorkerRecord(worker_id=row.worker_id, device=row.device, host=row.host, pid=row.pid,
                        state=WorkerState(row.state), running=list(row.running), stats=dict(row.stats),
                        started_at=row.started_at, heartbeat_at=row.heartbeat_at)


class WorkerRepository:
    """Queue workers' heartbeats (one row per worker, replaced at every beat)."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def beat(
        self,
        worker_id: str,
        *,
        device: str,
        host: str,
        pid: int,
        state: WorkerState | str,
        running: Iterable[str] = (),
        stats: Mapping[str, Any] | None = None,
        started_at: datetime | None = None,
        now: datetime | None = None,
    ) -> WorkerRecord:
        now = now or utcnow()
        row = self._session.get(Worker, worker_id)
        if row is None:
            row = Worker(worker_id=worker_id, started_at=started_at or now)
            self._session.add(row)
        row.device, row.host, row.pid = device, host, pid
        row.state = coerce_enum(WorkerState, state, "state").value
        row.running = [str(item) for item in running]
        row.stats = dict(stats or {})
        row.heartbeat_at = now
        self._session.flush()
        return _worker_record(row)

    def all(self) -> list[WorkerRecord]:
        return [_worker_record(row) for row in self._session.scalars(select(Worker).order_by(Worker.heartbeat_at))]

    def prune(self, before: datetime) -> int:
        """Forget workers silent since before ``before`` (they are long gone)."""
        rows = list(self._session.scalars(select(Worker).where(Worker.heartbeat_at < before)))
        for row in rows:
            self._session.delete(row)
        self._session.flush()
        return len(rows)


_UPSERTS: dict[str, Any] = {}


def _usage_upsert(dialect: str) -> Any:
    """``INSERT … ON CONFLICT DO UPDATE`` adding to a day's counters (SQLite, PostgreSQL);
    built once per dialect — it runs with every finished job."""
    if dialect not in ("sqlite", "postgresql"):
        return None
    if dialect not in _UPSERTS:
        if dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        else:
            from sqlalchemy.dialects.postgresql import insert
        statement = insert(GuildUsage).values(
            guild_id=bindparam("usage_guild"), day=bindparam("usage_day"), images=bindparam("usage_images"),
            gpu_seconds=bindparam("usage_seconds"))
        _UPSERTS[dialect] = statement.on_conflict_do_update(
            index_elements=[GuildUsage.guild_id, GuildUsage.day],
            set_={"images": GuildUsage.images + statement.excluded.images,
                  "gpu_seconds": GuildUsage.gpu_seconds + statement.excluded.gpu_seconds})
    return _UPSERTS[dialect]


class UsageRepository:
    """Per-server, per-UTC-day counters for daily quotas."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def get(self, guild_id: int, day: date) -> UsageRecord:
        row = self._session.get(GuildUsage, (guild_id, day))
        if row is None:
            return UsageRecord(guild_id=guild_id, day=day)
        return UsageRecord(guild_id=guild_id, day=day, images=row.images, gpu_seconds=row.gpu_seconds)

    def add(self, guild_id: int, day: date, *, images: int = 0, gpu_seconds: float = 0.0) -> None:
        """Add to the day's counters (an upsert: safe when two processes count at once)."""
        if images < 0 or gpu_seconds < 0:
            raise InvalidValue("usage", (images, gpu_seconds), "amounts of 0 or more")
        dialect = self._session.get_bind().dialect.name
        upsert = _usage_upsert(dialect)
        if upsert is not None:
            self._session.execute(upsert, {"usage_guild": guild_id, "usage_day": day, "usage_images": images,
                                           "usage_seconds": float(gpu_seconds)})
            return
        row = self._session.get(GuildUsage, (guild_id, day))  # other databases: read, then write
        if row is None:
            self._session.add(GuildUsage(guild_id=guild_id, day=day, images=images, gpu_seconds=float(gpu_seconds)))
        else:
            row.images += images
            row.gpu_seconds += float(gpu_seconds)
        self._session.flush()


def _user_record(row: UserSettings | None, user_id: int) -> UserSettingsRecord:
    if row is None:
        return UserSettingsRecord(user_id=user_id)
    return UserSettingsRecord(
        user_id=row.user_id, defaults=row.defaults, locale=row.locale, updated_at=row.updated_at
    )


def _guild_record(row: GuildSettings | None, guild_id: int) -> GuildSettingsRecord:
    if row is None:
        return GuildSettingsRecord(guild_id=guild_id)
    return GuildSettingsRecord(
        guild_id=row.guild_id,
        defaults=row.defaults,
        allowed_models=list(row.allowed_models) if row.allowed_models is not None else None,
        limits=dict(row.limits),
        channels=dict(row.channels),
        safety=dict(row.safety),
        updated_at=row.updated_at,
        trainer_role_id=row.trainer_role_id,
        folder_loras=bool(row.folder_loras) if row.folder_loras is not None else True,
    )


class SettingsRepository:
    """Per-user and per-server settings, keyed by the Discord id (0 = the local operator).

    Reading settings that were never saved gives the empty defaults, with ``updated_at`` None.
    """

    def __init__(self, session: Session) -> None:
        self._session = session

    def get_user(self, user_id: int) -> UserSettingsRecord:
        return _user_record(self._session.get(UserSettings, user_id), user_id)

    def set_user(
        self, user_id: int, *, defaults: str | _Unset = UNSET, locale: str | None | _Unset = UNSET
    ) -> UserSettingsRecord:
        """Save the given fields (``locale=None`` clears it); the others are kept."""
        row = self._session.get(UserSettings, user_id)
        if row is None:
            row = UserSettings(user_id=user_id, defaults="")
            self._session.add(row)
        if not isinstance(defaults, _Unset):
            row.defaults = defaults
        if not isinstance(locale, _Unset):
            row.locale = locale
        row.updated_at = utcnow()
        self._session.flush()
        return _user_record(row, user_id)

    def get_guild(self, guild_id: int) -> GuildSettingsRecord:
        return _guild_record(self._session.get(GuildSettings, guild_id), guild_id)

    def set_guild(
        self,
        guild_id: int,
        *,
        defaults: str | _Unset = UNSET,
        allowed_models: Iterable[str] | None | _Unset = UNSET,
        limits: Mapping[str, Any] | _Unset = UNSET,
        channels: Mapping[str, Any] | _Unset = UNSET,
        safety: Mapping[str, Any] | _Unset = UNSET,
        trainer_role_id: int | None | _Unset = UNSET,
        folder_loras: bool | _Unset = UNSET,
    ) -> GuildSettingsRecord:
        """Save the given fields (``allowed_models=None``: every model); the others are kept."""
        row = self._session.get(GuildSettings, guild_id)
        if row is None:
            row = GuildSettings(guild_id=guild_id, defaults="", limits={}, channels={}, safety={}, folder_loras=True)
            self._session.add(row)
        if not isinstance(defaults, _Unset):
            row.defaults = defaults
        if not isinstance(allowed_models, _Unset):
            row.allowed_models = list(allowed_models) if allowed_models is not None else None
        if not isinstance(limits, _Unset):
            row.limits = dict(limits)
        if not isinstance(channels, _Unset):
            row.channels = dict(channels)
        if not isinstance(safety, _Unset):
            row.safety = dict(safety)
        if not isinstance(trainer_role_id, _Unset):
            row.trainer_role_id = trainer_role_id
        if not isinstance(folder_loras, _Unset):
            row.folder_loras = bool(folder_loras)
        row.updated_at = utcnow()
        self._session.flush()
        return _guild_record(row, guild_id)

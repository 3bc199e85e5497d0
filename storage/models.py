"""The database tables, as SQLAlchemy 2 typed declarative models.

Conventions that the migrations rely on:
- every constraint and index is named by ``NAMING_CONVENTION`` (Alembic needs names to
  alter or drop them, above all in SQLite batch mode);
- datetimes are :class:`UTCDateTime`: stored as UTC, always read back timezone-aware;
- defaults are callables or constants evaluated per row, never values computed at import;
- Discord snowflakes are ``BigInteger``; surrogate keys are ``BigInteger`` except on SQLite,
  where only ``INTEGER PRIMARY KEY`` is the auto-incrementing rowid;
- a CHECK on a closed set of values (a job's status and class, a worker's state, a LoRA's
  status and source) is built from its enum in :mod:`storage.records`; the names of
  operations (``images.relation``) and job kinds (``jobs.kind``) have none since migration
  0005 — they are checked on write against those enums, so a new operation or kind needs no
  migration.

The job queue (migration 0002) adds to ``jobs`` what claiming, batching, quotas and
cancelling need, plus ``workers`` (heartbeats) and ``guild_usage`` (daily quotas).
Server LoRAs (migration 0003) add ``datasets``, ``dataset_images`` and ``loras``, and two
``guild_settings`` columns (the trainer role, whether the operator's folder LoRAs apply).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    func,
    select,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, aliased, column_property, mapped_column
from sqlalchemy.types import TypeDecorator

from storage.records import JobClass, JobStatus, LoraSource, LoraStatus, WorkerState

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}



def utcnow() -> datetime:
    """The current time, timezone-aware UTC (the default of every timestamp column)."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is UTC in the database and timezone-aware in Python.

    PostgreSQL stores ``timestamptz``.  SQLite has no time zones: the value is stored as
    naive UTC text (which sorts correctly) and marked UTC again when read.  Naive datetimes
    are refused rather than guessed at.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime, got {type(value).__name__}")
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value.isoformat()} refused: give a timezone-aware value")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


#: Auto-incrementing surrogate key: BIGINT, but INTEGER (the rowid) on SQLite.
SurrogateKey = BigInteger().with_variant(Integer(), "sqlite")


def _in(column: str, enum: type[StrEnum]) -> str:
    """A CHECK that ``column`` holds one of ``enum``'s values: the enum is the one list of them
    (the migrations that made the constraint wrote the same values; a test compares)."""
    return f"{column} IN ({', '.join(repr(member.value) for member in enum)})"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        datetime: UTCDateTime(),
        dict[str, Any]: JSON(),
        list[str]: JSON(),
    }


class Job(Base):
    """A unit of GPU work in the durable queue.

    A worker *claims* a queued job (status running, ``worker_id`` set, ``attempts`` + 1) with
    a conditional update; finishing is conditional on the same worker and attempt, so a job
    re-queued after its worker was presumed dead can never record two results.
    ``cancel_requested`` asks the owning worker (maybe in another process) to stop it.
    """

    __tablename__ = "jobs"
    __table_args__ = (
        CheckConstraint(_in("status", JobStatus), name="status"),
        CheckConstraint("attempts >= 0", name="attempts"),
        CheckConstraint("max_attempts >= 1", name="max_attempts"),
        CheckConstraint(_in("job_class", JobClass), name="job_class"),
        CheckConstraint("images >= 1", name="images"),
        Index("ix_jobs_status_priority_created_at", "status", "priority", "created_at"),
        Index("ix_jobs_owner_id_status", "owner_id", "status"),
        Index("ix_jobs_guild_id_created_at", "guild_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(SurrogateKey, primary_key=True)
    public_id: Mapped[str] = mapped_column(String(16), unique=True)
    kind: Mapped[str] = mapped_column(String(16))  # a records.JobKind, checked on write (no CHECK: 0005)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    priority: Mapped[int] = mapped_column(Integer, default=0)
    owner_id: Mapped[int] = mapped_column(BigInteger)
    guild_id: Mapped[int | None] = mapped_column(BigInteger)
    channel_id: Mapped[int | None] = mapped_column(BigInteger)
    request: Mapped[dict[str, Any]] = mapped_column(JSON)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    error: Mapped[str | None] = mapped_column(Text)
    result_image_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    reply_ref: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    gpu_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), index=True)  # recent usage (0002)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # -- the queue (0002) --
    job_class: Mapped[str] = mapped_column(String(16), default="interactive")
    batch_key: Mapped[str | None] = mapped_column(String(64))  # equal keys may share one pipeline call
    images: Mapped[int] = mapped_column(Integer, default=1)  # quota and batch-size accounting
    work: Mapped[float] = mapped_column(Float, default=0.0)  # estimated size (megapixel-steps)
    cost_group: Mapped[str] = mapped_column(String(255), default="")  # jobs with alike step times (model)
    worker_id: Mapped[str | None] = mapped_column(String(128), index=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    checkpoint: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # a long job's state between chunks
    error_code: Mapped[str | None] = mapped_column(String(64))  # catalogue code: the bot localizes it
    error_params: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class Image(Base):
    """One stored image: its recipe, where it was made, its file, and where it came from."""

    __tablename__ = "images"
    __table_args__ = (
        CheckConstraint("batch_index >= 0", name="batch_index"),
        CheckConstraint("file_size >= 0", name="file_size"),
        Index("ix_images_owner_id_created_at", "owner_id", "created_at"),
        # Also serves every lookup by guild_id alone (leading column).
        Index("ix_images_guild_id_created_at", "guild_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(SurrogateKey, primary_key=True)
    public_id: Mapped[str] = mapped_column(String(16), unique=True)
    owner_id: Mapped[int] = mapped_column(BigInteger)
    guild_id: Mapped[int | None] = mapped_column(BigInteger)
    channel_id: Mapped[int | None] = mapped_column(BigInteger)
    message_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"), index=True)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("images.id", ondelete="SET NULL"), index=True)
    relation: Mapped[str | None] = mapped_column(String(16))  # a records.ImageRelation, checked on write (no CHECK: 0005)
    batch_index: Mapped[int] = mapped_column(Integer, default=0)
    prompt: Mapped[str] = mapped_column(Text)
    negative_prompt: Mapped[str | None] = mapped_column(Text)
    seed: Mapped[int] = mapped_column(BigInteger)
    steps: Mapped[int] = mapped_column(Integer)
    cfg: Mapped[float] = mapped_column(Float)
    sampler: Mapped[str] = mapped_column(String(64))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    model: Mapped[str] = mapped_column(String(255))
    model_hash: Mapped[str | None] = mapped_column(String(64))
    lora_hashes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    request: Mapped[dict[str, Any]] = mapped_column(JSON)
    canonical: Mapped[str] = mapped_column(Text)
    file_path: Mapped[str] = mapped_column(String(512))
    content_sha256: Mapped[str] = mapped_column(String(64))
    file_size: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    if TYPE_CHECKING:  # column properties, mapped below
        parent_public_id: Mapped[str | None]
        job_public_id: Mapped[str | None]


# Public ids of the linked rows, loaded with each image (internal keys stay inside storage).
_parent = aliased(Image)
Image.parent_public_id = column_property(
    select(_parent.public_id).where(_parent.id == Image.parent_id).scalar_subquery()
)
Image.job_public_id = column_property(select(Job.public_id).where(Job.id == Image.job_id).scalar_subquery())


class Worker(Base):
    """A queue worker's heartbeat: alive, busy, hung or stopped; what it runs; its step times."""

    __tablename__ = "workers"
    __table_args__ = (CheckConstraint(_in("state", WorkerState), name="state"),)

    worker_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    device: Mapped[str] = mapped_column(String(64))
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))
    running: Mapped[list[str]] = mapped_column(JSON, default=list)
    stats: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class GuildUsage(Base):
    """Images made and GPU-seconds used by a server on one UTC day (daily quotas)."""

    __tablename__ = "guild_usage"
    __table_args__ = (
        CheckConstraint("images >= 0", name="images"),
        CheckConstraint("gpu_seconds >= 0", name="gpu_seconds"),
    )

    guild_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    images: Mapped[int] = mapped_column(Integer, default=0)
    gpu_seconds: Mapped[float] = mapped_column(Float, default=0.0)


class UserSettings(Base):
    __tablename__ = "user_settings"

    user_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    defaults: Mapped[str] = mapped_column(Text, default="")
    locale: Mapped[str | None] = mapped_column(String(16))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class GuildSettings(Base):
    __tablename__ = "guild_settings"

    guild_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    defaults: Mapped[str] = mapped_column(Text, default="")
    allowed_models: Mapped[list[str] | None] = mapped_column(JSON)
    limits: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    channels: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    safety: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    # -- server LoRAs (0003) --
    trainer_role_id: Mapped[int | None] = mapped_column(BigInteger)  # may train/import/delete LoRAs
    folder_loras: Mapped[bool] = mapped_column(Boolean, default=True)  # the operator's loras/ folder applies


class Dataset(Base):
    """A named set of training images, owned by a server (or by a user in direct messages).

    ``scope_key`` is the namespace names live in: ``g:<guild id>`` for a server,
    ``u:<user id>`` for direct messages and the local operator (``u:0``).  Names are unique
    per namespace, case-insensitively (``name_key`` is the case-folded name).
    """

    __tablename__ = "datasets"
    __table_args__ = (UniqueConstraint("scope_key", "name_key"),)

    id: Mapped[int] = mapped_column(SurrogateKey, primary_key=True)
    public_id: Mapped[str] = mapped_column(String(16), unique=True)
    guild_id: Mapped[int | None] = mapped_column(BigInteger)
    owner_id: Mapped[int] = mapped_column(BigInteger)
    scope_key: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(64))
    name_key: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    if TYPE_CHECKING:  # column properties, mapped below (they select from DatasetImage)
        image_count: Mapped[int]
        total_bytes: Mapped[int]


class DatasetImage(Base):
    """One validated, re-encoded training image (a PNG under the datasets folder) and its caption.

    ``sha256`` identifies the decoded pixels (``generation.datasets.CleanImage``): the same
    picture twice in one dataset is refused.  ``original_name`` is for display only, never a path.
    """

    __tablename__ = "dataset_images"
    __table_args__ = (
        UniqueConstraint("dataset_id", "sha256"),
        CheckConstraint("width > 0 AND height > 0", name="size"),
        CheckConstraint("bytes >= 0", name="bytes"),
    )

    id: Mapped[int] = mapped_column(SurrogateKey, primary_key=True)
    public_id: Mapped[str] = mapped_column(String(16), unique=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    file_path: Mapped[str] = mapped_column(String(512))
    sha256: Mapped[str] = mapped_column(String(64))
    caption: Mapped[str | None] = mapped_column(Text)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    original_name: Mapped[str] = mapped_column(String(255), default="")
    bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    if TYPE_CHECKING:  # a column property, mapped below
        dataset_public_id: Mapped[str]


Dataset.image_count = column_property(
    select(func.count(DatasetImage.id)).where(DatasetImage.dataset_id == Dataset.id).scalar_subquery())
Dataset.total_bytes = column_property(
    select(func.coalesce(func.sum(DatasetImage.bytes), 0)).where(DatasetImage.dataset_id == Dataset.id)
    .scalar_subquery())
DatasetImage.dataset_public_id = column_property(
    select(Dataset.public_id).where(Dataset.id == DatasetImage.dataset_id).scalar_subquery())


class Lora(Base):
    """A server's LoRA: trained here from a dataset, or imported from a ``.safetensors`` file.

    Names live in the same namespaces as datasets (``scope_key``).  ``name_key`` is the
    case-folded name while the LoRA holds its name, NULL once it is deleted (so the name is
    free again; NULLs never collide in a unique constraint).  A ``training`` row reserves
    its name from submission on; its file exists only once it is ``ready`` (file first,
    then the row, in the transaction that finishes the job).
    """

    __tablename__ = "loras"
    __table_args__ = (
        UniqueConstraint("scope_key", "name_key"),
        CheckConstraint(_in("status", LoraStatus), name="status"),
        CheckConstraint(_in("source", LoraSource), name="source"),
        CheckConstraint("size_bytes >= 0", name="size_bytes"),
    )

    id: Mapped[int] = mapped_column(SurrogateKey, primary_key=True)
    public_id: Mapped[str] = mapped_column(String(16), unique=True)
    guild_id: Mapped[int | None] = mapped_column(BigInteger)
    owner_id: Mapped[int] = mapped_column(BigInteger)
    scope_key: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(64))
    name_key: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    source: Mapped[str] = mapped_column(String(16))
    file_path: Mapped[str | None] = mapped_column(String(512))
    sha256: Mapped[str | None] = mapped_column(String(64))
    short_hash: Mapped[str | None] = mapped_column(String(12))  # A1111 "Lora hashes" (12 hex)
    base_model: Mapped[str] = mapped_column(String(255))
    base_model_hash: Mapped[str | None] = mapped_column(String(64))
    family: Mapped[str] = mapped_column(String(16))
    rank: Mapped[int] = mapped_column(Integer)
    alpha: Mapped[float] = mapped_column(Float)
    steps: Mapped[int] = mapped_column(Integer, default=0)
    dataset_id: Mapped[int | None] = mapped_column(ForeignKey("datasets.id", ondelete="SET NULL"), index=True)
    dataset_name: Mapped[str | None] = mapped_column(String(64))  # kept after the dataset is deleted
    dataset_size: Mapped[int] = mapped_column(Integer, default=0)
    trigger_words: Mapped[list[str]] = mapped_column(JSON, default=list)
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # training settings, import details
    job_public_id: Mapped[str | None] = mapped_column(String(16))
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    if TYPE_CHECKING:  # column properties, mapped below
        job_status: Mapped[str | None]
        dataset_public_id: Mapped[str | None]


# The status of the job that trains it: a training LoRA whose job ended without it is failed.
Lora.job_status = column_property(select(Job.status).where(Job.public_id == Lora.job_public_id).scalar_subquery())
Lora.dataset_public_id = column_property(
    select(Dataset.public_id).where(Dataset.id == Lora.dataset_id).scalar_subquery())


class Upload(Base):
    """A picture someone sent to start an image from (img2img): validated, re-encoded as PNG.

    Visible where an image made in the same place is (``scope_key``: its server, or its
    owner's direct messages); its ``public_id`` shares the images' id space, so ``--image ID``
    names either.  The same picture sent twice in one place is one upload (``sha256`` of the
    decoded pixels).
    """

    __tablename__ = "uploads"
    __table_args__ = (
        UniqueConstraint("scope_key", "sha256"),
        CheckConstraint("width > 0 AND height > 0", name="size"),
        CheckConstraint("bytes >= 0", name="bytes"),
    )

    id: Mapped[int] = mapped_column(SurrogateKey, primary_key=True)
    public_id: Mapped[str] = mapped_column(String(16), unique=True)
    owner_id: Mapped[int] = mapped_column(BigInteger)
    guild_id: Mapped[int | None] = mapped_column(BigInteger)
    scope_key: Mapped[str] = mapped_column(String(32))
    sha256: Mapped[str] = mapped_column(String(64))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    bytes: Mapped[int] = mapped_column(BigInteger)
    file_path: Mapped[str] = mapped_column(String(512))
    original_name: Mapped[str] = mapped_column(String(255), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

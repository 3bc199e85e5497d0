"""Plain values that cross the storage boundary: what callers give and what repositories return.

All frozen dataclasses.  JSON-ish fields are plain ``dict``/``list`` values as read; treat them
as read-only.  Datetimes are timezone-aware UTC.

Storage imports none of our other packages (``tests/storage/test_storage_boundaries.py``), so
the enums and values it shares with the engine are written here a second time — and
``tests/storage/test_value_mirrors.py`` proves each one equal to the engine's, member by
member and field by field: ``ImageRelation`` = ``generation.operations.Relation``;
``JobKind`` = "generate", those operations and "train"; ``JobStatus`` = the queue's
``JobState``; ``JobClass``, ``WorkerState``; ``JobCounts`` = ``PendingCounts``,
``JobRecovery`` = ``Recovery``, ``UsageRecord`` ⊇ ``DailyUsage``, ``WorkerRecord`` ≅
``WorkerStatus``.  The database's CHECK constraints are built from these enums
(:mod:`storage.models`), except for operation names and job kinds: those are checked on write
(:func:`coerce_enum`), so a new operation or kind needs no migration.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from typing import Any, TypeVar

from storage.errors import InvalidValue

E = TypeVar("E", bound=StrEnum)


class ImageRelation(StrEnum):
    """How an image was made from its parent (``generation.operations.Relation``)."""

    REROLL = "reroll"
    TWEAK = "tweak"
    UPSCALE = "upscale"
    VARY = "vary"


class JobKind(StrEnum):
    """What a job does: a plain generation, one of the operations, or a LoRA training."""

    GENERATE = "generate"
    REROLL = "reroll"
    TWEAK = "tweak"
    UPSCALE = "upscale"
    VARY = "vary"
    TRAIN = "train"


class JobClass(StrEnum):
    """Interactive jobs go before long ones (training), which run in chunks."""

    INTERACTIVE = "interactive"
    LONG = "long"


class WorkerState(StrEnum):
    """What a worker's heartbeat says it is doing (``generation.queue.WorkerState``)."""

    IDLE = "idle"
    BUSY = "busy"
    HUNG = "hung"
    STOPPED = "stopped"


class JobStatus(StrEnum):
    """Where a job is in its life (``generation.queue.JobState``)."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobStatus.DONE, JobStatus.FAILED, JobStatus.CANCELLED)


def coerce_enum(enum: type[E], value: object, name: str) -> E:
    """``value`` as a member of ``enum``, or :class:`InvalidValue` naming what is allowed."""
    try:
        return enum(value)
    except ValueError:
        raise InvalidValue(name, value, ", ".join(member.value for member in enum)) from None


#: owner_id of the local operator (the person at the command line).
OPERATOR_USER_ID = 0


@dataclass(frozen=True, slots=True)
class Scope:
    """Who is asking, and from where: the input of every access check.

    ``guild_id`` is the server the request comes from (``None`` = direct messages or the
    command line).  ``operator`` is the local operator, who sees everything.
    """

    user_id: int
    guild_id: int | None = None
    operator: bool = False

    @classmethod
    def local_operator(cls) -> Scope:
        return cls(user_id=OPERATOR_USER_ID, guild_id=None, operator=True)

    def can_see(self, owner_id: int, guild_id: int | None) -> bool:
        """The visibility rule for things made in a server or in direct messages.

        Made in a server: visible from that same server only (to everyone in it).
        Made in direct messages: visible to its owner only, from direct messages.
        """
        if self.operator:
            return True
        if guild_id is not None:
            return self.guild_id == guild_id
        return self.guild_id is None and self.user_id == owner_id


@dataclass(frozen=True, slots=True)
class NewImage:
    """What a caller knows about a freshly generated image; storage adds ids, file and time."""

    owner_id: int
    prompt: str
    seed: int
    steps: int
    cfg: float
    sampler: str
    width: int
    height: int
    model: str
    request: Mapping[str, Any]
    canonical: str
    negative_prompt: str | None = None
    model_hash: str | None = None
    lora_hashes: Mapping[str, str] = field(default_factory=dict)
    guild_id: int | None = None
    channel_id: int | None = None
    message_id: int | None = None
    batch_index: int = 0
    parent_public_id: str | None = None
    relation: ImageRelation | None = None
    job_public_id: str | None = None

    def __post_init__(self) -> None:
        if self.relation is not None:
            object.__setattr__(self, "relation", coerce_enum(ImageRelation, self.relation, "relation"))
        if (self.relation is None) != (self.parent_public_id is None):
            raise InvalidValue(
                "relation", self.relation, "a relation together with a parent image, or neither"
            )
        if self.batch_index < 0:
            raise InvalidValue("batch_index", self.batch_index, "0 or more")


@dataclass(frozen=True, slots=True)
class ImageRecord:
    id: int
    public_id: str
    owner_id: int
    guild_id: int | None
    channel_id: int | None
    message_id: int | None
    job_public_id: str | None
    parent_public_id: str | None
    relation: ImageRelation | None
    batch_index: int
    prompt: str
    negative_prompt: str | None
    seed: int
    steps: int
    cfg: float
    sampler: str
    width: int
    height: int
    model: str
    model_hash: str | None
    lora_hashes: dict[str, str]
    request: dict[str, Any]
    canonical: str
    file_path: str
    content_sha256: str
    file_size: int
    created_at: datetime
    deleted_at: datetime | None

    @property
    def deleted(self) -> bool:
        return self.deleted_at is not None


@dataclass(frozen=True, slots=True)
class NewJob:
    kind: JobKind
    owner_id: int
    request: Mapping[str, Any]
    guild_id: int | None = None
    channel_id: int | None = None
    priority: int = 0
    max_attempts: int = 3
    reply_ref: Mapping[str, Any] | None = None
    job_class: JobClass = JobClass.INTERACTIVE
    batch_key: str | None = None
    images: int = 1
    work: float = 0.0
    cost_group: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", coerce_enum(JobKind, self.kind, "kind"))
        object.__setattr__(self, "job_class", coerce_enum(JobClass, self.job_class, "job_class"))
        if self.max_attempts < 1:
            raise InvalidValue("max_attempts", self.max_attempts, "1 or more")
        if self.images < 1:
            raise InvalidValue("images", self.images, "1 or more")
        if self.batch_key is not None and len(self.batch_key) > 64:
            raise InvalidValue("batch_key", self.batch_key, "at most 64 characters (a digest)")


@dataclass(frozen=True, slots=True)
class JobRecord:
    id: int
    public_id: str
    kind: JobKind
    status: JobStatus
    priority: int
    owner_id: int
    guild_id: int | None
    channel_id: int | None
    request: dict[str, Any]
    attempts: int
    max_attempts: int
    progress: float
    error: str | None
    result_image_ids: list[str]
    reply_ref: dict[str, Any] | None
    gpu_seconds: float
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None
    job_class: JobClass = JobClass.INTERACTIVE
    batch_key: str | None = None
    images: int = 1
    work: float = 0.0
    cost_group: str = ""
    worker_id: str | None = None
    cancel_requested: bool = False
    checkpoint: dict[str, Any] | None = None
    error_code: str | None = None
    error_params: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class JobCounts:
    """Queued or running jobs: the user's, the server's, everyone's; the server's images."""

    user: int = 0
    guild: int = 0
    total: int = 0
    guild_images: int = 0


@dataclass(frozen=True, slots=True)
class JobRecovery:
    """What :meth:`JobRepository.recover` did with jobs whose worker is gone."""

    requeued: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()
    cancelled: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class FinishedUsage:
    """GPU time of a finished job (rebuilds the queue's fair-share memory after a restart)."""

    owner_id: int
    guild_id: int | None
    gpu_seconds: float
    finished_at: datetime


@dataclass(frozen=True, slots=True)
class WorkerRecord:
    """A worker's heartbeat row: ``generation.queue.WorkerStatus`` field by field, in storage's
    own types (UTC datetimes, lists)."""

    worker_id: str
    device: str
    host: str
    pid: int
    state: WorkerState
    running: list[str]
    stats: dict[str, Any]
    started_at: datetime
    heartbeat_at: datetime


@dataclass(frozen=True, slots=True)
class UsageRecord:
    guild_id: int
    day: date
    images: int = 0
    gpu_seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class UserSettingsRecord:
    """A user's saved defaults; ``updated_at`` is ``None`` when nothing was ever saved."""

    user_id: int
    defaults: str = ""
    locale: str | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class GuildSettingsRecord:
    """A server's settings; ``allowed_models`` ``None`` means every model is allowed."""

    guild_id: int
    defaults: str = ""
    allowed_models: list[str] | None = None
    limits: dict[str, Any] = field(default_factory=dict)
    channels: dict[str, Any] = field(default_factory=dict)
    safety: dict[str, Any] = field(default_factory=dict)
    updated_at: datetime | None = None
    trainer_role_id: int | None = None  # members with this role may train, import and delete LoRAs
    folder_loras: bool = True  # the operator's folder LoRAs ($BRUSHWORK_HOME/loras) can be used here


# ---------------------------------------------------------------------- server LoRAs (0003)


class LoraStatus(StrEnum):
    TRAINING = "training"
    READY = "ready"
    FAILED = "failed"
    DELETED = "deleted"


class LoraSource(StrEnum):
    TRAINED = "trained"
    IMPORTED = "imported"


def scope_key(scope: Scope) -> str:
    """The namespace a scope's datasets and LoRAs are named in.

    A server's (``g:<guild id>``) is shared by everyone in it; outside a server (direct
    messages, the command line) each user has their own (``u:<user id>``; the local operator
    is ``u:0``).  The operator *sees* every row, but names are looked up in one namespace.
    """
    if scope.guild_id is not None:
        return f"g:{scope.guild_id}"
    return f"u:{scope.user_id}"


@dataclass(frozen=True, slots=True)
class DatasetRecord:
    public_id: str
    guild_id: int | None
    owner_id: int
    name: str
    image_count: int
    total_bytes: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class NewDatasetImage:
    """A validated image whose file is already stored (see ``storage.assets``)."""

    file_path: str
    sha256: str  # of the decoded pixels: duplicates are refused per dataset
    width: int
    height: int
    bytes: int
    caption: str | None = None
    original_name: str = ""

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0:
            raise InvalidValue("size", (self.width, self.height), "positive width and height")
        if self.bytes < 0:
            raise InvalidValue("bytes", self.bytes, "0 or more")


@dataclass(frozen=True, slots=True)
class DatasetImageRecord:
    public_id: str
    dataset_public_id: str
    file_path: str
    sha256: str
    caption: str | None
    width: int
    height: int
    original_name: str
    bytes: int
    created_at: datetime


@dataclass(frozen=True, slots=True)
class NewLora:
    """A LoRA row: ``training`` (reserved at submission, no file yet) or ``ready`` (imported)."""

    name: str
    owner_id: int
    base_model: str
    family: str
    rank: int
    alpha: float
    guild_id: int | None = None
    status: LoraStatus = LoraStatus.TRAINING
    source: LoraSource = LoraSource.TRAINED
    steps: int = 0
    base_model_hash: str | None = None
    dataset_public_id: str | None = None
    dataset_name: str | None = None
    dataset_size: int = 0
    trigger_words: tuple[str, ...] = ()
    settings: Mapping[str, Any] = field(default_factory=dict)
    job_public_id: str | None = None
    file_path: str | None = None
    sha256: str | None = None
    short_hash: str | None = None
    size_bytes: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", coerce_enum(LoraStatus, self.status, "status"))
        object.__setattr__(self, "source", coerce_enum(LoraSource, self.source, "source"))
        if self.status not in (LoraStatus.TRAINING, LoraStatus.READY):
            raise InvalidValue("status", self.status.value, "training or ready")
        if self.status is LoraStatus.READY and not (self.file_path and self.sha256 and self.short_hash):
            raise InvalidValue("file_path", self.file_path, "a stored file with its hashes for a ready LoRA")
        if self.size_bytes < 0:
            raise InvalidValue("size_bytes", self.size_bytes, "0 or more")


@dataclass(frozen=True, slots=True)
class LoraRecord:
    """A LoRA as stored.  ``status`` is the effective one: a ``training`` row whose job ended
    without finishing it (cancelled, failed, or lost before it was submitted) reads as failed."""

    public_id: str
    guild_id: int | None
    owner_id: int
    name: str
    status: LoraStatus
    source: LoraSource
    file_path: str | None
    sha256: str | None
    short_hash: str | None
    base_model: str
    base_model_hash: str | None
    family: str
    rank: int
    alpha: float
    steps: int
    dataset_public_id: str | None
    dataset_name: str | None
    dataset_size: int
    trigger_words: list[str]
    settings: dict[str, Any]
    job_public_id: str | None
    job_status: JobStatus | None
    size_bytes: int
    created_at: datetime
    updated_at: datetime

    @property
    def ready(self) -> bool:
        return self.status is LoraStatus.READY


@dataclass(frozen=True, slots=True)
class NamespaceUsage:
    """What one namespace (a server, or a user outside servers) holds: for quotas."""

    datasets: int = 0
    images: int = 0
    image_bytes: int = 0
    loras: int = 0  # training or ready
    lora_bytes: int = 0

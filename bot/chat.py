"""The Discord-free half of the bot: what a chat front end asks for, as plain values in and out.

The cogs stay thin (parse the interaction → build an :class:`Origin` and a request → call ONE
method here → reply).  Everything that decides something lives here and is unit-tested
without Discord: which settings apply (server defaults, the user's, none of the server's in
direct messages), the server's safety policy outside age-restricted channels, which models and
LoRAs a server may use, resolving ``/tweak`` references (image ids and message links, always
re-checked against the caller's server and user), queue admission, cancel/delete rights, the
locale to answer in when there is no interaction (reactions), and screening results with the
optional image classifier.

Every method may touch the database: the bot calls them through ``asyncio.to_thread``.
Planning and :meth:`ChatService.prepare` only *read* (and ask the queue whether it would
admit the job), so the bot can acknowledge an interaction before it writes anything;
:meth:`ChatService.submit` then stores the job with the reply reference the answer produced.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any

from bot.guild_policy import check_channel, guard_request, safety_policy
from bot.jobs import compare_of, compare_submission, plan_submission
from bot.services import ComparePlan, GenerationPlan, ImageDetails, ImageService, PendingUpload, SavedImage
from bot.texts import complete
from generation.errors import BrushworkError, ImageNotFound, QueueError, RequestError
from generation.grammar import parse, parse_defaults, render
from generation.queue import JobState, PendingCounts, Requester, Submission
from generation.request import Request, format_number
from generation.safety import NoClassifier, SafetyPolicy, Verdict
from generation.samplers import sampler_names
from storage.errors import NotFound, PermissionDenied
from storage.ids import is_public_id, normalize_public_id
from storage.records import (
    GuildSettingsRecord,
    ImageRecord,
    JobRecord,
    JobStatus,
    Scope,
    UserSettingsRecord,
)
from storage.unit_of_work import UnitOfWork
from storage.uploads import UploadRecord

if TYPE_CHECKING:
    from generation.models import ModelRegistry
    from generation.queue import JobHandle, JobQueue
    from generation.safety import ImageClassifier

log = logging.getLogger("brushwork.chat")

#: ``https://discord.com/channels/<guild or @me>/<channel>/<message>`` (also ptb., canary., discordapp.com).
MESSAGE_LINK = re.compile(
    r"<?https?://(?:(?:ptb|canary)\.)?discord(?:app)?\.com/channels/(?P<guild>\d+|@me)/(?P<channel>\d+)/"
    r"(?P<message>\d+)>?")
MAX_CHOICES = 25  # Discord's limit for autocomplete
#: An image sent to ``/info file:`` may be this large (checked before it is downloaded).
MAX_RECIPE_FILE_BYTES = 25 * 1024 * 1024
#: Server and user settings are read at most this often per process (see ChatService.forget_settings).
SETTINGS_TTL_S = 5.0
#: The pending-jobs snapshot behind the pre-acknowledgement admission check is this fresh.
PENDING_TTL_S = 1.0
#: How long after a job ended a restarted bot still delivers an answer it owes.
UNDELIVERED_WINDOW = timedelta(days=1)


# ---------------------------------------------------------------------- values


@dataclass(frozen=True, slots=True)
class Origin:
    """Who asks, from where, in which language, with which rights (read once per interaction or reaction)."""

    user_id: int
    guild_id: int | None
    channel_id: int | None
    locale: str = "en"
    age_restricted: bool = False  # the channel (or a thread's parent) is marked NSFW
    manage_messages: bool = False
    manage_guild: bool = False
    parent_channel_id: int | None = None  # a thread's channel (the server's channel allow-list)

    @property
    def scope(self) -> Scope:
        return Scope(user_id=self.user_id, guild_id=self.guild_id)

    @property
    def requester(self) -> Requester:
        return Requester(user=self.user_id, guild=self.guild_id, can_manage=self.manage_messages)

    @property
    def in_dm(self) -> bool:
        return self.guild_id is None


def _quoted(text: str) -> str:
    """A value in the request language's quoted form: flag markers inside it stay text."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True, slots=True)
class ImagineOptions:
    """``/imagine``'s typed options; ``None`` = not given.  They win over inline flags."""

    negative: str | None = None
    seed: int | None = None
    steps: int | None = None
    cfg: float | None = None
    sampler: str | None = None
    aspect: str | None = None
    model: str | None = None
    lora: str | None = None
    n: int | None = None
    hires: float | None = None
    image: str | None = None  # an image id or a link to a result: the picture to start from

    def as_flags(self) -> str:
        """The options written in the request language (so errors name the flag and its range)."""
        parts: list[str] = []
        if self.negative is not None:
            parts.append("--no " + _quoted(self.negative))
        if self.model is not None:
            parts.append("--model " + _quoted(self.model.strip()))
        if self.lora is not None:
            parts.append("--lora " + _quoted(self.lora.strip()))
        if self.aspect is not None:
            parts.append("--ar " + _quoted(self.aspect.strip()))
        if self.sampler is not None:
            parts.append("--sampler " + _quoted(self.sampler.strip()))
        if self.image is not None:
            parts.append("--image " + _quoted(self.image.strip()))
        for flag, value in (("--steps", self.steps), ("--cfg", self.cfg), ("--seed", self.seed), ("--n", self.n),
                            ("--hires", self.hires)):
            if value is not None:
                parts.append(f"{flag} {format_number(value)}")
        return " ".join(parts)

    def over(self, request: Request) -> Request:
        """``request`` (from the prompt's inline flags) with these options over it."""
        flags = self.as_flags()
        if not flags:
            return request
        overrides = parse(flags, allow_empty_prompt=True)
        merged = request.merged(overrides)
        if self.hires is not None and request.hires is not None and overrides.hires is not None:
            # keep --hires-steps/--strength of the text
            merged = replace(merged, hires=replace(request.hires, scale=overrides.hires.scale))
        elif self.image is not None and self.hires is None and request.hires is not None:
            merged = replace(merged, hires=request.hires)  # the text's --hires/--strength tune the picture's pass
        return merged


@dataclass(frozen=True, slots=True)
class Prepared:
    """A checked plan the queue would admit now, and what the acknowledgement says: an image job's
    :class:`GenerationPlan`, or a comparison's :class:`ComparePlan` (one job of many cells)."""

    plan: GenerationPlan | ComparePlan
    origin: Origin
    screened: bool  # the server's safety policy applies (results go through the classifier hook)
    waiting: int  # jobs waiting or running in the whole queue when it was checked
    eta_s: float | None  # seconds until the queue as it stands is done


@dataclass(frozen=True, slots=True)
class ImageInfo:
    """What ℹ️ Info shows: the image's full recipe, its A1111 infotext, and where it comes from."""

    details: ImageDetails
    public_id: str
    batch: Request | None = None  # the whole job's request (``--n 4``), when it was part of one
    siblings: tuple[ImageRecord, ...] = ()  # the job's other images, in order

    @property
    def record(self) -> ImageRecord:
        assert self.details.record is not None
        return self.details.record


@dataclass(frozen=True, slots=True)
class FileRecipe:
    """The recipe inside an uploaded image (``/info file:``): Brushwork's, or an A1111 text."""

    filename: str
    request: Request
    infotext: str | None
    source: str  # "brushwork" or "a1111"
    version: str | None  # what wrote it, as written
    usable_models: tuple[str, ...]  # the models this server may use
    unreproduced: dict[str, str] = field(default_factory=dict)  # pairs read that Brushwork cannot follow

    @property
    def model_here(self) -> bool:
        return self.request.model is not None and self.request.model in self.usable_models


@dataclass(frozen=True, slots=True)
class RemixForm:
    """The ✏️ Remix modal, prefilled: the prompt and the flags (without the seed, which is kept)."""

    image_id: str
    prompt: str
    flags: str


@dataclass(frozen=True, slots=True)
class Followed:
    """A job whose answer the bot still owes (re-attached after a restart)."""

    job_id: str
    reply_ref: dict[str, Any]
    status: JobStatus
    plan: GenerationPlan | ComparePlan | None = None


@dataclass(frozen=True, slots=True)
class Submit:
    """One request to store: the checked plan, where its answers go, the id its ✖ carries."""

    prepared: Prepared
    reply_ref: dict[str, Any] | None
    job_id: str | None = None


@dataclass(frozen=True, slots=True)
class ReplyRecord:
    """Where a stored job's answers go, to write into its row (its acknowledgement's message)."""

    job_id: str
    reply_ref: dict[str, Any]


class _PendingSnapshot:
    """Who has how many jobs waiting or running, from one read of the store at most every ``ttl``
    seconds: the pre-acknowledgement admission check needs no query per request.  It may be a
    moment stale; the queue's own check at submit time is exact (a job it then refuses has its
    acknowledgement replaced by the reason)."""

    def __init__(self, active: Callable[[], Sequence[Any]], ttl: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._active = active
        self.ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._at = float("-inf")
        self._by_owner: dict[int, int] = {}
        self._by_guild: dict[int, tuple[int, int]] = {}
        self._total = 0

    def counts(self, owner: int, guild: int | None) -> PendingCounts:
        with self._lock:
            if self._clock() - self._at >= self.ttl:
                self._refresh()
            jobs, images = self._by_guild.get(guild, (0, 0)) if guild is not None else (0, 0)
            return PendingCounts(user=self._by_owner.get(owner, 0), guild=jobs, total=self._total,
                                 guild_images=images)

    def added(self, owner: int, guild: int | None, images: int) -> None:
        """A job this process just stored: counted at once, not at the next refresh."""
        with self._lock:
            self._by_owner[owner] = self._by_owner.get(owner, 0) + 1
            if guild is not None:
                count, pictures = self._by_guild.get(guild, (0, 0))
                self._by_guild[guild] = (count + 1, pictures + images)
            self._total += 1

    def _refresh(self) -> None:
        by_owner: dict[int, int] = {}
        by_guild: dict[int, tuple[int, int]] = {}
        snapshots = self._active()
        for job in snapshots:
            by_owner[job.owner] = by_owner.get(job.owner, 0) + 1
            if job.guild is not None:
                count, images = by_guild.get(job.guild, (0, 0))
                by_guild[job.guild] = (count + 1, images + job.images)
        self._by_owner, self._by_guild, self._total = by_owner, by_guild, len(snapshots)
        self._at = self._clock()


class _TtlCache:
    """Values kept for ``ttl`` seconds (thread-safe; a miss loads outside the lock)."""

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self._clock = clock
        self._values: dict[Any, tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def get(self, key: Any, load: Callable[[], Any]) -> Any:
        now = self._clock()
        with self._lock:
            hit = self._values.get(key)
        if hit is not None and now - hit[0] < self.ttl:
            return hit[1]
        value = load()
        with self._lock:
            self._values[key] = (now, value)
            if len(self._values) > 10_000:  # a long-running bot sees many users: forget the oldest
                for old in sorted(self._values, key=lambda k: self._values[k][0])[:5_000]:
                    del self._values[old]
        return value

    def forget(self, key: Any) -> None:
        with self._lock:
            self._values.pop(key, None)


@dataclass
class _LocaleCache:
    known: dict[int, str | None] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


# ---------------------------------------------------------------------- the service


class ChatService:
    def __init__(
        self,
        *,
        images: ImageService,
        queue: Callable[[], JobQueue],
        uow_factory: Callable[[], UnitOfWork],
        registry: ModelRegistry,
        lora_names: Callable[[Scope], Sequence[str]],
        classifier: Callable[[], ImageClassifier] | None = None,
    ) -> None:
        self._images = images
        self._queue = queue
        self._uow = uow_factory
        self._registry = registry
        self._lora_names = lora_names
        self._classifier = classifier or NoClassifier
        self._locales = _LocaleCache()
        self._settings = _TtlCache(SETTINGS_TTL_S)
        self._pending = _PendingSnapshot(lambda: self._queue().store.active(), PENDING_TTL_S)
        self._eta_lock = threading.Lock()
        self._eta: float | None = None
        self._eta_at = float("-inf")

    # ================================================================== planning (reads only)
    def prepare_imagine(self, origin: Origin, text: str, options: ImagineOptions = ImagineOptions(), *,
                        picture: PendingUpload | None = None) -> Prepared:
        """``/imagine``: the prompt's inline flags, the typed options over them, the defaults under them.
        The ``image`` option may be an id or a link to a result; it is checked against ``origin``.
        ``picture``: an attached picture not kept yet (:meth:`prepare_picture`), which
        ``options.image`` names by its future id."""
        if options.image is not None and MESSAGE_LINK.fullmatch(options.image.strip().strip("`")):
            options = replace(options, image=self.resolve_image(origin, options.image))  # a result's first image
        # an id (an image's or an upload's) is checked against ``origin`` when the plan is made
        try:
            parsed = parse(text)
        except RequestError as error:
            if options.image is None or error.code != "grammar.needs_hires":
                raise
            parsed = parse(f"{text} --image {options.image}")  # the typed picture is what --strength tunes
        request = options.over(parsed)
        return self._prepared(origin, self._images.plan_generate(request, origin.scope,
                                                                 defaults=self._defaults(origin), picture=picture))

    def prepare_reroll(self, origin: Origin, job_id: str) -> Prepared:
        """🔁: the job's images again with new seeds (as many, same settings)."""
        return self._reroll_job(origin, self._job(origin, job_id))

    def _reroll_job(self, origin: Origin, job: JobRecord) -> Prepared:
        first = self._first_image(job)
        batch = _job_request(job)
        n = batch.n if batch is not None else None
        chaos = batch.chaos if batch is not None else None
        return self._prepared(origin, self._images.plan_reroll(first, origin.scope, n=n, chaos=chaos))

    def prepare_reroll_image(self, origin: Origin, image_ref: str) -> Prepared:
        """🔁 on a message: the job that made the image, rerolled whole; an image without a job alone."""
        record = self._image(origin, self.resolve_image(origin, image_ref))
        job = None
        if record.job_public_id is not None:
            try:
                job = self._job(origin, record.job_public_id)
            except QueueError:
                job = None
        if job is not None and job.result_image_ids:
            return self._reroll_job(origin, job)
        return self._prepared(origin, self._images.plan_reroll(record.public_id, origin.scope))

    def prepare_upscale(self, origin: Origin, image_ref: str, *, mode: str = "subtle") -> Prepared:
        public_id = self.resolve_image(origin, image_ref)
        return self._prepared(origin, self._images.plan_upscale(public_id, origin.scope, mode=mode))

    def prepare_vary(self, origin: Origin, image_ref: str, *, mode: str = "subtle") -> Prepared:
        public_id = self.resolve_image(origin, image_ref)
        return self._prepared(origin, self._images.plan_vary(public_id, origin.scope, mode=mode))

    def prepare_tweak(self, origin: Origin, image_ref: str, changes: str) -> Prepared:
        """``/tweak``: same seed and settings, with what ``changes`` sets (prompt and/or flags)."""
        public_id = self.resolve_image(origin, image_ref)
        return self._prepared(origin, self._images.plan_tweak(public_id, changes, origin.scope))

    def prepare_remix(self, origin: Origin, image_ref: str, text: str) -> Prepared:
        """✏️ Remix submitted: the edited prompt and flags, the seed kept."""
        public_id = self.resolve_image(origin, image_ref)
        return self._prepared(origin, self._images.plan_remix(public_id, text, origin.scope))

    def _prepared(self, origin: Origin, plan: GenerationPlan) -> Prepared:
        screened = False
        if origin.guild_id is not None:  # the server's rules (bot/guild_policy.py): channel, model, safety
            settings = self._guild_settings(origin.guild_id)
            check_channel(settings, origin.channel_id, parent_id=origin.parent_channel_id)
            plan = replace(plan, request=guard_request(settings, plan.request, age_restricted=origin.age_restricted))
            screened = not origin.age_restricted and safety_policy(settings).classify_images
        return self._admitted(origin, plan, screened)

    def prepare_compare(self, origin: Origin, prompt: str, vary: str, values: str, *, vary2: str | None = None,
                        values2: str | None = None) -> Prepared:
        """``/compare``: the prompt resolved once (ONE seed), the server's rules applied to that base
        request (channel list, allowed models, safety policy), one job of all the cells."""
        settings = self._guild_settings(origin.guild_id) if origin.guild_id is not None else None
        if settings is not None:
            check_channel(settings, origin.channel_id, parent_id=origin.parent_channel_id)
        plan = self._images.plan_compare(
            prompt, vary, values, origin.scope, vary2=vary2, values2=values2,
            guard=partial(guard_request, settings, age_restricted=origin.age_restricted))
        screened = settings is not None and not origin.age_restricted and safety_policy(settings).classify_images
        return self._admitted(origin, plan, screened)

    def _admitted(self, origin: Origin, plan: GenerationPlan | ComparePlan, screened: bool) -> Prepared:
        """``plan`` with the queue's admission checked (from the 1-s snapshot; exact at submit)."""
        queue = self._queue()
        submission = _submission_of(plan, origin)
        try:
            counts = queue.admit(submission, self._pending.counts(origin.user_id, origin.guild_id))
        except QueueError:  # the snapshot may count jobs that just finished: refuse only on exact counts
            counts = queue.admit(submission)
        return Prepared(plan=plan, origin=origin, screened=screened, waiting=counts.total,
                        eta_s=self._queue_eta() if counts.total else None)

    def _queue_eta(self) -> float | None:
        """How long what waits will take, recomputed at most every :data:`PENDING_TTL_S` seconds
        (it walks the whole queue; a burst of acknowledgements needs it once, not per request)."""
        now = time.monotonic()
        with self._eta_lock:
            if now - self._eta_at < PENDING_TTL_S:
                return self._eta
        eta = self._queue().queue_eta()
        with self._eta_lock:
            self._eta, self._eta_at = eta, now
        return eta

    # ================================================================== settings, briefly cached
    def _guild_settings(self, guild_id: int) -> GuildSettingsRecord:
        """A server's settings, read at most every :data:`SETTINGS_TTL_S` seconds (every request of a
        busy server needs them before its acknowledgement); :meth:`forget_settings` after a change."""
        return self._settings.get(("guild", guild_id), lambda: self._read(lambda uow: uow.settings.get_guild(guild_id)))

    def _user_settings(self, user_id: int) -> UserSettingsRecord:
        return self._settings.get(("user", user_id), lambda: self._read(lambda uow: uow.settings.get_user(user_id)))

    def _read(self, query: Callable[[UnitOfWork], Any]) -> Any:
        with self._uow() as uow:
            return query(uow)

    def forget_settings(self, *, guild_id: int | None = None, user_id: int | None = None) -> None:
        """Drop cached settings (the settings commands call this after saving, so changes apply at once)."""
        if guild_id is not None:
            self._settings.forget(("guild", guild_id))
        if user_id is not None:
            self._settings.forget(("user", user_id))

    def _defaults(self, origin: Origin) -> list[Request]:
        """Server defaults, then the user's (direct messages: the user's only) — as ``plan_generate``
        would read them, from the cache."""
        texts = []
        if origin.guild_id is not None:
            texts.append(self._guild_settings(origin.guild_id).defaults)
        texts.append(self._user_settings(origin.user_id).defaults)
        layers = [parse_defaults(text) for text in texts if text and text.strip()]
        return layers or [Request(prompt="")]  # an empty layer: "no defaults", without reading them again

    # ================================================================== submitting (writes)
    def submit(self, prepared: Prepared, reply_ref: dict[str, Any] | None, *,
               job_id: str | None = None) -> JobHandle:
        """Store and queue the job, with where its answers go; the queue re-checks its limits.
        ``job_id``: the id the acknowledgement's ✖ carries (used unless taken)."""
        outcome = self.submit_many([Submit(prepared, reply_ref, job_id)])[0]
        if isinstance(outcome, BrushworkError):
            raise outcome
        return outcome

    def submit_many(self, requests: Sequence[Submit]) -> list[JobHandle | BrushworkError]:
        """:meth:`submit` for requests that arrived together: one transaction for all of them
        (:meth:`generation.queue.JobQueue.submit_many`); each outcome is its handle or the
        queue's refusal."""
        submissions = [_submission(r.prepared, reply_ref=r.reply_ref, job_id=r.job_id) for r in requests]
        outcomes: list[JobHandle | BrushworkError] = list(self._queue().submit_many(submissions))
        for submission, outcome in zip(submissions, outcomes, strict=True):
            if not isinstance(outcome, BrushworkError):
                self._pending.added(submission.owner, submission.guild, submission.images)
        return outcomes

    def write_many(self, writes: Sequence[Submit | ReplyRecord]) -> list[JobHandle | BrushworkError | None]:
        """The bot's writes that arrived together (:class:`~bot.group_commit.GroupCommit`): the new
        jobs in one transaction, then the reply references in one more.  One outcome per write:
        a job's handle or refusal; ``None`` for a reference."""
        submits = [w for w in writes if isinstance(w, Submit)]
        stored = iter(self.submit_many(submits) if submits else [])
        records = [w for w in writes if isinstance(w, ReplyRecord)]
        if records:
            with self._uow() as uow:
                for record in records:
                    uow.jobs.update(record.job_id, reply_ref=record.reply_ref)
                uow.commit()
        return [next(stored) if isinstance(w, Submit) else None for w in writes]

    # ================================================================== references
    def resolve_image(self, origin: Origin, text: str) -> str:
        """An image id, or a link to a message showing images (its first image), as a public id
        visible to ``origin``: anything of another server, or someone else's DMs, is "not found"."""
        value = (text or "").strip().strip("`").strip()
        link = MESSAGE_LINK.fullmatch(value)
        if link is not None:
            guild = link.group("guild")
            expected = "@me" if origin.guild_id is None else str(origin.guild_id)
            records = self.images_on_message(origin, int(link.group("message"))) if guild == expected else []
            if not records:
                raise ImageNotFound("bot.link_not_found")
            return records[0].public_id
        ident = normalize_public_id(value)
        if not is_public_id(ident):
            raise ImageNotFound("bot.bad_image_reference", value=value[:100])
        return self._image(origin, ident).public_id

    def images_on_message(self, origin: Origin, message_id: int) -> list[ImageRecord]:
        with self._uow() as uow:
            return uow.images.by_message(message_id, origin.scope)

    def _image(self, origin: Origin, public_id: str) -> ImageRecord:
        ident = normalize_public_id(public_id)
        if not is_public_id(ident):
            raise ImageNotFound("bot.bad_image_reference", value=public_id[:100])
        try:
            with self._uow() as uow:
                return uow.images.get(ident, origin.scope)
        except NotFound:
            raise ImageNotFound("image.not_found", id=ident) from None

    def _job(self, origin: Origin, job_id: str) -> JobRecord:
        ident = normalize_public_id(job_id)
        try:
            if not is_public_id(ident):
                raise NotFound("job", ident)
            with self._uow() as uow:
                return uow.jobs.get(ident, origin.scope)
        except NotFound:
            raise QueueError("bot.job_not_found", id=ident[:20]) from None

    def _first_image(self, job: JobRecord) -> str:
        if not job.result_image_ids:
            raise QueueError("bot.job_has_no_images", id=job.public_id)
        return job.result_image_ids[0]

    # ================================================================== looking
    def info(self, origin: Origin, image_ref: str) -> ImageInfo:
        """ℹ️ / ``/info`` / "Show settings": an image's full recipe (checked against ``origin``)."""
        public_id = self.resolve_image(origin, image_ref)
        details = self._images.show(public_id, origin.scope)
        return ImageInfo(details=details, public_id=public_id)

    # ================================================================== pictures to start from
    def check_picture(self, filename: str, size: int) -> None:
        """``/imagine picture:`` before downloading: the announced size."""
        self._images.check_upload(filename, size)

    def prepare_picture(self, origin: Origin, filename: str, data: bytes) -> PendingUpload:
        """A picture to start from checked and decoded, nothing written yet (where this channel
        may make images at all): the request is checked with it (:meth:`prepare_imagine`'s
        ``picture``) before :meth:`keep_picture` stores it, so a refused request keeps nothing."""
        if origin.guild_id is not None:
            check_channel(self._guild_settings(origin.guild_id), origin.channel_id, parent_id=origin.parent_channel_id)
        return self._images.prepare_upload(origin.scope, filename, data)

    def keep_picture(self, origin: Origin, picture: PendingUpload) -> UploadRecord:
        """Store a picture :meth:`prepare_picture` checked (the same picture again: the same upload)."""
        return self._images.keep_upload(origin.scope, picture)

    def add_picture(self, origin: Origin, filename: str, data: bytes) -> UploadRecord:
        """Keep a picture to start from (checked before it is trusted; the same picture again is
        the same upload), where this channel may make images at all."""
        if origin.guild_id is not None:
            check_channel(self._guild_settings(origin.guild_id), origin.channel_id, parent_id=origin.parent_channel_id)
        return self._images.add_upload(origin.scope, filename, data)

    @staticmethod
    def check_recipe_file(filename: str, size: int) -> None:
        """Before downloading an image for ``/info file:``: its announced size."""
        if size > MAX_RECIPE_FILE_BYTES:
            raise BrushworkError("bot.recipe_file_too_large", name=filename[:100], size=f"{size / 2**20:.1f} MB",
                                 limit=f"{MAX_RECIPE_FILE_BYTES // 2**20} MB")

    def file_recipe(self, origin: Origin, filename: str, data: bytes) -> FileRecipe:
        """``/info file:`` — the recipe in an uploaded PNG (Brushwork's chunk or A1111's text) or
        JPEG/WebP (A1111's EXIF comment), read without decoding a pixel; with the models this
        server may use, so the card can say whether the recipe runs here as it is."""
        self.check_recipe_file(filename, len(data))
        recipe = self._images.recipe(data)  # a MetadataError says what is wrong with the file
        return FileRecipe(filename=filename, request=recipe.request, infotext=recipe.infotext, source=recipe.origin,
                          version=recipe.version, usable_models=tuple(self.model_names(origin)),
                          unreproduced=dict(recipe.unreproduced))

    def job_info(self, origin: Origin, job_id: str) -> ImageInfo:
        """ℹ️ on a result: its first image's recipe, the whole job's request, and the other images."""
        job = self._job(origin, job_id)
        first = self._first_image(job)
        details = self._images.show(first, origin.scope)
        with self._uow() as uow:
            siblings = []
            for public_id in job.result_image_ids:
                try:
                    siblings.append(uow.images.get(public_id, origin.scope))
                except NotFound:
                    continue  # deleted since
        return ImageInfo(details=details, public_id=first, batch=_job_request(job), siblings=tuple(siblings))

    def message_info(self, origin: Origin, message_id: int) -> ImageInfo:
        """"Show settings" on a message: its job's info when it shows a job's images."""
        records = self.images_on_message(origin, message_id)
        if not records:
            raise ImageNotFound("bot.no_images_on_message")
        first = records[0]
        if first.job_public_id is not None:
            try:
                return self.job_info(origin, first.job_public_id)
            except (QueueError, ImageNotFound):
                pass
        return self.info(origin, first.public_id)

    def remix_form(self, origin: Origin, *, job_id: str | None = None, image_ref: str | None = None) -> RemixForm:
        """What the ✏️ Remix modal shows: the job's (or image's) prompt and flags, the seed left out."""
        if job_id is not None:
            job = self._job(origin, job_id)
            image_id = self._first_image(job)
            request = _job_request(job) or Request.from_dict(self._image(origin, image_id).request)
        else:
            record = self._image(origin, self.resolve_image(origin, image_ref or ""))
            image_id = record.public_id
            request = Request.from_dict(record.request)
            if record.job_public_id is not None:
                try:
                    job = self._job(origin, record.job_public_id)
                    request = _job_request(job) or request
                except QueueError:
                    pass
        prompt = render(Request(prompt=request.prompt))
        flags = render(replace(request, prompt="", seed=None))
        return RemixForm(image_id=image_id, prompt=prompt, flags=flags)

    # ================================================================== changing
    def cancel(self, origin: Origin, job_id: str) -> JobState:
        """✖: the owner, or someone who may manage messages in that server."""
        job = self._job(origin, job_id)
        try:
            return self._queue().cancel(job.public_id, origin.requester)
        except QueueError as error:
            if error.code == "queue.not_yours":
                raise QueueError("bot.cancel_not_yours", id=job.public_id) from None
            raise QueueError("bot.job_not_found", id=job.public_id) from None

    def delete_job(self, origin: Origin, job_id: str) -> list[ImageRecord]:
        """🗑: the job's images are deleted (hidden from everyone but the operator) and an
        unfinished job is cancelled.  The requester, or someone with Manage Messages."""
        job = self._job(origin, job_id)
        if not (job.owner_id == origin.user_id or origin.manage_messages):
            raise BrushworkError("bot.delete_not_allowed")
        if not job.status.finished:
            self._queue().cancel(job.public_id, None)
        deleted: list[ImageRecord] = []
        with self._uow() as uow:
            for public_id in job.result_image_ids:
                try:
                    deleted.append(uow.images.soft_delete(public_id, origin.scope, can_manage=origin.manage_messages))
                except (NotFound, PermissionDenied):
                    continue
            uow.commit()
        return deleted

    def attach_messages(self, placements: Sequence[tuple[str, int, int]], owner: Scope) -> None:
        """Remember which chat message shows each image: ``(image id, channel id, message id)``."""
        with self._uow() as uow:
            for public_id, channel_id, message_id in placements:
                try:
                    uow.images.attach_message(public_id, owner, channel_id=channel_id, message_id=message_id)
                except NotFound:
                    continue  # deleted meanwhile
            uow.commit()

    # ================================================================== results
    def screen(self, images: Sequence[SavedImage], reply_ref: dict[str, Any]) -> list[Verdict]:
        """The classifier's verdict on each result, when the server's policy asks for it (outside
        age-restricted channels) and a classifier is installed; withheld images are deleted."""
        allowed = [Verdict(allowed=True) for _ in images]
        guild = reply_ref.get("guild")
        if not reply_ref.get("screened") or guild is None or not images:
            return allowed
        classifier = self._classifier()
        if not getattr(classifier, "available", True):
            return allowed
        with self._uow() as uow:
            policy = SafetyPolicy.from_dict(uow.settings.get_guild(int(guild)).safety)
        if not policy.classify_images:
            return allowed
        from PIL import Image

        pictures = []
        for item in images:
            with Image.open(item.path) as img:
                pictures.append(img.convert("RGB"))
        verdicts = list(classifier.classify(pictures, policy))
        blocked = [item for item, verdict in zip(images, verdicts, strict=True) if not verdict.allowed]
        if blocked:
            with self._uow() as uow:
                for item in blocked:
                    owner = Scope(user_id=item.record.owner_id, guild_id=item.record.guild_id)
                    try:
                        uow.images.soft_delete(item.record.public_id, owner)
                    except (NotFound, PermissionDenied):
                        continue
                uow.commit()
            log.info("withheld %d image(s) of guild %s: %s", len(blocked), guild,
                     ", ".join(f"{v.label} {v.score:.2f}" for v in verdicts if not v.allowed))
        return verdicts

    def owed_jobs(self, ref_version: Any) -> list[JobRecord]:
        """Jobs whose chat answer is still owed, of one reply-reference kind (``v``): unfinished
        ones, and ones that ended in the last day without their answer being delivered (the bot
        stopped, or another process's worker finished them while it was down).  Every follower
        (/imagine, /compare, /lora train) takes them up again after a restart."""
        since = datetime.now(UTC) - UNDELIVERED_WINDOW
        with self._uow() as uow:
            records = uow.jobs.list_by_status(JobStatus.QUEUED, JobStatus.RUNNING) + uow.jobs.finished_since(since)
        return [record for record in records
                if record.reply_ref and record.reply_ref.get("v") == ref_version
                and not record.reply_ref.get("delivered")]

    def followed_jobs(self) -> list[Followed]:
        """The answers of image jobs and comparisons still owed (:meth:`owed_jobs` of reply
        references ``v`` 1, and ``compare1`` — the comparisons' own kind before they shared it)."""
        followed = []
        for record in self.owed_jobs(1) + self.owed_jobs("compare1"):
            followed.append(Followed(record.public_id, dict(record.reply_ref or {}), record.status,
                                     _plan_of(record.request or {})))
        return followed

    def finish_reply(self, job_id: str, reply_ref: dict[str, Any], **changes: Any) -> None:
        """Record that a job's answer was delivered; the interaction token is dropped from the row."""
        ref = {**reply_ref, **changes, "token": None, "delivered": True}
        with self._uow() as uow:
            uow.jobs.update(job_id, reply_ref=ref)
            uow.commit()

    # ================================================================== languages
    def remember_locale(self, user_id: int, locale: str) -> None:
        """Store the locale Discord reports for a user (replies to reactions use it); writes only on change."""
        self.remember_locales({user_id: locale})

    def remember_locales(self, locales: dict[int, str]) -> None:
        """:meth:`remember_locale` for several users, in one transaction."""
        cache = self._locales
        with cache.lock:
            changed = {user: locale for user, locale in locales.items() if cache.known.get(user) != locale}
        if not changed:
            return
        with self._uow() as uow:
            for user_id, locale in changed.items():
                if uow.settings.get_user(user_id).locale != locale:
                    uow.settings.set_user(user_id, locale=locale)
            uow.commit()
        with cache.lock:
            cache.known.update(changed)

    def user_locale(self, user_id: int) -> str | None:
        cache = self._locales
        with cache.lock:
            if user_id in cache.known:
                return cache.known[user_id]
        with self._uow() as uow:
            locale = uow.settings.get_user(user_id).locale
        with cache.lock:
            cache.known[user_id] = locale
        return locale

    # ================================================================== autocomplete
    def model_names(self, origin: Origin) -> list[str]:
        """The models this server may use (all of them in direct messages)."""
        names = self._registry.names()
        if origin.guild_id is not None:
            allowed = self._guild_settings(origin.guild_id).allowed_models
            if allowed is not None:
                names = [name for name in names if name in allowed]
        return names

    def image_choices(self, origin: Origin, current: str, *, limit: int = MAX_CHOICES) -> list[tuple[str, str]]:
        """Autocomplete for an image option: the caller's recent images here, newest first, as
        (``id · prompt``, id); what was typed filters by id or prompt."""
        typed = (current or "").strip().casefold()
        with self._uow() as uow:
            records = uow.images.history(origin.scope, user_id=origin.user_id, limit=100)
        out = []
        for record in records:
            prompt = " ".join(record.prompt.split())
            if typed and typed not in record.public_id and typed not in prompt.casefold():
                continue
            label = f"{record.public_id} · {prompt}" if prompt else record.public_id
            out.append((label if len(label) <= 100 else label[:99] + "…", record.public_id))
            if len(out) == limit:
                break
        return out

    def lora_names(self, origin: Origin) -> list[str]:
        """The LoRAs ``origin`` may use: the server's own and (unless the server turned them off) the
        operator's shared folder; in direct messages never a server's."""
        return sorted(self._lora_names(origin.scope))

    @staticmethod
    def sampler_names() -> list[str]:
        return sampler_names()


def choices(names: Sequence[str], current: str, *, limit: int = MAX_CHOICES) -> list[str]:
    """Autocomplete: names starting with what was typed first, then containing it; at most 25."""
    return complete(names, current, limit=limit)


def _job_request(job: JobRecord) -> Request | None:
    plan = (job.request or {}).get("plan")
    if not plan:
        return None
    try:
        return GenerationPlan.from_dict(dict(plan)).request
    except BrushworkError:
        return None


__all__ = ["ChatService", "FileRecipe", "Followed", "ImageInfo", "ImagineOptions", "Origin", "Prepared", "RemixForm", "choices"]


def _submission_of(plan: GenerationPlan | ComparePlan, origin: Origin, *, reply_ref: dict[str, Any] | None = None,
                   job_id: str | None = None) -> Submission:
    if isinstance(plan, ComparePlan):
        return compare_submission(plan, origin.scope, channel_id=origin.channel_id, reply_ref=reply_ref, job_id=job_id)
    return plan_submission(plan, origin.scope, channel_id=origin.channel_id, reply_ref=reply_ref, job_id=job_id)


def _submission(prepared: Prepared, *, reply_ref: dict[str, Any] | None, job_id: str | None) -> Submission:
    return _submission_of(prepared.plan, prepared.origin, reply_ref=reply_ref, job_id=job_id)


def _plan_of(payload: dict[str, Any]) -> GenerationPlan | ComparePlan | None:
    """A stored job's plan, whichever kind it is; None when it cannot be read (followed anyway)."""
    try:
        compare = compare_of(payload)
        if compare is not None:
            return compare
        plan = payload.get("plan")
        return GenerationPlan.from_dict(dict(plan)) if plan else None
    except (BrushworkError, KeyError, TypeError, ValueError):
        return None

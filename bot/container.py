"""The composition root: settings → database → model registry → engine → services → queue.

Built once per process by the command line (and, later, by ``brushwork run``), and passed
down through constructors.  Importing this module does no work; the engine (torch) is
created on first use so that `brushwork history` stays instant, and the job queue is a
plain client (submit, list, cancel) until :meth:`Container.start_workers` gives it a
worker thread per device.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import MutableMapping
from dataclasses import InitVar, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.chat import ChatService
from bot.lora_services import DatasetLimits, DatasetService, LoraLimits, LoraService
from bot.services import ImageService
from bot.settings import Settings
from storage.assets import AssetStore
from storage.db import create_engine, make_session_factory
from storage.files import ImageStore
from storage.migrate import upgrade_to_head
from storage.unit_of_work import UnitOfWork

if TYPE_CHECKING:
    import sqlalchemy

    from bot.history import HistoryService
    from bot.jobs import SqlJobStore
    from bot.preferences import PreferencesService
    from generation.engine import Engine
    from generation.models import ModelRegistry
    from generation.queue import JobQueue, QueueLimits
    from generation.safety import ImageClassifier


def build_registry(settings: Settings) -> ModelRegistry:
    from generation.models import ModelRegistry, ModelSpec

    extra = {
        name: ModelSpec(
            name=name,
            source=entry.source,
            family=entry.family,
            vae=entry.vae,
            variant=entry.variant,
            revision=entry.revision,
            dtype=entry.dtype,
            config=entry.config,
            description=entry.description,
        )
        for name, entry in settings.models.items()
    }
    return ModelRegistry.with_builtins(extra, default=settings.default_model)


@dataclass
class Container:
    settings: Settings
    database: sqlalchemy.Engine
    store: ImageStore
    registry: ModelRegistry
    images: ImageService = field(init=False)
    datasets: DatasetService = field(init=False)
    loras: LoraService = field(init=False)
    chat: ChatService = field(init=False)
    _engine: Engine | None = field(default=None, init=False)
    _engines: dict[str, Engine] = field(default_factory=dict, init=False)
    _queue: JobQueue | None = field(default=None, init=False)
    _guild_limits: dict[int, tuple[float, dict[str, Any]]] = field(default_factory=dict, init=False)
    _classifier: ImageClassifier | None = field(default=None, init=False)
    _lock: threading.RLock = field(default_factory=threading.RLock, init=False)
    given_engine: InitVar[Engine | None] = None  # used instead of building one (tests: the tiny engine)

    def __post_init__(self, given_engine: Engine | None) -> None:
        self._engine = given_engine
        self._sessions = make_session_factory(self.database)
        self.images = ImageService(registry=self.registry, engine=self.engine, uow_factory=self.unit_of_work,
                                   store=self.store, loras=lambda scope: self.loras.resolver_for(scope),
                                   uploads=AssetStore(self.settings.uploads_dir),
                                   upload_max_bytes=int(self.settings.upload_max_mb * 1024 * 1024))
        self._build_lora_services()
        self.chat = ChatService(images=self.images, queue=lambda: self.queue, uow_factory=self.unit_of_work,
                                registry=self.registry, lora_names=lambda scope: self.loras.resolver_for(scope).names(),
                                classifier=lambda: self.classifier)
        self._watch_settings()

    def _watch_settings(self) -> None:
        """Settings saved through this process's sessions (``/settings``, ``/server settings``…) drop
        the chat service's cached copy when committed, so they apply to the next request at once."""
        from sqlalchemy import event

        def flushed(session: Any, _context: Any) -> None:
            for row in (*session.new, *session.dirty):
                table = getattr(type(row), "__tablename__", None)
                if table == "guild_settings":
                    session.info.setdefault("brushwork_settings", set()).add(("guild", row.guild_id))
                elif table == "user_settings":
                    session.info.setdefault("brushwork_settings", set()).add(("user", row.user_id))

        def committed(session: Any) -> None:
            for kind, key in session.info.pop("brushwork_settings", ()):
                self.chat.forget_settings(**{f"{kind}_id": key})

        def rolled_back(session: Any) -> None:
            session.info.pop("brushwork_settings", None)

        event.listen(self._sessions, "after_flush", flushed)
        event.listen(self._sessions, "after_commit", committed)
        event.listen(self._sessions, "after_rollback", rolled_back)

    def unit_of_work(self) -> UnitOfWork:
        return UnitOfWork(self._sessions)

    # -- server LoRAs ----------------------------------------------------------------
    def _build_lora_services(self) -> None:
        s = self.settings
        mb = 1024 * 1024
        self.datasets = DatasetService(
            uow_factory=self.unit_of_work, files=AssetStore(s.datasets_dir),
            limits=DatasetLimits(max_datasets=s.dataset_max_per_guild, max_images=s.dataset_max_images,
                                 max_bytes=int(s.dataset_max_mb_per_guild * mb),
                                 max_image_bytes=int(s.dataset_max_image_mb * mb),
                                 max_zip_bytes=int(s.dataset_max_zip_mb * mb),
                                 max_upload_bytes=int(s.dataset_max_upload_mb * mb)))
        self.loras = LoraService(
            uow_factory=self.unit_of_work, files=AssetStore(s.server_loras_dir), datasets=self.datasets,
            registry=self.registry, engine=self.engine, queue=lambda: self.queue, folder=s.loras_dir,
            training_dir=s.training_dir, cache_dir=s.cache_dir,
            limits=LoraLimits(max_loras=s.lora_max_per_guild, max_import_bytes=int(s.lora_max_import_mb * mb),
                              max_steps=s.training_max_steps, sample_every=s.training_sample_every))

    def _training_runner(self, engine: Any) -> Any:
        from bot.training_jobs import TrainingRunner

        s = self.settings
        return TrainingRunner(engine, uow_factory=self.unit_of_work, files=self.loras.files,
                              training_dir=s.training_dir, chunk_seconds=s.training_chunk_seconds,
                              chunk_steps=s.training_chunk_steps)

    def engine(self) -> Engine:
        with self._lock:
            if self._engine is None:
                self._engine = self._make_engine(self.settings.device)
            return self._engine

    def _make_engine(self, device: str | None) -> Engine:
        from generation.engine import Engine, FolderLoraResolver

        settings = self.settings
        cache = settings.cache_dir
        memory = settings.max_model_memory_gb
        return Engine(
            self.registry,
            device=device,
            dtype=settings.dtype,
            cache_dir=cache,
            max_loaded_models=settings.max_loaded_models,
            lora_resolver=FolderLoraResolver(settings.loras_dir, cache_dir=cache),
            max_model_bytes=int(memory * 2**30) if memory else None,
        )

    def engine_for(self, device: str) -> Engine:
        """The engine of one device (each worker owns one: its own models and LoRA state)."""
        with self._lock:
            primary = self.settings.queue_devices[0] if self.settings.queue_devices else None
            if device == primary or not self.settings.queue_devices:
                return self.engine()
            if device not in self._engines:
                self._engines[device] = self._make_engine(device)
            return self._engines[device]

    @property
    def classifier(self) -> ImageClassifier:
        """The image classifier of the safety policy: none unless ``classifier_model`` is set."""
        with self._lock:
            if self._classifier is None:
                from generation.safety import NoClassifier, TransformersClassifier

                model = self.settings.classifier_model
                self._classifier = TransformersClassifier(model) if model else NoClassifier()
            return self._classifier

    # -- the job queue ---------------------------------------------------------------
    @property
    def job_store(self) -> SqlJobStore:
        from bot.jobs import SqlJobStore

        return SqlJobStore(self.unit_of_work, self.store)

    @property
    def queue(self) -> JobQueue:
        """The job queue on this database; a client until :meth:`start_workers`."""
        with self._lock:
            if self._queue is None:
                from generation.queue import JobQueue, QueueConfig

                config = QueueConfig(limits=self.default_limits(),
                                     max_batch_images=self.settings.queue_max_batch_images,
                                     hang_timeout_s=self.settings.queue_hang_timeout_s)
                self._queue = JobQueue(self.job_store, config=config, limits_for=self.limits_for)
            return self._queue

    def default_limits(self) -> QueueLimits:
        from generation.queue import QueueLimits

        s = self.settings
        return QueueLimits(per_user=s.queue_max_per_user, per_guild=s.queue_max_per_guild, total=s.queue_max_total,
                           daily_images=s.queue_daily_images, daily_gpu_seconds=s.queue_daily_gpu_seconds)

    def limits_for(self, guild_id: int | None) -> QueueLimits:
        """The defaults with a server's own ``limits`` settings over them (read at most every 30 s)."""
        limits = self.default_limits()
        if guild_id is None:
            return limits
        with self._lock:
            cached = self._guild_limits.get(guild_id)
        if cached is None or time.monotonic() - cached[0] > 30:
            with self.unit_of_work() as uow:
                overrides = dict(uow.settings.get_guild(guild_id).limits)
            cached = (time.monotonic(), overrides)
            with self._lock:
                self._guild_limits[guild_id] = cached
        return limits.merged(cached[1])

    def forget_guild_limits(self, guild_id: int) -> None:
        """Drop a server's cached limits: ``/server settings limits`` takes effect at once."""
        with self._lock:
            self._guild_limits.pop(guild_id, None)

    # -- /settings, /server settings, /history, /queue (the secondary commands) ----------
    @property
    def preferences(self) -> PreferencesService:
        """Users' defaults and servers' settings, checked (``bot/preferences.py``)."""
        from bot.preferences import PreferencesService

        return PreferencesService(uow_factory=self.unit_of_work, registry=self.registry,
                                  operator_limits=self.default_limits, limits_changed=self.forget_guild_limits,
                                  classifier_configured=lambda: bool(self.settings.classifier_model))

    @property
    def history(self) -> HistoryService:
        from bot.history import HistoryService

        return HistoryService(self.unit_of_work, self.store)

    def check_devices(self) -> None:
        """Raise :class:`~generation.errors.DeviceError` (one line) for a configured device that
        is not there: a worker given it could never run anything (imports torch)."""
        from generation.models.loading import resolve_device

        for device in self.settings.queue_devices or [self.settings.device]:
            resolve_device(device)

    def start_workers(self) -> JobQueue:
        """One worker thread per device (``queue_devices``, else the configured device), started
        after recovering what a crashed process left.  A device that is not there is refused
        first (:meth:`check_devices`), before any worker starts."""
        from bot.jobs import GenerationRunner
        from bot.training_jobs import TRAIN_KIND, KindRouter

        queue = self.queue
        if queue.started:
            return queue
        self.check_devices()
        self.job_store.prune_workers()
        devices = self.settings.queue_devices or [self.settings.device or "auto"]
        for device in devices:
            # A provider, not an engine: torch and the model load in the worker thread.
            provider = (lambda device=device: self.engine_for(device)) if self.settings.queue_devices else self.engine
            runner = GenerationRunner(provider, batch_megapixels=self.settings.queue_batch_megapixels)
            # LoRA training (long jobs, in chunks) on the same worker: bot/training_jobs.py
            runner = KindRouter(runner, {TRAIN_KIND: self._training_runner(provider)})
            queue.add_worker(runner, device=str(device))
        queue.start()
        return queue

    def close(self) -> None:
        if self._queue is not None:
            self._queue.stop()
        self.database.dispose()


#: torch's own caches, each pointed into ``$BRUSHWORK_HOME/cache/`` unless the user chose a place:
#: importing diffusers creates TorchInductor's cache folder (``${TMPDIR:-/tmp}/torchinductor_<user>``,
#: empty), and compiled kernels would follow it there.  Model downloads (``HF_HOME``) are the
#: user's own cache and stay where they are.
TORCH_CACHES = {"TORCHINDUCTOR_CACHE_DIR": "torchinductor", "TRITON_CACHE_DIR": "triton",
                "PYTORCH_KERNEL_CACHE_PATH": "torch-kernels"}


def point_torch_caches(cache_dir: Path, environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Set each of :data:`TORCH_CACHES` that is unset (or empty) to a folder under ``cache_dir``;
    returns what was set.  Must run before torch's caches are first used — before diffusers is
    imported, which the engine does on first use, after :func:`build_container`."""
    env = os.environ if environ is None else environ
    chosen = {name: str(cache_dir / folder) for name, folder in TORCH_CACHES.items() if not env.get(name)}
    env.update(chosen)
    return chosen


def build_container(settings: Settings, *, migrate: bool = True, engine: Engine | None = None) -> Container:
    """The process's objects on ``settings``' home and database (migrated unless ``migrate=False``);
    ``engine``: an engine to use instead of building one on first use (tests share their tiny one)."""
    from generation.i18n import register_catalogue

    point_torch_caches(settings.cache_dir)  # before anything imports torch or diffusers
    register_catalogue("bot")  # the outer layer's texts (bot/locales): the bot's and the services' errors
    settings.home.mkdir(parents=True, exist_ok=True)
    database = create_engine(settings.effective_database_url)
    if migrate:
        upgrade_to_head(database)
    return Container(
        settings=settings,
        database=database,
        store=ImageStore(settings.images_dir),
        registry=build_registry(settings),
        given_engine=engine,
    )

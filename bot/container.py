"""The composition root: settings → database → model registry → engine → services → queue.

Built once per process by the command line (and, later, by ``brushwork run``), and passed
down through constructors.  Importing this module does no work; the engine (torch) is
created on first use so that `brushwork history` stays instant, and the job queue is a
plain client (submit, list, cancel) until :meth:`Container.start_workers` gives it a
worker thread per device.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bot.services import ImageService
from bot.settings import Settings
from storage.db import create_engine, make_session_factory
from storage.files import ImageStore
from storage.migrate import upgrade_to_head
from storage.unit_of_work import UnitOfWork

if TYPE_CHECKING:
    import sqlalchemy

    from bot.jobs import SqlJobStore
    from generation.engine import Engine
    from generation.models import ModelRegistry
    from generation.queue import JobQueue, QueueLimits


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
    _engine: Engine | None = field(default=None, init=False)
    _engines: dict[str, Engine] = field(default_factory=dict, init=False)
    _queue: JobQueue | None = field(default=None, init=False)
    _guild_limits: dict[int, tuple[float, dict[str, Any]]] = field(default_factory=dict, init=False)
    _lock: threading.RLock = field(default_factory=threading.RLock, init=False)

    def __post_init__(self) -> None:
        self._sessions = make_session_factory(self.database)
        self.images = ImageService(registry=self.registry, engine=self.engine, uow_factory=self.unit_of_work,
                                   store=self.store)

    def unit_of_work(self) -> UnitOfWork:
        return UnitOfWork(self._sessions)

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

    def start_workers(self) -> JobQueue:
        """One worker thread per device (``queue_devices``, else the configured device), started
        after recovering what a crashed process left."""
        from bot.jobs import GenerationRunner

        queue = self.queue
        if queue.started:
            return queue
        self.job_store.prune_workers()
        devices = self.settings.queue_devices or [self.settings.device or "auto"]
        for device in devices:
            # A provider, not an engine: torch and the model load in the worker thread.
            provider = (lambda device=device: self.engine_for(device)) if self.settings.queue_devices else self.engine
            runner = GenerationRunner(provider, batch_megapixels=self.settings.queue_batch_megapixels)
            queue.add_worker(runner, device=str(device))
        queue.start()
        return queue

    def close(self) -> None:
        if self._queue is not None:
            self._queue.stop()
        self.database.dispose()


def build_container(settings: Settings, *, migrate: bool = True) -> Container:
    settings.home.mkdir(parents=True, exist_ok=True)
    database = create_engine(settings.effective_database_url)
    if migrate:
        upgrade_to_head(database)
    return Container(
        settings=settings,
        database=database,
        store=ImageStore(settings.images_dir),
        registry=build_registry(settings),
    )

"""The composition root: settings → database → model registry → engine → services.

Built once per process by the command line (and, later, by ``brushwork run``), and passed
down through constructors.  Importing this module does no work; the engine (torch) is
created on first use so that `brushwork history` stays instant.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bot.services import ImageService
from bot.settings import Settings
from storage.db import create_engine, make_session_factory
from storage.files import ImageStore
from storage.migrate import upgrade_to_head
from storage.unit_of_work import UnitOfWork

if TYPE_CHECKING:
    import sqlalchemy

    from generation.engine import Engine
    from generation.models import ModelRegistry


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
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def __post_init__(self) -> None:
        self._sessions = make_session_factory(self.database)
        self.images = ImageService(registry=self.registry, engine=self.engine, uow_factory=self.unit_of_work,
                                   store=self.store)

    def unit_of_work(self) -> UnitOfWork:
        return UnitOfWork(self._sessions)

    def engine(self) -> Engine:
        with self._lock:
            if self._engine is None:
                from generation.engine import Engine, FolderLoraResolver

                cache = self.settings.cache_dir
                self._engine = Engine(
                    self.registry,
                    device=self.settings.device,
                    dtype=self.settings.dtype,
                    cache_dir=cache,
                    max_loaded_models=self.settings.max_loaded_models,
                    lora_resolver=FolderLoraResolver(self.settings.loras_dir, cache_dir=cache),
                )
            return self._engine

    def close(self) -> None:
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

"""The unit of work: one session, one transaction, committed only when asked.

    with UnitOfWork(session_factory) as uow:
        record = uow.images.get(public_id, scope)
        uow.images.soft_delete(public_id, scope)
        uow.commit()

Leaving the block without ``commit()`` (an exception, an early return) rolls back.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType

from sqlalchemy.orm import Session

from storage.lora_repositories import DatasetRepository, LoraRepository
from storage.repositories import (
    ImageRepository,
    JobRepository,
    SettingsRepository,
    UsageRepository,
    WorkerRepository,
)
from storage.uploads import UploadRepository


class UnitOfWork:
    images: ImageRepository
    jobs: JobRepository
    settings: SettingsRepository
    workers: WorkerRepository
    usage: UsageRepository
    datasets: DatasetRepository
    loras: LoraRepository
    uploads: UploadRepository

    def __init__(self, session_factory: Callable[[], Session]) -> None:
        self._session_factory = session_factory
        self._session: Session | None = None

    def __enter__(self) -> UnitOfWork:
        if self._session is not None:
            raise RuntimeError("this UnitOfWork is already in use; make one per block")
        self._session = self._session_factory()
        self.images = ImageRepository(self._session)
        self.jobs = JobRepository(self._session)
        self.settings = SettingsRepository(self._session)
        self.workers = WorkerRepository(self._session)
        self.usage = UsageRepository(self._session)
        self.datasets = DatasetRepository(self._session)
        self.loras = LoraRepository(self._session)
        self.uploads = UploadRepository(self._session)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        session, self._session = self._session, None
        if session is None:
            return
        try:
            session.rollback()  # no-op after a commit; discards anything not committed
        finally:
            session.close()
            del self.images, self.jobs, self.settings, self.workers, self.usage, self.datasets, self.loras
            del self.uploads

    def commit(self) -> None:
        self._require_session().commit()

    def rollback(self) -> None:
        self._require_session().rollback()

    def _require_session(self) -> Session:
        if self._session is None:
            raise RuntimeError("use the UnitOfWork inside a with block")
        return self._session

"""Group commit: writes that arrive while one is being made are made together, by one thread.

The bot writes each job before it acknowledges it (a "queued" message must never stand for a
job that is not stored).  One transaction per request would put a burst of fifty requests fifty
commits deep — SQLite takes one writer at a time — so :class:`GroupCommit` hands its writer
everything that queued up during the previous write: the first request of a burst is written
alone, at once, the next ones together in the following transaction.  Nobody waits for a timer;
under load, batches grow by themselves.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Generic, TypeVar

log = logging.getLogger("brushwork")

Item = TypeVar("Item")
Outcome = TypeVar("Outcome")

#: At most this many items per call of the writer (one transaction stays short).
MAX_BATCH = 64


class GroupCommit(Generic[Item, Outcome]):
    """``submit(item)`` → a future of ``write(items)``'s outcome for that item.

    ``write`` gets the items queued since its last call (at most ``max_batch``), in order, and
    returns one outcome per item; an outcome that is an exception is raised by that item's
    future, and an exception raised by ``write`` itself by every future of the batch.
    """

    def __init__(self, write: Callable[[Sequence[Item]], Sequence[Outcome | BaseException]], *,
                 name: str = "brushwork-commit", max_batch: int = MAX_BATCH) -> None:
        self._write = write
        self._max_batch = max_batch
        self._waiting: queue.SimpleQueue[tuple[Item, Future[Outcome], bool] | None] = queue.SimpleQueue()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, item: Item, *, urgent: bool = True) -> Future[Outcome]:
        """Queue ``item``; of what queued up together, the ``urgent`` items are written (and
        their futures resolved) first, the others in a second call right after."""
        future: Future[Outcome] = Future()
        if self._closed:
            future.set_exception(RuntimeError("the writer is closed"))
        else:
            self._waiting.put((item, future, urgent))
        return future

    def close(self, timeout: float | None = 10.0) -> None:
        """Write what is queued, then stop."""
        if not self._closed:
            self._closed = True
            self._waiting.put(None)
            self._thread.join(timeout)

    def _run(self) -> None:
        stop = False
        while not stop:
            first = self._waiting.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self._max_batch:
                try:
                    entry = self._waiting.get_nowait()
                except queue.Empty:
                    break
                if entry is None:
                    stop = True
                    break
                batch.append(entry)
            self._commit([(item, future) for item, future, urgent in batch if urgent])
            self._commit([(item, future) for item, future, urgent in batch if not urgent])

    def _commit(self, batch: list[tuple[Item, Future[Outcome]]]) -> None:
        live = [(item, future) for item, future in batch if future.set_running_or_notify_cancel()]
        if not live:
            return
        items = [item for item, _ in live]
        futures = [future for _, future in live]
        try:
            outcomes = list(self._write(items))
            if len(outcomes) != len(items):
                raise RuntimeError(f"the writer returned {len(outcomes)} outcomes for {len(items)} items")
        except Exception as error:  # every waiter hears it; the writer thread goes on
            log.warning("a group write of %d item(s) failed: %s", len(items), error)
            for future in futures:
                future.set_exception(error)
            return
        for future, outcome in zip(futures, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)


__all__ = ["GroupCommit"]

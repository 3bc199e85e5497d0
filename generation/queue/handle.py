"""The handle ``submit`` returns: status, position, events, result, cancel (arq's ``Job``).

Two ways to follow a job, fed by the same events:

* ``async for event in handle.events():`` — on an asyncio loop (the Discord bot).  The worker
  thread hands events over with ``loop.call_soon_threadsafe``; nothing here blocks the loop
  (a store read for a job run by another process goes through ``asyncio.to_thread``).
* ``handle.wait(on_event=…)`` — blocking, in the calling thread (the command line); the
  callback runs in that thread too, so a progress bar needs no locking.

Both also notice changes made elsewhere (another process's worker, ``brushwork cancel``)
by reading the store every ``poll_interval_s`` while nothing arrives.

``status``, ``position``, ``eta_s`` and ``cancel()`` may read the store (a job run by another
process): in async code call them through ``asyncio.to_thread``.
"""

from __future__ import annotations

import asyncio
import queue as thread_queue
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any

from generation.errors import BrushworkError, Cancelled
from generation.queue.events import JobCancelled, JobDone, JobEvent, JobFailed
from generation.queue.jobs import JobState, Requester

if TYPE_CHECKING:
    from generation.queue.queue import JobQueue


class JobHandle:
    def __init__(self, queue: JobQueue, job_id: str) -> None:
        self._queue = queue
        self.job_id = job_id

    def __repr__(self) -> str:
        return f"JobHandle({self.job_id!r}, {self.status.value})"

    # ------------------------------------------------------------------ state
    @property
    def status(self) -> JobState:
        return self._queue.state_of(self.job_id)

    @property
    def position(self) -> int | None:
        """Jobs that start before this one (0: next); None once it runs or is finished."""
        return self._queue.position_of(self.job_id)

    @property
    def eta_s(self) -> float | None:
        return self._queue.eta_of(self.job_id)

    def cancel(self, requester: Requester | None = None) -> JobState:
        """Cancel: a queued job is removed now, a running one stops at its next step."""
        return self._queue.cancel(self.job_id, requester)

    # ------------------------------------------------------------------ following
    def iter_events(self, timeout: float | None = None) -> Iterator[JobEvent]:
        """Events in the calling thread, starting with the current state, up to the terminal one.

        ``timeout``: seconds to wait in all; raises :class:`TimeoutError` when they run out.
        """
        inbox: thread_queue.SimpleQueue[JobEvent] = thread_queue.SimpleQueue()
        subscription = self._queue.subscribe(self.job_id, inbox.put, previews=False)
        deadline = None if timeout is None else time.monotonic() + timeout
        poll = self._queue.config.poll_interval_s
        try:
            while True:
                wait = poll if deadline is None else min(poll, deadline - time.monotonic())
                if wait <= 0:
                    raise TimeoutError(f"job {self.job_id} is still {self.status.value}")
                try:
                    event = inbox.get(timeout=wait)
                except thread_queue.Empty:
                    self._queue.refresh(self.job_id)
                    continue
                yield event
                if event.terminal:
                    return
        finally:
            self._queue.unsubscribe(subscription)

    def wait(self, timeout: float | None = None, on_event: Callable[[JobEvent], None] | None = None) -> Any:
        """Block until the job ends; its result, or raise its error / :class:`Cancelled`."""
        for event in self.iter_events(timeout):
            if on_event is not None:
                on_event(event)
            if event.terminal:
                return _outcome(event)
        raise AssertionError("unreachable: the stream ends with a terminal event")

    async def events(self, *, previews: bool = False) -> AsyncIterator[JobEvent]:
        """The event stream on the running loop; ``previews`` asks for thumbnails in progress events."""
        loop = asyncio.get_running_loop()
        inbox: asyncio.Queue[JobEvent] = asyncio.Queue()

        def deliver(event: JobEvent) -> None:  # called from any thread
            loop.call_soon_threadsafe(inbox.put_nowait, event)

        subscription = await asyncio.to_thread(self._queue.subscribe, self.job_id, deliver, previews=previews)
        poll = self._queue.config.poll_interval_s
        try:
            while True:
                try:
                    event = await asyncio.wait_for(inbox.get(), poll)
                except TimeoutError:
                    await asyncio.to_thread(self._queue.refresh, self.job_id)
                    continue
                yield event
                if event.terminal:
                    return
        finally:
            self._queue.unsubscribe(subscription)

    async def result(self) -> Any:
        """Await the end of the job: its result, or raise its error / :class:`Cancelled`."""
        async for event in self.events():
            if event.terminal:
                return _outcome(event)
        raise AssertionError("unreachable: the stream ends with a terminal event")


def _outcome(event: JobEvent) -> Any:
    if isinstance(event, JobDone):
        return event.result
    if isinstance(event, JobFailed):
        raise event.error
    if isinstance(event, JobCancelled):
        raise Cancelled("job.cancelled")
    raise BrushworkError("queue.internal", error=f"unexpected event {event!r}")


__all__ = ["JobHandle"]

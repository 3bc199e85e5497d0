"""What the command lines (``bot/cli.py``, ``bot/lora_cli.py``) share: exit statuses, the usage error
and the argument parser that answers in one line, sizes and durations as they print them, a job's
progress on stderr, and waiting for a job (a worker here unless another process has one)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, TextIO

from generation.errors import BrushworkError, echo

if TYPE_CHECKING:
    from bot.container import Container
    from bot.services import SavedImage
    from generation.queue import JobEvent, JobHandle, JobQueue

EXIT_OK, EXIT_INTERNAL, EXIT_USAGE = 0, 1, 2
#: While another process's worker runs our job, how often to check that it is still alive.
REMOTE_CHECK_S = 5.0


class UsageError(Exception):
    """A command-line mistake: printed as one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        if "unrecognized arguments" in message and " --" in message:
            message += ('. Request flags go inside the quoted prompt, e.g. '
                        'brushwork generate "a cat --seed 42 --steps 30"')
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def place(position: int) -> int:
    """A queued job's place in line as people and ``--json`` read it: 1 is next.  (The queue
    counts the jobs that start before it: 0 is next.)"""
    return position + 1


def duration(seconds: float | None, measured: bool = True) -> str:
    """``measured`` False: the figure comes from defaults, not from runs on this machine."""
    if seconds is None:
        return "?"
    text = f"{max(0, round(seconds))} s" if seconds < 90 else f"{round(seconds / 60)} min"
    return text if measured else f"{text} (estimate)"


def human_size(size: int) -> str:
    if size >= 1024 * 1024:
        return f"{size / (1024 * 1024):.1f} MB"
    return f"{max(1, round(size / 1024))} KB"


class Progress:
    """A job's events on stderr: its place in the queue, the model loading, then a one-line
    progress bar.

    The bar shows only on a terminal, or when forced; waiting behind other jobs and loading
    the model are always said (one line each), since the command would otherwise look stuck.
    ``model``: the job's model (its cost group); ``queue``: where its step rates are known.
    """

    def __init__(self, stream: TextIO, enabled: bool, *, model: str | None = None,
                 queue: JobQueue | None = None) -> None:
        self.stream, self.enabled = stream, enabled
        self.model, self.queue = model, queue
        self._last = 0.0
        self._said_position: int | None = None
        self._stepped = False
        self._said_loading = False  # the wait re-subscribes now and then: each replay says "started" again

    def __call__(self, event: JobEvent) -> None:
        from generation.queue import JobProgress, JobQueued, JobRequeued, JobStalled, JobStarted

        if isinstance(event, JobQueued):
            where = place(event.position)
            if where > 1 and where != self._said_position:
                self._said_position = where
                self.stream.write(f"job {event.job_id}: position {where} in the queue, done in about "
                                  f"{duration(event.eta_s, self._measured())} "
                                  f"(brushwork cancel {event.job_id} to drop it)\n")
                self.stream.flush()
        elif isinstance(event, JobStarted):
            if self.model and not self._stepped and not self._said_loading and self._model_loads():
                self._said_loading = True
                self.stream.write(f"loading model {self.model} …\n")
                self.stream.flush()
        elif isinstance(event, JobStalled):
            self.stream.write(f"\nwarning: the worker has not reported for {duration(event.seconds)}; "
                              "it may be stuck\n")
        elif isinstance(event, JobRequeued):
            self.stream.write(f"\njob {event.job_id} went back to the queue ({event.reason})\n")
        elif isinstance(event, JobProgress):
            self._stepped = True
            if self.enabled:
                self._bar(event)

    def _measured(self) -> bool:
        return self.queue is None or self.model is None or self.queue.rates.measured(self.model)

    def _model_loads(self) -> bool:
        """A worker of this process loads the model (it runs one job, in a fresh process), or
        another process's worker does not have it loaded."""
        queue = self.queue
        return queue is None or queue.started or not queue.rates.loaded(self.model or "")

    def _extra(self, event) -> str:
        """More on the bar's line, after the step (a training: its loss)."""
        return ""

    def _bar(self, event) -> None:
        now = time.monotonic()
        done = event.step >= event.total
        if not done and now - self._last < 0.1:
            return
        self._last = now
        width = 30
        filled = int(width * event.step / max(1, event.total))
        bar = "#" * filled + "." * (width - filled)
        left = "" if done or event.eta_s is None else f", {duration(event.eta_s)} left"
        self.stream.write(f"\r[{bar}] step {event.step}/{event.total}{self._extra(event)}{left}   ")
        if done:
            self.stream.write("\n")
        self.stream.flush()


def wait_for_job(container: Container, handle: JobHandle, progress: Progress) -> list[SavedImage]:
    """Wait for a job: run a worker here unless another process's worker is alive (and take
    over if that one goes away).  Ctrl-C cancels the job.  If this process's worker cannot
    run (its device is gone) and no other process's can, the job is cancelled and the reason
    raised."""
    queue = container.queue
    try:
        while True:
            if not queue.started and not queue.remote_worker_alive():
                try:
                    container.start_workers()
                except BrushworkError:
                    handle.cancel()  # nothing here can run it: leave no job behind
                    raise
            try:
                return handle.wait(timeout=REMOTE_CHECK_S, on_event=progress)
            except TimeoutError:
                failure = queue.worker_failure
                if failure is not None and not queue.remote_worker_alive():
                    handle.cancel()
                    raise failure from None
                continue
    except KeyboardInterrupt:
        try:
            state = handle.cancel()
            print(f"\nbrushwork: job {handle.job_id} {'cancelled' if state.value == 'cancelled' else state.value}",
                  file=sys.stderr)
        except Exception:  # interrupted twice, or the database is gone: the job stays visible in `queue`
            pass
        raise


def check_out_folder(out: Path | None, flag: str = "--out") -> None:
    """Before any work: ``out`` is (or can be made) a folder this process may write into."""
    from bot.settings import folder_problem

    problem = folder_problem(out) if out is not None else None
    if problem is not None:
        raise UsageError(f"{flag} {echo(str(out), 80)}: {problem}")


def check_out_file(out: Path | None, flag: str = "--out") -> None:
    """Before any work: ``out`` names a file that can be written (its folder made if missing)."""
    from bot.settings import folder_problem

    if out is None:
        return
    try:
        if out.is_dir():
            problem = "that is a folder: name a file, e.g. --out ./result.png"
        elif out.exists() and not os.access(out, os.W_OK):
            problem = "this user may not write that file: name another"
        elif out.parent.exists() and not out.parent.is_dir():
            problem = f"{echo(str(out.parent), 80)} is a file, not a folder: name a file in a folder"
        else:
            problem = folder_problem(out.parent)
    except OSError as exc:  # a name too long for the file system
        problem = f"not a usable file name ({exc.strerror or exc})"
    if problem is not None:
        raise UsageError(f"{flag} {echo(str(out), 80)}: {problem}")

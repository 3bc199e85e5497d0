"""Crash recovery with real processes: a worker killed with SIGKILL in the middle of a run,
another killed after writing the PNG files but before recording them, then a third that
finishes the job — exactly once.  While that third worker runs, the command line in this
process only enqueues and waits for it (it is another process's worker)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bot.cli import main
from bot.jobs import plan_submission
from generation.metadata import read_recipe
from storage.records import JobStatus, Scope

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("queue_worker_process.py")
WAIT = 180.0


@pytest.fixture
def start_worker():
    """Start worker processes; any still running at the end is killed (a failed test leaves none)."""
    started: list[subprocess.Popen[str]] = []

    def start(home: Path, mode: str, marker: Path) -> subprocess.Popen[str]:
        env = {**os.environ, "BRUSHWORK_HOME": str(home), "HF_HUB_OFFLINE": "1", "PYTHONIOENCODING": "utf-8"}
        log = marker.with_suffix(".log").open("w")  # a file, not a pipe: a full pipe would block the worker
        proc = subprocess.Popen([sys.executable, str(SCRIPT), mode, str(marker)], cwd=ROOT, env=env, text=True,
                                stdout=log, stderr=subprocess.STDOUT)
        proc.log_path = Path(log.name)  # type: ignore[attr-defined]
        log.close()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=WAIT)


def wait_for(condition, what: str, proc: subprocess.Popen[str] | None = None) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if proc is not None and proc.poll() is not None:
            output = proc.log_path.read_text()  # type: ignore[attr-defined]
            raise AssertionError(f"the worker exited ({proc.returncode}) before {what}:\n{output}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def kill(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)  # no clean-up of any kind: like a power cut of that process
    proc.wait(timeout=WAIT)


def job_row(container, job_id):
    with container.unit_of_work() as uow:
        return uow.jobs.get(job_id, Scope.local_operator())


def image_count(container) -> int:
    with container.unit_of_work() as uow:
        return len(uow.images.history(Scope.local_operator(), limit=100))


def test_killed_workers_lose_nothing_and_the_job_completes_exactly_once(tmp_path, tiny_engine, monkeypatch,
                                                                        capsys, start_worker, make_container):
    home = tmp_path / "home"
    monkeypatch.setenv("BRUSHWORK_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    container = make_container(home=home)
    try:
        scope = Scope(user_id=77, guild_id=5)
        plan = container.images.plan_generate("a harbour at night --seed 21 --size 64x64 --steps 6 --n 2", scope)
        job_id = container.queue.submit(plan_submission(plan, scope)).job_id

        # 1. killed in the middle of the run
        marker = tmp_path / "paused-1"
        proc = start_worker(home, "pause-at-step", marker)
        wait_for(marker.exists, "the first worker reached step 2", proc)
        row = job_row(container, job_id)
        assert (row.status, row.attempts, row.progress > 0) == (JobStatus.RUNNING, 1, True)
        kill(proc)

        # 2. killed after the files are written, before their rows
        marker = tmp_path / "paused-2"
        proc = start_worker(home, "pause-before-rows", marker)
        wait_for(marker.exists, "the second worker wrote the files", proc)
        assert job_row(container, job_id).attempts == 2
        orphans = sorted(path.name for path in (home / "images").rglob("*.png"))
        assert len(orphans) == 2 and image_count(container) == 0
        kill(proc)

        # 3. a worker that runs to the end: recovers the job (its 3rd and last attempt) and finishes it
        stop = tmp_path / "stop"
        proc = start_worker(home, "serve", stop)
        try:
            wait_for(lambda: job_row(container, job_id).status is JobStatus.DONE, "the job to finish", proc)
            row = job_row(container, job_id)
            assert row.attempts == 3 and len(row.result_image_ids) == 2
            assert image_count(container) == 2  # exactly once: no second set of rows
            expected = tiny_engine.generate(plan.request.images())
            with container.unit_of_work() as uow:
                records = [uow.images.get(i, Scope.local_operator()) for i in row.result_image_ids]
            for record, reference in zip(records, expected, strict=True):
                path = container.store.absolute(record.file_path)
                assert path.name not in orphans  # new ids; the orphans are never referenced
                with Image.open(path) as image:
                    assert np.array_equal(np.asarray(image.convert("RGB")), np.asarray(reference.image))
                assert read_recipe(path).request.seed == record.seed

            # 4. the command line here only enqueues: the worker process runs its job
            assert main(["generate", "a small boat --seed 3 --size 64x64 --steps 2", "--no-progress"]) == 0
            public_id = capsys.readouterr().out.split("\t")[0]
            with container.unit_of_work() as uow:
                image = uow.images.get(public_id, Scope.local_operator())
                made_by = uow.jobs.get(image.job_public_id, Scope.local_operator()).worker_id
            assert made_by is not None and f":{proc.pid}:" in made_by
            assert main(["queue"]) == 0
            assert f":{proc.pid}:" in capsys.readouterr().out  # the live worker is listed
        finally:
            stop.write_text("stop")
            proc.wait(timeout=WAIT)
        assert proc.returncode == 0
    finally:
        container.close()

"""A training worker killed with SIGKILL in the middle of a chunk: the next start recovers the job
and resumes from the last checkpoint — nothing retrained, nothing half-registered."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bot.lora_services import TrainOptions
from generation.queue import JobProgress
from storage.records import JobStatus, LoraStatus, Scope
from tests.bot.test_server_loras import SMALL, make_dataset

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("training_worker_process.py")
WAIT = 180.0
A = Scope(user_id=21, guild_id=501)


def test_a_killed_training_worker_resumes_from_its_checkpoint(tmp_path, tiny_engine, make_container):
    home = tmp_path / "home"
    container = make_container(home=home, engine=tiny_engine, training_chunk_steps=2)
    proc = None
    try:
        make_dataset(container, A)
        started = container.loras.train(A, TrainOptions(name="ink", dataset="ink", **SMALL), can_manage=True)
        marker = tmp_path / "paused"
        env = {**os.environ, "BRUSHWORK_HOME": str(home), "BRUSHWORK_TRAINING_CHUNK_STEPS": "2",
               "HF_HUB_OFFLINE": "1", "PYTHONIOENCODING": "utf-8"}
        log = (tmp_path / "worker.log").open("w")
        proc = subprocess.Popen([sys.executable, str(SCRIPT), str(marker)], cwd=ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + WAIT
        while not marker.exists():
            assert proc.poll() is None, (tmp_path / "worker.log").read_text()
            assert time.monotonic() < deadline, "the worker never reached step 3"
            time.sleep(0.05)
        with container.unit_of_work() as uow:
            job = uow.jobs.get(started.job_id, Scope.local_operator())
        assert job.status is JobStatus.RUNNING and job.checkpoint["step"] == 2  # chunk 1 was checkpointed
        proc.send_signal(signal.SIGKILL)  # no clean-up of any kind
        proc.wait(timeout=WAIT)

        steps: list[int] = []
        container.queue.subscribe(started.job_id, lambda e: isinstance(e, JobProgress) and steps.append(e.step))
        container.start_workers()  # recovers the dead worker's job, then resumes it
        result = container.queue.handle(started.job_id).wait(timeout=WAIT)
        assert steps == [3, 4, 5, 6]  # from the checkpoint on: steps 1–2 were not trained again
        assert result.lora.status is LoraStatus.READY and result.lora.steps == 6
        with container.unit_of_work() as uow:
            job = uow.jobs.get(started.job_id, Scope.local_operator())
        assert job.status is JobStatus.DONE and job.attempts == 2
        assert container.loras.files.absolute(result.lora.file_path).is_file()
        assert [p.name for p in container.loras.files.root.iterdir()] == [f"{result.lora.public_id}.safetensors"]
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=WAIT)
        container.close()

"""The worker seam: a worker reaches its queue only through :class:`WorkerSeam`.

Every behaviour test in this folder already runs its workers through ``SeamOnly`` (see
conftest); these tests prove that wrapper is really in the way, that one worker's life uses
every member of the seam (no dead members), and that the queue implements each member with
the protocol's signature.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from generation.errors import Cancelled, DeviceError
from generation.queue import Continue, Finished, JobClass, JobQueue, JobState, Requester, WorkerSeam
from generation.queue import worker as worker_module

from .conftest import SEAM_MEMBERS, WAIT, ScriptedRunner, SeamOnly, submission


class AskingRunner(ScriptedRunner):
    """Asks whether an interactive job waits, as a long job's runner does between steps."""

    def run(self, jobs, context):
        context.interactive_waiting()
        return super().run(jobs, context)


def test_one_workers_life_uses_every_member_of_the_seam_and_nothing_else(make_queue, store):
    runner = AskingRunner()
    runner.outcome = lambda spec: (Continue({"chunk": 1}) if spec.job_class is JobClass.LONG and not spec.checkpoint
                                   else Finished({"value": spec.payload.get("value")}))
    queue = make_queue(runner)
    worker = queue.workers[0]
    seam = worker.seam
    assert isinstance(seam, SeamOnly)

    assert queue.submit(submission(value="plain")).wait(timeout=WAIT) == {"value": "plain"}
    assert queue.submit(submission(value="long", job_class=JobClass.LONG)).wait(timeout=WAIT) == {"value": "long"}

    runner.hold("cancelled elsewhere")  # a cancel read from the store: asked by another process
    client = JobQueue(store)
    cancelled = queue.submit(submission(owner=2, value="cancelled elsewhere"))
    runner.entered("cancelled elsewhere")
    assert client.cancel(cancelled.job_id, Requester(user=2, guild=1)) is JobState.RUNNING
    runner.release("cancelled elsewhere")
    with pytest.raises(Cancelled):
        cancelled.wait(timeout=WAIT)

    runner.hold("taken over")  # presumed dead meanwhile: another process finished the job
    lost = queue.submit(submission(value="taken over"))
    runner.entered("taken over")
    store.recover(lambda worker_id: False)
    store.complete(store.claim([lost.job_id], "elsewhere")[0], {"value": "from elsewhere"}, 1.0)
    runner.release("taken over")
    assert lost.wait(timeout=WAIT) == {"value": "from elsewhere"}

    runner.errors["nodevice"] = DeviceError("model.device_unavailable", value="cuda")  # the device went away
    queue.submit(submission(value="no device", job_id="nodevice"))
    worker.join(WAIT)
    assert store.snapshot("nodevice").state is JobState.QUEUED  # given back: the worker stopped, not the job

    worker.status()  # the heartbeat reads the queue's clock
    assert seam.used == SEAM_MEMBERS


def test_the_wrapper_refuses_what_the_seam_does_not_offer(make_queue, runner):
    seam = make_queue(runner).workers[0].seam
    for name in ("_tracks", "_lock", "scheduler", "submit", "cancel", "workers"):
        with pytest.raises(AssertionError, match="not part of WorkerSeam"):
            getattr(seam, name)


def test_the_queue_implements_each_member_with_the_protocols_signature():
    for name in SEAM_MEMBERS:
        declared = inspect.getattr_static(WorkerSeam, name)
        if isinstance(declared, property):
            continue  # plain attributes of the queue (store, config, rates)
        implemented = getattr(JobQueue, name)
        assert not name.startswith("_") and callable(implemented), name
        assert list(inspect.signature(implemented).parameters) == list(inspect.signature(declared).parameters), name


def test_the_worker_module_touches_no_private_attribute_of_its_seam_and_never_names_the_queue():
    tree = ast.parse(Path(worker_module.__file__).read_text("utf-8"))
    private = [node.attr for node in ast.walk(tree)
               if isinstance(node, ast.Attribute) and node.attr.startswith("_")
               and _is_seam(node.value)]
    assert private == []
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) for alias in node.names}
    assert "JobQueue" not in imported


def _is_seam(node: ast.expr) -> bool:
    return (isinstance(node, ast.Name) and node.id == "seam") or (isinstance(node, ast.Attribute)
                                                                  and node.attr == "seam")

"""JobQueue with its worker thread on the in-memory store: events, fairness, batching,
cancel, faults (OOM, exceptions, hangs), long jobs, restarts, several processes."""

from __future__ import annotations

import asyncio
import threading

import pytest

from generation.errors import BrushworkError, Cancelled, DeviceError, OutOfMemoryError, QueueError
from generation.queue import (
    Continue,
    Failure,
    Finished,
    JobCancelled,
    JobClass,
    JobDone,
    JobFailed,
    JobProgress,
    JobQueued,
    JobStalled,
    JobStarted,
    JobState,
    QueueLimits,
    Requester,
    WorkerStatus,
)

from .conftest import WAIT, Call, ScriptedRunner, submission


def kinds(events) -> list[str]:
    return [type(event).__name__ for event in events]


def test_events_come_in_order_and_wait_returns_the_result(make_queue, runner):
    queue = make_queue(runner, start=False)
    handle = queue.submit(submission(value="pixels"))
    stream = handle.iter_events(timeout=WAIT)
    events = [next(stream)]  # subscribed while queued; now let the worker run
    queue.start()
    events.extend(stream)
    assert kinds(events) == ["JobQueued", "JobStarted", "JobProgress", "JobProgress", "JobProgress", "JobDone"]
    assert events[0].position == 0 and events[0].eta_s > 0
    assert handle.wait(timeout=WAIT) == {"value": "pixels"}
    assert [(e.step, e.total) for e in events if isinstance(e, JobProgress)] == [(1, 3), (2, 3), (3, 3)]
    assert events[-1].result == {"value": "pixels"}
    assert handle.status is JobState.DONE and handle.position is None
    # following a finished job replays its end
    assert kinds(handle.iter_events(timeout=WAIT)) == ["JobDone"]


async def test_async_event_stream_with_previews_only_for_those_who_ask(make_queue, runner):
    queue = make_queue(runner, start=False)
    handle = await queue.submit_async(submission(value=1))
    seen = []
    async for event in handle.events(previews=True):
        seen.append(event)
        if len(seen) == 1:
            await asyncio.to_thread(queue.start)
    assert isinstance(seen[0], JobQueued) and isinstance(seen[1], JobStarted) and isinstance(seen[-1], JobDone)
    previews = {e.step: e.preview for e in seen if isinstance(e, JobProgress)}
    assert previews == {1: None, 2: f"preview of {handle.job_id}", 3: f"preview of {handle.job_id}"}
    assert await handle.result() == {"value": 1}


def test_a_flooder_delays_another_users_single_job_by_one_slot(make_queue, runner):
    queue = make_queue(runner)
    runner.hold("first")
    first = queue.submit(submission(owner=1, value="first"))
    runner.entered("first")
    flood = [queue.submit(submission(owner=1, value=i)) for i in range(1, 50)]
    single = queue.submit(submission(owner=2, value="mine"))
    assert single.position == 0  # next, ahead of the 49 others
    assert flood[0].position == 1
    runner.release("first")
    assert single.wait(timeout=WAIT) == {"value": "mine"}
    assert runner.ran()[:2] == [(first.job_id,), (single.job_id,)]
    for handle in flood:
        handle.wait(timeout=WAIT)


def test_compatible_jobs_share_one_run(make_queue, runner):
    queue = make_queue(runner)
    runner.hold("blocker")
    queue.submit(submission(owner=9, value="blocker"))
    runner.entered("blocker")
    handles = [queue.submit(submission(owner=owner, value=owner, batch_key="same")) for owner in (1, 2, 3)]
    other = queue.submit(submission(owner=4, batch_key="different"))
    runner.release("blocker")
    assert [h.wait(timeout=WAIT) for h in handles] == [{"value": 1}, {"value": 2}, {"value": 3}]
    other.wait(timeout=WAIT)
    assert sorted(runner.ran()[1]) == sorted(h.job_id for h in handles)
    started = [e for e in handles[0].iter_events(timeout=WAIT)]
    assert isinstance(started[0], JobDone)


def test_cancel_a_queued_job(make_queue, runner, store):
    queue = make_queue(runner)
    runner.hold("blocker")
    blocker = queue.submit(submission(owner=1, value="blocker"))
    runner.entered("blocker")
    waiting = queue.submit(submission(owner=2))
    assert waiting.cancel() is JobState.CANCELLED
    with pytest.raises(Cancelled):
        waiting.wait(timeout=WAIT)
    runner.release("blocker")
    blocker.wait(timeout=WAIT)
    assert all(waiting.job_id not in call for call in runner.ran())
    assert store.snapshot(waiting.job_id).state is JobState.CANCELLED


def test_cancel_a_running_job_stops_it_at_the_next_step(make_queue, runner, store):
    queue = make_queue(runner)
    runner.hold("held")
    handle = queue.submit(submission(value="held"))
    runner.entered("held")
    assert handle.cancel() is JobState.RUNNING  # asked; the worker acknowledges at its next step
    runner.release("held")
    events = list(handle.iter_events(timeout=WAIT))
    assert isinstance(events[-1], JobCancelled)
    assert all(e.step < 3 for e in events if isinstance(e, JobProgress))
    assert store.snapshot(handle.job_id).state is JobState.CANCELLED
    assert store.completions == []


def test_cancelling_one_job_of_a_batch_keeps_the_others(make_queue, runner, store):
    queue = make_queue(runner)
    runner.hold("blocker")
    queue.submit(submission(owner=9, value="blocker"))
    runner.entered("blocker")
    runner.hold(1)
    keep, drop = (queue.submit(submission(owner=o, batch_key="k", value=o)) for o in (1, 2))
    runner.release("blocker")
    runner.entered(1)
    drop.cancel()
    runner.release(1)
    with pytest.raises(Cancelled):
        drop.wait(timeout=WAIT)
    assert keep.wait(timeout=WAIT) == {"value": 1}
    assert store.snapshot(drop.job_id).state is JobState.CANCELLED
    assert drop.job_id not in store.completions and keep.job_id in store.completions


def test_out_of_memory_halves_the_batch_then_tiles_then_fails_clearly(make_queue, runner):
    runner.oom = lambda context, jobs: context.max_images_per_call > 1
    queue = make_queue(runner)
    runner.hold("blocker")
    queue.submit(submission(owner=9, value="blocker"))
    runner.entered("blocker")
    handles = [queue.submit(submission(owner=o, batch_key="big", value=o, images=2)) for o in (1, 2)]
    runner.release("blocker")
    assert [h.wait(timeout=WAIT) for h in handles] == [{"value": 1}, {"value": 2}]
    assert [(c.per_call, c.low_memory) for c in runner.calls[1:]] == [(4, False), (2, False), (1, False)]

    # a later batch of the same kind starts at the size that fitted
    runner.calls.clear()
    again = queue.submit(submission(owner=3, batch_key="big", images=2))
    again.wait(timeout=WAIT)
    assert runner.calls[0].per_call == 1

    # never enough memory: one image per call, then VAE tiling, then a clear failure
    runner.oom = lambda context, jobs: True
    runner.calls.clear()
    hopeless = queue.submit(submission(owner=4, batch_key="huge", images=2))
    with pytest.raises(QueueError) as error:
        hopeless.wait(timeout=WAIT)
    assert error.value.code == "queue.out_of_memory"
    assert "smaller size" in error.value.message() and "显存" in error.value.message("zh-CN")
    assert [(c.per_call, c.low_memory) for c in runner.calls] == [(2, False), (1, False), (1, True)]


def test_a_model_that_does_not_fit_fails_its_jobs_at_once(make_queue, runner):
    def oom(context, jobs):
        raise OutOfMemoryError("engine.out_of_memory_loading", model="sdxl", device="cuda:0")

    runner.oom = oom
    queue = make_queue(runner)
    handle = queue.submit(submission(owner=1, batch_key="xl", images=2))
    with pytest.raises(OutOfMemoryError) as error:
        handle.wait(timeout=WAIT)
    assert error.value.code == "engine.out_of_memory_loading" and "`sdxl`" in error.value.message()
    assert [(c.per_call, c.low_memory) for c in runner.calls] == [(2, False)]  # no smaller retries


def test_an_exception_fails_only_its_own_job(make_queue, runner):
    queue = make_queue(runner)
    runner.hold("blocker")
    queue.submit(submission(owner=9, value="blocker"))
    runner.entered("blocker")
    good1, bad, good2 = (queue.submit(submission(owner=o, batch_key="k", value=o)) for o in (1, 2, 3))
    runner.errors[bad.job_id] = RuntimeError("the model exploded\nwith a long traceback")
    runner.release("blocker")
    assert good1.wait(timeout=WAIT) == {"value": 1} and good2.wait(timeout=WAIT) == {"value": 3}
    with pytest.raises(QueueError) as error:
        bad.wait(timeout=WAIT)
    assert error.value.code == "queue.internal"
    assert "RuntimeError: the model exploded" in error.value.message()
    assert "traceback" not in error.value.message()


def test_a_runner_failure_outcome_reaches_the_user(make_queue, runner):
    runner.outcome = lambda spec: Failure(BrushworkError("image.unreadable", path="/x.png", reason="truncated"))
    queue = make_queue(runner)
    with pytest.raises(BrushworkError) as error:
        queue.submit(submission()).wait(timeout=WAIT)
    assert error.value.code == "image.unreadable"


def test_a_long_job_runs_in_chunks_and_lets_interactive_jobs_in_between(make_queue, runner, store):
    def outcome(spec):
        done = (spec.checkpoint or {}).get("chunks", 0) + 1
        return Finished({"chunks": done}) if done == 3 else Continue({"chunks": done})

    runner.outcome = outcome
    queue = make_queue(runner)
    runner.hold("training")
    training = queue.submit(submission(owner=1, value="training", job_class=JobClass.LONG))
    runner.entered("training")
    quick = queue.submit(submission(owner=2, value="quick"))
    runner.release("training")
    assert training.wait(timeout=WAIT) == {"chunks": 3}
    ran = runner.ran()
    assert ran.index((quick.job_id,)) == 1  # right after the first chunk
    assert ran.count((training.job_id,)) == 3
    assert store.snapshot(training.job_id).attempts == 1  # chunks do not use up attempts


def test_a_hung_worker_is_reported(make_queue, runner):
    queue = make_queue(runner, hang_timeout_s=0.2)
    runner.hold("stuck")
    handle = queue.submit(submission(value="stuck"))
    stalled = []
    for event in handle.iter_events(timeout=WAIT):
        if isinstance(event, JobStalled):
            stalled.append(event)
            assert queue.workers[0].status().state == "hung"
            assert any(s.state == "hung" for s, _alive in queue.workers_status())
            runner.release("stuck")
    assert stalled and stalled[0].seconds >= 0.2
    assert queue.workers[0].status().state in ("idle", "busy")


def test_limits_refuse_with_the_queue_length(make_queue, runner):
    queue = make_queue(runner, limits=QueueLimits(per_user=2, per_guild=3, total=None))
    runner.hold("blocker")
    queue.submit(submission(owner=1, value="blocker"))
    runner.entered("blocker")
    queue.submit(submission(owner=1))
    with pytest.raises(QueueError) as error:
        queue.submit(submission(owner=1))
    assert error.value.code == "queue.user_full"
    assert "Queue full — 2 jobs ahead, about" in error.value.message()
    assert "队列已满" in error.value.message("zh-CN")
    queue.submit(submission(owner=2))
    with pytest.raises(QueueError) as error:
        queue.submit(submission(owner=3))
    assert error.value.code == "queue.guild_full"
    queue.submit(submission(owner=3, guild=None))  # direct messages are not the server's
    runner.release("blocker")


def test_daily_image_quota_is_counted_in_the_store_and_survives_a_restart(make_queue, runner, store):
    limits = QueueLimits(per_user=None, per_guild=None, total=None, daily_images=3)
    queue = make_queue(runner, limits=limits)
    queue.submit(submission(guild=7, images=2)).wait(timeout=WAIT)
    queue.stop()
    restarted = make_queue(runner, limits=limits)
    with pytest.raises(QueueError) as error:
        restarted.submit(submission(guild=7, images=2))
    assert error.value.code == "queue.quota_images" and "3 images" in error.value.message()
    restarted.submit(submission(guild=7, images=1)).wait(timeout=WAIT)
    restarted.submit(submission(guild=8, images=2)).wait(timeout=WAIT)  # other servers are not affected


def test_restart_requeues_jobs_of_a_dead_worker_and_completes_them_once(make_queue, runner, store):
    crashed = store.add(submission(value="again"))
    out_of_luck = store.add(submission(value="no", max_attempts=1))
    store.claim([crashed.job_id, out_of_luck.job_id], "host:1:cpu:dead")
    store.heartbeat(WorkerStatus("host:1:cpu:dead", "cpu", "elsewhere", 1, "busy", heartbeat_at=0.0, started_at=0.0))
    queue = make_queue(runner)
    assert queue.handle(crashed.job_id).wait(timeout=WAIT) == {"value": "again"}
    snapshot = store.snapshot(crashed.job_id)
    assert snapshot.state is JobState.DONE and snapshot.attempts == 2
    with pytest.raises(BrushworkError) as error:
        queue.handle(out_of_luck.job_id).wait(timeout=WAIT)
    assert error.value.code == "queue.crashed"
    assert store.completions == [crashed.job_id]


def test_a_worker_that_lost_its_claim_records_nothing(make_queue, runner, store):
    queue = make_queue(runner)
    runner.hold("first")
    handle = queue.submit(submission(value="first"))
    runner.entered("first")
    # meanwhile this worker was presumed dead: another process re-queued and finished the job
    store.recover(lambda worker_id: False)
    other = store.claim([handle.job_id], "elsewhere")[0]
    store.complete(other, {"value": "from elsewhere"}, 1.0)
    runner.release("first")
    assert handle.wait(timeout=WAIT) == {"value": "from elsewhere"}
    assert store.completions == [handle.job_id]


def test_a_client_queue_follows_and_cancels_jobs_run_by_another_process(make_queue, runner, store):
    worker_side = make_queue(runner)
    client = make_queue(None, start=False)
    assert client.remote_worker_alive()
    done = client.submit(submission(owner=1, value="remote"))
    assert done.wait(timeout=WAIT) == {"value": "remote"}

    runner.hold("remote-held")
    running = client.submit(submission(owner=2, value="remote-held"))
    runner.entered("remote-held")
    assert running.status is JobState.RUNNING
    with pytest.raises(QueueError) as error:
        client.cancel(running.job_id, Requester(user=3, guild=1))
    assert error.value.code == "queue.not_yours"
    with pytest.raises(QueueError):
        client.cancel(running.job_id, Requester(user=2, guild=99))  # another server cannot even see it
    assert client.cancel(running.job_id, Requester(user=2, guild=1)) is JobState.RUNNING
    runner.release("remote-held")
    with pytest.raises(Cancelled):
        running.wait(timeout=WAIT)
    assert worker_side.handle(running.job_id).status is JobState.CANCELLED


def test_listing_shows_running_then_waiting_in_start_order(make_queue, runner):
    queue = make_queue(runner)
    runner.hold("first")
    first = queue.submit(submission(owner=1, value="first"))
    runner.entered("first")
    later = [queue.submit(submission(owner=1)), queue.submit(submission(owner=1)), queue.submit(submission(owner=2))]
    views = queue.jobs()
    assert [v.job_id for v in views] == [first.job_id, later[2].job_id, later[0].job_id, later[1].job_id]
    assert [v.position for v in views] == [None, 0, 1, 2]
    assert views[0].state is JobState.RUNNING
    assert all(v.eta_s is not None and v.eta_s > 0 for v in views[1:])
    assert views[1].eta_s < views[3].eta_s
    runner.release("first")
    for handle in later:
        handle.wait(timeout=WAIT)


def test_the_loop_is_not_blocked_while_a_job_runs(make_queue, runner):
    """The worker is a thread: coroutines keep running while a job is held mid-run."""
    queue = make_queue(runner)

    async def scenario():
        runner.hold("x")
        handle = await queue.submit_async(submission(value="x"))
        await asyncio.to_thread(runner.entered, "x")
        ticks = 0
        for _ in range(5):
            await asyncio.sleep(0)
            ticks += 1
        runner.release("x")
        return ticks, await handle.result()

    assert asyncio.run(scenario()) == (5, {"value": "x"})


def test_failed_events_carry_the_error(make_queue, runner):
    runner.errors["never"] = RuntimeError()
    queue = make_queue(runner)
    handle = queue.submit(submission())
    runner.errors[handle.job_id] = ValueError("bad")
    events = list(handle.iter_events(timeout=WAIT))
    assert isinstance(events[-1], JobFailed) and events[-1].error.code == "queue.internal"


def test_events_reach_many_followers_once(make_queue, runner):
    queue = make_queue(runner)
    runner.hold("followed")
    handle = queue.submit(submission(value="followed"))
    results, errors = [], []

    def follow():
        try:
            results.append(kinds(handle.iter_events(timeout=WAIT)))
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=follow) for _ in range(4)]
    for thread in threads:
        thread.start()
    runner.entered("followed")
    runner.release("followed")
    for thread in threads:
        thread.join(WAIT)
    assert not errors and len(results) == 4
    assert all(r[-1] == "JobDone" and r.count("JobDone") == 1 for r in results)


def test_estimates_come_from_measured_step_times(make_queue, runner):
    from generation.queue import StepRates
    from generation.queue.eta import DEFAULT_RATE

    queue = make_queue(runner)
    assert queue.rates.rate("sd15") == DEFAULT_RATE
    queue.submit(submission(cost_group="sd15", work=3.0)).wait(timeout=WAIT)
    measured = queue.rates.rate("sd15")
    assert measured != DEFAULT_RATE and queue.rates.measured("sd15")
    assert queue.rates.rate("never-seen") == DEFAULT_RATE and not queue.rates.measured("never-seen")  # not sd15's
    elsewhere = StepRates()  # another process reads the rates from the worker's heartbeat
    elsewhere.restore(queue.workers[0].status().stats)
    assert elsewhere.rate("sd15") == measured


def test_a_job_keeps_the_id_its_caller_chose_unless_taken(make_queue, runner):
    queue = make_queue(runner)
    chosen = queue.submit(submission(owner=1, value=1, job_id="k3x9fq2a"))
    again = queue.submit(submission(owner=2, value=2, job_id="k3x9fq2a"))
    assert chosen.job_id == "k3x9fq2a" and again.job_id != "k3x9fq2a"
    assert [chosen.wait(timeout=WAIT), again.wait(timeout=WAIT)] == [{"value": 1}, {"value": 2}]


class NoDeviceRunner(ScriptedRunner):
    """A runner whose device is not there: its engine cannot even be created."""

    def __init__(self, *, at: str) -> None:
        super().__init__()
        self.at = at  # "warm_up" or "run"
        self.warm_ups = 0

    def warm_up(self) -> None:
        self.warm_ups += 1
        if self.at == "warm_up":
            raise DeviceError("model.device_unavailable", value="cuda")

    def run(self, jobs, context):
        if self.at == "run":
            self.calls.append(Call(tuple(job.job_id for job in jobs), context.max_images_per_call, False))
            raise DeviceError("model.device_unavailable", value="cuda")
        return super().run(jobs, context)


@pytest.mark.parametrize("at", ["warm_up", "run"])
def test_a_device_that_is_not_there_stops_the_worker_and_leaves_the_job_queued(make_queue, store, at):
    runner = NoDeviceRunner(at=at)
    queue = make_queue(runner)
    worker = queue.workers[0]
    handle = queue.submit(submission(value="a cat"))
    worker.join(WAIT)
    assert not worker.alive  # stopped for good: no retry every few seconds
    assert queue.worker_failure is not None and queue.worker_failure.code == "model.device_unavailable"
    assert queue.worker_failure.message() == ("Device `cuda` is not available on this machine. Leave the "
                                              "device setting out to use what is there.")
    assert runner.warm_ups == 1 and len(runner.calls) == (1 if at == "run" else 0)
    snap = store.snapshot(handle.job_id)
    assert snap.state is JobState.QUEUED and snap.attempts == 0  # not the job's fault: for another worker
    assert [status.state.value for status in store.workers()] == ["stopped"]  # others do not wait for it


def test_usage_charged_in_another_process_counts_when_this_one_dispatches(make_queue, store):
    """Two queues on one store are two processes.  The flooder's job runs on the first; the
    second process has never dispatched for the flooder, but the store says that job is
    running, so the flooder's next job goes after the single job of a user who used a little
    GPU time earlier — as it would in one process."""
    busy, fresh = ScriptedRunner(), ScriptedRunner()
    first = make_queue(busy)
    busy.hold("flood 1")
    flood_1 = first.submit(submission(owner=1, value="flood 1"))
    busy.entered("flood 1")
    earlier = store.claim([store.add(submission(owner=2, value="earlier")).job_id], "gone")[0]
    store.finish_cancelled(earlier, 0.001)  # user 2 used a little GPU time, less than a running job's estimate
    flood_2 = first.submit(submission(owner=1, value="flood 2"))
    single = first.submit(submission(owner=2, value="single"))
    second = make_queue(fresh)  # another process's worker frees up now: whom does it take?
    assert single.wait(timeout=WAIT) == {"value": "single"}
    assert fresh.ran()[0] == (single.job_id,)  # not the flood's second job
    busy.release("flood 1")
    for handle in (flood_1, flood_2):
        handle.wait(timeout=WAIT)
    assert sorted(store.completions) == sorted([flood_1.job_id, flood_2.job_id, single.job_id])
    assert second.workers[0].alive


def test_two_processes_dispatching_at_once_claim_each_job_once(make_queue, store):
    """Many jobs, two queues on one store each with a worker: every job runs exactly once."""
    queues = [make_queue(ScriptedRunner(steps=1)) for _ in range(2)]
    handles = [queues[i % 2].submit(submission(owner=i % 5, value=i)) for i in range(40)]
    assert [handle.wait(timeout=WAIT) for handle in handles] == [{"value": i} for i in range(40)]
    assert sorted(store.completions) == sorted(handle.job_id for handle in handles)

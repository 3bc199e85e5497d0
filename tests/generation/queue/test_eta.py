"""Estimates come from the runs measured here, per model, with a model's cold start apart.

The bug these pin down: ``brushwork queue`` said 7–8 minutes for two tiny jobs that took
seconds, because one slow model load (or another model's) had gone into every estimate.
"""

from __future__ import annotations

import time

import pytest

from generation.queue import JobSpec, StepRates
from generation.queue.eta import DEFAULT_COLD_START, DEFAULT_OVERHEAD, DEFAULT_RATE, LOADED_FRESH_S

from .conftest import WAIT, ScriptedRunner, submission


def spec(group: str = "tiny", work: float = 5.0) -> JobSpec:
    return JobSpec(job_id="j", seq=1, kind="generate", owner=1, guild=None, payload={}, work=work,
                   cost_group=group)


def run(rates: StepRates, group: str, *, work: float, stepping: float, fixed: float) -> None:
    """What a worker reports after a finished run (``Worker``'s ``observe_rates``)."""
    rates.observe_steps(group, work, stepping)
    rates.observe_overhead(group, fixed)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_two_finished_jobs_give_an_estimate_near_their_durations_not_minutes():
    rates = StepRates()
    run(rates, "sdxl", work=30.0, stepping=9.0, fixed=300.0)  # SDXL's first run: a 5-minute download and load
    run(rates, "tiny", work=5.0, stepping=2.0, fixed=6.0)  # the tiny model's first run loads it (cold)…
    run(rates, "tiny", work=5.0, stepping=2.0, fixed=0.5)  # …the second finds it loaded
    assert rates.measured("tiny")
    assert rates.estimate(spec("tiny")) == pytest.approx(2.5)  # 0.5 s fixed + 5 × 0.4 s
    two_jobs = 2 * rates.estimate(spec("tiny"))
    assert two_jobs < 10  # seconds, not the 7–8 minutes another model's load made of it


def test_a_cold_start_is_counted_apart_and_only_when_the_model_is_not_loaded():
    rates = StepRates()  # one loaded model, the engine's default
    run(rates, "sd15", work=8.0, stepping=2.0, fixed=12.0)  # cold: loading took ~11.5 s
    run(rates, "sd15", work=8.0, stepping=2.0, fixed=0.5)  # warm
    assert rates.loaded("sd15") and rates.overhead("sd15") == 0.5 and rates.cold_start("sd15") == 12.0
    assert rates.estimate(spec("sd15", work=8.0)) == pytest.approx(2.5)  # loaded: warm
    run(rates, "sdxl", work=8.0, stepping=4.0, fixed=20.0)  # another model took its place
    assert not rates.loaded("sd15")
    assert rates.estimate(spec("sd15", work=8.0)) == pytest.approx(14.0)  # cold: 12 s + 8 × 0.25 s
    run(rates, "sd15", work=8.0, stepping=2.0, fixed=11.0)  # that run was cold again: it refines the cold start
    assert rates.overhead("sd15") == 0.5 and 11.0 < rates.cold_start("sd15") < 12.0


def test_with_room_for_two_models_switching_between_them_stays_warm():
    rates = StepRates(loaded_models=2)
    run(rates, "sd15", work=1.0, stepping=1.0, fixed=10.0)
    run(rates, "sdxl", work=1.0, stepping=1.0, fixed=20.0)
    run(rates, "sd15", work=1.0, stepping=1.0, fixed=0.5)  # still loaded: a warm run
    assert rates.loaded("sd15") and rates.loaded("sdxl")
    assert rates.overhead("sd15") == 0.5 and rates.cold_start("sd15") == 10.0


def test_a_model_never_measured_uses_the_documented_defaults_not_another_models_numbers():
    rates = StepRates()
    run(rates, "sdxl", work=30.0, stepping=9.0, fixed=300.0)
    assert not rates.measured("tiny") and rates.measured("sdxl")
    assert rates.rate("tiny") == DEFAULT_RATE and rates.overhead("tiny") == DEFAULT_OVERHEAD
    assert rates.estimate(spec("tiny", work=5.0)) == pytest.approx(DEFAULT_OVERHEAD + DEFAULT_COLD_START
                                                                   + 5.0 * DEFAULT_RATE)


def test_another_process_estimates_the_same_and_trusts_loaded_models_only_while_fresh():
    clock = Clock()
    worker = StepRates(clock=clock)
    run(worker, "tiny", work=5.0, stepping=2.0, fixed=6.0)
    run(worker, "tiny", work=5.0, stepping=2.0, fixed=0.5)
    client = StepRates(clock=clock)  # `brushwork queue`: reads the heartbeat row's stats
    client.restore(worker.snapshot())
    assert client.measured("tiny") and client.loaded("tiny")
    assert client.estimate(spec("tiny")) == worker.estimate(spec("tiny")) == pytest.approx(2.5)
    clock.now += LOADED_FRESH_S + 1  # the worker went quiet (stopped: its models are gone)
    assert not client.loaded("tiny")
    assert client.estimate(spec("tiny")) == pytest.approx(6.0 + 2.0)  # its measured cold start


def test_a_restored_loaded_model_never_turns_this_process_first_run_into_a_warm_one():
    clock = Clock()
    before = StepRates(clock=clock)
    run(before, "tiny", work=5.0, stepping=2.0, fixed=6.0)
    restarted = StepRates(clock=clock)
    restarted.restore(before.snapshot())  # a fresh heartbeat of the process that just stopped
    run(restarted, "tiny", work=5.0, stepping=2.0, fixed=7.0)  # this process had to load it again
    assert restarted.cold_start("tiny") == pytest.approx(6.3) and restarted.overhead("tiny") == DEFAULT_OVERHEAD


def test_old_snapshots_keep_their_step_rates_but_not_their_mixed_overheads():
    rates = StepRates()
    rates.restore({"rates": {"tiny": 0.4, "*": 0.4}, "overheads": {"tiny": 210.0, "*": 210.0}})
    assert rates.rate("tiny") == 0.4 and rates.overhead("tiny") == DEFAULT_OVERHEAD
    rates.restore({"rates": {"tiny": -1, "x": "fast"}, "warm": {"tiny": None}, "loaded": "tiny", "at": "now"})
    assert rates.rate("tiny") == 0.4 and not rates.loaded("tiny")


class LoadingRunner(ScriptedRunner):
    """A scripted runner whose first run loads its model: it takes ``load_s`` before step 1."""

    def __init__(self, load_s: float) -> None:
        super().__init__(steps=3)
        self.load_s = load_s

    def run(self, jobs, context):
        if not self.calls:
            time.sleep(self.load_s)
        return super().run(jobs, context)


def test_the_queue_estimates_waiting_jobs_from_its_measured_warm_runs(make_queue):
    runner = LoadingRunner(load_s=1.0)
    queue = make_queue(runner)
    for value in (1, 2):  # two tiny jobs, one after the other: the first loads the model
        queue.submit(submission(value=value, cost_group="tiny", work=0.01)).wait(timeout=WAIT)
    assert queue.rates.cold_start("tiny") >= 0.9 and queue.rates.overhead("tiny") < 0.3
    runner.hold("running")
    queue.submit(submission(value="running", cost_group="tiny", work=0.01))
    runner.entered("running")
    waiting = [queue.submit(submission(owner=2, value=value, cost_group="tiny", work=0.01)) for value in (3, 4)]
    try:
        deadline = time.monotonic() + WAIT
        while True:  # positions are cached for a poll interval: wait until the new jobs are placed
            views = {view.job_id: view for view in queue.jobs()}
            etas = [views[handle.job_id].eta_s for handle in waiting]
            if all(eta is not None for eta in etas) or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        assert all(eta is not None for eta in etas)
        assert etas[-1] < 0.6  # both warm: well under the one-second load the first run measured
        assert [views[handle.job_id].position for handle in waiting] == [0, 1]
    finally:
        runner.release_all()
    for handle in waiting:
        handle.wait(timeout=WAIT)

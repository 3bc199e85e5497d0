"""FairScheduler: fairness across servers and users, weighting by recent GPU time, batching."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from generation.queue import FairScheduler, JobClass, JobSpec
from generation.queue.scheduler import NEG_INF, _log_add, _log_sub, decayed

_seq = itertools.count(1)


def job(owner: int, guild: int | None = 1, *, key: str | None = None, images: int = 1, work: float = 1.0,
        priority: int = 0, job_class: JobClass = JobClass.INTERACTIVE, name: str | None = None) -> JobSpec:
    seq = next(_seq)
    return JobSpec(job_id=name or f"{owner}-{seq}", seq=seq, kind="generate", owner=owner, guild=guild, payload={},
                   job_class=job_class, priority=priority, batch_key=key, images=images, work=work)


def drain(scheduler: FairScheduler, *, now: float = 0.0, limit: int = 1) -> list[list[str]]:
    runs = []
    while True:
        batch = scheduler.next_batch(now, limit)
        if not batch:
            return runs
        runs.append([spec.job_id for spec in batch])


def owners(runs: list[list[str]]) -> list[str]:
    return [run[0].split("-")[0] for run in runs]


def test_a_flooder_delays_a_single_job_by_at_most_one_slot():
    scheduler = FairScheduler()
    for _ in range(50):
        scheduler.add(job(owner=1))
    first = scheduler.next_batch(now=0.0)  # the flooder's first job is running
    assert first[0].owner == 1
    scheduler.add(job(owner=2, name="2-single"))  # then another user asks for one image
    assert scheduler.next_batch(now=1.0)[0].job_id == "2-single"


def test_even_when_both_arrive_together_users_alternate():
    scheduler = FairScheduler()
    for _ in range(5):
        scheduler.add(job(owner=1))
    for _ in range(5):
        scheduler.add(job(owner=2))
    assert owners(drain(scheduler)) == ["1", "2"] * 5


def test_round_robin_across_guilds_then_users_within_a_guild():
    scheduler = FairScheduler()
    # guild 10 has three busy users, guild 20 one: guild 20 still gets every other slot
    for user in (1, 2, 3):
        for _ in range(4):
            scheduler.add(job(owner=user, guild=10))
    for _ in range(6):
        scheduler.add(job(owner=9, guild=20))
    order = owners(drain(scheduler))
    assert all(order[i] == "9" for i in range(1, 12, 2))  # guild 20 on every other slot
    firsts = order[0:12:2]
    assert sorted(firsts[:3]) == ["1", "2", "3"]  # within guild 10, each user in turn


def test_direct_messages_are_one_more_server():
    scheduler = FairScheduler()
    for _ in range(3):
        scheduler.add(job(owner=1, guild=None))
        scheduler.add(job(owner=2, guild=7))
    assert owners(drain(scheduler)) == ["1", "2", "1", "2", "1", "2"]


def test_recent_gpu_time_weights_the_order_and_fades():
    scheduler = FairScheduler(half_life_s=600)
    scheduler.charge(owner=1, guild=1, seconds=100, at=0)  # user 1 used the GPU a lot just now
    for _ in range(3):
        scheduler.add(job(owner=1, work=10))
        scheduler.add(job(owner=2, work=10))
    # user 2 goes until their usage catches up with user 1's 100 s
    assert owners(drain(scheduler, now=0.0)) == ["2", "2", "2", "1", "1", "1"]
    # an hour later (6 half-lives) the past hardly counts: plain alternation again
    later = FairScheduler(half_life_s=600)
    later.charge(owner=1, guild=1, seconds=100, at=0)
    later.charge(owner=2, guild=1, seconds=5, at=3600)
    assert later.usage(3600, owner=1) == pytest.approx(100 / 64)
    for _ in range(2):
        later.add(job(owner=1, work=10))
        later.add(job(owner=2, work=10))
    assert owners(drain(later, now=3600))[:2] == ["1", "2"]


def test_settle_replaces_the_estimate_with_the_real_cost():
    scheduler = FairScheduler(half_life_s=600)
    spec = job(owner=1, work=50)
    scheduler.add(spec)
    scheduler.next_batch(now=100)
    assert scheduler.usage(100, owner=1) == pytest.approx(50)
    scheduler.settle(spec.job_id, 2.0, now=100)
    assert scheduler.usage(100, owner=1) == pytest.approx(2.0)
    assert scheduler.usage(100, guild=1) == pytest.approx(2.0)


def test_priority_orders_a_users_own_jobs_only():
    scheduler = FairScheduler()
    scheduler.add(job(owner=1, name="1-low"))
    scheduler.add(job(owner=1, name="1-high", priority=5))
    scheduler.add(job(owner=2, name="2-a"))
    assert [run[0] for run in drain(scheduler)] == ["1-high", "2-a", "1-low"]


def test_interactive_jobs_go_before_long_ones():
    scheduler = FairScheduler()
    scheduler.add(job(owner=1, name="1-train", job_class=JobClass.LONG))
    scheduler.add(job(owner=2, name="2-gen"))
    assert scheduler.has_pending(JobClass.LONG)
    assert [run[0] for run in drain(scheduler)] == ["2-gen", "1-train"]


def test_compatible_jobs_ride_along_round_robin_across_owners():
    scheduler = FairScheduler()
    for _ in range(6):
        scheduler.add(job(owner=1, key="sd15-512"))
    scheduler.add(job(owner=2, key="sd15-512", name="2-x"))
    scheduler.add(job(owner=3, key="sd15-512", name="3-x"))
    scheduler.add(job(owner=4, key="sdxl", name="4-x"))
    batch = [spec.job_id for spec in scheduler.next_batch(now=0, limit=4)]
    assert len(batch) == 4 and batch[0].startswith("1-")
    assert {"2-x", "3-x"} <= set(batch)  # the other owners get seats before user 1's second job
    assert "4-x" not in batch  # incompatible settings never share a call
    assert len(scheduler) == 5


def test_batch_limit_counts_images():
    scheduler = FairScheduler()
    scheduler.add(job(owner=1, key="k", images=4, name="1-four"))
    scheduler.add(job(owner=2, key="k", images=4, name="2-four"))
    scheduler.add(job(owner=3, key="k", images=2, name="3-two"))
    batch = [spec.job_id for spec in scheduler.next_batch(now=0, limit=lambda spec: 6)]
    assert batch == ["1-four", "3-two"]  # 4 + 4 would not fit; 4 + 2 does


def test_removed_jobs_never_run_and_counts_follow():
    scheduler = FairScheduler()
    a, b, c = job(owner=1, key="k"), job(owner=1, key="k"), job(owner=2, guild=3)
    for spec in (a, b, c):
        scheduler.add(spec)
    assert not scheduler.add(a)  # idempotent
    assert scheduler.pending(owner=1) == 2 and scheduler.pending(guild=3) == 1 and len(scheduler) == 3
    assert scheduler.remove(a.job_id) == a and scheduler.remove(a.job_id) is None
    ran = [job_id for run in drain(scheduler, limit=8) for job_id in run]
    assert sorted(ran) == sorted([b.job_id, c.job_id])
    assert len(scheduler) == 0 and scheduler.pending(owner=1) == 0


def test_order_preview_matches_the_real_dispatch_order():
    rng = random.Random(7)
    scheduler = FairScheduler()
    for _ in range(300):
        scheduler.add(job(owner=rng.randrange(20), guild=rng.choice([None, 1, 2, 3]), work=rng.uniform(0.5, 3),
                          priority=rng.choice([0, 0, 1])))
    for owner in range(5):
        scheduler.charge(owner, 1, seconds=rng.uniform(0, 20), at=0)
    preview = scheduler.order(now=10.0)
    actual = [run[0] for run in drain(scheduler, now=10.0)]
    assert preview == actual


def test_log_domain_usage_adds_removes_and_decays():
    tau = 600 / math.log(2)
    total = _log_add(NEG_INF, 10.0, 0.0, tau)
    total = _log_add(total, 5.0, 600.0, tau)  # 10 s at t=0 is worth 5 s at t=600
    assert decayed(total, 600.0, tau) == pytest.approx(10.0)
    total = _log_sub(total, 10.0, 0.0, tau)
    assert decayed(total, 600.0, tau) == pytest.approx(5.0)
    assert _log_sub(total, 5.0, 600.0, tau) == NEG_INF
    # a year of wall-clock time stays finite: no overflow in the normalised representation
    far = _log_add(NEG_INF, 1.0, 3.2e7 + 1.7e9, tau)
    assert math.isfinite(far) and decayed(far, 3.2e7 + 1.7e9, tau) == pytest.approx(1.0)


def test_many_users_many_jobs_stay_consistent():
    scheduler = FairScheduler()
    rng = random.Random(3)
    specs = [job(owner=rng.randrange(100), guild=rng.randrange(10), key=rng.choice([None, "a", "b"]))
             for _ in range(2000)]
    for spec in specs:
        scheduler.add(spec)
    for spec in specs[::7]:
        scheduler.remove(spec.job_id)
    seen = [job_id for run in drain(scheduler, limit=4) for job_id in run]
    assert len(seen) == len(set(seen)) == len(specs) - len(specs[::7])

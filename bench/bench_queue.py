"""The job queue: dispatch cost, fairness, batching throughput, event-loop lag.

Figures, not tests; every figure comes with a baseline measured in the same run.

1. **Dispatch overhead** with 10,000 queued jobs from 1,000 users (goal < 1 ms per job):
   the fair scheduler alone (against a plain FIFO ``deque``, what most bots use); the whole
   in-memory queue (worker thread, claims, events) with a runner that does nothing; and the
   SQLite job store's claim + finish per job.
2. **Fairness**: a user with 50 queued jobs and another user's single job arriving while the
   first of the 50 runs: how many job slots the single job waits (FIFO baseline: 50).
3. **Batching**: 8 compatible tiny-model requests through the queue as one pipeline call vs
   one call each (ratio; on a GPU the gain is much larger than on a CPU).
4. **Event-loop lag** while the worker generates (goal p99 < 20 ms): a coroutine that wakes
   every 5 ms measures how late it wakes, with the queue busy and, as the baseline, idle.

    python bench/bench_queue.py [--jobs 10000 --users 1000 --size 128 --steps 10]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import threading
import time
from collections import deque
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from generation.queue import (  # noqa: E402
    FairScheduler,
    Finished,
    JobQueue,
    JobSpec,
    MemoryJobStore,
    QueueConfig,
    QueueLimits,
    Submission,
)

NO_LIMITS = QueueLimits(per_user=None, per_guild=None, total=None)


def specs(count: int, users: int, *, batch_keys: int = 0, seed: int = 1) -> list[JobSpec]:
    rng = random.Random(seed)
    out = []
    for seq in range(1, count + 1):
        user = rng.randrange(users)
        key = f"k{rng.randrange(batch_keys)}" if batch_keys else None
        out.append(JobSpec(job_id=f"j{seq}", seq=seq, kind="generate", owner=user, guild=user % 50 or None,
                           payload={}, batch_key=key, work=rng.uniform(0.5, 4)))
    return out


def per_job_us(seconds: float, jobs: int) -> float:
    return seconds / jobs * 1e6


# ---------------------------------------------------------------------- 1. dispatch


def bench_dispatch(count: int, users: int) -> None:
    print(f"1. dispatch with {count:,} queued jobs from {users:,} users")
    jobs = specs(count, users)

    fifo = deque(jobs)
    started = time.perf_counter()
    while fifo:
        fifo.popleft()
    fifo_s = time.perf_counter() - started

    scheduler = FairScheduler()
    started = time.perf_counter()
    for spec in jobs:
        scheduler.add(spec)
    add_s = time.perf_counter() - started
    started = time.perf_counter()
    dispatched = 0
    now = 0.0
    while True:
        batch = scheduler.next_batch(now)
        if not batch:
            break
        for spec in batch:
            scheduler.settle(spec.job_id, spec.work * 0.9, now)
        dispatched += len(batch)
        now += 1.0
    fair_s = time.perf_counter() - started

    batched = FairScheduler()
    for spec in specs(count, users, batch_keys=20):
        batched.add(spec)
    started = time.perf_counter()
    runs = 0
    while batch := batched.next_batch(now, 8):
        runs += 1
    batched_s = time.perf_counter() - started

    started = time.perf_counter()
    scheduler.load(jobs)
    scheduler.order(now)
    order_s = time.perf_counter() - started

    print(f"   FIFO deque (baseline)           {per_job_us(fifo_s, count):8.2f} µs/job")
    print(f"   fair scheduler: add             {per_job_us(add_s, count):8.2f} µs/job")
    print(f"   fair scheduler: dispatch+settle {per_job_us(fair_s, dispatched):8.2f} µs/job")
    print(f"   with batching (20 keys, ≤8)     {per_job_us(batched_s, count):8.2f} µs/job  ({runs:,} runs)")
    print(f"   full order preview (positions)  {order_s * 1e3:8.1f} ms for all {count:,} jobs")

    # the whole in-memory queue: worker thread, claims, events, a runner that does nothing
    class Nothing:
        def batch_limit(self, spec):
            return 1

        def run(self, batch, context):
            context.report_progress(1, 1)
            return {spec.job_id: Finished(None) for spec in batch}

    store = MemoryJobStore()
    queue = JobQueue(store, config=QueueConfig(limits=NO_LIMITS))
    rng = random.Random(2)
    for _ in range(count):
        user = rng.randrange(users)
        store.add(Submission("generate", owner=user, guild=user % 50 or None, payload={}))
    queue.add_worker(Nothing())
    started = time.perf_counter()
    queue.start()
    while len(store.completions) < count:
        time.sleep(0.01)
    queue_s = time.perf_counter() - started
    queue.stop()
    print(f"   in-memory queue end to end      {per_job_us(queue_s, count):8.2f} µs/job  (worker thread, claim, "
          f"events, store)")

    bench_sql_store(min(count, 10_000), users)


def bench_sql_store(count: int, users: int, drain: int = 1000) -> None:
    from bot.jobs import SqlJobStore
    from storage.db import create_engine, make_session_factory
    from storage.files import ImageStore
    from storage.migrate import upgrade_to_head
    from storage.records import NewJob
    from storage.unit_of_work import UnitOfWork

    with tempfile.TemporaryDirectory() as folder:
        engine = create_engine(f"sqlite:///{folder}/bench.db")
        upgrade_to_head(engine)
        sessions = make_session_factory(engine)
        factory = lambda: UnitOfWork(sessions)  # noqa: E731
        rng = random.Random(3)
        with factory() as uow:  # bulk set-up: 10,000 queued rows
            for _ in range(count):
                user = rng.randrange(users)
                uow.jobs.add(NewJob(kind="generate", owner_id=user, guild_id=user % 50 or None, request={}))
            uow.commit()
        store = SqlJobStore(factory, ImageStore(Path(folder) / "images"))
        scheduler = FairScheduler()
        started = time.perf_counter()
        scheduler.load(store.queued())
        load_s = time.perf_counter() - started
        started = time.perf_counter()
        for _ in range(drain):
            batch = scheduler.next_batch(0.0)
            claims = store.claim([spec.job_id for spec in batch], "bench")
            for claim in claims:
                store.complete(claim, [], 0.1)
        sql_s = time.perf_counter() - started
        started = time.perf_counter()
        for _ in range(200):
            store.pending_counts(1, 1)
        counts_s = time.perf_counter() - started
        engine.dispose()
    print(f"   SQLite store: load {count:,} queued  {load_s * 1e3:8.1f} ms at start")
    print(f"   SQLite store: claim + done      {per_job_us(sql_s, drain):8.0f} µs/job  (two committed "
          f"transactions, {count:,} rows queued)")
    print(f"   SQLite store: admission counts  {per_job_us(counts_s, 200):8.0f} µs/submit")


# ---------------------------------------------------------------------- 2. fairness


def bench_fairness() -> None:
    print("2. fairness: 50 jobs from user A, then one job from user B while A's first runs")
    gate = threading.Event()

    class Recording:
        def __init__(self):
            self.order: list[int] = []

        def batch_limit(self, spec):
            return 1

        def run(self, batch, context):
            self.order.extend(spec.owner for spec in batch)
            if len(self.order) == 1:
                gate.wait(30)
            return {spec.job_id: Finished(None) for spec in batch}

    store, runner = MemoryJobStore(), Recording()
    queue = JobQueue(store, config=QueueConfig(limits=NO_LIMITS))
    queue.add_worker(runner)
    queue.start()
    flood = [queue.submit(Submission("generate", owner=1, guild=10, payload={})) for _ in range(50)]
    while not runner.order:
        time.sleep(0.001)
    single = queue.submit(Submission("generate", owner=2, guild=10, payload={}))
    position = single.position
    gate.set()
    single.wait(timeout=60)
    for handle in flood:
        handle.wait(timeout=60)
    queue.stop()
    slots = runner.order.index(2)  # jobs that ran before B: the one running when B asked, and any after it
    print(f"   B's position when queued: {position} (next); job slots B waited: {slots}, the one already "
          f"running  (FIFO baseline: 50; goal ≤ 1)")

    # servers: guild X has 5 busy users, guild Y one; DMs one user
    scheduler = FairScheduler()
    for user in range(5):
        for _ in range(20):
            scheduler.add(JobSpec(job_id=f"x{user}-{_}", seq=len(scheduler) + 1, kind="g", owner=user, guild=1,
                                  payload={}))
    for n in range(20):
        scheduler.add(JobSpec(job_id=f"y{n}", seq=1000 + n, kind="g", owner=100, guild=2, payload={}))
        scheduler.add(JobSpec(job_id=f"d{n}", seq=2000 + n, kind="g", owner=200, guild=None, payload={}))
    first = [scheduler.next_batch(float(i))[0].guild for i in range(30)]
    shares = {name: first.count(guild) for name, guild in (("X (5 users)", 1), ("Y (1 user)", 2), ("DMs", None))}
    print(f"   first 30 slots by server: {shares}  (round-robin across servers, FIFO would give X all 30)")


# ---------------------------------------------------------------------- 3. batching


def bench_batching(size: int, steps: int, count: int = 8) -> None:
    print(f"3. batching: {count} compatible tiny-model requests, {size}x{size}, {steps} steps")
    from bot.container import build_container
    from bot.jobs import plan_submission
    from bot.settings import load_settings
    from storage.records import Scope

    timings = {}
    for label, batch in (("one by one", 1), ("batched", count)):
        with tempfile.TemporaryDirectory() as home:
            container = build_container(load_settings(home=Path(home), queue_max_batch_images=batch,
                                                      queue_max_per_user=None, queue_max_per_guild=None))
            container.engine().load("tiny")  # load and warm up outside the measurement
            container.engine().generate(container.images.plan_generate(
                f"warm up --size {size}x{size} --steps 2", Scope.local_operator()).request.images())
            handles = []
            for index in range(count):
                scope = Scope(user_id=index, guild_id=1)
                plan = container.images.plan_generate(
                    f"prompt number {index} --seed {index} --size {size}x{size} --steps {steps} --sampler euler_a",
                    scope)
                handles.append(container.queue.submit(plan_submission(plan, scope)))
            started = time.perf_counter()
            container.start_workers()
            for handle in handles:
                handle.wait(timeout=600)
            timings[label] = time.perf_counter() - started
            container.close()
    one, batched = timings["one by one"], timings["batched"]
    print(f"   one by one (baseline) {one:7.2f} s   batched {batched:7.2f} s   speed-up ×{one / batched:.2f}")


# ---------------------------------------------------------------------- 4. event-loop lag


def bench_loop_lag(size: int, steps: int, jobs: int = 6) -> None:
    print(f"4. event-loop lag while the worker generates ({jobs} tiny-model jobs, {size}x{size}, {steps} steps)")
    from bot.container import build_container
    from bot.jobs import plan_submission
    from bot.settings import load_settings
    from storage.records import Scope

    async def ticker(stop: asyncio.Event, lags: list[float]) -> None:
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            before = loop.time()
            await asyncio.sleep(0.005)
            lags.append(loop.time() - before - 0.005)

    async def measure(container, busy: bool) -> list[float]:
        stop, lags = asyncio.Event(), []
        tick = asyncio.create_task(ticker(stop, lags))
        if busy:
            handles = []
            for index in range(jobs):
                scope = Scope(user_id=index, guild_id=1)
                plan = container.images.plan_generate(
                    f"lag test {index} --seed {index} --size {size}x{size} --steps {steps}", scope)
                handles.append(await container.queue.submit_async(plan_submission(plan, scope)))

            async def follow(handle):
                async for _event in handle.events(previews=True):
                    pass

            await asyncio.gather(*(follow(handle) for handle in handles))
        else:
            await asyncio.sleep(2.0)
        stop.set()
        await tick
        return lags

    with tempfile.TemporaryDirectory() as home:
        container = build_container(load_settings(home=Path(home), queue_max_batch_images=2))
        container.engine().load("tiny")
        container.start_workers()
        idle = asyncio.run(measure(container, busy=False))
        busy = asyncio.run(measure(container, busy=True))
        container.close()

    def describe(lags: list[float]) -> str:
        ordered = sorted(lags)
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
        return (f"p50 {statistics.median(ordered) * 1e3:5.1f} ms  p99 {p99 * 1e3:5.1f} ms  "
                f"max {ordered[-1] * 1e3:6.1f} ms  ({len(ordered)} ticks)")

    print(f"   idle queue (baseline)  {describe(idle)}")
    print(f"   worker generating      {describe(busy)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--users", type=int, default=1_000)
    parser.add_argument("--size", type=int, default=128, help="tiny-model image side for 3 and 4")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--only", choices=["dispatch", "fairness", "batching", "lag"])
    args = parser.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.WARNING)
    if args.only in (None, "dispatch"):
        bench_dispatch(args.jobs, args.users)
    if args.only in (None, "fairness"):
        bench_fairness()
    if args.only in (None, "batching"):
        bench_batching(args.size, args.steps)
    if args.only in (None, "lag"):
        bench_loop_lag(args.size, args.steps)
    return 0


if __name__ == "__main__":
    sys.exit(main())

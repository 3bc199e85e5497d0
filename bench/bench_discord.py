"""The Discord bot's responsiveness, against the fake Discord on loopback, with the tiny model.

The bot runs as it does in production — its own process (``brushwork run``'s stack: database,
queue, worker thread, discord.py client), pointed at the fake Discord — and this process is
Discord: it sends the interactions and timestamps the answers.

1. Acknowledgement latency: 50 users send ``/imagine`` at the same moment; the time from the fake
   dispatching each interaction to the bot's first callback reaching it (Discord's limit is 3 s;
   goal p99 < 100 ms), with the worker idle and with it busy generating.  Baseline, same run,
   same users: a command that answers at once and does nothing else (the floor set by discord.py,
   loopback HTTP and the gateway).
2. Event-loop lag in the bot process while the worker generates (and the bot follows the jobs:
   status edits, previews, result uploads): how late a 10 ms ticker wakes up, against the same
   ticker while the bot is idle.

    python bench/bench_discord.py [--users 50] [--busy-steps 30]

Prints the figures; asserts nothing.  Run from the repository root.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def describe(name: str, seconds: list[float]) -> str:
    ms = [s * 1000 for s in seconds]
    return (f"{name:<36} n={len(ms):<4} p50={percentile(ms, 50):7.1f} ms  p95={percentile(ms, 95):7.1f} ms  "
            f"p99={percentile(ms, 99):7.1f} ms  max={max(ms):7.1f} ms")


# ---------------------------------------------------------------------- the bot process


def serve_bot(port: int, home: str, lag_file: str) -> None:
    """The bot's process: the container on ``home``, one worker, the bot pointed at the fake on
    ``port``, plus a 10 ms ticker whose lateness is written to ``lag_file`` at exit."""
    import signal

    import discord
    import yarl
    from discord import app_commands
    from discord.gateway import DiscordWebSocket
    from discord.http import Route

    from bot.container import build_container
    from bot.discord_app.client import BrushworkBot
    from bot.settings import load_settings

    Route.BASE = f"http://127.0.0.1:{port}/api/v10"
    DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(f"ws://127.0.0.1:{port}/gateway")
    settings = load_settings(home=Path(home), queue_max_per_user=10, queue_max_per_guild=10_000,
                             queue_max_total=10_000)
    container = build_container(settings)
    samples: list[tuple[float, float]] = []

    async def ticker() -> None:
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(0.01)
            samples.append((time.time(), max(0.0, loop.time() - start - 0.01)))

    async def main() -> None:
        engine = container.engine()  # the tiny model, warmed up before the bot connects
        plan = container.images.plan_generate("warm up --size 64x64 --steps 2 --seed 1", _operator())
        await asyncio.to_thread(engine.generate, plan.request.images())
        container.start_workers()
        bot = BrushworkBot(container, guild_ready_timeout=0.05)

        @app_commands.command(name="bench-ping", description="answers at once (the benchmark's baseline)")
        async def ping(interaction: discord.Interaction) -> None:
            await interaction.response.send_message("pong", ephemeral=True)

        bot.tree.add_command(ping)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        tick = asyncio.create_task(ticker())
        async with bot:
            runner = asyncio.create_task(bot.start(os.environ["BENCH_TOKEN"]))
            await stop.wait()
            tick.cancel()
            await bot.close()
            runner.cancel()

    try:
        asyncio.run(main())
    finally:
        container.close()
        Path(lag_file).write_text(json.dumps(samples))


def _operator():
    from storage.records import Scope

    return Scope.local_operator()


# ---------------------------------------------------------------------- Discord's side


async def run(users: int, busy_steps: int) -> None:
    from bot.container import build_container
    from bot.settings import load_settings
    from generation.queue import JobState
    from tests.fakediscord import FakeDiscord

    home = Path(tempfile.mkdtemp(prefix="brushwork-bench-"))
    lag_file = home / "lag.json"
    fake = FakeDiscord()
    await fake.start()
    world = fake.add_standard_world()
    people = [fake.add_user(f"user{i}", guild=world.guild) for i in range(users)]
    env = {**os.environ, "BENCH_TOKEN": fake.token, "PYTHONPATH": str(ROOT)}
    bot = subprocess.Popen([sys.executable, __file__, "--serve-bot", str(fake.port), str(home), str(lag_file)],
                           env=env, cwd=ROOT)
    client = build_container(load_settings(home=home))  # reads only: where the jobs stand
    try:
        print("waiting for the bot process (tiny model warm-up, login)…", file=sys.stderr)
        await fake.wait_ready(timeout=300)
        await fake.wait_for_sync(timeout=60)
        await asyncio.sleep(0.5)  # guild_ready_timeout: the bot's on_ready

        async def jobs_active() -> list:
            return await asyncio.to_thread(client.queue.jobs)

        async def settle() -> None:
            while await jobs_active():
                await asyncio.sleep(0.1)
            await asyncio.sleep(2.0)  # the last results are uploaded

        async def keep_busy(count: int) -> None:
            for i in range(count):
                busy = await fake.slash(world.admin, world.general, "imagine",
                                        {"prompt": f"busy {i} --size 512x512 --steps {busy_steps} --n 2 --seed {i}"})
                await fake.wait_for_response(busy)
            while not any(view.state is JobState.RUNNING for view in await jobs_active()):
                await asyncio.sleep(0.05)

        async def burst(command: str, options_for) -> list[float]:
            interactions = await asyncio.gather(*(fake.slash(user, world.general, command, options_for(i))
                                                  for i, user in enumerate(people)))
            return [(await fake.wait_for_response(i, timeout=10)).delay for i in interactions]

        def imagine(tag: str):
            return lambda i: {"prompt": f"{tag} {i} --size 64x64 --steps 2 --seed {i}"}

        print(f"Brushwork bot (own process) against the fake Discord on loopback; tiny model on the CPU; "
              f"{len(people)} users at once; {os.cpu_count()} CPU cores")
        figures = {"ack, baseline, worker idle": await burst("bench-ping", lambda i: {})}
        figures["ack, /imagine, worker idle"] = await burst("imagine", imagine("idle"))
        started = time.monotonic()
        await settle()
        delivered = time.monotonic() - started
        await keep_busy(3)
        figures["ack, baseline, worker busy"] = await burst("bench-ping", lambda i: {})
        figures["ack, /imagine, worker busy"] = await burst("imagine", imagine("busy"))
        for name, values in figures.items():
            print(describe(name, values))
        late = sum(1 for i in fake.interactions if i.response is None and i.type == 2)
        print(f"{'late acknowledgements (> 3 s)':<36} {late}")
        print(f"{'50 idle-burst jobs done in':<36} {delivered:.1f} s after the burst (one worker, CPU)")
        await settle()

        idle = (time.time(), time.time() + 3.0)
        await asyncio.sleep(3.0)
        await keep_busy(3)
        busy = (time.time(), time.time() + 3.0)
        await asyncio.sleep(3.0)
        await settle()
    finally:
        bot.terminate()
        bot.wait(timeout=60)
        client.close()
        await fake.stop()
    samples = json.loads(lag_file.read_text())
    idle_lag = [lag for at, lag in samples if idle[0] <= at <= idle[1]]
    busy_lag = [lag for at, lag in samples if busy[0] <= at <= busy[1]]
    print(describe("bot loop lag, idle", idle_lag))
    print(describe("bot loop lag, generating + following", busy_lag))
    print(f"{'mean lag ratio (generating / idle)':<36} "
          f"{statistics.fmean(busy_lag) / max(statistics.fmean(idle_lag), 1e-6):.1f}x")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--serve-bot":
        serve_bot(int(sys.argv[2]), sys.argv[3], sys.argv[4])
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--busy-steps", type=int, default=30)
    args = parser.parse_args()
    asyncio.run(run(args.users, args.busy_steps))

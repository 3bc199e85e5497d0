"""A queue worker in its own process, for the crash tests (run as a script, not collected).

    python tests/bot/queue_worker_process.py MODE MARKER

``BRUSHWORK_HOME`` says which database.  Modes:

* ``pause-at-step`` — run queued jobs, but stop forever at the 2nd step of the first run and
  write MARKER (the test then kills the process: a crash in the middle of a run);
* ``pause-before-rows`` — the same, after the PNG files of a job are written but before the
  transaction that records its rows (a crash between the two);
* ``serve`` — run jobs until MARKER exists (a stop file), then stop cleanly.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path


def main() -> None:
    mode, marker = sys.argv[1], Path(sys.argv[2])
    from bot.container import build_container
    from bot.settings import load_settings

    def pause_here() -> None:
        marker.write_text("paused")
        time.sleep(3600)

    if mode == "pause-at-step":
        import bot.jobs

        original = bot.jobs._ProgressRelay.__call__

        def relay(self, info):
            original(self, info)
            if info.overall_step == 2:
                pause_here()

        bot.jobs._ProgressRelay.__call__ = relay
    elif mode == "pause-before-rows":
        import storage.archive

        write = storage.archive._write_fresh
        written: list[str] = []

        def write_then_pause(store, public_id, data, created, new_id):
            result = write(store, public_id, data, created, new_id)
            written.append(public_id)
            if len(written) == 2:  # both images of the job are on disk, no row yet
                pause_here()
            return result

        storage.archive._write_fresh = write_then_pause
    elif mode != "serve":
        raise SystemExit(f"unknown mode {mode}")

    container = build_container(load_settings())
    container.start_workers()
    print("worker started", flush=True)
    while not (mode == "serve" and marker.exists()):
        time.sleep(0.05)
    container.close()


if __name__ == "__main__":
    main()

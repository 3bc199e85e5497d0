"""A queue worker in its own process that pauses in the middle of a training chunk, for the crash
test (run as a script, not collected).

    python tests/bot/training_worker_process.py MARKER

``BRUSHWORK_HOME`` says which database; ``BRUSHWORK_TRAINING_CHUNK_STEPS`` how long a chunk is.
The worker trains the queued job; when it is about to train step 3 (one chunk of 2 steps is
checkpointed, the next one has begun) it writes MARKER and sleeps: the test then kills the
process with SIGKILL, a crash in the middle of a chunk.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path


def main() -> None:
    marker = Path(sys.argv[1])
    from bot.container import build_container
    from bot.settings import load_settings
    from generation.training.trainer import LoraTrainer

    original = LoraTrainer._train_step

    def step(self, ready):
        if self.step == 2:
            marker.write_text("paused")
            time.sleep(3600)
        return original(self, ready)

    LoraTrainer._train_step = step
    container = build_container(load_settings())
    container.start_workers()
    print("worker started", flush=True)
    time.sleep(3600)


if __name__ == "__main__":
    main()

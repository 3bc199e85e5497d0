"""Discord snowflakes: 64-bit ids whose top 42 bits are milliseconds since the Discord epoch.

discord.py derives ``created_at`` (and the 15-minute interaction expiry) from an id, so every
id the fake hands out carries a real timestamp; ``at=`` backdates one (an expired interaction).
"""

from __future__ import annotations

import time

DISCORD_EPOCH_MS = 1_420_070_400_000


class SnowflakeFactory:
    """Hands out unique, time-carrying snowflakes (worker 1, process 1, rolling increment)."""

    def __init__(self) -> None:
        self._increment = 0
        self._issued: set[int] = set()

    def new(self, at: float | None = None) -> int:
        """A fresh id for the UNIX time ``at`` (seconds; now by default)."""
        moment = time.time() if at is None else at
        millis = int(moment * 1000) - DISCORD_EPOCH_MS
        while True:
            self._increment = (self._increment + 1) & 0xFFF
            snowflake = (millis << 22) | (1 << 17) | (1 << 12) | self._increment
            if snowflake not in self._issued:
                self._issued.add(snowflake)
                return snowflake


def snowflake_time(snowflake: int) -> float:
    """The UNIX time (seconds) a snowflake was made at."""
    return ((int(snowflake) >> 22) + DISCORD_EPOCH_MS) / 1000

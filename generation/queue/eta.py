"""Time estimates from measured step times.

A job's size is its ``work`` (the bot counts megapixel-steps); a worker measures, for each
run, the seconds between its first and last step report and the work those steps did, and
keeps an exponential moving average of *seconds per work unit* per cost group (model), plus
the fixed part of a run (loading, prompt encoding, decoding, saving).  So an estimate is
``overhead + work × rate``: a 1024² SDXL job is about four 512² SD1.5 jobs of steps only
when SDXL's measured rate says so.

Rates start from a conservative default, are shared through the workers' heartbeat rows
(``snapshot``/``restore``) so another process (``brushwork queue``) estimates the same way,
and survive a restart.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from generation.queue.jobs import JobSpec

#: Seconds per megapixel-step before anything was measured (an SD1.5 step at 512² on a
#: mid-range GPU is ~0.05 s, i.e. ~0.2 s per megapixel-step).
DEFAULT_RATE = 0.2
DEFAULT_OVERHEAD = 1.0
_ANY = "*"  # the rate over every group: the fallback for a group never measured


class StepRates:
    def __init__(self, *, default_rate: float = DEFAULT_RATE, default_overhead: float = DEFAULT_OVERHEAD,
                 smoothing: float = 0.3) -> None:
        self._rates: dict[str, float] = {}
        self._overheads: dict[str, float] = {}
        self._default_rate = default_rate
        self._default_overhead = default_overhead
        self._alpha = smoothing
        self._lock = threading.Lock()

    def observe_steps(self, group: str, work: float, seconds: float) -> None:
        """``seconds`` of pure stepping did ``work`` units (e.g. between first and last step)."""
        if work <= 0 or seconds <= 0:
            return
        with self._lock:
            for key in (group, _ANY):
                self._rates[key] = self._blend(self._rates.get(key), seconds / work)

    def observe_overhead(self, group: str, seconds: float) -> None:
        if seconds < 0:
            return
        with self._lock:
            for key in (group, _ANY):
                self._overheads[key] = self._blend(self._overheads.get(key), seconds)

    def _blend(self, old: float | None, new: float) -> float:
        return new if old is None else old + self._alpha * (new - old)

    def rate(self, group: str) -> float:
        with self._lock:
            return self._rates.get(group) or self._rates.get(_ANY) or self._default_rate

    def overhead(self, group: str) -> float:
        with self._lock:
            value = self._overheads.get(group)
            if value is None:
                value = self._overheads.get(_ANY, self._default_overhead)
            return value

    def estimate(self, spec: JobSpec) -> float:
        """Seconds a job should take on its own."""
        return self.overhead(spec.cost_group) + spec.work * self.rate(spec.cost_group)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"rates": dict(self._rates), "overheads": dict(self._overheads)}

    def restore(self, data: Mapping[str, Any] | None) -> None:
        """Start from rates measured earlier (only the ones given; bad values are ignored)."""
        if not data:
            return
        with self._lock:
            for target, key in ((self._rates, "rates"), (self._overheads, "overheads")):
                for group, value in dict(data.get(key) or {}).items():
                    if isinstance(value, int | float) and value >= 0:
                        target[str(group)] = float(value)



__all__ = ["DEFAULT_RATE", "StepRates"]

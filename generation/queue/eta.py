"""Time estimates from measured runs, with a model's cold start kept apart.

A job's size is its ``work`` (the bot counts megapixel-steps).  After each run a worker
reports, for the run's cost group (the model), two measurements: the seconds between its
first and last step report with the work those steps did (→ *seconds per work unit*), and
the rest of the run (its fixed part: prompt encoding, decoding, saving).

A run is **cold** when its model was not loaded before it — its group is not among the
``loaded_models`` groups run most recently in this process (the engine keeps that many
models; ``max_loaded_models``).  A cold run's fixed part includes loading the model, so it
is kept apart as the group's *cold start*: one slow load (or first download) no longer
inflates every later estimate, and only a job whose model is not loaded pays for it.

So a job's estimate is ``fixed + work × rate``, with ``fixed`` the cold start or the warm
overhead; the three are exponential moving averages of recent runs, per group, measured on
this machine.  A group never measured uses the defaults below — never another model's
numbers (the tiny test model and SDXL differ a hundredfold) — and :meth:`StepRates.measured`
says so, so that a front end calls such a figure a rough estimate.

Rates are shared through the workers' heartbeat rows (``snapshot``/``restore``) so another
process (``brushwork queue``) estimates the same way, and survive a restart.  Which models
are loaded travels too, but counts only while fresh (:data:`LOADED_FRESH_S`): a worker that
stopped has unloaded everything.  Snapshots from before the cold start was kept apart mixed
loads into the overhead: their overheads are ignored, their step rates kept.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from generation.queue.jobs import JobSpec

#: Seconds per megapixel-step before anything was measured (an SD1.5 step at 512² on a
#: mid-range GPU is ~0.05 s, i.e. ~0.2 s per megapixel-step).
DEFAULT_RATE = 0.2
#: Seconds of a warm run besides its steps (prompt encoding, VAE decoding, PNG encoding).
DEFAULT_OVERHEAD = 1.0
#: Extra seconds a run pays when its model is not loaded (an SD-class model from a local
#: disk onto a GPU; a first download takes longer, and is then measured).
DEFAULT_COLD_START = 15.0
#: How long a model another process's worker reported loaded counts as loaded (its heartbeat
#: comes every few seconds; a stopped worker's last one ages out).
LOADED_FRESH_S = 10.0


class StepRates:
    """Measured step rates, warm overheads and cold starts per cost group (thread-safe)."""

    def __init__(self, *, default_rate: float = DEFAULT_RATE, default_overhead: float = DEFAULT_OVERHEAD,
                 default_cold_start: float = DEFAULT_COLD_START, smoothing: float = 0.3, loaded_models: int = 1,
                 clock: Callable[[], float] = time.time) -> None:
        self._rates: dict[str, float] = {}
        self._warm: dict[str, float] = {}  # fixed seconds of a run whose model was loaded
        self._cold: dict[str, float] = {}  # fixed seconds of a run that loaded its model
        self._loaded: list[str] = []  # groups run here, most recent first (at most loaded_models)
        self._remote_loaded: dict[str, float] = {}  # group → when another process said it was loaded
        self._default_rate = default_rate
        self._default_overhead = default_overhead
        self._default_cold_start = default_cold_start
        self._alpha = smoothing
        self._capacity = max(1, loaded_models)
        self._clock = clock
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ measuring
    def observe_steps(self, group: str, work: float, seconds: float) -> None:
        """``seconds`` of pure stepping did ``work`` units (e.g. between first and last step)."""
        if work <= 0 or seconds <= 0:
            return
        with self._lock:
            self._rates[group] = self._blend(self._rates.get(group), seconds / work)

    def observe_overhead(self, group: str, seconds: float) -> None:
        """A finished run's fixed part: a cold start if ``group``'s model was not loaded here
        before this run, else a warm overhead.  Either way the model is loaded afterwards."""
        if seconds < 0:
            return
        with self._lock:
            target = self._warm if group in self._loaded else self._cold
            target[group] = self._blend(target.get(group), seconds)
            if group in self._loaded:
                self._loaded.remove(group)
            self._loaded.insert(0, group)
            del self._loaded[self._capacity:]

    def _blend(self, old: float | None, new: float) -> float:
        return new if old is None else old + self._alpha * (new - old)

    # ------------------------------------------------------------------ estimating
    def measured(self, group: str) -> bool:
        """Whether ``group``'s step time was measured (else its estimates use the defaults)."""
        with self._lock:
            return group in self._rates

    def loaded(self, group: str) -> bool:
        """Whether ``group``'s model is loaded: run here lately, or freshly reported by another process."""
        with self._lock:
            return self._is_loaded(group)

    def _is_loaded(self, group: str) -> bool:
        if group in self._loaded:
            return True
        reported = self._remote_loaded.get(group)
        return reported is not None and self._clock() - reported < LOADED_FRESH_S

    def rate(self, group: str) -> float:
        with self._lock:
            return self._rates.get(group, self._default_rate)

    def overhead(self, group: str) -> float:
        """Fixed seconds of a run whose model is loaded."""
        with self._lock:
            return self._warm_overhead(group)

    def _warm_overhead(self, group: str) -> float:
        return self._warm.get(group, self._default_overhead)

    def cold_start(self, group: str) -> float:
        """Fixed seconds of a run that must load its model first."""
        with self._lock:
            return self._cold_start(group)

    def _cold_start(self, group: str) -> float:
        cold = self._cold.get(group)
        return cold if cold is not None else self._warm_overhead(group) + self._default_cold_start

    def estimate(self, spec: JobSpec) -> float:
        """Seconds a job should take on its own, loading its model first if it is not loaded."""
        group = spec.cost_group
        with self._lock:
            fixed = self._warm_overhead(group) if self._is_loaded(group) else self._cold_start(group)
            return fixed + spec.work * self._rates.get(group, self._default_rate)

    # ------------------------------------------------------------------ sharing
    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"rates": dict(self._rates), "warm": dict(self._warm), "cold": dict(self._cold),
                    "loaded": list(self._loaded), "at": self._clock()}

    def restore(self, data: Mapping[str, Any] | None) -> None:
        """Start from measurements made earlier or elsewhere (only the ones given; bad values
        are ignored).  Models it says are loaded count as loaded while the snapshot is fresh,
        for estimates only: what this process loaded is what it observed itself."""
        if not data:
            return
        with self._lock:
            for target, key in ((self._rates, "rates"), (self._warm, "warm"), (self._cold, "cold")):
                for group, value in dict(data.get(key) or {}).items():
                    if isinstance(value, int | float) and value >= 0:
                        target[str(group)] = float(value)
            at = data.get("at")
            loaded = data.get("loaded")
            if isinstance(at, int | float) and isinstance(loaded, list):
                for group in loaded:
                    if self._remote_loaded.get(str(group), -1.0) < at:
                        self._remote_loaded[str(group)] = float(at)


__all__ = ["DEFAULT_COLD_START", "DEFAULT_OVERHEAD", "DEFAULT_RATE", "LOADED_FRESH_S", "StepRates"]

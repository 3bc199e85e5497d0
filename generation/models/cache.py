"""A small, thread-safe, least-recently-used cache of loaded models.

A GPU holds one or two Stable Diffusion models at a time, so the cache is bounded by count
(``max_items``) and, optionally, by memory (``max_bytes``, with ``size_of`` measuring a
value).  When a new model must come in, the least recently used ones are dropped *before*
it loads — as many as its size, remembered from an earlier load, needs — and CUDA's cached
blocks are released, so two models never have to fit at once.  A model whose size was not
known yet is measured after loading and older ones are dropped until the total fits again.
Loads are serialised: two threads asking for the same model load it once.
"""

from __future__ import annotations

import gc
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class ModelCache(Generic[K, V]):
    def __init__(self, max_items: int = 1, *, on_evict: Callable[[K, V], None] | None = None,
                 max_bytes: int | None = None, size_of: Callable[[V], int] | None = None) -> None:
        if max_items < 1:
            raise ValueError("max_items must be at least 1")
        if max_bytes is not None and (max_bytes < 1 or size_of is None):
            raise ValueError("max_bytes must be positive and needs size_of")
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._size_of = size_of
        self._sizes: dict[K, int] = {}  # measured sizes, kept after eviction to plan the next load
        self._items: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()  # guards _items
        self._load_lock = threading.Lock()  # one load at a time (memory is the constraint)
        self._on_evict = on_evict
        self.loads = 0

    def get(self, key: K) -> V | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def get_or_load(self, key: K, loader: Callable[[], V]) -> V:
        value = self.get(key)
        if value is not None:
            return value
        with self._load_lock:
            value = self.get(key)  # another thread may have loaded it meanwhile
            if value is not None:
                return value
            evicted: list[tuple[K, V]] = []
            expected = self._sizes.get(key, 0)
            with self._lock:
                while self._items and (len(self._items) >= self.max_items
                                       or self._over_budget(extra=expected)):
                    evicted.append(self._items.popitem(last=False))
            for old_key, old_value in evicted:
                self._release(old_key, old_value)
            del evicted
            value = loader()
            if self._size_of is not None:
                self._sizes[key] = self._size_of(value)
            evicted = []
            with self._lock:
                self._items[key] = value
                self.loads += 1
                while len(self._items) > 1 and self._over_budget():
                    evicted.append(self._items.popitem(last=False))
            for old_key, old_value in evicted:
                self._release(old_key, old_value)
            del evicted
            return value

    def _over_budget(self, extra: int = 0) -> bool:
        if self.max_bytes is None:
            return False
        return sum(self._sizes.get(k, 0) for k in self._items) + extra > self.max_bytes

    def loaded_bytes(self) -> int:
        """Measured size of what is loaded now (0 when sizes are not measured)."""
        with self._lock:
            return sum(self._sizes.get(k, 0) for k in self._items)

    def evict(self, key: K) -> bool:
        with self._lock:
            value = self._items.pop(key, None)
        if value is None:
            return False
        self._release(key, value)
        return True

    def clear(self) -> None:
        with self._lock:
            items = list(self._items.items())
            self._items.clear()
        for key, value in items:
            self._release(key, value)

    def keys(self) -> list[K]:
        with self._lock:
            return list(self._items)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._items

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def _release(self, key: K, value: V) -> None:
        if self._on_evict is not None:
            self._on_evict(key, value)
        del value
        free_accelerator_memory()


def free_accelerator_memory() -> None:
    """Collect garbage and hand CUDA's cached blocks back (no-op without torch/CUDA)."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is None:
        return
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    mps = getattr(torch, "mps", None)
    if mps is not None and torch.backends.mps.is_available():
        mps.empty_cache()

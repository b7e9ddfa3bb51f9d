"""One cache of loaded models shared by every job on a worker, evicting the least
recently used entries when their total size passes a memory budget."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(slots=True)
class CacheStats:
    entries: int = 0
    bytes: int = 0
    hits: int = 0
    misses: int = 0
    evictions: int = 0


class ModelCache:
    """``get(key, load, size)`` returns the cached value or loads it. ``budget_bytes``
    None means no limit. The newest entry is kept even when alone it exceeds the budget
    (a job needs its model); evicted values stay alive while a job still holds them."""

    def __init__(self, budget_bytes: int | None = None) -> None:
        self.budget_bytes = budget_bytes
        self._entries: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._lock = threading.RLock()
        self._loading: dict[Hashable, threading.Lock] = {}
        self.stats = CacheStats()
        self.on_evict: Callable[[Hashable, Any], None] | None = None

    def get(self, key: Hashable, load: Callable[[], T], size: Callable[[T], int]) -> T:
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                self.stats.hits += 1
                return self._entries[key][0]  # type: ignore[no-any-return]
            gate = self._loading.setdefault(key, threading.Lock())
        with gate:  # two jobs asking for one model load it once
            with self._lock:
                if key in self._entries:
                    self._entries.move_to_end(key)
                    self.stats.hits += 1
                    return self._entries[key][0]  # type: ignore[no-any-return]
            value = load()
            nbytes = int(size(value))
            with self._lock:
                self._entries[key] = (value, nbytes)
                self.stats.misses += 1
                self._loading.pop(key, None)
                self._evict()
        return value

    def _evict(self) -> None:
        if self.budget_bytes is None:
            return
        while len(self._entries) > 1 and self.total_bytes() > self.budget_bytes:
            key, (value, nbytes) = self._entries.popitem(last=False)
            self.stats.evictions += 1
            log.info("model cache: evicted %s (%.1f MB)", key, nbytes / 1e6)
            if self.on_evict is not None:
                self.on_evict(key, value)

    def total_bytes(self) -> int:
        return sum(n for _, n in self._entries.values())

    def keys(self) -> list[Hashable]:
        with self._lock:
            return list(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def snapshot(self) -> CacheStats:
        with self._lock:
            return CacheStats(
                len(self._entries),
                self.total_bytes(),
                self.stats.hits,
                self.stats.misses,
                self.stats.evictions,
            )

"""The `memory` backend: an in-process LRU bounded by `max_entries`, with per-entry TTLs."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

__all__ = ["MemoryStore"]


class MemoryStore:
    """Least recently used entries go first once `max_entries` is reached.

    Time comes from `clock` (seconds), so tests move it instead of sleeping. Expired
    entries are dropped when read, and crowded out by newer ones otherwise.
    """

    kind = "memory"

    def __init__(self, max_entries: int, clock: Callable[[], float]) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._max = max_entries
        self._clock = clock
        self._items: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        self.evictions = 0

    async def get(self, key: str) -> bytes | None:
        item = self._items.get(key)
        if item is None:
            return None
        value, expires = item
        if self._clock() >= expires:
            del self._items[key]
            return None
        self._items.move_to_end(key)
        return value

    async def put(self, key: str, value: bytes, ttl: float) -> None:
        if ttl <= 0:
            return
        self._items[key] = (value, self._clock() + ttl)
        self._items.move_to_end(key)
        while len(self._items) > self._max:
            self._items.popitem(last=False)
            self.evictions += 1

    async def ping(self) -> None:
        return None

    def __len__(self) -> int:
        return len(self._items)

    def stats(self) -> dict[str, object]:
        return {"entries": len(self._items), "max_entries": self._max,
                "evictions": self.evictions}

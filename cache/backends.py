"""The Store protocol every cache backend implements, and the error a backend may raise."""

from __future__ import annotations

from typing import Protocol

__all__ = ["CacheUnavailable", "Locks", "Store"]


class CacheUnavailable(Exception):
    """The backend did not answer (down, slow, or its breaker is open): go on without it."""


class Store(Protocol):
    """Bytes under string keys, each with a time to live in seconds.

    Every method raises CacheUnavailable (and nothing else) when the backend cannot answer;
    a missing or expired key is `None`, not an error.
    """

    kind: str

    async def get(self, key: str) -> bytes | None: ...

    async def put(self, key: str, value: bytes, ttl: float) -> None:
        """Stores `value`, expiring after `ttl` seconds, in one round trip."""

    async def ping(self) -> None:
        """Raises CacheUnavailable unless the backend answers now (readiness)."""

    def stats(self) -> dict[str, object]: ...


class Locks(Protocol):
    """Short-lived named locks shared by every replica (coalescing across replicas).

    A lock expires by itself after `ttl`, so a holder that dies frees it; the holder keeps
    it with `refresh`. Methods raise CacheUnavailable when the backend cannot answer.
    """

    async def acquire(self, name: str, token: str, ttl: float) -> bool: ...

    async def refresh(self, name: str, token: str, ttl: float) -> bool: ...

    async def release(self, name: str, token: str) -> None: ...

    async def held(self, name: str) -> bool: ...

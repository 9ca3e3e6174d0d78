"""The `redis` backend: entries and coalescing locks in Redis (or Redis Cluster), guarded.

Every command is bounded by `timeout` and goes through a Breaker, so a dead, slow or
restarting Redis never fails a request: it raises CacheUnavailable, which callers treat
as "no cache for now". The client is redis-py's asyncio `Redis` or `RedisCluster` (or
fakeredis in tests), returning bytes; it is owned by whoever created it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from cache.backends import CacheUnavailable
from cache.health import Breaker

__all__ = ["RedisStore"]

T = TypeVar("T")



def redis_failures() -> tuple[type[BaseException], ...]:
    """What a failing Redis raises. redis-py is imported here, not with this module, so a
    Turnout without Redis never loads it (~100-200 ms of start-up, bench/PROFILE.md)."""
    from redis.exceptions import RedisClusterException, RedisError

    return (RedisError, RedisClusterException, OSError, TimeoutError)


class RedisStore:
    kind = "redis"

    def __init__(self, client: Any, *, timeout: float, breaker: Breaker) -> None:
        self._client = client
        self._timeout = timeout
        self.breaker = breaker
        self._failures = redis_failures()

    async def get(self, key: str) -> bytes | None:
        value = await self._run(lambda: self._client.get(key))
        return _as_bytes(value)

    async def put(self, key: str, value: bytes, ttl: float) -> None:
        # SET with PX: the value and its expiry in one command, so no entry lives forever.
        await self._run(lambda: self._client.set(key, value, px=_millis(ttl)))

    async def acquire(self, name: str, token: str, ttl: float) -> bool:
        done = await self._run(lambda: self._client.set(name, token, px=_millis(ttl), nx=True))
        return bool(done)

    async def refresh(self, name: str, token: str, ttl: float) -> bool:
        if _as_bytes(await self._run(lambda: self._client.get(name))) != token.encode():
            return False
        return bool(await self._run(lambda: self._client.pexpire(name, _millis(ttl))))

    async def release(self, name: str, token: str) -> None:
        # GET then DEL, not atomic: if the lock expired in between and another replica took
        # it, that replica loses it early and a waiter may call upstream once more. That
        # costs a call, never a wrong answer; it keeps the store free of Lua (fakeredis).
        if _as_bytes(await self._run(lambda: self._client.get(name))) == token.encode():
            await self._run(lambda: self._client.delete(name))

    async def held(self, name: str) -> bool:
        return bool(await self._run(lambda: self._client.exists(name)))

    async def ping(self) -> None:
        """Always asks Redis, open breaker or not; the answer closes or opens the breaker."""
        await self._call(lambda: self._client.ping())

    def stats(self) -> dict[str, object]:
        return {"redis_healthy": self.breaker.healthy, "redis_trips": self.breaker.trips,
                "redis_last_error": self.breaker.last_error}

    async def _run(self, command: Callable[[], Awaitable[T]]) -> T:
        if not self.breaker.allow():
            raise CacheUnavailable("redis is bypassed while it is unhealthy")
        return await self._call(command)

    async def _call(self, command: Callable[[], Awaitable[T]]) -> T:
        try:
            async with asyncio.timeout(self._timeout):
                result = await command()
        except self._failures as exc:
            self.breaker.failed(type(exc).__name__)
            raise CacheUnavailable(f"redis: {type(exc).__name__}") from None
        except asyncio.CancelledError:
            self.breaker.abandoned()
            raise
        self.breaker.succeeded()
        return result


# Redis refuses an expiry that overflows its clock ("invalid expire time"), and a refused
# command would trip the breaker for everyone: a client's huge ttl is capped (~100 years).
_LONGEST_MS = 100 * 365 * 86_400_000


def _millis(seconds: float) -> int:
    return max(1, min(_LONGEST_MS, int(seconds * 1000)))


def _as_bytes(value: Any) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("latin-1")
    raise CacheUnavailable(f"redis returned {type(value).__name__}")

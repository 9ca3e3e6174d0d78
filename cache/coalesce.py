"""Coalescing: identical concurrent misses make one upstream call.

Within a process, the first miss for a key leads a `Flight` and the others wait on it;
a streaming leader publishes its chunks on a `Broadcast` that streaming waiters follow
live. Across replicas (Redis), the local leader takes a short-lived lock key
(`ReplicaLock`) and keeps it alive while it calls upstream; a replica that finds the lock
taken polls for the entry, and takes over when the lock disappears without an entry (the
leader failed, or died and its lock expired).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Generic, TypeVar

from cache.backends import CacheUnavailable, Locks

__all__ = ["Broadcast", "Flight", "Lease", "ReplicaLock"]

T = TypeVar("T")
R = TypeVar("R")


class Broadcast(Generic[T]):
    """Items published once, followed by any number of readers from the first item.

    `on_idle` is called when the last reader leaves before the end (so the publisher
    can stop); a reader of a failed broadcast gets the failure raised after the items.
    """

    def __init__(self, on_idle: Callable[[], None] | None = None) -> None:
        self._items: list[T] = []
        self._changed = asyncio.Event()
        self._ended = False
        self._error: BaseException | None = None
        self._on_idle = on_idle
        self.readers = 0

    @property
    def ended(self) -> bool:
        return self._ended

    def push(self, item: T) -> None:
        self._items.append(item)
        self._wake()

    def finish(self) -> None:
        self._ended = True
        self._wake()

    def fail(self, error: BaseException) -> None:
        self._error = error
        self.finish()

    def follow(self) -> AsyncIterator[T]:
        """A reader, counted from now (not from its first iteration)."""
        self.readers += 1
        return self._read()

    async def _read(self) -> AsyncIterator[T]:
        position = 0
        try:
            while True:
                while position < len(self._items):
                    position += 1
                    yield self._items[position - 1]
                if self._ended:
                    if self._error is not None:
                        raise self._error
                    return
                changed = self._changed
                await changed.wait()
        finally:
            self.readers -= 1
            if self.readers == 0 and not self._ended and self._on_idle is not None:
                self._on_idle()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()


class Flight(Generic[T, R]):
    """One in-flight miss in this process.

    `ready` is set once the leader has a stream to follow (`stream`) or is done; `done`
    once it finished with `result` (success) or `error`. `waiters` counts requests
    waiting for the result: while any wait, the leader's client leaving cancels nothing.
    """

    def __init__(self) -> None:
        self.ready = asyncio.Event()
        self.done = asyncio.Event()
        self.result: R | None = None
        self.error: BaseException | None = None
        self.stream: Broadcast[T] | None = None
        self.origin = ""
        self.waiters = 0

    def streaming(self, broadcast: Broadcast[T], origin: str) -> None:
        """The leader streams; `origin` says who answers (the model group)."""
        self.stream = broadcast
        self.origin = origin
        self.ready.set()

    def succeed(self, result: R) -> None:
        self.result = result
        self._end()

    def fail(self, error: BaseException | None) -> None:
        """`error` None: the leader vanished (cancelled, stream broke): waiters take over."""
        self.error = error
        self._end()

    def _end(self) -> None:
        self.ready.set()
        self.done.set()


class Lease:
    """A held replica lock, kept alive in the background until `release`."""

    def __init__(self, locks: Locks, name: str, token: str, ttl: float) -> None:
        self._locks = locks
        self._name = name
        self._token = token
        self._ttl = ttl
        self._keeper = asyncio.create_task(self._keep_alive())

    async def release(self) -> None:
        self._keeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._keeper
        with contextlib.suppress(CacheUnavailable):
            await self._locks.release(self._name, self._token)

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(self._ttl / 3)
            with contextlib.suppress(CacheUnavailable):
                if not await self._locks.refresh(self._name, self._token, self._ttl):
                    return


class ReplicaLock:
    """The cross-replica half of coalescing, on a Locks backend (Redis).

    `ttl` bounds how long waiters wait for a leader that died; `poll` is the first and
    the longest pause between looks at the entry.
    """

    def __init__(self, locks: Locks, *, ttl: float = 3.0,
                 poll: tuple[float, float] = (0.02, 0.25)) -> None:
        self._locks = locks
        self._ttl = ttl
        self._poll = poll

    @staticmethod
    def lock_name(key: str) -> str:
        return f"{key}:lock"

    async def try_lead(self, key: str) -> Lease | None:
        """A lease when this replica leads; None when another one does.

        Raises CacheUnavailable when Redis cannot say (the caller goes on alone).
        """
        name = self.lock_name(key)
        token = secrets.token_hex(8)
        if await self._locks.acquire(name, token, self._ttl):
            return Lease(self._locks, name, token, self._ttl)
        return None

    async def await_other(self, key: str, fetch: Callable[[], Awaitable[R | None]]) -> R | None:
        """The other replica's answer (`fetch` finds it stored), or None: take over.

        None comes when the lock disappeared without an entry, or Redis stopped answering.
        """
        name = self.lock_name(key)
        pause, longest = self._poll
        try:
            while True:
                found = await fetch()
                if found is not None:
                    return found
                if not await self._locks.held(name):
                    # The leader may have stored and released between our two looks.
                    return await fetch()
                await asyncio.sleep(pause)
                pause = min(longest, pause * 1.5)
        except CacheUnavailable:
            return None

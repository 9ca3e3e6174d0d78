"""The stores: memory (LRU, TTLs on an injected clock) and Redis (fakeredis, then real Redis).

The Redis suite runs twice: on fakeredis, and marked `integration` on the redis-server
that `make test` starts ($REDIS_URL), because TTLs and expiry are where fakes drift.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import fakeredis
import pytest
from redis.asyncio import Redis

from cache.backends import CacheUnavailable
from cache.coalesce import ReplicaLock
from cache.health import Breaker
from cache.memory import MemoryStore
from cache.redis_store import RedisStore
from tests.support import free_port


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=[
    pytest.param("fakeredis"),
    pytest.param("redis", marks=pytest.mark.integration),
])
async def redis_client(request) -> AsyncIterator[Any]:
    if request.param == "fakeredis":
        client = fakeredis.FakeAsyncRedis()
    else:
        url = os.environ.get("REDIS_URL")
        if not url:
            pytest.fail("REDIS_URL is not set: run the suite with `make test`")
        client = Redis.from_url(url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def key() -> str:
    return f"test:{uuid.uuid4().hex}"


def redis_store(client: Any, clock: Clock | None = None, timeout: float = 1.0) -> RedisStore:
    breaker = Breaker(clock or Clock(), retry_after=1.0, max_retry_after=15.0)
    return RedisStore(client, timeout=timeout, breaker=breaker)


async def test_memory_get_put_and_ttl_on_the_clock():
    clock = Clock()
    store = MemoryStore(10, clock)
    await store.put("a", b"1", ttl=60)
    assert await store.get("a") == b"1"
    clock.now += 59.9
    assert await store.get("a") == b"1"
    clock.now += 0.1
    assert await store.get("a") is None
    assert len(store) == 0


async def test_memory_evicts_least_recently_used_beyond_max_entries():
    store = MemoryStore(2, Clock())
    await store.put("a", b"1", ttl=60)
    await store.put("b", b"2", ttl=60)
    assert await store.get("a") == b"1"  # a is now more recent than b
    await store.put("c", b"3", ttl=60)
    assert await store.get("b") is None
    assert await store.get("a") == b"1" and await store.get("c") == b"3"
    assert store.stats()["evictions"] == 1
    assert store.stats()["entries"] == 2


async def test_memory_zero_ttl_stores_nothing():
    store = MemoryStore(2, Clock())
    await store.put("a", b"1", ttl=0)
    assert await store.get("a") is None


async def test_redis_put_get_with_ttl_in_one_command(redis_client, key):
    store = redis_store(redis_client)
    await store.put(key, b"\x00binary\xff", ttl=30)
    assert await store.get(key) == b"\x00binary\xff"
    assert 29_000 < await redis_client.pttl(key) <= 30_000
    assert await store.get(f"{key}:absent") is None


async def test_redis_fractional_ttl_is_kept_in_milliseconds(redis_client, key):
    store = redis_store(redis_client)
    await store.put(key, b"v", ttl=2.5)
    assert 2_000 < await redis_client.pttl(key) <= 2_500


async def test_redis_huge_ttl_is_capped_not_refused(redis_client, key):
    store = redis_store(redis_client)
    await store.put(key, b"v", ttl=1e300)
    assert await store.get(key) == b"v"
    assert store.breaker.healthy


@pytest.mark.integration
async def test_real_redis_expires_entries():
    # The server's clock cannot be injected: this one waits 150ms of real time.
    client = Redis.from_url(os.environ["REDIS_URL"])
    try:
        store = redis_store(client)
        key = f"test:{uuid.uuid4().hex}"
        await store.put(key, b"v", ttl=0.1)
        assert await store.get(key) == b"v"
        await asyncio.sleep(0.15)
        assert await store.get(key) is None
    finally:
        await client.aclose()


async def test_redis_locks_belong_to_their_token(redis_client, key):
    store = redis_store(redis_client)
    assert await store.acquire(key, "t1", ttl=5)
    assert not await store.acquire(key, "t2", ttl=5)
    assert await store.held(key)
    assert not await store.refresh(key, "t2", ttl=5)
    assert await store.refresh(key, "t1", ttl=20)
    assert await redis_client.pttl(key) > 5_000
    await store.release(key, "t2")
    assert await store.held(key)
    await store.release(key, "t1")
    assert not await store.held(key)
    assert await store.acquire(key, "t2", ttl=5)


async def test_replica_waiter_gets_the_leaders_entry(redis_client, key):
    store = redis_store(redis_client)
    replicas = ReplicaLock(store, ttl=5, poll=(0.01, 0.02))
    lease = await replicas.try_lead(key)
    assert lease is not None
    assert await replicas.try_lead(key) is None

    async def leader() -> None:
        await asyncio.sleep(0.05)
        await store.put(key, b"answer", ttl=30)
        await lease.release()

    task = asyncio.create_task(leader())
    got = await replicas.await_other(key, lambda: store.get(key))
    await task
    assert got == b"answer"


async def test_replica_waiter_takes_over_when_the_leader_dies(redis_client, key):
    store = redis_store(redis_client)
    replicas = ReplicaLock(store, ttl=5, poll=(0.01, 0.02))
    # A leader that died: its lock expires by itself, and it never stored an entry.
    await redis_client.set(ReplicaLock.lock_name(key), b"dead", px=100)
    started = time.monotonic()
    got = await replicas.await_other(key, lambda: store.get(key))
    assert got is None
    assert time.monotonic() - started < 2
    assert await replicas.try_lead(key) is not None


class Unreachable:
    """A Redis client whose every command fails like a dead server, counting the calls."""

    def __init__(self) -> None:
        self.calls = 0
        self.down = True

    async def _command(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.down:
            raise ConnectionRefusedError("connection refused")
        return b"PONG"

    get = set = ping = exists = delete = pexpire = _command


async def test_dead_redis_trips_the_breaker_and_costs_nothing_while_open():
    clock = Clock()
    client = Unreachable()
    store = redis_store(client, clock)
    with pytest.raises(CacheUnavailable):
        await store.get("k")
    assert client.calls == 1
    for _ in range(5):
        with pytest.raises(CacheUnavailable):
            await store.get("k")
        with pytest.raises(CacheUnavailable):
            await store.put("k", b"v", ttl=1)
    assert client.calls == 1
    assert store.stats()["redis_healthy"] is False


async def test_breaker_probes_after_its_delay_and_recovers_by_itself():
    clock = Clock()
    client = Unreachable()
    store = redis_store(client, clock)
    with pytest.raises(CacheUnavailable):
        await store.get("k")
    clock.now += 1.0
    with pytest.raises(CacheUnavailable):
        await store.get("k")  # the probe, still failing: the delay doubles
    assert client.calls == 2
    clock.now += 1.0
    with pytest.raises(CacheUnavailable):
        await store.get("k")
    assert client.calls == 2
    client.down = False
    clock.now += 1.0
    assert await store.get("k") == b"PONG"
    assert store.breaker.healthy
    assert await store.get("k") == b"PONG"
    assert client.calls == 4


async def test_real_dead_port_fails_fast_and_trips():
    client = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_timeout=0.2,
                            socket_connect_timeout=0.2)
    try:
        store = redis_store(client, timeout=0.2)
        started = time.monotonic()
        with pytest.raises(CacheUnavailable):
            await store.get("k")
        assert time.monotonic() - started < 1
        assert not store.breaker.healthy
        with pytest.raises(CacheUnavailable):
            await store.ping()
    finally:
        await client.aclose()


class Slow:
    async def get(self, key: str) -> bytes:
        await asyncio.sleep(10)
        return b"late"


async def test_slow_redis_is_cut_at_the_timeout():
    store = redis_store(Slow(), timeout=0.05)
    started = time.monotonic()
    with pytest.raises(CacheUnavailable):
        await store.get("k")
    assert time.monotonic() - started < 1
    assert not store.breaker.healthy


async def test_readiness_ping_reaches_redis_even_while_the_breaker_is_open():
    clock = Clock()
    client = Unreachable()
    store = redis_store(client, clock)
    with pytest.raises(CacheUnavailable):
        await store.get("k")
    client.down = False
    await store.ping()
    assert store.breaker.healthy

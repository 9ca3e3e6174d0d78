"""Router state shared across replicas: cooldowns and rpm/tpm usage, local or in Redis.

With `state = "local"` each process keeps its own (LocalShare does nothing). With
`state = "redis"` (RedisShare):

- a cooldown is a key `turnout:router:{<deployment>}:cool` whose TTL is the time left;
  every replica reads them all at most every SYNC_INTERVAL, so each honours another's
  cooldown within a second;
- requests and tokens of the sliding minute are sorted sets scored by Redis's own clock
  (replicas' clocks differ), checked and reserved in one Lua script, so N replicas
  enforce one global rpm/tpm, not N times it.

If Redis fails, the replica logs it once, falls back to its local state (which it has
kept all along) and keeps serving; it tries Redis again after RETRY_AFTER seconds.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from router.deployments import DeploymentState

__all__ = ["LocalShare", "RedisShare", "SharedState"]

events = logging.getLogger("turnout.events")

Clock = Callable[[], float]

SYNC_INTERVAL = 0.5
RETRY_AFTER = 5.0
PREFIX = "turnout:router:"

# KEYS: requests zset, tokens zset. ARGV: rpm, tpm, member. Returns 1 if reserved, else 0.
# TIME is Redis's clock: replicas' monotonic clocks cannot be compared.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local since = now - 60000
local rpm = tonumber(ARGV[1])
local tpm = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', since)
if rpm > 0 and redis.call('ZCARD', KEYS[1]) >= rpm then return 0 end
if tpm > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', since)
  local used = 0
  for _, m in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
    used = used + tonumber(string.match(m, ':(%d+)$'))
  end
  if used >= tpm then return 0 end
end
redis.call('ZADD', KEYS[1], now, ARGV[3])
redis.call('PEXPIRE', KEYS[1], 61000)
return 1
"""

# KEYS: tokens zset. ARGV: member ("<unique>:<tokens>").
_ADD_TOKENS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('PEXPIRE', KEYS[1], 61000)
return 1
"""


class SharedState(Protocol):
    @property
    def shared(self) -> bool:
        """True while replicas share state (False: local, or Redis is unavailable)."""
        ...

    async def sync(self, states: Iterable[DeploymentState]) -> list[DeploymentState]:
        """Adopt cooldowns other replicas started (at most every SYNC_INTERVAL); returns
        the deployments that this made cool down."""
        ...

    async def publish_cooldown(self, deployment: str, seconds: float) -> None: ...

    async def acquire(self, state: DeploymentState) -> bool | None:
        """Reserve a request within the global rpm/tpm: True, False (at its limit), or
        None when there is no shared state to ask (use the local count)."""
        ...

    async def add_tokens(self, deployment: str, tokens: int) -> None: ...

    def status(self) -> dict[str, Any]: ...


class LocalShare:
    """Nothing shared: each process's DeploymentState is the whole truth."""

    @property
    def shared(self) -> bool:
        return False

    async def sync(self, states: Iterable[DeploymentState]) -> list[DeploymentState]:
        return []

    async def publish_cooldown(self, deployment: str, seconds: float) -> None:
        return None

    async def acquire(self, state: DeploymentState) -> bool | None:
        return None

    async def add_tokens(self, deployment: str, tokens: int) -> None:
        return None

    def status(self) -> dict[str, Any]:
        return {"shared_state": "local"}


def _key(deployment: str, what: str) -> str:
    # The hash tag keeps one deployment's keys in one Redis Cluster slot (the script
    # touches two of them).
    return f"{PREFIX}{{{deployment}}}:{what}"


class RedisShare:
    def __init__(self, redis: Any, clock: Clock, timeout: float = 0.25) -> None:
        self._redis = redis
        from redis.exceptions import RedisError  # loaded only when Redis is in use

        self._failures: tuple[type[BaseException], ...] = (TimeoutError, RedisError, OSError)
        self._clock = clock
        # Bounds each call whatever the client's own retries do: a slow or dead Redis must
        # not stall requests.
        self._timeout = timeout
        self._down_until: float | None = None
        self._last_sync: float | None = None
        self._acquire = redis.register_script(_ACQUIRE)
        self._add_tokens = redis.register_script(_ADD_TOKENS)

    @property
    def shared(self) -> bool:
        return self._down_until is None or self._clock() >= self._down_until

    async def sync(self, states: Iterable[DeploymentState]) -> list[DeploymentState]:
        now = self._clock()
        if not self.shared or (self._last_sync is not None
                               and now - self._last_sync < SYNC_INTERVAL):
            return []
        self._last_sync = now
        states = list(states)

        async def read() -> list[int]:
            async with self._redis.pipeline(transaction=False) as pipe:
                for state in states:
                    pipe.pttl(_key(state.id, "cool"))
                result: list[int] = await pipe.execute()
                return result

        ttls = await self._call(read())
        if ttls is None:
            return []
        now = self._clock()
        return [state for state, ttl in zip(states, ttls, strict=True)
                if ttl > 0 and state.adopt_cooldown(now, ttl / 1000)]

    async def publish_cooldown(self, deployment: str, seconds: float) -> None:
        if self.shared:
            millis = max(1, round(seconds * 1000))
            await self._call(self._redis.set(_key(deployment, "cool"), b"1", px=millis))

    async def acquire(self, state: DeploymentState) -> bool | None:
        d = state.deployment
        if not (d.rpm or d.tpm) or not self.shared:
            return None
        keys = [_key(d.id, "requests"), _key(d.id, "tokens")]
        result = await self._call(self._acquire(keys=keys, args=[d.rpm, d.tpm,
                                                                 uuid.uuid4().hex]))
        return None if result is None else bool(result)

    async def add_tokens(self, deployment: str, tokens: int) -> None:
        if tokens > 0 and self.shared:
            member = f"{uuid.uuid4().hex}:{tokens}"
            await self._call(self._add_tokens(keys=[_key(deployment, "tokens")], args=[member]))

    def status(self) -> dict[str, Any]:
        return {"shared_state": "redis" if self.shared else "local (redis unavailable)"}

    async def _call(self, command: Any) -> Any:
        """Await one Redis command; on failure switch to local state for RETRY_AFTER."""
        try:
            async with asyncio.timeout(self._timeout):
                result = await command
        except self._failures as exc:
            if self._down_until is None:
                events.warning("redis unavailable for router state (%s); using local state",
                               type(exc).__name__,
                               extra={"event": "redis_lost", "component": "router"})
            self._down_until = self._clock() + RETRY_AFTER
            return None
        if self._down_until is not None:
            self._down_until = None
            events.info("redis is back for router state",
                        extra={"event": "redis_regained", "component": "router"})
        return result

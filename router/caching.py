"""The response cache on the request path: the glue between `cache/` and the gateway.

`ResponseCaching.handle` decides with cache.policy, keys with cache.keys, answers hits
from the store, coalesces identical misses (cache.coalesce), records streams while they
are relayed, stores only complete answers, and answers from a recently expired entry when
every route failed (`stale_if_error`). A backend that does not answer makes the request a
bypass, never an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import replace
from typing import Any, TypeVar

import orjson

from cache import (
    Breaker,
    Broadcast,
    CacheUnavailable,
    Decision,
    Entry,
    EntryError,
    Flight,
    Lease,
    MemoryStore,
    RedisStore,
    ReplicaLock,
    Store,
    StreamRecorder,
    decide,
    decode_entry,
    encode_entry,
    key_for,
    replay_chunks,
    scope_of,
)
from router.config import CacheSettings, Config
from router.dispatch import Routed, RoutedStream
from router.errors import (
    AllAttemptsFailed,
    NoHealthyDeployment,
    RequestTimedOut,
    TurnoutError,
    UpstreamFailure,
)
from router.gateway import Outcome
from router.inbound import Inbound
from router.masking import SecretMasker
from router.metrics import Metrics
from router.providers import Chunk
from router.streaming import sse_frames

__all__ = ["ResponseCaching", "build_cache"]

Clock = Callable[[], float]
T = TypeVar("T")
Call = Callable[[Inbound], Awaitable[Routed | RoutedStream]]
Render = Callable[[Routed | RoutedStream], Outcome]

# Every route failed: the only errors a stale entry may answer (contract, stale_if_error).
ROUTES_FAILED = (AllAttemptsFailed, NoHealthyDeployment, RequestTimedOut)
RESULTS = ("hit", "miss", "bypass", "refresh", "stale")
_TAKEOVERS = 3


def build_cache(config: Config, *, redis: Any, clock: Clock, metrics: Metrics,
                masker: SecretMasker) -> ResponseCaching:
    """The cache `config` asks for; `redis` is the shared client (owned by the caller)."""
    settings = config.cache
    store: Store
    replicas = None
    entry_clock = clock
    if settings.backend == "redis" and redis is not None:
        # Replicas read each other's entries and their store times: wall time, unless a
        # test injected its own clock.
        entry_clock = time.time if clock is time.monotonic else clock
        timeout = config.redis.timeout if config.redis is not None else 0.25
        redis_store = RedisStore(redis, timeout=timeout, breaker=Breaker(clock))
        replicas = ReplicaLock(redis_store) if settings.coalesce else None
        store = redis_store
    else:
        store = MemoryStore(settings.max_entries, entry_clock)
    return ResponseCaching(settings, store=store, clock=entry_clock, metrics=metrics,
                           masker=masker, replicas=replicas,
                           wait_limit=config.server.request_timeout)


class ResponseCaching:
    """One config's cache on the request path. `store` may be shared by replicas (Redis);
    `replicas` coalesces across them when it is."""

    def __init__(
        self,
        settings: CacheSettings,
        *,
        store: Store,
        clock: Clock,
        metrics: Metrics,
        masker: SecretMasker,
        replicas: ReplicaLock | None = None,
        wait_limit: float = 600.0,
    ) -> None:
        self.settings = settings
        self.store = store
        self._clock = clock
        self._metrics = metrics
        self._masker = masker
        self._replicas = replicas
        self._wait_limit = wait_limit
        self._flights: dict[str, Flight[Chunk, Entry]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.counts = dict.fromkeys((*RESULTS, "coalesced", "stored", "unavailable"), 0)

    async def handle(self, inbound: Inbound, call: Call, render: Render) -> Outcome:
        """The Outcome for `inbound`; `call` goes upstream, `render` makes an Outcome of it."""
        decision = decide(mode=self.settings.mode, caching=inbound.caching,
                          controls=inbound.cache_controls, default_ttl=self.settings.ttl,
                          default_namespace=self.settings.namespace)
        if not decision.enabled:
            return await self._bypass(inbound, call, render)
        key = self.key_of(inbound, decision)
        # Each request counts once, under how it was finally answered.
        label = "miss" if decision.lookup else "refresh"
        try:
            outcome = await self._serve(inbound, decision, key, call, render)
        except ROUTES_FAILED:
            stale = await self._stale(key)
            if stale is None:
                self._count(label)
                raise
            outcome = self._answer(stale, inbound, key, "stale")
        except CacheUnavailable:
            self.counts["unavailable"] += 1
            return await self._bypass(inbound, call, render)
        except TurnoutError:
            self._count(label)
            raise
        self._count(outcome.headers["x-turnout-cache"])
        return outcome

    def key_of(self, inbound: Inbound, decision: Decision) -> str:
        scope = scope_of(inbound.client_key, self.settings.scope)
        return key_for(inbound.endpoint, inbound.group, inbound.body,
                       namespace=decision.namespace, scope=scope,
                       prefix=self.settings.namespace)

    async def readiness(self) -> str | None:
        """None when the backend answers; else why not (for /health/readiness)."""
        try:
            await self.store.ping()
        except CacheUnavailable:
            return f"cache backend {self.store.kind} is not answering"
        return None

    def status(self) -> dict[str, Any]:
        s = self.settings
        looked = self.counts["hit"] + self.counts["miss"]
        return {
            "enabled": True, "backend": s.backend, "mode": s.mode, "scope": s.scope,
            "ttl": s.ttl, "coalesce": s.coalesce, "stale_if_error": s.stale_if_error,
            "lookups": {r: self.counts[r] for r in RESULTS},
            "hit_ratio": round(self.counts["hit"] / looked, 4) if looked else None,
            "coalesced": self.counts["coalesced"], "stored": self.counts["stored"],
            "backend_unavailable": self.counts["unavailable"], "in_flight": len(self._flights),
            **self.store.stats(),
        }

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _bypass(self, inbound: Inbound, call: Call, render: Render) -> Outcome:
        self._count("bypass")
        outcome = render(await call(inbound))
        outcome.headers["x-turnout-cache"] = "bypass"
        return outcome

    async def _serve(self, inbound: Inbound, decision: Decision, key: str, call: Call,
                     render: Render) -> Outcome:
        if not decision.lookup:
            return await self._lead(inbound, decision, key, call, render, "refresh", None)
        for _ in range(_TAKEOVERS):
            entry = await self._fresh(key, decision.max_age)
            if entry is not None:
                return self._answer(entry, inbound, key, "hit")
            if not self.settings.coalesce:
                break
            flight = self._flights.get(key)
            if flight is None:
                return await self._lead_flight(inbound, decision, key, call, render)
            outcome = await self._follow(flight, inbound, key)
            if outcome is not None:
                return outcome
        return await self._lead(inbound, decision, key, call, render, "miss", None)

    async def _fresh(self, key: str, max_age: float | None) -> Entry | None:
        entry = await self._load(key)
        now = self._clock()
        if entry is None or not entry.is_fresh(now):
            return None
        if max_age is not None and entry.age(now) > max_age:
            return None
        return entry

    async def _stale(self, key: str) -> Entry | None:
        try:
            entry = await self._load(key)
        except CacheUnavailable:
            return None
        now = self._clock()
        if entry is None or now >= entry.expires_at + self.settings.stale_if_error:
            return None
        return entry

    async def _load(self, key: str) -> Entry | None:
        raw = await self.store.get(key)
        if raw is None:
            return None
        try:
            return decode_entry(raw)
        except EntryError:
            return None

    async def _lead_flight(self, inbound: Inbound, decision: Decision, key: str, call: Call,
                           render: Render) -> Outcome:
        flight: Flight[Chunk, Entry] = Flight()
        self._flights[key] = flight
        try:
            lease = await self._replica_lead(key)
            if lease is False:
                entry = await self._other_replica(key, decision)
                if entry is not None:
                    flight.succeed(entry)
                    return self._answer(entry, inbound, key, "hit")
                lease = await self._replica_lead(key)
        except BaseException:
            flight.fail(None)
            raise
        finally:
            if flight.done.is_set():
                self.forget_flight(key, flight)
        # From here the leader's task ends the flight, whatever happens to this request.
        return await self._lead(inbound, decision, key, call, render, "miss", flight, lease)

    async def _replica_lead(self, key: str) -> Lease | bool:
        """A lease (this replica leads), False (another one does), True (no replicas)."""
        if self._replicas is None:
            return True
        try:
            lease = await self._replicas.try_lead(key)
        except CacheUnavailable:
            return True
        return False if lease is None else lease

    async def _other_replica(self, key: str, decision: Decision) -> Entry | None:
        assert self._replicas is not None
        try:
            async with asyncio.timeout(self._wait_limit):
                return await self._replicas.await_other(
                    key, lambda: self._fresh(key, decision.max_age))
        except TimeoutError:
            return None

    async def _follow(self, flight: Flight[Chunk, Entry], inbound: Inbound,
                      key: str) -> Outcome | None:
        """The leader's answer for a waiter, or None when the leader vanished (take over)."""
        flight.waiters += 1
        try:
            async with asyncio.timeout(self._wait_limit):
                await flight.ready.wait()
                if flight.stream is not None and inbound.stream and not flight.done.is_set():
                    self.counts["coalesced"] += 1
                    chunks = _strip_usage(flight.stream.follow(), _wants_usage(inbound))
                    return _outcome_of_stream(self._masker, chunks, {
                        **_hit_headers(key, "hit", 0), "x-turnout-model-group": flight.origin,
                        "x-turnout-attempts": "0"})
                await flight.done.wait()
        except TimeoutError:
            raise RequestTimedOut("The identical request this one waited on took too long"
                                  ) from None
        finally:
            flight.waiters -= 1
        if flight.result is not None:
            self.counts["coalesced"] += 1
            return self._answer(flight.result, inbound, key, "hit")
        if flight.error is not None:
            raise flight.error
        return None

    async def _lead(self, inbound: Inbound, decision: Decision, key: str, call: Call,
                    render: Render, label: str, flight: Flight[Chunk, Entry] | None,
                    lease: Lease | bool | None = None) -> Outcome:
        upstream = inbound
        if inbound.stream:
            # Ask for usage so a streamed entry is as complete as a non-streamed one; a
            # client that did not ask never sees the usage chunk.
            options = {**(inbound.body.get("stream_options") or {}), "include_usage": True}
            upstream = replace(inbound, body={**inbound.body, "stream_options": options})
        leader = _Leader(self, decision, key, flight, lease if isinstance(lease, Lease) else None)
        task = self.spawn(leader.call(call, upstream))
        task.add_done_callback(leader.ended)
        try:
            routed = await asyncio.shield(task)
        except asyncio.CancelledError:
            # This client left: the call goes on only if coalesced requests wait for it.
            if flight is None or flight.waiters == 0:
                task.cancel()
            raise
        if isinstance(routed, RoutedStream):
            assert leader.reader is not None
            chunks = _strip_usage(leader.reader, _wants_usage(inbound))
            outcome = render(replace(routed, chunks=chunks))
        else:
            outcome = render(routed)
        outcome.headers["x-turnout-cache"] = label
        outcome.headers["x-turnout-cache-key"] = key
        return outcome

    def _answer(self, entry: Entry, inbound: Inbound, key: str, label: str) -> Outcome:
        headers = {**_hit_headers(key, label, int(entry.age(self._clock()))),
                   "x-turnout-model-group": entry.group, "x-turnout-attempts": "0"}
        if inbound.stream:
            replayed = replay_chunks(entry.body, include_usage=_wants_usage(inbound))
            return _outcome_of_stream(self._masker, _chunks(replayed), headers)
        return Outcome(headers, body=self._masker.mask(orjson.dumps(entry.body)))

    async def store_entry(self, key: str, decision: Decision, body: dict[str, Any],
                          group: str) -> Entry:
        now = self._clock()
        entry = Entry(body=body, group=group, stored_at=now, expires_at=now + decision.ttl)
        if decision.store:
            try:
                await self.store.put(key, encode_entry(entry),
                                     decision.ttl + self.settings.stale_if_error)
                self.counts["stored"] += 1
            except CacheUnavailable:
                self.counts["unavailable"] += 1
        return entry

    def spawn(self, coroutine: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """A task owned by the cache (cancelled by `aclose`), its outcome always retrieved."""
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._forget)
        return task

    def forget_flight(self, key: str, flight: Flight[Chunk, Entry]) -> None:
        """A finished flight: later identical requests look the cache up again."""
        if self._flights.get(key) is flight:
            del self._flights[key]

    def _forget(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            task.exception()

    def _count(self, result: str) -> None:
        self.counts[result] += 1
        self._metrics.cache_lookups.labels(result).inc()


class _Leader:
    """One upstream call made for the cache: stores its answer, tells its flight.

    Runs as its own task, so the leading client leaving does not cancel it while others
    wait. A stream is pumped by a further task into `broadcast`, recorded on the side, and
    committed only once it ended normally and complete.
    """

    def __init__(self, owner: ResponseCaching, decision: Decision, key: str,
                 flight: Flight[Chunk, Entry] | None, lease: Lease | None) -> None:
        self._owner = owner
        self._decision = decision
        self._key = key
        self._flight = flight
        self._lease = lease
        self.broadcast: Broadcast[Chunk] | None = None
        self.reader: AsyncIterator[Chunk] | None = None
        self._pump: asyncio.Task[None] | None = None

    async def call(self, call: Call, inbound: Inbound) -> Routed | RoutedStream:
        try:
            routed = await call(inbound)
        except BaseException as exc:
            await self._end(None, exc if isinstance(exc, TurnoutError) else None)
            raise
        if isinstance(routed, RoutedStream):
            self.broadcast = Broadcast(on_idle=self._idle)
            # The leading client reads from the first chunk, counted before anyone else.
            self.reader = self.broadcast.follow()
            if self._flight is not None:
                self._flight.streaming(self.broadcast, routed.group)
            self._pump = self._owner.spawn(self._relay(routed))
            self._pump.add_done_callback(self.ended)
            return routed
        entry = await self._owner.store_entry(self._key, self._decision, routed.answer.data,
                                              routed.group)
        await self._end(entry, None)
        return routed

    async def _relay(self, routed: RoutedStream) -> None:
        assert self.broadcast is not None
        recorder = StreamRecorder()
        try:
            async for chunk in routed.chunks:
                recorder.add(chunk.data)
                self.broadcast.push(chunk)
        except UpstreamFailure as exc:
            await self._end(None, None)
            self.broadcast.fail(exc)
            return
        except asyncio.CancelledError:
            await asyncio.shield(self._end(None, None))
            self.broadcast.fail(UpstreamFailure(routed.deployment, "stream abandoned"))
            raise
        finally:
            await routed.chunks.aclose()  # type: ignore[attr-defined]
        entry = None
        if recorder.complete():
            entry = await self._owner.store_entry(self._key, self._decision, recorder.answer(),
                                                  routed.group)
        await self._end(entry, None)
        self.broadcast.finish()

    def _idle(self) -> None:
        # Every reader left before the end: nobody wants the answer, cancel the call.
        waiting = self._flight.waiters if self._flight is not None else 0
        if self._pump is not None and waiting == 0:
            self._pump.cancel()

    async def _end(self, entry: Entry | None, error: TurnoutError | None) -> None:
        if self._lease is not None:
            lease, self._lease = self._lease, None
            await lease.release()
        self._settle(entry, error)

    def _settle(self, entry: Entry | None, error: TurnoutError | None) -> None:
        flight = self._flight
        if flight is None or flight.done.is_set():
            return
        if entry is not None:
            flight.succeed(entry)
        else:
            flight.fail(error)
        self._owner.forget_flight(self._key, flight)

    def ended(self, task: asyncio.Task[Any]) -> None:
        """Done callback of this leader's tasks. A task cancelled before it ever ran (as
        `aclose` may do at shutdown) never reached its own clean-up; this one ends the
        flight and the broadcast so that no waiter or reader is left hanging."""
        if not task.cancelled() and task.exception() is None:
            return
        self._settle(None, None)
        if self.broadcast is not None and not self.broadcast.ended:
            self.broadcast.fail(UpstreamFailure("-", "stream abandoned"))
        if self._lease is not None:
            lease, self._lease = self._lease, None
            self._owner.spawn(lease.release())


def _hit_headers(key: str, label: str, age: int) -> dict[str, str]:
    return {"x-turnout-cache": label, "x-turnout-cache-key": key, "age": str(age)}


def _wants_usage(inbound: Inbound) -> bool:
    options = inbound.body.get("stream_options")
    return isinstance(options, dict) and bool(options.get("include_usage"))


async def _chunks(items: Any) -> AsyncIterator[Chunk]:
    for data in items:
        yield Chunk(data)


async def _strip_usage(chunks: AsyncIterator[Chunk], wanted: bool) -> AsyncIterator[Chunk]:
    try:
        async for chunk in chunks:
            if not wanted and not chunk.data.get("choices") and "usage" in chunk.data:
                continue
            yield chunk
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]


def _outcome_of_stream(masker: SecretMasker, chunks: AsyncIterator[Chunk],
                       headers: dict[str, str]) -> Outcome:
    return Outcome(headers, stream=sse_frames(chunks, masker))

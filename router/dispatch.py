"""One request's path through the router: groups and fallbacks, retries, timeouts, hedging.

    route:    the requested group, then its `fallbacks` in order (each with its own retries);
              a context-length rejection switches to `context_window_fallbacks` only
    group:    up to 1 + num_retries attempts, preferring deployments not yet tried, with
              exponential backoff and jitter between them
    attempt:  one deployment, bounded by its timeout (time to first content for streams)
              and by what is left of server.request_timeout; with hedge_after > 0, an
              attempt still silent by then is raced by one on another deployment

Only the deployment's failures (UpstreamFailure) are retried and counted towards its
cooldown; a client's own mistake (UpstreamRejected) ends the request at once.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from router.balancer import build_balancer
from router.config import Config
from router.deployments import DeploymentState
from router.errors import (
    AllAttemptsFailed,
    ContextLengthExceeded,
    ModelNotFound,
    NoHealthyDeployment,
    RateLimitExceeded,
    RequestTimedOut,
    UpstreamAuthFailed,
    UpstreamFailure,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
)
from router.metrics import Metrics
from router.providers import Answer, Chunk, Provider
from router.providers.base import is_content
from router.shared_state import LocalShare, RedisShare, SharedState

__all__ = ["Dispatcher", "Routed", "RoutedStream", "backoff_delay"]

events = logging.getLogger("turnout.events")

Clock = Callable[[], float]
Operation = Literal["complete", "embed", "stream"]

MAX_BACKOFF = 30.0


@dataclass(slots=True)
class Routed:
    group: str
    deployment: str
    attempts: int
    answer: Answer


@dataclass(slots=True)
class RoutedStream:
    """A stream already committed to `deployment`: its first content has arrived.

    Iterating `chunks` yields the buffered head, then the rest as it arrives; a failure
    after the commit raises UpstreamFailure. Closing the iterator (`aclose`) cancels the
    upstream call; whoever holds a RoutedStream must close it.
    """

    group: str
    deployment: str
    attempts: int
    chunks: AsyncIterator[Chunk]


def backoff_delay(retry: int, base: float, rng: random.Random) -> float:
    """The pause before retry number `retry` (1-based): base * 2**(retry-1), capped at
    MAX_BACKOFF, with "equal jitter" (uniform in its upper half) so that clients that
    failed together do not retry together."""
    ceiling = min(base * 2.0 ** (retry - 1), MAX_BACKOFF)
    return ceiling / 2 + rng.random() * ceiling / 2


@dataclass(slots=True)
class _Trace:
    """What one client request has been through so far."""

    operation: Operation
    body: dict[str, Any]
    deadline: float
    attempts: int = 0
    saw_limited: bool = False
    frees_in: float | None = None  # the soonest a deployment at its rpm/tpm has room again
    last_failure: UpstreamFailure | None = None
    tried: set[str] = field(default_factory=set)


@dataclass(slots=True)
class _Opened:
    """A stream's head up to its first content, and the rest still to come."""

    head: list[Chunk]
    rest: AsyncIterator[Chunk]


class Dispatcher:
    def __init__(
        self,
        config: Config,
        providers: Mapping[str, Provider],
        rng: random.Random | None = None,
        *,
        metrics: Metrics | None = None,
        clock: Clock = time.monotonic,
        redis: Any = None,
    ) -> None:
        self._config = config
        self._router = config.router
        self._providers = providers
        self._rng = rng or random.Random()
        self._clock = clock
        self._metrics = metrics or Metrics()
        self._balancer = build_balancer(config.router.strategy, self._rng, clock)
        self._share: SharedState = (
            RedisShare(redis, clock, config.redis.timeout if config.redis else 0.25)
            if config.router.state == "redis" and redis is not None
            else LocalShare()
        )
        self._groups: dict[str, list[DeploymentState]] = {
            group.name: [
                DeploymentState(d, group.name, config.router.cooldown,
                                config.router.allowed_fails)
                for d in group.deployments
            ]
            for group in config.models
        }
        self._states = {s.id: s for states in self._groups.values() for s in states}

    def status(self) -> list[dict[str, Any]]:
        now = self._clock()
        shared = self._share.status()
        return [{**state.status(now), **shared} for state in self._states.values()]

    async def complete(self, group: str, body: dict[str, Any]) -> Routed:
        name, state, result, trace = await self._route(group, "complete", body)
        assert isinstance(result, Answer)
        return Routed(name, state.id, trace.attempts, result)

    async def embed(self, group: str, body: dict[str, Any]) -> Routed:
        name, state, result, trace = await self._route(group, "embed", body)
        assert isinstance(result, Answer)
        return Routed(name, state.id, trace.attempts, result)

    async def open_stream(self, group: str, body: dict[str, Any]) -> RoutedStream:
        name, state, result, trace = await self._route(group, "stream", body)
        assert isinstance(result, _CommittedStream)
        return RoutedStream(name, state.id, trace.attempts, result)

    async def _route(
        self, group: str, operation: Operation, body: dict[str, Any]
    ) -> tuple[str, DeploymentState, Any, _Trace]:
        if group not in self._groups:
            raise ModelNotFound(f"The model '{group}' does not exist", param="model")
        trace = _Trace(operation, body, self._clock() + self._config.server.request_timeout)
        if self._share.shared:
            await self._sync_shared()
        queue = deque([group, *self._config.fallbacks.get(group, ())])
        visited: set[str] = set()
        previous: str | None = None
        while queue:
            name = queue.popleft()
            if name in visited:
                continue
            visited.add(name)
            if previous is not None:
                self._metrics.fallbacks.labels(previous, name).inc()
            previous = name
            try:
                found = await self._try_group(name, trace)
            except ContextLengthExceeded:
                targets = [g for g in self._config.context_window_fallbacks.get(name, ())
                           if g not in visited]
                if not targets:
                    raise
                queue = deque(targets)
                continue
            if found is not None:
                return name, found[0], found[1], trace
        raise self._exhausted(trace)

    def _exhausted(self, trace: _Trace) -> Exception:
        if self._clock() >= trace.deadline:
            return self._timed_out()
        if trace.attempts:
            return AllAttemptsFailed(f"Every upstream attempt failed ({trace.attempts} made); "
                                     f"last: {trace.last_failure}")
        if trace.saw_limited:
            return RateLimitExceeded("Every deployment of every route is at its rate limit",
                                     retry_after=trace.frees_in)
        return NoHealthyDeployment("Every deployment of every route is cooling down")

    def _timed_out(self) -> RequestTimedOut:
        return RequestTimedOut(
            f"server.request_timeout ({self._config.server.request_timeout:g}s) ran out")

    async def _try_group(
        self, name: str, trace: _Trace
    ) -> tuple[DeploymentState, Any] | None:
        """The first success within group `name`, or None once its attempts are spent."""
        states = self._groups[name]
        for retry in range(self._router.num_retries + 1):
            if retry:
                if not self._candidates(states, trace, exclude=()):
                    return None
                await self._backoff(retry, trace)
            chosen = await self._choose(states, trace, exclude=())
            if chosen is None:
                return None
            try:
                return await self._hedged(chosen[0], chosen[1], states, trace)
            except UpstreamFailure:
                continue
        return None

    async def _backoff(self, retry: int, trace: _Trace) -> None:
        delay = backoff_delay(retry, self._router.retry_backoff, self._rng)
        remaining = trace.deadline - self._clock()
        if remaining <= 0:
            raise self._timed_out()
        await asyncio.sleep(min(delay, remaining))
        if self._clock() >= trace.deadline:
            raise self._timed_out()

    def _candidates(
        self, states: Sequence[DeploymentState], trace: _Trace, exclude: Sequence[str]
    ) -> list[DeploymentState]:
        now = self._clock()
        found = []
        for state in states:
            if state.id in exclude or not state.usable(now):
                continue
            if state.saturated(now, check_usage=not self._share.shared):
                trace.saw_limited = True
                self._note_when_free(state, now, trace)
                continue
            found.append(state)
        return found

    def _note_when_free(self, state: DeploymentState, now: float, trace: _Trace) -> None:
        d = state.deployment
        wait = state.usage.frees_in(now, d.rpm, d.tpm)
        if wait > 0 and (trace.frees_in is None or wait < trace.frees_in):
            trace.frees_in = wait

    async def _choose(
        self, states: Sequence[DeploymentState], trace: _Trace, exclude: Sequence[str]
    ) -> tuple[DeploymentState, bool] | None:
        """A deployment reserved for one attempt, and whether that attempt is its probe."""
        candidates = self._candidates(states, trace, exclude)
        while candidates:
            untried = [c for c in candidates if c.id not in trace.tried]
            state = self._balancer.pick(untried or candidates)
            candidates.remove(state)
            verdict = await self._share.acquire(state)
            if verdict is False:
                trace.saw_limited = True
                continue
            now = self._clock()
            # Awaiting Redis let other requests run: check again before reserving.
            if not state.usable(now) or state.saturated(now, check_usage=verdict is None):
                trace.saw_limited = trace.saw_limited or state.usable(now)
                continue
            trace.tried.add(state.id)
            return state, state.begin(now)
        return None

    async def _hedged(
        self, state: DeploymentState, probe: bool, states: Sequence[DeploymentState],
        trace: _Trace,
    ) -> tuple[DeploymentState, Any]:
        """One attempt; with hedge_after > 0, raced by a second one if it is slow to answer.

        The first success wins and the other attempt is cancelled (its stream closed).
        """
        if self._router.hedge_after <= 0:
            return state, await self._attempt(state, probe, trace)
        first = asyncio.create_task(self._attempt(state, probe, trace))
        tasks = {first: state}
        winner: tuple[DeploymentState, Any] | None = None
        try:
            done, _ = await asyncio.wait({first}, timeout=self._router.hedge_after)
            if not done:
                second = await self._choose(states, trace, exclude=(state.id,))
                if second is not None:
                    task = asyncio.create_task(self._attempt(second[0], second[1], trace))
                    tasks[task] = second[0]
            winner = await self._first_success(tasks)
            return winner
        finally:
            await _cancel_all(tasks, keep=None if winner is None else winner[1])

    async def _first_success(
        self, tasks: dict[asyncio.Task[Any], DeploymentState]
    ) -> tuple[DeploymentState, Any]:
        pending = set(tasks)
        failure: UpstreamFailure | None = None
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            winners = [t for t in done if t.exception() is None]
            if winners:
                return tasks[winners[0]], winners[0].result()
            for task in done:
                exc = task.exception()
                if not isinstance(exc, UpstreamFailure):
                    raise exc  # type: ignore[misc]
                failure = exc
        assert failure is not None
        raise failure

    async def _attempt(self, state: DeploymentState, probe: bool, trace: _Trace) -> Any:
        """One call to one deployment, whose begin() the caller made; records the outcome.

        Returns an Answer, or a _CommittedStream that releases the deployment when it ends.
        """
        d = state.deployment
        trace.attempts += 1
        started = self._clock()
        try:
            result = await self._timed_call(state, trace)
        except UpstreamFailure as exc:
            trace.last_failure = exc
            await self._failed(state, probe, exc)
            raise
        except UpstreamRejected as exc:
            # It answered, sensibly: the deployment is alive, whatever the client sent.
            state.release()
            state.succeeded(self._clock(), probe, None)
            self._count(d.id, "context_length" if isinstance(exc, ContextLengthExceeded)
                        else "rejected")
            raise
        except BaseException as exc:
            state.release()
            state.abandoned(probe)
            self._count(d.id, "deadline" if isinstance(exc, RequestTimedOut) else "cancelled")
            raise
        now = self._clock()
        state.succeeded(now, probe, now - started)
        if isinstance(result, _Opened):
            return _CommittedStream(result, lambda outcome, exc, tokens: self._stream_ended(
                state, outcome, exc, tokens))
        state.release()
        self._count(d.id, "success")
        await self._add_tokens(state, _total_tokens(result.data))
        return result

    async def _timed_call(self, state: DeploymentState, trace: _Trace) -> Answer | _Opened:
        """The call, bounded by the deployment's timeout and what is left of the request's.

        Running out of the former is the deployment's failure; of the latter, a 504.
        """
        limit = state.deployment.timeout or self._router.timeout
        remaining = trace.deadline - self._clock()
        try:
            async with asyncio.timeout(max(0.0, min(limit, remaining))):
                return await self._call(state, trace)
        except TimeoutError:
            if limit > remaining:
                raise self._timed_out() from None
            what = "first content" if trace.operation == "stream" else "answer"
            raise UpstreamTimeout(state.id, f"no {what} within {limit:g}s") from None

    async def _call(self, state: DeploymentState, trace: _Trace) -> Answer | _Opened:
        provider = self._providers[state.id]
        if trace.operation == "stream":
            return await _open(provider.stream(trace.body))
        if trace.operation == "embed":
            answer = await provider.embed(trace.body)
            _require_list(state.id, answer.data, "data")
        else:
            answer = await provider.complete(trace.body)
            _require_list(state.id, answer.data, "choices")
        return answer

    async def _failed(self, state: DeploymentState, probe: bool, exc: UpstreamFailure) -> None:
        cool_for: float | None = None
        outcome = "timeout" if isinstance(exc, UpstreamTimeout) else "failure"
        if isinstance(exc, UpstreamRateLimited):
            cool_for = self._router.cooldown if exc.retry_after is None else exc.retry_after
            outcome = "rate_limited"
        elif isinstance(exc, UpstreamAuthFailed):
            cool_for = self._router.cooldown
            outcome = "auth_failed"
        state.release()
        self._count(state.id, outcome)
        cooled = state.failed(self._clock(), probe, exc.reason, cool_for=cool_for)
        if cooled is not None:
            self._metrics.cooldowns.labels(state.id).inc()
            await self._share.publish_cooldown(state.id, cooled)

    async def _stream_ended(
        self, state: DeploymentState, outcome: str, exc: UpstreamFailure | None, tokens: int
    ) -> None:
        if exc is not None:
            await self._failed(state, False, exc)
        else:
            state.release()
            self._count(state.id, outcome)
        await self._add_tokens(state, tokens)

    async def _add_tokens(self, state: DeploymentState, tokens: int) -> None:
        if tokens > 0:
            state.usage.add_tokens(self._clock(), tokens)
            await self._share.add_tokens(state.id, tokens)

    async def _sync_shared(self) -> None:
        cooled = await self._share.sync(self._states.values())
        now = self._clock()
        for state in cooled:
            if state.cooled_until is not None:
                state.recent.append({"at": now, "reason": "cooled down by another replica"})
                events.info("deployment %s cooled down by another replica", state.id,
                            extra={"event": "deployment_cooled_down", "deployment": state.id,
                                   "seconds": round(state.cooled_until - now, 3),
                                   "reason": "another replica"})

    def _count(self, deployment: str, outcome: str) -> None:
        self._metrics.upstream_attempts.labels(deployment, outcome).inc()


def _require_list(deployment: str, data: dict[str, Any], key: str) -> None:
    if not isinstance(data.get(key), list):
        raise UpstreamFailure(deployment, f"malformed body: no '{key}' list")


def _total_tokens(data: dict[str, Any]) -> int:
    """Tokens an answer used, from its `usage` (0 when it has none)."""
    usage = data.get("usage")
    if not isinstance(usage, dict):
        return 0
    total = usage.get("total_tokens")
    if isinstance(total, int):
        return total
    parts = [usage.get("prompt_tokens"), usage.get("completion_tokens")]
    return sum(p for p in parts if isinstance(p, int))


async def _open(chunks: AsyncIterator[Chunk]) -> _Opened:
    """Read a stream up to its first content (contract: a stream commits there)."""
    head: list[Chunk] = []
    try:
        async for chunk in chunks:
            head.append(chunk)
            if is_content(chunk.data):
                break
    except BaseException:
        await _aclose(chunks)
        raise
    return _Opened(head, chunks)


async def _aclose(iterator: Any) -> None:
    close = getattr(iterator, "aclose", None)
    if close is not None:
        await close()


async def _close(result: Any) -> None:
    """Release what an attempt that lost a race returned."""
    if isinstance(result, _CommittedStream):
        await result.aclose()


async def _cancel_all(tasks: Mapping[asyncio.Task[Any], DeploymentState], keep: Any) -> None:
    """Cancel the attempts still running and wait until they have let go of their upstream;
    a stream any of them opened, other than `keep` (the winner's), is closed."""
    for task in tasks:
        task.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    for result in results:
        if result is not keep:
            await _close(result)


EndCallback = Callable[[str, UpstreamFailure | None, int], Awaitable[None]]


class _CommittedStream:
    """The chunks of a committed stream: the buffered head, then the rest.

    Ends exactly once, by exhaustion, failure or `aclose`, and then tells the dispatcher
    (`on_end`: outcome, the failure if any, tokens reported in `usage`), even if it was
    never iterated.
    """

    def __init__(self, opened: _Opened, on_end: EndCallback) -> None:
        self._head = deque(opened.head)
        self._rest = opened.rest
        self._on_end = on_end
        self._ended = False
        self._tokens = 0

    def __aiter__(self) -> _CommittedStream:
        return self

    async def __anext__(self) -> Chunk:
        if self._head:
            return self._head.popleft()
        if self._ended:
            raise StopAsyncIteration
        try:
            chunk = await self._rest.__anext__()
        except StopAsyncIteration:
            await self._end("success", None)
            raise
        except UpstreamFailure as exc:
            await self._end("failure", exc)
            raise
        except BaseException:
            await self._end("cancelled", None)
            raise
        self._tokens = max(self._tokens, _total_tokens(chunk.data))
        return chunk

    async def aclose(self) -> None:
        await self._end("cancelled", None)

    async def _end(self, outcome: str, exc: UpstreamFailure | None) -> None:
        if self._ended:
            return
        self._ended = True
        self._head.clear()
        try:
            await _aclose(self._rest)
        finally:
            await self._on_end(outcome, exc, self._tokens)

"""Recent traffic in fixed time buckets (what `/ui` charts), and one request's timing.

`Traffic` keeps, per model group and per deployment, counts and latency sums in
`bucket_seconds` buckets over the last `window_seconds`: a ring per series, so memory is
bounded by (groups + deployments) x buckets. It is fed by the access-log middleware (one
record per request) and by the instrumented providers (one record per upstream attempt).
With `--workers N` each worker keeps its own; `/admin/status` shows the answering worker's.

`RequestTiming` travels in a context variable from the middleware down to the providers,
which add the time spent waiting on upstreams to it: the rest is Turnout's overhead.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

__all__ = ["RequestTiming", "Traffic", "current_timing"]

Clock = Callable[[], float]

_GROUP_FIELDS = ("requests", "errors", "latency_ms_sum", "cache_hits", "cache_lookups")
_DEPLOYMENT_FIELDS = ("attempts", "failures", "latency_ms_sum")
# The cache results that count as a lookup for the hit ratio ("bypass" consulted nothing).
_LOOKUPS = frozenset({"hit", "miss", "refresh", "stale"})
_HITS = frozenset({"hit", "stale"})


@dataclass(slots=True)
class RequestTiming:
    """What the providers saw of one request: seconds waiting on upstreams, the attempts.

    `sending` is the time the middleware spent handing the response to the client. The
    group and deployment of the attempts describe error answers, which carry no
    x-turnout-* headers.
    """

    upstream: float = 0.0
    sending: float = 0.0
    attempts: int = 0
    first_group: str | None = None
    last_deployment: str | None = None


current_timing: ContextVar[RequestTiming | None] = ContextVar("turnout_timing", default=None)


@dataclass(slots=True)
class _Series:
    fields: tuple[str, ...]
    size: int
    epochs: list[int] = field(default_factory=list)
    values: dict[str, list[float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.epochs = [-1] * self.size
        self.values = {name: [0.0] * self.size for name in self.fields}

    def add(self, epoch: int, counts: dict[str, float]) -> None:
        slot = epoch % self.size
        if self.epochs[slot] != epoch:
            self.epochs[slot] = epoch
            for column in self.values.values():
                column[slot] = 0.0
        for name, amount in counts.items():
            self.values[name][slot] += amount

    def window(self, first: int) -> dict[str, list[float | int]]:
        out: dict[str, list[float | int]] = {name: [] for name in self.fields}
        for epoch in range(first, first + self.size):
            slot = epoch % self.size
            live = self.epochs[slot] == epoch
            for name, column in self.values.items():
                value = round(column[slot], 3) if live else 0
                out[name].append(int(value) if float(value).is_integer() else value)
        return out


class Traffic:
    def __init__(self, *, bucket_seconds: int = 10, window_seconds: int = 900,
                 clock: Clock = time.time) -> None:
        self.bucket_seconds = bucket_seconds
        self.size = max(1, window_seconds // bucket_seconds)
        self._clock = clock
        self._groups: dict[str, _Series] = {}
        self._deployments: dict[str, _Series] = {}

    def _epoch(self) -> int:
        return int(self._clock() // self.bucket_seconds)

    def record_request(self, group: str, status: int, seconds: float, cache: str | None) -> None:
        """One answered request of `group` (the group that answered, or the one asked for)."""
        series = self._groups.get(group)
        if series is None:
            series = self._groups[group] = _Series(_GROUP_FIELDS, self.size)
        series.add(self._epoch(), {
            "requests": 1, "errors": 1 if status >= 500 else 0, "latency_ms_sum": seconds * 1000,
            "cache_hits": 1 if cache in _HITS else 0,
            "cache_lookups": 1 if cache in _LOOKUPS else 0,
        })

    def record_attempt(self, deployment: str, ok: bool, seconds: float) -> None:
        """One upstream attempt on `deployment`: answered (`ok`) or failed, and its latency."""
        series = self._deployments.get(deployment)
        if series is None:
            series = self._deployments[deployment] = _Series(_DEPLOYMENT_FIELDS, self.size)
        series.add(self._epoch(), {"attempts": 1, "failures": 0 if ok else 1,
                                   "latency_ms_sum": seconds * 1000})

    def snapshot(self, groups: list[str], deployments: list[str]) -> dict[str, Any]:
        """The window for the named groups and deployments (others are left out), oldest first.

        Each series is a list per field, one value per bucket; the first bucket starts at
        `start` (Unix seconds), the last is the current, still filling, one.
        """
        first = self._epoch() - self.size + 1
        empty_group = _Series(_GROUP_FIELDS, self.size)
        empty_deployment = _Series(_DEPLOYMENT_FIELDS, self.size)
        return {
            "bucket_seconds": self.bucket_seconds,
            "start": first * self.bucket_seconds,
            "groups": {g: self._groups.get(g, empty_group).window(first) for g in groups},
            "deployments": {d: self._deployments.get(d, empty_deployment).window(first)
                            for d in deployments},
        }

"""The Prometheus collectors of the contract, on a registry owned by the app.

Under `turnout serve --workers N` every worker is its own process: the CLI points
prometheus_client's multiprocess mode at a fresh directory (PROMETHEUS_MULTIPROC_DIR,
which must be set before prometheus_client is first imported), each worker writes its
values there, and `/metrics`, whichever worker answers it, adds up all of them.

Label values are bounded: model groups and deployment ids of the loaded config (anything
else is counted as "other"), and short words from a capped set for the remaining labels.
Never keys, users or prompts.
"""

from __future__ import annotations

import os
import re
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess as _multiprocess

from router.traffic import Traffic

__all__ = ["MULTIPROC_ENV", "LabelBounds", "Metrics", "multiprocess_dir"]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)

OTHER = "other"
_GROUP_LABELS = frozenset({"model_group", "from_group", "to_group"})
_WORD = re.compile(r"^[A-Za-z0-9_.:-]{1,40}$")
_MAX_WORDS_PER_LABEL = 32
_MAX_CACHED_CHILDREN = 1024


def multiprocess_dir() -> str | None:
    """The multiprocess directory prometheus_client was started with, if any."""
    return os.environ.get(MULTIPROC_ENV) or os.environ.get(MULTIPROC_ENV.lower()) or None


class LabelBounds:
    """Which label values may become time series; everything else becomes "other"."""

    def __init__(self) -> None:
        self.groups: frozenset[str] = frozenset()
        self.deployments: frozenset[str] = frozenset()
        self._words: dict[str, set[str]] = {}

    def allow(self, groups: set[str] | frozenset[str],
              deployments: set[str] | frozenset[str]) -> None:
        # Groups and deployments of every config loaded so far stay allowed: series that
        # already exist keep counting after a reload.
        self.groups = self.groups | {"-"} | set(groups)
        self.deployments = self.deployments | set(deployments)

    def bound(self, name: str, value: Any) -> str:
        text = str(value)
        if name in _GROUP_LABELS:
            return text if text in self.groups else OTHER
        if name == "deployment":
            return text if text in self.deployments else OTHER
        seen = self._words.setdefault(name, set())
        if text in seen:
            return text
        if len(seen) >= _MAX_WORDS_PER_LABEL or not _WORD.match(text):
            return OTHER
        seen.add(text)
        return text


_M = TypeVar("_M", bound="_Bounded")


class _Bounded:
    """Mixin for labelled collectors: label values go through the app's LabelBounds."""

    _labelnames: tuple[str, ...]
    bounds: LabelBounds | None = None

    def labels(self: _M, *values: Any, **named: Any) -> _M:
        # The request path asks for the same few children on every request: prometheus'
        # own lookup takes a lock and builds keys, so positional lookups are remembered.
        if not named:
            cached = self.__dict__.setdefault("_children", {})
            child = cached.get(values)
            if child is None:
                child = self._bounded_labels(values, named)
                if len(cached) < _MAX_CACHED_CHILDREN:
                    cached[values] = child
            return child  # type: ignore[no-any-return]
        return self._bounded_labels(values, named)

    def _bounded_labels(self: _M, values: tuple[Any, ...], named: dict[str, Any]) -> _M:
        bounds = self.bounds
        if bounds is not None:
            if named:
                named = {k: bounds.bound(k, v) for k, v in named.items()}
            else:
                values = tuple(bounds.bound(k, v)
                               for k, v in zip(self._labelnames, values, strict=False))
        parent: Any = super()
        child: _M = parent.labels(*values, **named)
        return child


class BoundedCounter(_Bounded, Counter):
    pass


class Metrics:
    """The contract's collectors; `traffic` keeps the recent windows `/ui` draws."""

    def __init__(self, registry: CollectorRegistry | None = None, *,
                 multiprocess_dir: str | None = None, traffic: Traffic | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.multiprocess_dir = multiprocess_dir
        self.bounds = LabelBounds()
        self.traffic = traffic or Traffic()
        r = self.registry
        self.requests = self._bounded(BoundedCounter(
            "turnout_requests_total", "Requests answered", ["model_group", "status"], registry=r))
        self.duration = Histogram("turnout_request_duration_seconds", "Whole request time",
                                  buckets=_LATENCY_BUCKETS, registry=r)
        self.overhead = Histogram("turnout_overhead_seconds",
                                  "Time spent in Turnout itself, excluding upstream waits",
                                  buckets=_OVERHEAD_BUCKETS, registry=r)
        self.upstream_attempts = self._bounded(BoundedCounter(
            "turnout_upstream_attempts_total", "Upstream attempts", ["deployment", "outcome"],
            registry=r))
        self.cache_lookups = self._bounded(BoundedCounter(
            "turnout_cache_lookups_total", "Cache lookups", ["result"], registry=r))
        self.fallbacks = self._bounded(BoundedCounter(
            "turnout_fallbacks_total", "Fallbacks between model groups",
            ["from_group", "to_group"], registry=r))
        self.cooldowns = self._bounded(BoundedCounter(
            "turnout_deployment_cooldowns_total", "Deployments cooled down", ["deployment"],
            registry=r))
        # livesum: in multiprocess mode, the sum over the workers that are alive.
        self.inflight = Gauge("turnout_inflight_requests", "Requests in flight", registry=r,
                              multiprocess_mode="livesum")

    def count_request(self, group: str, status: int) -> None:
        """turnout_requests_total{model_group=group, status} + 1."""
        self.requests.labels(group, status).inc()

    def _bounded(self, collector: BoundedCounter) -> BoundedCounter:
        collector.bounds = self.bounds
        return collector

    def allow(self, groups: set[str] | frozenset[str],
              deployments: set[str] | frozenset[str]) -> None:
        """Admit the groups and deployment ids of a loaded config as label values."""
        self.bounds.allow(groups, deployments)

    def exposition(self) -> bytes:
        """The text format; in multiprocess mode, summed over every worker."""
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        merged = CollectorRegistry()
        _multiprocess.MultiProcessCollector(merged, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
        return generate_latest(merged)

    def release(self) -> None:
        """At worker exit: drop this process's live gauges from the multiprocess sums."""
        if self.multiprocess_dir is not None:
            _multiprocess.mark_process_dead(  # type: ignore[no-untyped-call]
                os.getpid(), self.multiprocess_dir)

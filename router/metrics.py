"""The Prometheus collectors of the contract, on a registry owned by the app."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["Metrics"]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)


class Metrics:
    """Label values are model groups, deployment ids and fixed words: never keys or prompts."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter("turnout_requests_total", "Requests answered",
                                ["model_group", "status"], registry=r)
        self.duration = Histogram("turnout_request_duration_seconds", "Whole request time",
                                  buckets=_LATENCY_BUCKETS, registry=r)
        self.overhead = Histogram("turnout_overhead_seconds",
                                  "Time spent in Turnout itself, excluding upstream waits",
                                  buckets=_OVERHEAD_BUCKETS, registry=r)
        self.upstream_attempts = Counter("turnout_upstream_attempts_total", "Upstream attempts",
                                         ["deployment", "outcome"], registry=r)
        self.cache_lookups = Counter("turnout_cache_lookups_total", "Cache lookups",
                                     ["result"], registry=r)
        self.fallbacks = Counter("turnout_fallbacks_total", "Fallbacks between model groups",
                                 ["from_group", "to_group"], registry=r)
        self.cooldowns = Counter("turnout_deployment_cooldowns_total", "Deployments cooled down",
                                 ["deployment"], registry=r)
        self.inflight = Gauge("turnout_inflight_requests", "Requests in flight", registry=r)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

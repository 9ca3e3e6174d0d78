"""The benchmark's scenarios: request bodies, and the router.toml each Turnout runs with."""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

CLIENT_KEY = "sk-bench-client"

Expects = Literal["answer", "cache-hit", "stream", "failover"]


@dataclasses.dataclass(frozen=True)
class Scenario:
    """`turnout`: which Turnout serves it ("memory" or "redis" backend), None for direct."""

    name: str
    title: str
    turnout: str | None
    body: dict[str, Any]
    expects: Expects = "answer"
    connections: int | None = None  # None: the run's --connections


def chat(model: str = "bench", **extra: Any) -> dict[str, Any]:
    """A typical small chat request (about 300 bytes)."""
    return {
        "model": model,
        "messages": [
            {"role": "system", "content": "You are a terse assistant. Answer in one sentence."},
            {"role": "user", "content": "Which animal jumps over the lazy dog in the pangram?"},
        ],
        "temperature": 0.2,
        "max_tokens": 64,
        "user": "bench-user-1",
        **extra,
    }


SCENARIOS = [
    Scenario("direct", "fake upstream called directly (the limit)", None, chat()),
    Scenario("proxied", "proxied, no cache", "memory", chat()),
    Scenario("memory-cache", "memory-cache hits", "memory", chat(caching=True),
             expects="cache-hit"),
    Scenario("redis-cache", "Redis-cache hits", "redis", chat(caching=True),
             expects="cache-hit"),
    Scenario("streaming", "streaming, 8 chunks", "memory", chat(stream=True), expects="stream"),
    Scenario("failover", "two deployments, one failing half its calls", "memory",
             chat("bench-failover"), expects="failover"),
    Scenario("direct-1conn", "direct, 1 connection", None, chat(), connections=1),
    Scenario("proxied-1conn", "proxied, 1 connection", "memory", chat(), connections=1),
]


def turnout_config(backend: str, upstream_url: str, redis_url: str) -> str:
    """router.toml for the Turnout of `backend` ("memory" or "redis"): every feature on.

    Group `bench`: one openai deployment on the fake upstream. Group `bench-failover`: two,
    one of them on the fake's /flaky/ path, which fails every second call it gets.
    """
    redis = f'[redis]\nurl = "{redis_url}"\ntimeout = "250ms"\n' if backend == "redis" else ""
    return f"""\
[server]
host = "127.0.0.1"
api_keys = ["{CLIENT_KEY}"]

{redis}
[cache]
backend = "{backend}"
mode = "opt-in"
ttl = "1h"
scope = "per-key"
coalesce = true

[router]
strategy = "weighted"
num_retries = 2
retry_backoff = "1ms"
allowed_fails = 3
cooldown = "30s"
timeout = "10s"

[[models]]
name = "bench"

  [[models.deployments]]
  id = "fake"
  provider = "openai"
  base_url = "{upstream_url}/v1"
  api_key = "sk-bench-upstream"
  model = "fake-model"

[[models]]
name = "bench-failover"

  [[models.deployments]]
  id = "fake-healthy"
  provider = "openai"
  base_url = "{upstream_url}/v1"
  api_key = "sk-bench-upstream"
  model = "fake-model"

  [[models.deployments]]
  id = "fake-flaky"
  provider = "openai"
  base_url = "{upstream_url}/flaky/v1"
  api_key = "sk-bench-upstream"
  model = "fake-model"
"""

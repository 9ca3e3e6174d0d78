"""Redis faults under load: killed, restarted, paused. Requests never fail nor stall.

A Turnout with the Redis cache (`mode = "always"`) serves a mix of repeated and fresh
requests from a mock group with a known latency, while its own redis-server (started
here, on a free port, stopped by PID) is killed, restarted and paused. Contract: zero
failed requests, none slower than `[redis] timeout` plus the upstream's own time (plus a
little scheduling slack), and caching resumes on its own once Redis is back.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import redis

from tests.support import free_port, turnout_process

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

REDIS_TIMEOUT = 0.2
UPSTREAM_LATENCY = 0.05
SLACK = 0.25  # event-loop scheduling on a loaded CI machine
BOUND = REDIS_TIMEOUT + UPSTREAM_LATENCY + SLACK


@dataclass
class RedisProcess:
    port: int
    workdir: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = os.environ.get("REDIS_SERVER_BIN", "redis-server")
        self.process = subprocess.Popen(
            [binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def pause(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            self.process.wait(timeout=10)


@pytest.fixture
def redis_server(tmp_path) -> Iterator[RedisProcess]:
    server = RedisProcess(free_port(), tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def config(redis_url: str, scope: str = "shared") -> str:
    return f"""
[server]
api_keys = ["key-a", "key-b"]

[redis]
url = "{redis_url}"
timeout = "{int(REDIS_TIMEOUT * 1000)}ms"

[cache]
backend = "redis"
mode = "always"
namespace = "soaktest"
scope = "{scope}"

[[models]]
name = "m"
  [[models.deployments]]
  provider = "mock"
  mock_latency = "{int(UPSTREAM_LATENCY * 1000)}ms"
"""


@dataclass
class Traffic:
    sent: int = 0
    failures: list[str] = field(default_factory=list)
    slowest: float = 0.0
    cache: Counter[str] = field(default_factory=Counter)


async def drive(url: str, seconds: float, traffic: Traffic, clients: int = 6) -> Counter[str]:
    """Mixed traffic for `seconds`; returns the x-turnout-cache values seen in this window."""
    seen: Counter[str] = Counter()
    until = time.monotonic() + seconds

    async def client_loop(n: int) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=10,
                                     headers={"authorization": "Bearer key-a"}) as client:
            i = 0
            while time.monotonic() < until:
                i += 1
                text = f"repeat {i % 4}" if i % 2 else f"fresh {n} {i} {time.monotonic()}"
                body = {"model": "m", "messages": [{"role": "user", "content": text}]}
                began = time.monotonic()
                traffic.sent += 1
                try:
                    r = await client.post("/v1/chat/completions", json=body)
                except httpx.HTTPError as exc:
                    traffic.failures.append(type(exc).__name__)
                    continue
                took = time.monotonic() - began
                traffic.slowest = max(traffic.slowest, took)
                if r.status_code != 200:
                    traffic.failures.append(f"{r.status_code} {r.text[:200]}")
                if took > BOUND:
                    outcome = r.headers.get("x-turnout-cache")
                    traffic.failures.append(f"slow: {took:.3f}s ({outcome})")
                seen[r.headers.get("x-turnout-cache", "?")] += 1

    await asyncio.gather(*(client_loop(n) for n in range(clients)))
    traffic.cache.update(seen)
    return seen


def test_redis_killed_restarted_and_paused_under_load(redis_server, tmp_path):
    traffic = Traffic()
    with turnout_process(config(redis_server.url), tmp_path) as url:
        healthy = asyncio.run(drive(url, 2, traffic))
        assert healthy["hit"] > 0

        redis_server.kill()
        asyncio.run(drive(url, 2, traffic))

        redis_server.start()
        # Caching resumes on its own: hits come back without a restart or a request to.
        deadline = time.monotonic() + 15
        resumed = Counter[str]()
        while resumed["hit"] == 0 and time.monotonic() < deadline:
            resumed = asyncio.run(drive(url, 1, traffic))
        assert resumed["hit"] > 0

        redis_server.pause()
        asyncio.run(drive(url, 2, traffic))
        redis_server.resume()
        deadline = time.monotonic() + 15
        resumed = Counter()
        while resumed["hit"] == 0 and time.monotonic() < deadline:
            resumed = asyncio.run(drive(url, 1, traffic))
        assert resumed["hit"] > 0
        assert httpx.get(f"{url}/health/liveness").status_code == 200
    print(f"redis faults: {traffic.sent} requests, 3 faults injected, "
          f"{len(traffic.failures)} failures, slowest {traffic.slowest:.3f}s, "
          f"{dict(traffic.cache)}")
    assert traffic.failures == []


def test_per_key_scope_keeps_one_keys_answers_from_another(redis_server, tmp_path):
    with turnout_process(config(redis_server.url, scope="per-key"), tmp_path) as url:
        body = {"model": "m", "messages": [{"role": "user", "content": "private"}]}
        a1 = httpx.post(f"{url}/v1/chat/completions", json=body,
                        headers={"authorization": "Bearer key-a"})
        a2 = httpx.post(f"{url}/v1/chat/completions", json=body,
                        headers={"authorization": "Bearer key-a"})
        b1 = httpx.post(f"{url}/v1/chat/completions", json=body,
                        headers={"authorization": "Bearer key-b"})
    assert a1.headers["x-turnout-cache"] == "miss"
    assert a2.headers["x-turnout-cache"] == "hit"
    assert b1.headers["x-turnout-cache"] == "miss"
    assert a2.headers["x-turnout-cache-key"] != b1.headers["x-turnout-cache-key"]


def test_every_redis_key_lies_in_the_namespace(redis_server, tmp_path):
    with turnout_process(config(redis_server.url), tmp_path) as url:
        asyncio.run(drive(url, 1, Traffic(), clients=2))
        body = {"model": "m", "messages": [{"role": "user", "content": "ns"}],
                "cache": {"namespace": "other"}}
        httpx.post(f"{url}/v1/chat/completions", json=body,
                   headers={"authorization": "Bearer key-a"})
    keys = redis.Redis(port=redis_server.port).keys("*")
    assert keys
    assert all(key.startswith(b"soaktest") for key in keys), keys

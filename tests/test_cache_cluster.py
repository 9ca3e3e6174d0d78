"""Redis Cluster URLs: the cache on a one-node Redis Cluster of our own (integration)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis

from router.config import parse_config
from router.redis_conn import open_redis
from tests.support import app_client, free_port, openai_config, stop

pytestmark = pytest.mark.integration

CACHED = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "caching": True}


@contextlib.contextmanager
def one_node_cluster(tmp_path: Path) -> Iterator[int]:
    """A cluster-enabled redis-server owning every slot, stopped by its PID."""
    port = free_port()
    # The cluster bus defaults to port + 10000, which may not exist: give it its own.
    bus = free_port()
    binary = os.environ.get("REDIS_SERVER_BIN", "redis-server")
    process = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--cluster-enabled", "yes",
         "--cluster-port", str(bus),
         "--cluster-config-file", str(tmp_path / "nodes.conf"), "--save", "",
         "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with Redis(host="127.0.0.1", port=port, socket_timeout=0.5) as client:
            deadline = time.monotonic() + 10
            while True:
                try:
                    client.ping()
                    break
                except Exception:
                    if time.monotonic() > deadline or process.poll() is not None:
                        raise
                    time.sleep(0.05)
            client.execute_command("CLUSTER", "ADDSLOTSRANGE", "0", "16383")
            while b"cluster_state:ok" not in client.execute_command("CLUSTER", "INFO"):
                if time.monotonic() > deadline:
                    raise RuntimeError("the one-node cluster did not come up")
                time.sleep(0.05)
        yield port
    finally:
        stop(process)


async def test_cache_works_on_a_redis_cluster_url(upstream, tmp_path):
    with one_node_cluster(tmp_path) as port:
        text = (f'[redis]\nurl = "redis+cluster://127.0.0.1:{port}/0"\ntimeout = "1s"\n'
                + openai_config() + '[cache]\nbackend = "redis"\n')
        config = parse_config(text, {})
        assert config.redis is not None
        redis = open_redis(config.redis)
        try:
            async with app_client(config, upstream.transport(), redis=redis) as client:
                first = await client.post("/v1/chat/completions", json=CACHED)
                second = await client.post("/v1/chat/completions", json=CACHED)
                ready = await client.get("/health/readiness")
            assert await redis.exists(first.headers["x-turnout-cache-key"])
        finally:
            await redis.aclose()
    assert first.headers["x-turnout-cache"] == "miss"
    assert second.headers["x-turnout-cache"] == "hit"
    assert ready.status_code == 200
    assert upstream.calls == 1

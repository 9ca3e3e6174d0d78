"""Router state shared through Redis: replicas in-process on a real redis-server, and
the fallback to local state when Redis is gone."""

from __future__ import annotations

import logging
import os
import random
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from router.app import build_gateway
from router.config import Deployment
from router.deployments import DeploymentState
from router.errors import RateLimitExceeded
from router.gateway import Gateway
from router.metrics import Metrics
from router.shared_state import RETRY_AFTER, RedisShare
from tests.router_fleet import CHAT, FakeClock, Fleet, router_toml, status
from tests.support import app_client, config_from, free_port


def shared_toml(groups: dict[str, int], *, router: str = "", deployment: str = "") -> str:
    return '[redis]\nurl = "redis://127.0.0.1:1/0"\n' + router_toml(
        groups, router=f'state = "redis"\n{router}', deployment=deployment)


@pytest.fixture
async def real_redis() -> AsyncIterator[Redis]:
    url = os.environ.get("REDIS_URL")
    if not url:
        pytest.skip("needs a redis-server: REDIS_URL (make test starts one)")
    client = Redis.from_url(url)
    yield client
    await client.aclose()


def unique(prefix: str) -> str:
    # Deployment ids name the Redis keys: each test gets its own.
    return f"{prefix}{uuid.uuid4().hex[:8]}"


async def replicas(text: str, fleet: Fleet, redis: Redis, clock: FakeClock,
                   count: int = 2) -> list[Gateway]:
    config = config_from(text)
    return [build_gateway(config, metrics=Metrics(), transport=fleet.transport(), redis=redis,
                          clock=clock, rng=random.Random(i)) for i in range(count)]


@pytest.mark.integration
async def test_rpm_limit_is_global_across_replicas(real_redis):
    group = unique("g")
    fleet, clock = Fleet(), FakeClock()
    gateways = await replicas(shared_toml({group: 1}, deployment="rpm = 5"), fleet,
                              real_redis, clock)
    answered, limited = 0, 0
    try:
        for i in range(8):
            try:
                await gateways[i % 2].dispatcher.complete(group, dict(CHAT))
                answered += 1
            except RateLimitExceeded:
                limited += 1
    finally:
        for gateway in gateways:
            await gateway.aclose()
    assert (answered, limited) == (5, 3)
    assert fleet.calls[f"{group}0"] == 5


@pytest.mark.integration
async def test_tpm_is_global_across_replicas(real_redis):
    group = unique("t")
    fleet, clock = Fleet(), FakeClock()
    gateways = await replicas(shared_toml({group: 1}, deployment="tpm = 5"), fleet,
                              real_redis, clock)
    outcomes = []
    try:
        for i in range(4):  # each answer reports 2 tokens
            try:
                await gateways[i % 2].dispatcher.complete(group, dict(CHAT))
                outcomes.append("ok")
            except RateLimitExceeded:
                outcomes.append("429")
    finally:
        for gateway in gateways:
            await gateway.aclose()
    assert outcomes == ["ok", "ok", "ok", "429"]


@pytest.mark.integration
async def test_a_cooldown_started_by_one_replica_is_honoured_by_the_other(real_redis):
    group = unique("c")
    bad, good = f"{group}0", f"{group}1"
    fleet, clock = Fleet(), FakeClock()
    fleet.fail(bad, status(500))
    text = shared_toml({group: 2}, router="allowed_fails = 0\ncooldown = \"30s\"")
    first, second = await replicas(text, fleet, real_redis, clock)
    try:
        while fleet.calls[bad] == 0:
            routed = await first.dispatcher.complete(group, dict(CHAT))
            assert routed.deployment == good
        clock.advance(0.6)  # the other replica's next look at Redis
        for _ in range(10):
            routed = await second.dispatcher.complete(group, dict(CHAT))
            assert routed.deployment == good
        by_id = {d["id"]: d for d in second.dispatcher.status()}
    finally:
        await first.aclose()
        await second.aclose()
    assert fleet.calls[bad] == 1
    assert by_id[bad]["state"] == "cooling down"
    assert by_id[bad]["shared_state"] == "redis"
    assert 29 < by_id[bad]["cooling_down_for"] <= 30


async def test_without_redis_each_replica_falls_back_to_local_state(caplog):
    dead = Redis(host="127.0.0.1", port=free_port(), socket_timeout=0.2,
                 socket_connect_timeout=0.2)
    fleet, clock = Fleet(), FakeClock()
    fleet.fail("m0", status(500))
    text = shared_toml({"m": 2}, router="allowed_fails = 0", deployment="rpm = 3")
    caplog.set_level(logging.INFO, logger="turnout.events")
    try:
        async with app_client(config_from(text), fleet.transport(), redis=dead, clock=clock,
                              rng=random.Random(3)) as client:
            codes = [(await client.post("/v1/chat/completions", json=CHAT)).status_code
                     for _ in range(5)]
    finally:
        await dead.aclose()
    # m0 failed once and cooled; m1 served up to its local rpm of 3; then 429
    assert fleet.calls["m0"] == 1
    assert codes.count(200) == 3
    assert codes[-1] == 429
    events = [getattr(r, "event", None) for r in caplog.records]
    assert events.count("redis_lost") == 1
    assert "deployment_cooled_down" in events


class FlakyRedis:
    """Just enough of a Redis client for RedisShare.acquire, failing while `down`."""

    def __init__(self) -> None:
        self.down = True
        self.calls = 0

    def register_script(self, text: str) -> object:
        async def run(keys: list[str], args: list[object]) -> int:
            self.calls += 1
            if self.down:
                raise RedisConnectionError("connection refused")
            return 1
        return run


async def test_redis_is_retried_after_a_pause_and_its_return_is_logged(caplog):
    caplog.set_level(logging.INFO, logger="turnout.events")
    flaky, clock = FlakyRedis(), FakeClock()
    share = RedisShare(flaky, clock)
    limited = DeploymentState(Deployment(id="d", provider="mock", rpm=5), "g", 30.0, 3)
    assert await share.acquire(limited) is None  # Redis failed: use the local count
    assert not share.shared
    clock.advance(RETRY_AFTER - 0.1)
    assert await share.acquire(limited) is None
    assert flaky.calls == 1  # not asked again during the pause
    flaky.down = False
    clock.advance(0.1)
    assert await share.acquire(limited) is True
    assert share.shared
    events = [getattr(r, "event", None) for r in caplog.records]
    assert events == ["redis_lost", "redis_regained"]

"""Strategies and backoff: pure choices with seeded randomness and an injected clock."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from router.balancer import (
    LatencyBalancer,
    LeastBusyBalancer,
    UsageBalancer,
    WeightedBalancer,
    build_balancer,
)
from router.config import Deployment
from router.deployments import DeploymentState
from router.dispatch import MAX_BACKOFF, backoff_delay


def state(dep_id: str, **fields: object) -> DeploymentState:
    deployment = Deployment.model_validate({"id": dep_id, "provider": "mock", **fields})
    return DeploymentState(deployment, "g", cooldown=30.0, allowed_fails=3)


def test_weighted_follows_weights():
    heavy, light = state("heavy", weight=3), state("light", weight=1)
    balancer = WeightedBalancer(random.Random(7))
    picks = Counter(balancer.pick([heavy, light]).id for _ in range(4000))
    assert 0.70 < picks["heavy"] / 4000 < 0.80


def test_weighted_with_one_candidate_uses_no_randomness():
    rng = random.Random(1)
    before = rng.getstate()
    only = state("only")
    assert WeightedBalancer(rng).pick([only]) is only
    assert rng.getstate() == before


def test_least_busy_picks_fewest_in_flight():
    busy, idle, mid = state("busy"), state("idle"), state("mid")
    busy.in_flight, idle.in_flight, mid.in_flight = 5, 0, 2
    balancer = LeastBusyBalancer(random.Random(3))
    assert {balancer.pick([busy, idle, mid]).id for _ in range(50)} == {"idle"}


def test_least_busy_spreads_ties():
    a, b = state("a"), state("b")
    balancer = LeastBusyBalancer(random.Random(3))
    assert {balancer.pick([a, b]).id for _ in range(50)} == {"a", "b"}


def test_latency_tries_unmeasured_first():
    fast, new = state("fast"), state("new")
    fast.latency = 0.05
    assert LatencyBalancer(random.Random(0)).pick([fast, new]) is new


def test_latency_mostly_picks_fastest_but_explores():
    fast, slow = state("fast"), state("slow")
    fast.latency, slow.latency = 0.05, 2.0
    balancer = LatencyBalancer(random.Random(11), exploration=0.1)
    picks = Counter(balancer.pick([fast, slow]).id for _ in range(2000))
    # exploration picks at random among both: about 5% land on the slow one
    assert 0.02 < picks["slow"] / 2000 < 0.09


def test_latency_without_exploration_never_picks_slow():
    fast, slow = state("fast"), state("slow")
    fast.latency, slow.latency = 0.05, 2.0
    balancer = LatencyBalancer(random.Random(11), exploration=0.0)
    assert {balancer.pick([fast, slow]).id for _ in range(200)} == {"fast"}


def test_usage_picks_most_headroom():
    now = 100.0
    crowded, roomy, unlimited_tpm = state("crowded", rpm=10), state("roomy", rpm=10), \
        state("tpm", tpm=1000)
    for _ in range(8):
        crowded.usage.add_request(now)
    for _ in range(3):
        roomy.usage.add_request(now)
    unlimited_tpm.usage.add_tokens(now, 500)
    balancer = UsageBalancer(random.Random(5), clock=lambda: now)
    assert balancer.pick([crowded, roomy, unlimited_tpm]).id == "roomy"


def test_usage_headroom_recovers_after_the_minute():
    clock = [100.0]
    old, fresh = state("old", rpm=10), state("fresh", rpm=10)
    for _ in range(9):
        old.usage.add_request(clock[0])
    fresh.usage.add_request(clock[0] + 30)
    balancer = UsageBalancer(random.Random(5), clock=lambda: clock[0])
    clock[0] += 30
    assert balancer.pick([old, fresh]).id == "fresh"
    clock[0] += 31  # old's nine requests left the window; fresh's one has not
    assert balancer.pick([old, fresh]).id == "old"


@pytest.mark.parametrize(("strategy", "kind"), [
    pytest.param("weighted", WeightedBalancer, id="weighted"),
    pytest.param("least-busy", LeastBusyBalancer, id="least-busy"),
    pytest.param("latency", LatencyBalancer, id="latency"),
    pytest.param("usage", UsageBalancer, id="usage"),
])
def test_build_balancer_by_name(strategy, kind):
    assert isinstance(build_balancer(strategy, random.Random(0), lambda: 0.0), kind)


@pytest.mark.parametrize(("retry", "low", "high"), [
    pytest.param(1, 0.05, 0.1, id="first-retry"),
    pytest.param(2, 0.1, 0.2, id="second-doubles"),
    pytest.param(4, 0.4, 0.8, id="fourth"),
    pytest.param(30, MAX_BACKOFF / 2, MAX_BACKOFF, id="capped"),
])
def test_backoff_is_exponential_with_jitter_in_bounds(retry, low, high):
    rng = random.Random(42)
    delays = [backoff_delay(retry, 0.1, rng) for _ in range(500)]
    assert all(low <= d <= high for d in delays)
    assert max(delays) - min(delays) > (high - low) * 0.8  # jittered, not fixed

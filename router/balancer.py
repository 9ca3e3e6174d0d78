"""Strategies that choose one deployment among the usable ones: each has pick(candidates).

The dispatcher has already removed cooling and saturated deployments; a strategy only
ranks what is left. Randomness comes from the injected `random.Random`, so tests can seed it.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Protocol

from router.deployments import DeploymentState

__all__ = [
    "Balancer",
    "LatencyBalancer",
    "LeastBusyBalancer",
    "UsageBalancer",
    "WeightedBalancer",
    "build_balancer",
]

Clock = Callable[[], float]

# The share of picks the latency strategy spends on a random candidate, so that a
# deployment that was slow (or just recovered) gets measured again.
EXPLORATION = 0.1


class Balancer(Protocol):
    def pick(self, candidates: Sequence[DeploymentState]) -> DeploymentState:
        """One of `candidates` (never empty)."""
        ...


class WeightedBalancer:
    """Random, in proportion to each deployment's `weight`."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng

    def pick(self, candidates: Sequence[DeploymentState]) -> DeploymentState:
        if len(candidates) == 1:
            return candidates[0]
        weights = [c.deployment.weight for c in candidates]
        return self._rng.choices(candidates, weights=weights)[0]


def _weighted_among_best(
    candidates: Sequence[DeploymentState], score: Callable[[DeploymentState], float],
    rng: random.Random,
) -> DeploymentState:
    """The candidate with the lowest score; ties broken at random by weight."""
    best = min(score(c) for c in candidates)
    tied = [c for c in candidates if score(c) == best]
    return WeightedBalancer(rng).pick(tied)


class LeastBusyBalancer:
    """The fewest requests in flight (in this process)."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng

    def pick(self, candidates: Sequence[DeploymentState]) -> DeploymentState:
        return _weighted_among_best(candidates, lambda c: c.in_flight, self._rng)


class LatencyBalancer:
    """The lowest latency estimate (time to first content for streams), with exploration.

    A deployment without an estimate is tried first; otherwise, with probability
    EXPLORATION, a random candidate is picked so that estimates do not go stale.
    """

    def __init__(self, rng: random.Random, exploration: float = EXPLORATION) -> None:
        self._rng = rng
        self._exploration = exploration

    def pick(self, candidates: Sequence[DeploymentState]) -> DeploymentState:
        unmeasured = [c for c in candidates if c.latency is None]
        if unmeasured:
            return WeightedBalancer(self._rng).pick(unmeasured)
        if len(candidates) > 1 and self._rng.random() < self._exploration:
            return self._rng.choice(list(candidates))
        return _weighted_among_best(candidates, lambda c: c.latency or 0.0, self._rng)


class UsageBalancer:
    """The most rpm/tpm headroom left in the current minute."""

    def __init__(self, rng: random.Random, clock: Clock) -> None:
        self._rng = rng
        self._clock = clock

    def pick(self, candidates: Sequence[DeploymentState]) -> DeploymentState:
        now = self._clock()
        return _weighted_among_best(candidates, lambda c: -c.headroom(now), self._rng)


def build_balancer(strategy: str, rng: random.Random, clock: Clock) -> Balancer:
    if strategy == "least-busy":
        return LeastBusyBalancer(rng)
    if strategy == "latency":
        return LatencyBalancer(rng)
    if strategy == "usage":
        return UsageBalancer(rng, clock)
    return WeightedBalancer(rng)

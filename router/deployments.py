"""Per-deployment state: in-flight, cooldown and half-open probe, latency, rpm/tpm usage.

Times are readings of the injected clock (seconds). Nothing here awaits: a check and the
reservation that follows it happen without a yield, so concurrent requests cannot both
take the last slot. Sharing with other replicas is router/shared_state.py's business.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from router.config import Deployment

__all__ = ["DeploymentState", "Health", "UsageWindow"]

events = logging.getLogger("turnout.events")

Clock = Callable[[], float]
Health = Literal["healthy", "cooling", "half-open", "probing"]

WINDOW = 60.0  # rpm and tpm are counted over a sliding minute
LATENCY_WEIGHT = 0.3  # weight of the newest sample in the moving latency estimate
RECENT_FAILURES = 10


class UsageWindow:
    """Requests and tokens in the last minute, for one deployment in this process."""

    def __init__(self) -> None:
        self._requests: deque[float] = deque()
        self._tokens: deque[tuple[float, int]] = deque()
        self._token_sum = 0

    def _prune(self, now: float) -> None:
        since = now - WINDOW
        while self._requests and self._requests[0] <= since:
            self._requests.popleft()
        while self._tokens and self._tokens[0][0] <= since:
            self._token_sum -= self._tokens.popleft()[1]

    def requests(self, now: float) -> int:
        self._prune(now)
        return len(self._requests)

    def tokens(self, now: float) -> int:
        self._prune(now)
        return self._token_sum

    def frees_in(self, now: float, rpm: int, tpm: int) -> float:
        """Seconds until there is room again under `rpm` and `tpm` (0: there is now)."""
        self._prune(now)
        wait = 0.0
        if rpm and len(self._requests) >= rpm:
            wait = self._requests[len(self._requests) - rpm] + WINDOW - now
        if tpm and self._token_sum >= tpm:
            excess, until = self._token_sum - tpm, now
            for at, tokens in self._tokens:
                excess -= tokens
                until = at
                if excess < 0:
                    break
            wait = max(wait, until + WINDOW - now)
        return max(wait, 0.0)

    # Adding prunes too: a deployment without rpm/tpm limits is never asked for its usage
    # on the request path, and its window must not grow with every request it serves.
    def add_request(self, now: float) -> None:
        self._prune(now)
        self._requests.append(now)

    def add_tokens(self, now: float, tokens: int) -> None:
        self._prune(now)
        if tokens > 0:
            self._tokens.append((now, tokens))
            self._token_sum += tokens

    def __len__(self) -> int:
        """How many request and token records are held (bounded by the window)."""
        return len(self._requests) + len(self._tokens)


@dataclass(slots=True)
class DeploymentState:
    """One deployment as the router sees it in this process.

    Health: healthy -> cooling (until `cooled_until`) -> half-open (one probe may go) ->
    probing (that probe is in flight) -> healthy on success, cooling again on failure.
    """

    deployment: Deployment
    group: str
    cooldown: float
    allowed_fails: int
    in_flight: int = 0
    cooled_until: float | None = None
    probing: bool = False
    suspect: bool = False  # its latest verdict was a failure
    latency: float | None = None
    usage: UsageWindow = field(default_factory=UsageWindow)
    failures: deque[float] = field(default_factory=deque)
    recent: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=RECENT_FAILURES))

    @property
    def id(self) -> str:
        return self.deployment.id

    def health(self, now: float) -> Health:
        if self.cooled_until is None:
            return "healthy"
        if now < self.cooled_until:
            return "cooling"
        return "probing" if self.probing else "half-open"

    def usable(self, now: float) -> bool:
        """Not cooling, and not waiting on a probe someone else is making."""
        return self.health(now) in ("healthy", "half-open")

    def saturated(self, now: float, *, check_usage: bool = True) -> bool:
        """At its max_concurrency, or (when `check_usage`) at its rpm or tpm for the minute.

        A deployment whose latest verdict was a failure is held to the attempts it has left
        before cooling, so concurrent requests cannot pile onto one that is down (which
        would then see more than allowed_fails + 1 calls); one success lifts the hold.
        """
        d = self.deployment
        if d.max_concurrency and self.in_flight >= d.max_concurrency:
            return True
        failures = self._failures_in_window(now) if self.suspect else 0
        if failures and self.in_flight + failures > self.allowed_fails:
            return True
        if not check_usage:
            return False
        if d.rpm and self.usage.requests(now) >= d.rpm:
            return True
        return bool(d.tpm and self.usage.tokens(now) >= d.tpm)

    def headroom(self, now: float) -> float:
        """The least free fraction of rpm and tpm; 1.0 for a deployment without limits."""
        d = self.deployment
        free = 1.0
        if d.rpm:
            free = min(free, 1.0 - self.usage.requests(now) / d.rpm)
        if d.tpm:
            free = min(free, 1.0 - self.usage.tokens(now) / d.tpm)
        return max(free, 0.0)

    def begin(self, now: float) -> bool:
        """Reserve an attempt: in-flight, the minute's request count, the probe if half-open.

        Returns True when this attempt is the half-open probe. Every begin is matched by
        one `release`, and by at most one verdict (`succeeded`, `failed` or `abandoned`).
        """
        self.in_flight += 1
        self.usage.add_request(now)
        if self.health(now) == "half-open":
            self.probing = True
            return True
        return False

    def release(self) -> None:
        self.in_flight -= 1

    def abandoned(self, probe: bool) -> None:
        """The attempt ended without a verdict (cancelled): a probe slot opens again."""
        if probe:
            self.probing = False

    def succeeded(self, now: float, probe: bool, latency: float | None) -> None:
        self.suspect = False
        if latency is not None:
            self.latency = latency if self.latency is None else (
                LATENCY_WEIGHT * latency + (1 - LATENCY_WEIGHT) * self.latency)
        if probe and self.cooled_until is not None and now >= self.cooled_until:
            self.cooled_until = None
            self.probing = False
            self.failures.clear()
            events.info("deployment %s recovered", self.id,
                        extra={"event": "deployment_recovered", "deployment": self.id})

    def failed(self, now: float, probe: bool, reason: str, *,
               cool_for: float | None = None) -> float | None:
        """Count a failure; returns the cooldown (seconds) it started, if it started one.

        `cool_for` cools at once (429 with its Retry-After, 401/403); otherwise more than
        `allowed_fails` failures within `cooldown`, or a failed probe, cool for `cooldown`.
        """
        self.recent.append({"at": now, "reason": reason})
        if probe:
            self.probing = False
        if self.health(now) == "cooling":
            # An attempt that began before the cooldown: the deployment is already cooling.
            return None
        self.failures.append(now)
        self.suspect = True
        seconds = cool_for
        if seconds is None and (probe or self._failures_in_window(now) > self.allowed_fails):
            seconds = self.cooldown
        if seconds is None:
            return None
        self.cool(now, seconds, reason)
        return seconds

    def cool(self, now: float, seconds: float, reason: str) -> None:
        self.cooled_until = now + seconds
        self.probing = False
        self.failures.clear()
        events.info("deployment %s cooled down for %.3gs", self.id, seconds,
                    extra={"event": "deployment_cooled_down", "deployment": self.id,
                           "seconds": seconds, "reason": reason})

    def adopt_cooldown(self, now: float, remaining: float) -> bool:
        """Honour a cooldown another replica started; True if it extends what we knew."""
        until = now + remaining
        if self.cooled_until is not None and self.cooled_until >= until - 0.001:
            return False
        self.cooled_until = until
        self.probing = False
        self.failures.clear()
        return True

    def _failures_in_window(self, now: float) -> int:
        since = now - self.cooldown
        while self.failures and self.failures[0] <= since:
            self.failures.popleft()
        return len(self.failures)

    def status(self, now: float) -> dict[str, Any]:
        d = self.deployment
        health = self.health(now)
        return {
            "id": d.id, "group": self.group, "provider": d.provider, "model": d.model,
            "state": "cooling down" if health == "cooling" else health,
            "cooling_down_for": round(self.cooled_until - now, 3)
            if health == "cooling" and self.cooled_until is not None else None,
            "in_flight": self.in_flight,
            "latency_estimate": None if self.latency is None else round(self.latency, 4),
            "rpm_used": self.usage.requests(now), "rpm_limit": d.rpm or None,
            "tpm_used": self.usage.tokens(now), "tpm_limit": d.tpm or None,
            "max_concurrency": d.max_concurrency or None,
            "recent_failures": [
                {"seconds_ago": round(now - f["at"], 3), "reason": f["reason"]}
                for f in self.recent
            ],
        }

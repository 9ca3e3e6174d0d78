"""A circuit breaker for the Redis backend: a dead or slow Redis costs nothing per request.

After a failure the breaker opens: requests skip Redis without a round trip. Once the
retry delay has passed, one request is let through as a probe; its success closes the
breaker (caching resumes by itself), its failure reopens it with a longer delay.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

__all__ = ["Breaker"]

events = logging.getLogger("turnout.events")


class Breaker:
    def __init__(self, clock: Callable[[], float], *, name: str = "redis",
                 retry_after: float = 0.5, max_retry_after: float = 5.0) -> None:
        self._clock = clock
        self._name = name
        self._base = retry_after
        self._max = max_retry_after
        self._delay = retry_after
        self._open_until: float | None = None
        self._probing = False
        self.last_error: str | None = None
        self.trips = 0

    @property
    def healthy(self) -> bool:
        return self._open_until is None

    def allow(self) -> bool:
        """True when a call may go to the backend now (closed, or the one probe)."""
        if self._open_until is None:
            return True
        if not self._probing and self._clock() >= self._open_until:
            self._probing = True
            return True
        return False

    def succeeded(self) -> None:
        self._probing = False
        if self._open_until is None:
            return
        self._open_until = None
        self._delay = self._base
        self.last_error = None
        events.info("%s is answering again; caching resumes", self._name,
                    extra={"event": f"{self._name}_regained"})

    def failed(self, reason: str) -> None:
        self._probing = False
        self.last_error = reason
        if self._open_until is None:
            self.trips += 1
            self._delay = self._base
            events.info("%s is not answering (%s); bypassing it", self._name, reason,
                        extra={"event": f"{self._name}_lost", "reason": reason})
        else:
            self._delay = min(self._max, self._delay * 2)
        self._open_until = self._clock() + self._delay

    def abandoned(self) -> None:
        """The probe was cancelled before it could tell: let the next call probe."""
        self._probing = False

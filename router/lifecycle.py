"""The gateway's life: requests pinned to the gateway they started on, and SIGHUP reloads.

A reload builds a new Gateway from the new config and swaps it into `app.state.gateway`.
Requests (streams included) that started on the old one finish on it; it is closed once
the last of them is done, so a reload never fails a request.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from router.config import Config, ConfigError, load_config
from router.gateway import Gateway
from router.redis_conn import needs_redis

__all__ = ["GATEWAY_KEY", "GatewayLeases", "PinGateway", "gateway_for", "gateway_in",
           "reload_config"]

GATEWAY_KEY = "turnout.gateway"

events = logging.getLogger("turnout.events")

GatewayFactory = Callable[[Config], Gateway]


class GatewayLeases:
    """Counts the requests in flight on each gateway, so a retired one closes when idle."""

    def __init__(self) -> None:
        self._counts: dict[int, int] = {}
        self._idle: dict[int, asyncio.Event] = {}

    def acquire(self, gateway: Gateway) -> None:
        self._counts[id(gateway)] = self._counts.get(id(gateway), 0) + 1

    def release(self, gateway: Gateway) -> None:
        key = id(gateway)
        left = self._counts[key] - 1
        if left:
            self._counts[key] = left
            return
        del self._counts[key]
        idle = self._idle.pop(key, None)
        if idle is not None:
            idle.set()

    def inflight(self, gateway: Gateway) -> int:
        return self._counts.get(id(gateway), 0)

    async def drained(self, gateway: Gateway) -> None:
        """Returns once no request holds `gateway`."""
        if not self.inflight(gateway):
            return
        await self._idle.setdefault(id(gateway), asyncio.Event()).wait()


class PinGateway:
    """ASGI middleware: each HTTP request holds the gateway current when it arrived."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = scope["app"].state if scope["type"] == "http" else None
        gateway: Gateway | None = getattr(state, "gateway", None)
        leases: GatewayLeases | None = getattr(state, "leases", None)
        if gateway is None or leases is None:
            await self.app(scope, receive, send)
            return
        scope[GATEWAY_KEY] = gateway
        leases.acquire(gateway)
        try:
            await self.app(scope, receive, send)
        finally:
            leases.release(gateway)


def gateway_for(request: Request) -> Gateway | None:
    """The gateway this request is pinned to, else the current one (None before startup)."""
    return gateway_in(request.scope)


def gateway_in(scope: Scope) -> Gateway | None:
    """`gateway_for` from the ASGI scope, for pure-ASGI handlers."""
    pinned: Gateway | None = scope.get(GATEWAY_KEY)
    if pinned is not None:
        return pinned
    current: Gateway | None = getattr(scope["app"].state, "gateway", None)
    return current


async def reload_config(app: Any, path: str) -> bool:
    """Re-reads `path`; a valid config replaces the gateway, an invalid one is logged.

    Returns whether the new config is in service. The old gateway is closed in the
    background once its in-flight requests are done.
    """
    try:
        config = await asyncio.to_thread(load_config, path)
    except ConfigError as exc:
        events.warning("config reload refused, keeping the old config: %s: %s", path,
                       "; ".join(exc.problems),
                       extra={"event": "config_reload_failed", "path": path,
                              "problems": exc.problems})
        return False
    old: Gateway = app.state.gateway
    if config.redis != old.config.redis or needs_redis(config) != needs_redis(old.config):
        problem = "[redis] changed: a new Redis connection takes a restart"
        events.warning("config reload refused, keeping the old config: %s: %s", path, problem,
                       extra={"event": "config_reload_failed", "path": path,
                              "problems": [problem]})
        return False
    factory: GatewayFactory = app.state.gateway_factory
    new = factory(config)
    app.state.gateway = new
    retired: set[Gateway] = app.state.retired_gateways
    retired.add(old)
    task = asyncio.create_task(_close_when_drained(app, old))
    app.state.background.add(task)
    task.add_done_callback(app.state.background.discard)
    events.info("config reloaded from %s: %d model groups", path, len(config.models),
                extra={"event": "config_reloaded", "path": path, "groups": len(config.models)})
    return True


async def _close_when_drained(app: Any, gateway: Gateway) -> None:
    leases: GatewayLeases = app.state.leases
    await leases.drained(gateway)
    app.state.retired_gateways.discard(gateway)
    await gateway.aclose()

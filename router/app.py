"""create_app: the ASGI application; its lifespan opens and closes what the gateway uses."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import random
import time
from collections.abc import AsyncIterator, Callable
from importlib import resources
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from swagger_ui_bundle import swagger_ui_path

from router import endpoints, ui
from router.caching import build_cache
from router.config import Config
from router.dispatch import Dispatcher
from router.errors import TurnoutError, error_body
from router.gateway import Gateway
from router.lifecycle import GatewayLeases, PinGateway, gateway_for
from router.logs import AccessLog
from router.metrics import Metrics, multiprocess_dir
from router.providers import ClientPool, build_provider
from router.redis_conn import needs_redis, open_redis
from router.tracing import Tracing, instrument

__all__ = ["build_gateway", "create_app"]

log = logging.getLogger("turnout")


Clock = Callable[[], float]


def build_gateway(
    config: Config,
    *,
    metrics: Metrics,
    transport: httpx.AsyncBaseTransport | None = None,
    redis: Any = None,
    rng: random.Random | None = None,
    clock: Clock = time.monotonic,
    tracing: Tracing | None = None,
) -> Gateway:
    """Everything one config needs to serve; close it with `await gateway.aclose()`.

    `redis` is the shared Redis client (None when the config needs none); the caller owns it.
    """
    pool = ClientPool(transport)
    groups = {d.id: group.name for group in config.models for d in group.deployments}
    metrics.allow(set(groups.values()), set(groups))
    providers = instrument({
        d.id: build_provider(d, pool) for group in config.models for d in group.deployments
    }, config, traffic=metrics.traffic, tracing=tracing)
    dispatcher = Dispatcher(config, providers, rng, metrics=metrics, clock=clock, redis=redis)
    gateway = Gateway(config, pool=pool, providers=providers, dispatcher=dispatcher,
                      metrics=metrics)
    gateway.cache = build_cache(config, redis=redis, clock=clock, metrics=metrics,
                                masker=gateway.masker)
    return gateway


def create_app(
    config: Config,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    redis: Any = None,
    rng: random.Random | None = None,
    clock: Clock = time.monotonic,
    tracing: Tracing | None = None,
) -> Starlette:
    """The Turnout app for `config`.

    Tests inject `transport` (replaces the network to upstreams), `redis` (a client such as
    fakeredis, used instead of one built from `[redis]`), `rng` and `clock`. `tracing`
    (see router.tracing.tracing_from_env) turns on spans; the app shuts it down at exit.
    """
    metrics = Metrics(multiprocess_dir=multiprocess_dir())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        own_redis = redis is None and needs_redis(config)
        shared_redis = open_redis(config.redis) if own_redis and config.redis else redis

        def gateway_factory(loaded: Config) -> Gateway:
            # One place builds gateways: at startup and on every SIGHUP reload.
            return build_gateway(loaded, metrics=metrics, transport=transport,
                                 redis=shared_redis, rng=rng, clock=clock, tracing=tracing)

        app.state.gateway_factory = gateway_factory
        app.state.leases = GatewayLeases()
        app.state.retired_gateways = set()
        app.state.background = set()
        app.state.gateway = gateway_factory(config)
        _settle_garbage_collector()
        try:
            yield
        finally:
            for task in list(app.state.background):
                task.cancel()
            for retired in list(app.state.retired_gateways):
                await retired.aclose()
            await app.state.gateway.aclose()
            if own_redis and shared_redis is not None:
                await shared_redis.aclose()
            metrics.release()
            gc.unfreeze()
            if tracing is not None:
                # Flushing queued spans may wait on the collector: not on the event loop.
                await asyncio.to_thread(tracing.shutdown)

    routes = [
        Route("/v1/chat/completions", endpoints.chat_completions, methods=["POST"]),
        Route("/chat/completions", endpoints.chat_completions, methods=["POST"]),
        Route("/v1/embeddings", endpoints.embeddings, methods=["POST"]),
        Route("/embeddings", endpoints.embeddings, methods=["POST"]),
        Route("/v1/models", endpoints.models, methods=["GET"]),
        Route("/models", endpoints.models, methods=["GET"]),
        Route("/health/liveness", endpoints.liveness, methods=["GET"]),
        Route("/health/readiness", endpoints.readiness, methods=["GET"]),
        Route("/metrics", endpoints.metrics, methods=["GET"]),
        Route("/admin/status", endpoints.admin_status, methods=["GET"]),
        Route("/openapi.json", endpoints.openapi, methods=["GET"]),
        Route("/", endpoints.swagger_ui, methods=["GET"]),
        Mount("/static/swagger", StaticFiles(directory=swagger_ui_path), name="swagger"),
        Route("/ui", ui.page, methods=["GET"]),
        Mount("/ui/static", StaticFiles(directory=ui.STATIC_DIR), name="ui"),
    ]
    app = TurnoutApp(
        routes=routes,
        lifespan=lifespan,
        middleware=[Middleware(AccessLog, metrics=metrics, tracing=tracing),
                    Middleware(PinGateway)],
        exception_handlers={
            TurnoutError: render_error,
            HTTPException: render_http_exception,
            Exception: render_unexpected,
        },
    )
    app.state.openapi = _openapi_document()
    app.state.metrics = metrics  # a reload's build_gateway takes these two again
    app.state.tracing = tracing
    app.fast_paths = _fast_paths(metrics, tracing)
    return app


class TurnoutApp(Starlette):
    """Starlette, except for the proxy endpoints: a POST to one of `fast_paths` goes
    straight to the same access-log and gateway-pinning middleware, and errors are
    rendered by the same handlers, without Starlette's error middleware, exception
    middleware and router in between (bench/PROFILE.md). Everything else, including any
    other method on those paths, is Starlette's.
    """

    fast_paths: dict[str, ASGIApp] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and not scope.get("root_path"):
            fast = self.fast_paths.get(scope["path"])
            if fast is not None:
                scope["app"] = self
                await fast(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def _fast_paths(metrics: Metrics, tracing: Tracing | None) -> dict[str, ASGIApp]:
    def wrapped(endpoint: ASGIApp) -> ASGIApp:
        return AccessLog(PinGateway(_Rendered(endpoint)), metrics=metrics, tracing=tracing)

    chat, embed = wrapped(endpoints.chat_completions), wrapped(endpoints.embeddings)
    return {"/v1/chat/completions": chat, "/chat/completions": chat,
            "/v1/embeddings": embed, "/embeddings": embed}


class _Rendered:
    """What Starlette's exception middleware and error middleware do for an app's errors:
    a TurnoutError is answered by `render_error`; anything else by `render_unexpected`
    (logged) and then re-raised for the server, as ServerErrorMiddleware does."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def sender(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, sender)
        except Exception as exc:
            if started:
                raise
            request = Request(scope, receive)
            if isinstance(exc, TurnoutError):
                response = await render_error(request, exc)
                await response(scope, receive, send)
                return
            response = await render_unexpected(request, exc)
            await response(scope, receive, send)
            raise


async def render_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, TurnoutError)
    body = exc.body()
    gateway = gateway_for(request)
    if gateway is not None:
        body = gateway.masker.mask(body)
    return Response(body, status_code=exc.status, media_type="application/json",
                    headers=exc.headers())


async def render_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "invalid_request")
    message = f"{request.method} {request.url.path}: {exc.detail}"
    return Response(error_body(message, "invalid_request_error", code),
                    status_code=exc.status_code, media_type="application/json",
                    headers=exc.headers)


async def render_unexpected(request: Request, exc: Exception) -> Response:
    # A bug of ours: log it (no body, no keys), answer OpenAI-shaped, never a traceback.
    log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return Response(error_body("Turnout hit an internal error", "server_error", "internal_error"),
                    status_code=500, media_type="application/json")


def _settle_garbage_collector() -> None:
    """What start-up built lives as long as the process: out of the collector's sight.

    Every request allocates and frees many small objects; each young collection that
    triggers used to reach the start-up heap too (bench/PROFILE.md). Frozen objects are
    never scanned, and young collections come less often.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(_GC_YOUNG, *gc.get_threshold()[1:])


_GC_YOUNG = 10_000


def _openapi_document() -> bytes:
    return (resources.files("router") / "openapi.json").read_bytes()



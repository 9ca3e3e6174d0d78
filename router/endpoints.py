"""Thin HTTP handlers: read and check the request, hand it to the gateway, render the outcome."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.types import Receive, Scope, Send

from router.errors import AuthenticationFailed
from router.gateway import Gateway, Outcome
from router.inbound import (
    Inbound,
    authenticate,
    check_key,
    parse_chat,
    parse_embeddings,
    receive_json,
)
from router.lifecycle import gateway_for, gateway_in

__all__ = [
    "ProxyEndpoint",
    "admin_status",
    "chat_completions",
    "embeddings",
    "liveness",
    "metrics",
    "models",
    "openapi",
    "readiness",
    "swagger_ui",
]

JSON = "application/json"


def gateway_of(request: Request) -> Gateway:
    """The gateway this request started on (a reload swaps in a new one for later requests)."""
    gateway = gateway_for(request)
    assert gateway is not None, "requests are served only after the lifespan started"
    return gateway


class ProxyEndpoint:
    """POST /v1/chat/completions and /v1/embeddings as a pure ASGI app.

    The request path pays for no Starlette `Request`, `Response` or `StreamingResponse`
    (the latter starts an anyio task group per stream): measured in bench/PROFILE.md.
    Errors are raised as they were, to the app's exception handlers, which render them.
    """

    def __init__(self, parse: Callable[[Any, str | None], Inbound]) -> None:
        self.parse = parse

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gateway = gateway_in(scope)
        assert gateway is not None, "requests are served only after the lifespan started"
        started = time.perf_counter()
        metrics = gateway.metrics
        metrics.inflight.inc()
        group = "-"
        status = 500
        try:
            authorization = ""
            declared: bytes | None = None
            for name, value in scope["headers"]:
                if name == b"authorization":
                    if not authorization:
                        authorization = value.decode("latin-1")
                elif name == b"content-length" and declared is None:
                    declared = value
            client_key = check_key(authorization, gateway.client_keys)
            data = await receive_json(receive, declared, gateway.config.server.max_body_bytes)
            inbound = self.parse(data, client_key)
            group = inbound.group
            watch = ClientWatch(receive)
            try:
                outcome = await gateway.handle(inbound)
                status = outcome.status
                if outcome.stream is None:
                    watch.stop()
                    await _send_json(outcome, send)
                else:
                    await _send_stream(outcome.stream, outcome.headers, send, watch)
            except asyncio.CancelledError:
                if watch.left():
                    status = CLIENT_GONE
                    return  # the client left: nothing to send, nobody to tell
                raise
            finally:
                watch.stop()
        except Exception as exc:
            status = getattr(exc, "status", 500)
            raise
        finally:
            metrics.inflight.dec()
            known = group if gateway.config.group(group) is not None else "-"
            metrics.count_request(known, status)
            metrics.duration.observe(time.perf_counter() - started)


chat_completions = ProxyEndpoint(parse_chat)
embeddings = ProxyEndpoint(parse_embeddings)


def _header_pairs(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]


async def _send_json(outcome: Outcome, send: Send) -> None:
    body = outcome.body or b""
    headers = _header_pairs(outcome.headers)
    headers.append((b"content-length", str(len(body)).encode()))
    headers.append((b"content-type", b"application/json"))
    await send({"type": "http.response.start", "status": outcome.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


_STREAM_HEADERS = [(b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]
_SSE_TYPE = (b"content-type", b"text/event-stream; charset=utf-8")


async def _send_stream(stream: AsyncIterator[bytes], headers: dict[str, str], send: Send,
                       watch: ClientWatch) -> None:
    """Relays `stream`, then closes it; closing it cancels the upstream call, and so does
    the client leaving (the watch cancels this task)."""
    raw = [*_STREAM_HEADERS, *_header_pairs(headers), _SSE_TYPE]
    try:
        await send({"type": "http.response.start", "status": 200, "headers": raw})
        async for frame in stream:
            await send({"type": "http.response.body", "body": frame, "more_body": True})
        watch.stop()
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    finally:
        await stream.aclose()  # type: ignore[attr-defined]


# Not an HTTP status sent to anyone: the metrics' and access log's word for "client left".
CLIENT_GONE = 499


class ClientWatch:
    """Cancels the serving task when the client disconnects, from the moment the body is
    read until the answer is complete: a client that goes away while Turnout waits on an
    upstream (retries, a stream's first content, a long answer) cancels the upstream call
    (contract). Coalesced requests are not cancelled with it: the cache runs a shared call
    as its own task.

    The watcher task starts only once the request has taken `WATCH_AFTER`: a task per
    request cost about 60 us (a fifth of a proxied request, measured with bench.run), and
    an answer faster than that has no upstream call worth cancelling.
    """

    WATCH_AFTER = 0.05

    __slots__ = ("_gone", "_live", "_receive", "_task", "_timer", "_watcher")

    def __init__(self, receive: Receive) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._task = task
        self._receive = receive
        self._gone = False
        self._live = True
        self._watcher: asyncio.Task[None] | None = None
        self._timer = asyncio.get_running_loop().call_later(self.WATCH_AFTER, self._start)

    def _start(self) -> None:
        if self._live:
            self._watcher = asyncio.create_task(self._watch())

    async def _watch(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass
        self._gone = True
        if self._live:
            self._task.cancel()

    def stop(self) -> None:
        """The answer is (being) completed: a disconnect from now on changes nothing."""
        if self._live:
            self._live = False
            self._timer.cancel()
            if self._watcher is not None:
                self._watcher.cancel()

    def left(self) -> bool:
        """True when the cancellation came from the client leaving (and is now absorbed)."""
        return self._gone and self._task.uncancel() == 0


async def models(request: Request) -> Response:
    gateway = gateway_of(request)
    authenticate(request, gateway.client_keys)
    data = [
        {"id": group.name, "object": "model", "created": gateway.loaded_at, "owned_by": "turnout"}
        for group in gateway.config.models
    ]
    return Response(orjson.dumps({"object": "list", "data": data}), media_type=JSON)


async def liveness(request: Request) -> Response:
    return Response(b'{"status":"ok"}', media_type=JSON)


async def readiness(request: Request) -> Response:
    gateway: Gateway | None = getattr(request.app.state, "gateway", None)
    if gateway is None:
        return Response(b'{"status":"unavailable","reason":"config not loaded"}',
                        status_code=503, media_type=JSON)
    if gateway.cache is not None:
        reason = await gateway.cache.readiness()
        if reason is not None:
            return Response(orjson.dumps({"status": "unavailable", "reason": reason}),
                            status_code=503, media_type=JSON)
    return Response(b'{"status":"ok"}', media_type=JSON)


async def metrics(request: Request) -> Response:
    return Response(gateway_of(request).metrics.exposition(),
                    media_type="text/plain; version=0.0.4; charset=utf-8")


async def openapi(request: Request) -> Response:
    document: bytes = request.app.state.openapi
    gateway: Gateway | None = getattr(request.app.state, "gateway", None)
    if gateway is not None:
        document = with_model_groups(document, [group.name for group in gateway.config.models])
    return Response(document, media_type=JSON)


def with_model_groups(document: bytes, groups: list[str]) -> bytes:
    """The OpenAPI document with `model` listing this config's groups, as the server accepts."""
    spec = orjson.loads(document)
    schemas = spec["components"]["schemas"]
    for name in ("ChatCompletionsRequest", "EmbeddingsRequest"):
        schemas[name]["properties"]["model"]["enum"] = groups
    return orjson.dumps(spec)


async def admin_status(request: Request) -> Response:
    require_admin(request)
    return Response(orjson.dumps(gateway_of(request).status()), media_type=JSON)


def require_admin(request: Request) -> None:
    """Raises AuthenticationFailed unless the request carries the admin key."""
    admin = gateway_of(request).config.server.admin_key
    if admin is None:
        authenticate(request, [b"\x00never"])  # refuses everyone, in constant time
        raise AuthenticationFailed("No admin key is configured")
    authenticate(request, [admin.get_secret_value().encode()])


_SWAGGER_PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Turnout API</title>
  <link rel="stylesheet" href="/static/swagger/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/static/swagger/swagger-ui-bundle.js"></script>
  <script>
    window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui"});
  </script>
</body>
</html>
"""


async def swagger_ui(request: Request) -> Response:
    return HTMLResponse(_SWAGGER_PAGE)

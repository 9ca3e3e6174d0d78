"""Thin HTTP handlers: read and check the request, hand it to the gateway, render the outcome."""

from __future__ import annotations

import time
from collections.abc import Callable

import orjson
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response, StreamingResponse

from router.errors import AuthenticationFailed
from router.gateway import Gateway, Outcome
from router.inbound import authenticate, parse_chat, parse_embeddings, read_json
from router.lifecycle import gateway_for

__all__ = [
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


async def chat_completions(request: Request) -> Response:
    return await _proxy(request, parse_chat)


async def embeddings(request: Request) -> Response:
    return await _proxy(request, parse_embeddings)


async def _proxy(request: Request, parse: Callable[..., object]) -> Response:
    gateway = gateway_of(request)
    started = time.perf_counter()
    metrics = gateway.metrics
    metrics.inflight.inc()
    group = "-"
    status = 500
    try:
        client_key = authenticate(request, gateway.client_keys)
        data = await read_json(request, gateway.config.server.max_body_bytes)
        inbound = parse(data, client_key)
        group = inbound.group  # type: ignore[attr-defined]
        outcome = await gateway.handle(inbound)  # type: ignore[arg-type]
        status = outcome.status
        return render(outcome)
    except Exception as exc:
        status = getattr(exc, "status", 500)
        raise
    finally:
        metrics.inflight.dec()
        known = group if gateway.config.group(group) is not None else "-"
        metrics.requests.labels(known, str(status)).inc()
        metrics.duration.observe(time.perf_counter() - started)


def render(outcome: Outcome) -> Response:
    if outcome.stream is not None:
        headers = {"cache-control": "no-cache", "x-accel-buffering": "no", **outcome.headers}
        return StreamingResponse(outcome.stream, media_type="text/event-stream", headers=headers)
    return Response(outcome.body, status_code=outcome.status, media_type=JSON,
                    headers=outcome.headers)


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

"""OpenTelemetry traces: a span per request, a child span per upstream attempt.

Tracing is on when the standard OTLP variables say where to send spans
(OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT; the exporter reads
the rest of the OTEL_* variables itself). When it is off, the SDK is never imported and
no span object is made; the providers are still wrapped, to time upstream waits for the
overhead metric and to feed the traffic windows of `/ui`.

Attempt spans follow the OpenTelemetry GenAI semantic conventions: name
"{operation} {model}", kind CLIENT, `gen_ai.*` request/response/usage attributes, plus
`turnout.deployment`. Prompts and answers are never recorded.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from router.config import Config
from router.errors import UpstreamRejected
from router.providers import Answer, Chunk, Provider
from router.traffic import Traffic, current_timing

__all__ = ["InstrumentedProvider", "RequestSpan", "Tracing", "instrument", "tracing_from_env"]

Clock = Callable[[], float]

_PROVIDER_NAMES = {"openai": "openai", "azure": "azure.ai.openai", "anthropic": "anthropic",
                   "gemini": "gcp.gemini", "mock": "turnout.mock"}
_REQUEST_PARAMS = (("max_tokens", "gen_ai.request.max_tokens"),
                   ("max_completion_tokens", "gen_ai.request.max_tokens"),
                   ("temperature", "gen_ai.request.temperature"),
                   ("top_p", "gen_ai.request.top_p"),
                   ("seed", "gen_ai.request.seed"))
_PROPAGATOR = TraceContextTextMapPropagator()


def tracing_from_env(environ: Mapping[str, str]) -> Tracing | None:
    """A Tracing exporting over OTLP/HTTP when the environment configures an endpoint."""
    endpoint = (environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
                or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))
    disabled = (environ.get("OTEL_SDK_DISABLED", "").lower() == "true"
                or environ.get("OTEL_TRACES_EXPORTER", "").lower() == "none")
    if not endpoint or disabled:
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from router import __version__

    # Resource.create reads OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES; "turnout" otherwise.
    resource = Resource.create({"service.name": environ.get("OTEL_SERVICE_NAME") or "turnout",
                                "service.version": __version__})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return Tracing(provider)


class Tracing:
    """Turnout's tracer, from a TracerProvider it owns (the global one is left alone)."""

    def __init__(self, provider: trace.TracerProvider) -> None:
        from router import __version__

        self.provider = provider
        self.tracer: Tracer = provider.get_tracer("turnout", __version__)

    def start_request(self, scope: Mapping[str, Any], request_id: str) -> RequestSpan:
        return RequestSpan(self.tracer, scope, request_id)

    def shutdown(self) -> None:
        """Flush what is queued and stop exporting (the lifespan calls this at exit)."""
        shutdown = getattr(self.provider, "shutdown", None)
        if shutdown is not None:
            shutdown()


class RequestSpan:
    """The SERVER span of one HTTP request, current while the request is handled.

    A W3C `traceparent` from the client makes it a child of the client's trace.
    """

    def __init__(self, tracer: Tracer, scope: Mapping[str, Any], request_id: str) -> None:
        carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]
                   if k in (b"traceparent", b"tracestate")}
        parent = _PROPAGATOR.extract(carrier) if carrier else None
        method = scope.get("method", "GET")
        path = scope.get("path", "/")
        self.span = tracer.start_span(
            f"{method} {path}", context=parent, kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "url.path": path,
                        "url.scheme": scope.get("scheme", "http"),
                        "turnout.request_id": request_id})
        self._token = otel_context.attach(trace.set_span_in_context(self.span))

    @property
    def trace_id(self) -> str:
        return format(self.span.get_span_context().trace_id, "032x")

    def finish(self, status: int, fields: Mapping[str, Any]) -> None:
        self.span.set_attribute("http.response.status_code", status)
        for key, value in fields.items():
            if value is not None:
                self.span.set_attribute(f"turnout.{key}", value)
        if status >= 500:
            self.span.set_status(Status(StatusCode.ERROR))
            self.span.set_attribute("error.type", str(status))
        otel_context.detach(self._token)
        self.span.end()


def instrument(providers: Mapping[str, Provider], config: Config, *,
               traffic: Traffic, tracing: Tracing | None = None,
               clock: Clock = time.perf_counter) -> dict[str, Provider]:
    """Each provider of `config`'s deployments wrapped to time, count and trace its attempts."""
    tracer = tracing.tracer if tracing is not None else None
    wrapped: dict[str, Provider] = {}
    for group in config.models:
        for d in group.deployments:
            wrapped[d.id] = InstrumentedProvider(
                providers[d.id], group.name, timeout=d.timeout or config.router.timeout,
                traffic=traffic, tracer=tracer, clock=clock)
    return wrapped


class InstrumentedProvider:
    """A Provider that times each attempt of the one it wraps; otherwise transparent."""

    def __init__(self, inner: Provider, group: str, *, timeout: float, traffic: Traffic,
                 tracer: Tracer | None, clock: Clock) -> None:
        self.inner = inner
        self.deployment = inner.deployment
        self.group = group
        self.timeout = timeout
        self._traffic = traffic
        self._tracer = tracer
        self._clock = clock

    def __getattr__(self, name: str) -> Any:
        # Anything a provider offers beyond the protocol stays reachable.
        return getattr(self.inner, name)

    async def complete(self, body: dict[str, Any]) -> Answer:
        return await self._attempt("chat", body, self.inner.complete)

    async def embed(self, body: dict[str, Any]) -> Answer:
        return await self._attempt("embeddings", body, self.inner.embed)

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def _attempt(self, operation: str, body: dict[str, Any],
                       call: Callable[[dict[str, Any]], Awaitable[Answer]]) -> Answer:
        span = self._start_span(operation, body)
        started = self._clock()
        ok: bool | None = None
        try:
            answer = await call(body)
            ok = True
            if span is not None:
                _answer_attributes(span, answer.data)
            return answer
        except UpstreamRejected as exc:
            ok = True  # the client's own mistake: the deployment answered
            _error(span, exc)
            raise
        except Exception as exc:  # UpstreamFailure, or a provider's own bug
            ok = False
            _error(span, exc)
            raise
        finally:
            self._finish(started, self._clock() - started, ok, span)

    async def stream(self, body: dict[str, Any]) -> AsyncIterator[Chunk]:
        span = self._start_span("chat", body)
        started = self._clock()
        latency: float | None = None
        waited = 0.0
        ok: bool | None = None
        facts: dict[str, Any] = {}
        inner = self.inner.stream(body)
        try:
            while True:
                asked = self._clock()
                try:
                    chunk = await inner.__anext__()
                except StopAsyncIteration:
                    waited += self._clock() - asked
                    break
                now = self._clock()
                waited += now - asked
                if latency is None:
                    latency = now - started
                if span is not None:
                    _chunk_facts(facts, chunk.data)
                yield chunk
            ok = True
        except GeneratorExit:
            ok = True  # the consumer stopped reading: not the deployment's failure
            raise
        except UpstreamRejected as exc:
            ok = True
            _error(span, exc)
            raise
        except Exception as exc:
            ok = False
            _error(span, exc)
            raise
        finally:
            await inner.aclose()  # type: ignore[attr-defined]
            if span is not None and facts:
                _answer_attributes(span, facts)
            elapsed = latency if latency is not None else self._clock() - started
            self._finish(started, elapsed, ok, span, waited=waited)

    def _start_span(self, operation: str, body: dict[str, Any]) -> Span | None:
        if self._tracer is None:
            return None
        d = self.deployment
        model = d.model or str(body.get("model") or "")
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": operation,
            "gen_ai.provider.name": _PROVIDER_NAMES.get(d.provider, d.provider),
            "gen_ai.system": _PROVIDER_NAMES.get(d.provider, d.provider),
            "gen_ai.request.model": model,
            "turnout.deployment": d.id,
            "turnout.model_group": self.group,
        }
        for param, name in _REQUEST_PARAMS:
            value = body.get(param)
            if isinstance(value, int | float) and not isinstance(value, bool):
                attributes[name] = value
        if d.base_url:
            parts = urlsplit(d.base_url)
            attributes["server.address"] = parts.hostname or ""
            attributes["server.port"] = parts.port or (443 if parts.scheme == "https" else 80)
        return self._tracer.start_span(f"{operation} {model}".strip(), kind=SpanKind.CLIENT,
                                       attributes=attributes)

    def _finish(self, started: float, latency: float, ok: bool | None, span: Span | None,
                *, waited: float | None = None) -> None:
        elapsed = self._clock() - started
        # The router bounds an attempt by cancelling it (asyncio.timeout): a cancellation
        # once the attempt's timeout has run out is that timeout, the deployment's failure.
        # Earlier ones are a hedge that lost or a client gone: not counted.
        timed_out = ok is None and elapsed >= self.timeout * 0.99
        if timed_out:
            ok = False
            if span is not None:
                span.set_status(Status(StatusCode.ERROR, "timeout"))
                span.set_attribute("error.type", "timeout")
        if ok is not None:
            self._traffic.record_attempt(self.deployment.id, ok, latency)
        timing = current_timing.get()
        if timing is not None:
            timing.upstream += waited if waited is not None else elapsed
            timing.attempts += 1
            timing.last_deployment = self.deployment.id
            if timing.first_group is None:
                timing.first_group = self.group
        if span is not None:
            if ok is None:
                span.set_attribute("error.type", "cancelled")
            span.end()


def _error(span: Span | None, exc: BaseException) -> None:
    if span is None:
        return
    status = getattr(exc, "status", None)
    span.set_attribute("error.type", str(status) if status else type(exc).__name__)
    span.set_status(Status(StatusCode.ERROR, type(exc).__name__))


def _answer_attributes(span: Span, data: Mapping[str, Any]) -> None:
    if isinstance(data.get("id"), str):
        span.set_attribute("gen_ai.response.id", data["id"])
    if isinstance(data.get("model"), str):
        span.set_attribute("gen_ai.response.model", data["model"])
    usage = data.get("usage")
    if isinstance(usage, dict):
        for key, name in (("prompt_tokens", "gen_ai.usage.input_tokens"),
                          ("completion_tokens", "gen_ai.usage.output_tokens")):
            if isinstance(usage.get(key), int):
                span.set_attribute(name, usage[key])
    reasons = data.get("finish_reasons")
    if reasons is None and isinstance(data.get("choices"), list):
        reasons = [c.get("finish_reason") for c in data["choices"] if isinstance(c, dict)]
    if reasons:
        span.set_attribute("gen_ai.response.finish_reasons", [str(r) for r in reasons if r])


def _chunk_facts(facts: dict[str, Any], chunk: Mapping[str, Any]) -> None:
    """What a stream's chunks say about the answer, gathered for its span."""
    for key in ("id", "model", "usage"):
        if chunk.get(key):
            facts[key] = chunk[key]
    for choice in chunk.get("choices") or ():
        if isinstance(choice, dict) and choice.get("finish_reason"):
            facts.setdefault("finish_reasons", []).append(choice["finish_reason"])

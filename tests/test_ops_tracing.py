"""Traces: a SERVER span per request, a CLIENT span per upstream attempt, GenAI attributes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import subprocess
import sys

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from router.tracing import Tracing, tracing_from_env
from tests.support import ROOT, app_client, config_from, openai_config

CHAT = {"model": "m", "messages": [{"role": "user", "content": "a very private prompt"}],
        "temperature": 0.5, "max_tokens": 20}


@pytest.fixture
def exporter():
    return InMemorySpanExporter()


@pytest.fixture
def tracing(exporter):
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return Tracing(provider)


def by_kind(exporter, kind):
    return [span for span in exporter.get_finished_spans() if span.kind == kind]


async def test_request_and_attempt_spans_with_genai_attributes(upstream, tracing, exporter):
    async with app_client(config_from(openai_config()), upstream.transport(),
                          tracing=tracing) as client:
        response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 200
    [server] = by_kind(exporter, SpanKind.SERVER)
    [attempt] = by_kind(exporter, SpanKind.CLIENT)
    assert attempt.parent.span_id == server.context.span_id
    assert server.name == "POST /v1/chat/completions"
    assert server.attributes["http.response.status_code"] == 200
    assert server.attributes["turnout.model_group"] == "m"
    assert server.attributes["turnout.deployment"] == "d0"
    assert server.attributes["turnout.request_id"] == response.headers["x-request-id"]
    assert attempt.name == "chat upstream-model-0"
    attrs = attempt.attributes
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.provider.name"] == "openai"
    assert attrs["gen_ai.request.model"] == "upstream-model-0"
    assert attrs["gen_ai.request.temperature"] == 0.5
    assert attrs["gen_ai.request.max_tokens"] == 20
    assert attrs["gen_ai.response.model"] == "upstream-model-0"
    assert attrs["gen_ai.usage.input_tokens"] == 1
    assert attrs["gen_ai.usage.output_tokens"] == 1
    assert tuple(attrs["gen_ai.response.finish_reasons"]) == ("stop",)
    assert (attrs["server.address"], attrs["server.port"]) == ("up.test", 80)
    assert attrs["turnout.deployment"] == "d0"
    everything = repr([dict(s.attributes) for s in exporter.get_finished_spans()])
    assert "private prompt" not in everything and "Hello" not in everything
    assert "sk-upstream-secret" not in everything


async def test_probes_and_scrapes_are_not_traced(upstream, tracing, exporter):
    async with app_client(config_from(openai_config()), upstream.transport(),
                          tracing=tracing) as client:
        await client.get("/health/liveness")
        await client.get("/metrics")
        await client.get("/v1/models")
    assert [span.name for span in exporter.get_finished_spans()] == ["GET /v1/models"]


async def test_client_traceparent_makes_the_request_span_its_child(upstream, tracing, exporter):
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    headers = {"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"}
    async with app_client(config_from(openai_config()), upstream.transport(),
                          tracing=tracing) as client:
        await client.post("/v1/chat/completions", json=CHAT, headers=headers)
    for span in exporter.get_finished_spans():
        assert format(span.context.trace_id, "032x") == trace_id
    [server] = by_kind(exporter, SpanKind.SERVER)
    assert format(server.parent.span_id, "016x") == "00f067aa0ba902b7"


async def test_streamed_attempt_span_gathers_finish_reason(upstream, tracing, exporter):
    async with app_client(config_from(openai_config()), upstream.transport(),
                          tracing=tracing) as client:
        response = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
        assert response.status_code == 200
    [attempt] = by_kind(exporter, SpanKind.CLIENT)
    assert tuple(attempt.attributes["gen_ai.response.finish_reasons"]) == ("stop",)
    assert attempt.attributes["gen_ai.response.id"] == "chatcmpl-1"
    assert attempt.status.status_code != StatusCode.ERROR


async def test_failed_attempt_and_request_are_marked_as_errors(tracing, exporter):
    transport = httpx.MockTransport(lambda request: httpx.Response(503, json={}))
    config = config_from("[router]\nnum_retries = 0\n" + openai_config())  # one attempt span
    async with app_client(config, transport, tracing=tracing) as client:
        assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 502
    [server] = by_kind(exporter, SpanKind.SERVER)
    [attempt] = by_kind(exporter, SpanKind.CLIENT)
    assert attempt.status.status_code == StatusCode.ERROR
    assert attempt.attributes["error.type"] == "503"
    assert server.status.status_code == StatusCode.ERROR
    assert server.attributes["http.response.status_code"] == 502


async def test_access_log_carries_the_trace_id(upstream, tracing, exporter, caplog):
    caplog.set_level(logging.INFO, logger="turnout.access")
    async with app_client(config_from(openai_config()), upstream.transport(),
                          tracing=tracing) as client:
        await client.post("/v1/chat/completions", json=CHAT)
    [server] = by_kind(exporter, SpanKind.SERVER)
    [record] = [r for r in caplog.records if r.name == "turnout.access"]
    assert record.trace_id == format(server.context.trace_id, "032x")


@pytest.mark.parametrize(("env", "on"), [
    pytest.param({}, False, id="unset"),
    pytest.param({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, True, id="endpoint"),
    pytest.param({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"},
                 True, id="traces-endpoint"),
    pytest.param({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318",
                  "OTEL_SDK_DISABLED": "true"}, False, id="sdk-disabled"),
    pytest.param({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318",
                  "OTEL_TRACES_EXPORTER": "none"}, False, id="exporter-none"),
])
def test_tracing_is_on_only_when_an_otlp_endpoint_is_configured(env, on):
    tracing = tracing_from_env(env)
    assert (tracing is not None) == on
    if tracing is not None:
        tracing.shutdown()


def test_tracing_off_never_loads_the_sdk():
    script = (
        "import asyncio, sys, httpx\n"
        "from router.app import create_app\n"
        "from router.tracing import tracing_from_env\n"
        "from tests.support import config_from, openai_config, RecordingUpstream\n"
        "app = create_app(config_from(openai_config()), transport=RecordingUpstream()"
        ".transport(), tracing=tracing_from_env({}))\n"
        "async def main():\n"
        "    async with app.router.lifespan_context(app), httpx.AsyncClient(\n"
        "            transport=httpx.ASGITransport(app=app), base_url='http://t') as c:\n"
        "        body = {'model': 'm', 'messages': [{'role': 'user', 'content': 'x'}]}\n"
        "        r = await c.post('/v1/chat/completions', json=body)\n"
        "        assert r.status_code == 200, r.text\n"
        "asyncio.run(main())\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry.sdk.trace')"
        " or m.startswith('opentelemetry.exporter')))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            cwd=ROOT, check=True)
    assert result.stdout.strip() == "[]"


class OtlpReceiver:
    """A minimal OTLP/HTTP trace receiver on loopback: keeps every exported span."""

    def __init__(self) -> None:
        import http.server
        import threading

        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )

        self.spans: list = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # the name http.server calls
                body = self.rfile.read(int(self.headers["content-length"]))
                request = ExportTraceServiceRequest.FromString(body)
                for resource in request.resource_spans:
                    for scope in resource.scope_spans:
                        receiver.spans.extend(scope.spans)
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                return None

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.e2e
def test_a_request_is_followed_from_its_log_line_to_its_exported_spans(tmp_path):
    import time

    import orjson

    from tests.support import turnout_process

    receiver = OtlpReceiver()
    config = ('[[models]]\nname = "m"\n[[models.deployments]]\nid = "only"\n'
              'provider = "mock"\nmodel = "mock-model"\n')
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_BSP_SCHEDULE_DELAY": "50"}
    try:
        with turnout_process(config, tmp_path, env=env) as base:
            response = httpx.post(f"{base}/v1/chat/completions", json=CHAT,
                                  headers={"x-request-id": "follow-me"})
            assert response.status_code == 200
            deadline = time.monotonic() + 10
            while len(receiver.spans) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
    finally:
        receiver.close()
    log = next(tmp_path.glob("turnout-*.log")).read_text()
    [line] = [orjson.loads(x) for x in log.splitlines()
              if x.startswith("{") and '"follow-me"' in x]
    spans = [s for s in receiver.spans if s.trace_id.hex() == line["trace_id"]]
    names = {s.name for s in spans}
    assert names == {"POST /v1/chat/completions", "chat mock-model"}
    attempt = next(s for s in spans if s.name == "chat mock-model")
    attributes = {a.key: a.value for a in attempt.attributes}
    assert attributes["turnout.deployment"].string_value == "only"
    assert attributes["gen_ai.provider.name"].string_value == "turnout.mock"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Waiting:
    """A provider whose calls wait until cancelled; `reject` makes them the client's 400."""

    def __init__(self, reject: bool = False) -> None:
        from router.config import Deployment

        self.deployment = Deployment(id="d", provider="mock")
        self.reject = reject

    async def complete(self, body):
        from router.errors import UpstreamRejected

        if self.reject:
            raise UpstreamRejected("d", 400, {"error": {"message": "bad"}})
        await asyncio.Event().wait()


async def _cancel_after(wrapped, clock, seconds):
    task = asyncio.create_task(wrapped.complete({}))
    await asyncio.sleep(0)
    clock.now += seconds
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


@pytest.mark.parametrize(("seconds", "attempts", "failures"), [
    pytest.param(5.0, 1, 1, id="cancelled-at-its-timeout-is-a-failure"),
    pytest.param(1.0, 0, 0, id="cancelled-early-is-not-counted"),
])
async def test_cancelled_attempts_count_only_when_their_timeout_ran_out(
        seconds, attempts, failures, tracing, exporter):
    from router.tracing import InstrumentedProvider
    from router.traffic import Traffic

    clock, traffic = Clock(), Traffic()
    wrapped = InstrumentedProvider(Waiting(), "g", timeout=5.0, traffic=traffic,
                                   tracer=tracing.tracer, clock=clock)
    await _cancel_after(wrapped, clock, seconds)
    window = traffic.snapshot([], ["d"])["deployments"]["d"]
    assert (sum(window["attempts"]), sum(window["failures"])) == (attempts, failures)
    [span] = exporter.get_finished_spans()
    assert span.attributes["error.type"] == ("timeout" if failures else "cancelled")


async def test_the_clients_own_mistake_is_not_the_deployments_failure():
    from router.errors import UpstreamRejected
    from router.tracing import InstrumentedProvider
    from router.traffic import Traffic

    traffic = Traffic()
    wrapped = InstrumentedProvider(Waiting(reject=True), "g", timeout=5.0, traffic=traffic,
                                   tracer=None, clock=Clock())
    with pytest.raises(UpstreamRejected):
        await wrapped.complete({})
    window = traffic.snapshot([], ["d"])["deployments"]["d"]
    assert (sum(window["attempts"]), sum(window["failures"])) == (1, 0)

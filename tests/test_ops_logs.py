"""Access-log lines, request ids, log formats and lifecycle events."""

from __future__ import annotations

import asyncio
import io
import logging

import httpx
import orjson
import pytest

from router.logs import AccessLog, HumanFormatter, JsonFormatter, configure_logging
from router.metrics import Metrics
from tests.support import app_client, config_from, openai_config, turnout_process

CHAT = {"model": "m", "messages": [{"role": "user", "content": "a very private prompt"}]}


@pytest.fixture
def access_records(caplog):
    caplog.set_level(logging.DEBUG, logger="turnout.access")
    return lambda: [r for r in caplog.records if r.name == "turnout.access"]


async def test_one_access_line_per_request_with_routing_facts(upstream, access_records):
    async with app_client(config_from(openai_config()), upstream.transport()) as client:
        response = await client.post("/v1/chat/completions", json=CHAT,
                                     headers={"authorization": "Bearer whatever"})
    assert response.status_code == 200
    [record] = access_records()
    assert record.levelno == logging.INFO
    assert record.event == "request"
    assert record.request_id == response.headers["x-request-id"]
    assert len(record.request_id) == 32
    assert (record.method, record.path, record.status) == ("POST", "/v1/chat/completions", 200)
    assert (record.group, record.deployment, record.cache, record.attempts) == (
        "m", "d0", "bypass", 1)
    assert record.duration_ms >= record.overhead_ms >= 0


async def test_client_request_id_is_kept_and_returned(upstream, access_records):
    async with app_client(config_from(openai_config()), upstream.transport()) as client:
        response = await client.post("/v1/chat/completions", json=CHAT,
                                     headers={"x-request-id": "req-42.a:b"})
    assert response.headers["x-request-id"] == "req-42.a:b"
    assert access_records()[0].request_id == "req-42.a:b"


@pytest.mark.parametrize("bad", ["has space", "x" * 200, 'quote"and{braces}'])
async def test_unusable_client_request_id_is_replaced(upstream, bad):
    async with app_client(config_from(openai_config()), upstream.transport()) as client:
        response = await client.get("/v1/models", headers={"x-request-id": bad})
    assert response.headers["x-request-id"] != bad
    assert len(response.headers["x-request-id"]) == 32


async def test_failed_request_names_the_deployment_that_failed(access_records):
    transport = httpx.MockTransport(lambda request: httpx.Response(500, json={"error": "boom"}))
    config = config_from('[router]\nretry_backoff = 0\n' + openai_config())
    async with app_client(config, transport) as client:
        response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 502
    [record] = access_records()
    # The first attempt and num_retries = 2 more, all on the one deployment.
    assert (record.status, record.group, record.deployment, record.attempts) == (
        502, "m", "d0", 3)
    assert record.cache is None


async def test_probes_are_logged_at_debug(upstream, access_records):
    async with app_client(config_from(openai_config()), upstream.transport()) as client:
        await client.get("/health/liveness")
        await client.get("/metrics")
    assert [r.levelno for r in access_records()] == [logging.DEBUG, logging.DEBUG]


@pytest.fixture
def restore_logging():
    """Undoes configure_logging, which rewires the "turnout" and uvicorn loggers."""
    yield
    for name in ("turnout", "uvicorn", "uvicorn.error", "opentelemetry"):
        logger = logging.getLogger(name)
        logger.handlers = []
        logger.propagate = True
        logger.setLevel(logging.NOTSET)


def _record(**extra):
    record = logging.LogRecord("turnout.access", logging.INFO, __file__, 1, "POST %s %s",
                               ("/v1/chat/completions", 200), None)
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_json_formatter_writes_one_object_with_the_extra_fields():
    line = JsonFormatter().format(_record(event="request", request_id="r1", status=200,
                                          color_message="\x1b[36mcoloured\x1b[0m"))
    data = orjson.loads(line)
    assert "\n" not in line
    assert data["message"] == "POST /v1/chat/completions 200"
    assert (data["level"], data["logger"], data["event"], data["request_id"]) == (
        "info", "turnout.access", "request", "r1")
    assert data["ts"].endswith("Z")
    assert "color_message" not in data  # uvicorn's ANSI copy of the message


def test_human_formatter_is_one_readable_line():
    line = HumanFormatter().format(_record(event="request", request_id="r1", group="m"))
    assert "INFO" in line and "POST /v1/chat/completions 200" in line
    assert "request_id=r1 group=m" in line
    assert not line.lstrip().startswith("{")


def test_configured_logging_masks_secrets_and_writes_events_as_json(restore_logging):
    out = io.StringIO()
    stop = configure_logging(stream=out, human=False, secrets=["sk-upstream-secret", "short"])
    try:
        logging.getLogger("turnout.events").info(
            "deployment d0 cooled down", extra={"event": "deployment_cooled_down",
                                                "deployment": "d0", "note": "sk-upstream-secret"})
        logging.getLogger("turnout").warning("a short word stays")
    finally:
        stop()
    first, second = out.getvalue().splitlines()
    event = orjson.loads(first)
    assert event["event"] == "deployment_cooled_down" and event["deployment"] == "d0"
    assert "sk-upstream-secret" not in first and event["note"] == "***"
    assert orjson.loads(second)["message"] == "a short word stays"


@pytest.mark.e2e
def test_served_process_logs_json_lines_without_prompts_or_keys(tmp_path):
    config = openai_config(base_url="http://127.0.0.1:9/v1") + (
        '[server]\napi_keys = ["client-key-123456"]\n')
    with turnout_process(config, tmp_path) as base:
        headers = {"authorization": "Bearer client-key-123456", "x-request-id": "trace-me"}
        response = httpx.post(f"{base}/v1/chat/completions", json=CHAT, headers=headers)
        assert response.status_code == 502  # nothing listens on port 9
    log = next(tmp_path.glob("turnout-*.log")).read_text()
    lines = [orjson.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert any(line.get("event") == "config_loaded" for line in lines)
    [access] = [line for line in lines if line.get("request_id") == "trace-me"]
    assert (access["status"], access["group"], access["deployment"]) == (502, "m", "d0")
    assert "a very private prompt" not in log
    assert "client-key-123456" not in log and "sk-upstream-secret" not in log


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("stream", "human"), [
    pytest.param(Terminal(), True, id="terminal"),
    pytest.param(io.StringIO(), False, id="pipe"),
])
def test_log_format_follows_whether_stderr_is_a_terminal(stream, human, restore_logging):
    stop = configure_logging(stream=stream)
    try:
        logging.getLogger("turnout.events").info("config loaded",
                                                 extra={"event": "config_loaded"})
    finally:
        stop()
    line = stream.getvalue().strip()
    assert line.startswith("{") is not human
    assert "config loaded" in line and "config_loaded" in line


@pytest.mark.parametrize(("failure", "status"), [
    pytest.param(asyncio.CancelledError, 499, id="client-gone-before-the-answer"),
    pytest.param(RuntimeError, 500, id="error-escaping-the-app"),
])
async def test_requests_that_never_answered_are_logged(failure, status, access_records):
    async def app(scope, receive, send):
        raise failure()

    async def receive():
        return {"type": "http.request", "body": b""}

    async def send(message):
        raise AssertionError("nothing may be sent")

    middleware = AccessLog(app, metrics=Metrics())
    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": []}
    with pytest.raises(failure):
        await middleware(scope, receive, send)
    [record] = access_records()
    assert record.status == status

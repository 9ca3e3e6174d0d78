"""Logs: one access-log line per request (an ASGI middleware), and the log formats.

The access line carries the request id, the group and deployment that answered, the cache
result, the attempts, the status, the duration and Turnout's overhead; never a body, a
header value other than the request id, or a key. It reads the x-turnout-* headers the
gateway sets on the response, so the request path itself logs nothing.

Lifecycle events are logged by the modules that see them, on the "turnout.events" logger:
`logging.getLogger("turnout.events").info(msg, extra={"event": "cooldown", ...})`.

Output is one JSON object a line, or a short human-readable line when stderr is a
terminal. Records go through a queue to a thread that writes them, so a slow stderr pipe
never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import atexit
import datetime
import logging
import logging.handlers
import queue
import random
import re
import sys
import time
from collections.abc import Callable, Iterable, MutableMapping
from typing import IO, Any

import orjson

from router.masking import SecretMasker
from router.metrics import Metrics
from router.tracing import RequestSpan, Tracing
from router.traffic import RequestTiming, current_timing

__all__ = ["AccessLog", "HumanFormatter", "JsonFormatter", "configure_logging"]

ACCESS = logging.getLogger("turnout.access")
CLIENT_CLOSED = 499
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Any]
Send = Callable[[Message], Any]
ASGIApp = Callable[[Scope, Receive, Send], Any]

# A client's request id is kept only if it is short and printable: it goes into logs.
_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:/+=@-]{1,128}$")
# Probes and scrapes come every few seconds: logged at DEBUG, and not traced, so they do
# not drown the requests.
_QUIET_PATHS = frozenset({"/health/liveness", "/health/readiness", "/metrics"})
_HEADERS = {b"x-turnout-model-group": "group", b"x-turnout-deployment": "deployment",
            b"x-turnout-cache": "cache", b"x-turnout-attempts": "attempts"}
_MIN_MASKED = 8
_STANDARD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message", "asctime", "taskName", "color_message"}  # uvicorn's ANSI-coloured copy


class AccessLog:
    """Pure-ASGI middleware: request ids, the access-log line, overhead, traffic and spans."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics, tracing: Tracing | None = None,
                 clock: Callable[[], float] = time.perf_counter,
                 logger: logging.Logger = ACCESS) -> None:
        self.app = app
        self.metrics = metrics
        self.tracing = tracing
        self.clock = clock
        self.logger = logger
        # Request ids need to be unique, not unguessable: a PRNG seeded from the OS once
        # costs far less per request than uuid4's os.urandom call.
        self._ids = random.Random()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = self.clock()
        request_id = _request_id(scope) or f"{self._ids.getrandbits(128):032x}"
        timing = RequestTiming()
        token = current_timing.set(timing)
        span = None
        if self.tracing is not None and scope.get("path") not in _QUIET_PATHS:
            span = self.tracing.start_request(scope, request_id)
        seen: dict[str, str] = {}
        status = 500  # until the app starts a response: an error that escaped it
        responded = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status, responded
            if message["type"] == "http.response.start":
                status, responded = message["status"], True
                headers = list(message.get("headers") or ())
                for name, value in headers:
                    field = _HEADERS.get(name)
                    if field is not None:
                        seen[field] = value.decode("latin-1")
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
                await send(message)
                return
            sending = self.clock()
            await send(message)
            timing.sending += self.clock() - sending

        try:
            await self.app(scope, receive, send_wrapper)
        except asyncio.CancelledError:
            if not responded:
                status = CLIENT_CLOSED  # nginx's word for a client gone before the answer
            raise
        finally:
            current_timing.reset(token)
            self._record(scope, request_id, status, seen, timing, self.clock() - started, span)

    def _record(self, scope: Scope, request_id: str, status: int, seen: dict[str, str],
                timing: RequestTiming, duration: float, span: RequestSpan | None) -> None:
        overhead = max(0.0, duration - timing.upstream - timing.sending)
        group = seen.get("group") or timing.first_group
        attempts = int(seen["attempts"]) if seen.get("attempts", "").isdigit() \
            else timing.attempts
        fields: dict[str, Any] = {
            "event": "request", "request_id": request_id, "method": scope.get("method"),
            "path": scope.get("path"), "status": status, "group": group,
            "deployment": seen.get("deployment") or timing.last_deployment,
            "cache": seen.get("cache"), "attempts": attempts,
            "duration_ms": round(duration * 1000, 3), "overhead_ms": round(overhead * 1000, 3),
        }
        if span is not None:
            fields["trace_id"] = span.trace_id
            span.finish(status, {"model_group": group, "deployment": fields["deployment"],
                                 "cache": fields["cache"], "attempts": attempts})
        if group is not None or attempts:
            self.metrics.overhead.observe(overhead)
            if group is not None:
                self.metrics.traffic.record_request(group, status, duration, fields["cache"])
        level = logging.DEBUG if scope.get("path") in _QUIET_PATHS else logging.INFO
        logger = self.logger
        if logger.isEnabledFor(level):
            # Logger.log would also walk the stack to find its caller, on every request:
            # the record is made here, without that.
            logger.handle(logger.makeRecord(
                logger.name, level, __file__, 0, "%s %s %s",
                (scope.get("method"), scope.get("path"), status), None, extra=fields))


def _request_id(scope: Scope) -> str | None:
    """The client's x-request-id, if it sent a usable one."""
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            if _REQUEST_ID.match(value):
                return str(value.decode("ascii"))
            break
    return None


def _extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items()
            if k not in _STANDARD_ATTRS and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ts, level, logger, message, and the record's extra fields."""

    def __init__(self, masker: SecretMasker | None = None) -> None:
        super().__init__()
        self.masker = masker

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(
                timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **_extra_fields(record),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        data = orjson.dumps(line, default=str)
        if self.masker is not None:
            data = self.masker.mask(data)
        return data.decode()


class HumanFormatter(logging.Formatter):
    """For a terminal: time, level, message, then the extra fields as key=value."""

    def __init__(self, masker: SecretMasker | None = None) -> None:
        super().__init__()
        self.masker = masker

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        extras = _extra_fields(record)
        if extras.get("event") == "request":
            del extras["event"]
        tail = " ".join(f"{k}={v}" for k, v in extras.items() if v is not None)
        text = f"{stamp} {record.levelname:<5} {record.getMessage()}"
        if tail:
            text += f"  {tail}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return self.masker.mask_text(text) if self.masker is not None else text


def configure_logging(*, stream: IO[str] | None = None, human: bool | None = None,
                      secrets: Iterable[str] = (), level: int = logging.INFO
                      ) -> Callable[[], None]:
    """Route "turnout*" and uvicorn's loggers to stderr, JSON unless stderr is a terminal.

    Called once by the CLI before serving; never by the app itself. Returns the function
    that writes out what is queued and stops the writer (also registered to run at exit).
    """
    out = stream or sys.stderr
    if human is None:
        human = out.isatty()
    # Short "secrets" (test keys like "adm") would garble ordinary words such as "admin".
    masker = SecretMasker(s for s in secrets if len(s) >= _MIN_MASKED)
    formatter: logging.Formatter = HumanFormatter(masker) if human else JsonFormatter(masker)
    writer = logging.StreamHandler(out)
    writer.setFormatter(formatter)
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    listener = logging.handlers.QueueListener(records, writer)
    listener.start()
    stopped = False

    def stop() -> None:
        nonlocal stopped
        if not stopped:
            stopped = True
            listener.stop()

    atexit.register(stop)
    handler = _QueueHandler(records)
    # The OpenTelemetry SDK reports export failures on its own loggers: same format.
    for name, at in (("turnout", level), ("uvicorn", level), ("uvicorn.error", level),
                     ("opentelemetry", max(level, logging.WARNING))):
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.setLevel(at)
        logger.propagate = False
    # Neither format shows a record's thread or process: a record need not look them up
    # (the logging HOWTO's "Optimization" flags), which the access line pays per request.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    # httpx logs a line at INFO for every request an AsyncClient sends: per-request noise.
    logging.getLogger("httpx").setLevel(max(level, logging.WARNING))
    return stop


class _QueueHandler(logging.handlers.QueueHandler):
    """Keeps the record's own fields for the formatter on the other side of the queue."""

    def handle(self, record: logging.LogRecord) -> bool:
        # Handler.handle takes the handler's lock around emit(); putting on a SimpleQueue
        # is thread-safe already, and the access line passes here on every request.
        rv = self.filter(record)
        if isinstance(rv, logging.LogRecord):
            record = rv
        if rv:
            self.emit(record)
        return bool(rv)

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        # The stock prepare() formats here and flattens the record to its message; the
        # writer thread formats instead, and needs the extra fields.
        return record

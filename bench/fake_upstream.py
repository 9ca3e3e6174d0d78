"""A fast fake OpenAI upstream for load tests: raw asyncio, canned answers, never the bottleneck.

Run it as `python -m bench.fake_upstream --port P`. It speaks just enough HTTP/1.1 (keep-alive,
Content-Length request bodies, pipelining) to answer:

    POST .../chat/completions         a JSON chat completion, or with "stream": true an SSE
                                      stream of 8 chunks (role, 6 pieces of text, finish)
                                      and [DONE], one HTTP chunk per event
    POST /flaky/.../chat/completions  the same, but every second call answers 500
    GET  /health                      200

Answers are built once at start-up, so the per-request work is finding the end of the
headers, reading Content-Length and one `transport.write`.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import cast

import orjson

STREAM_CHUNKS = 8
MAX_HEADER_BYTES = 64 * 1024


def completion_body() -> bytes:
    return orjson.dumps({
        "id": "chatcmpl-bench", "object": "chat.completion", "created": 1_700_000_000,
        "model": "fake-model", "system_fingerprint": "fp_bench",
        "choices": [{"index": 0, "logprobs": None, "finish_reason": "stop",
                     "message": {"role": "assistant", "refusal": None,
                                 "content": "The quick brown fox jumps over the lazy dog."}}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 10, "total_tokens": 22},
    })


def stream_events() -> list[bytes]:
    """8 SSE events (role, 6 text pieces, finish reason) and the final [DONE]."""
    def chunk(delta: dict[str, object], finish: str | None = None) -> bytes:
        data = orjson.dumps({
            "id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1_700_000_000,
            "model": "fake-model", "system_fingerprint": "fp_bench",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        })
        return b"data: " + data + b"\n\n"

    pieces = ["The quick", " brown", " fox", " jumps over", " the lazy", " dog."]
    events = [chunk({"role": "assistant", "content": ""})]
    events += [chunk({"content": p}) for p in pieces]
    events.append(chunk({}, "stop"))
    assert len(events) == STREAM_CHUNKS
    return [*events, b"data: [DONE]\n\n"]


def json_response(status: bytes, body: bytes) -> bytes:
    return (b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


def sse_response(events: list[bytes]) -> bytes:
    head = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n")
    body = b"".join(b"%x\r\n%s\r\n" % (len(e), e) for e in events)
    return head + body + b"0\r\n\r\n"


OK_JSON = json_response(b"200 OK", completion_body())
OK_STREAM = sse_response(stream_events())
FAILED = json_response(b"500 Internal Server Error", orjson.dumps({"error": {
    "message": "fake upstream failure", "type": "server_error", "param": None, "code": None}}))
HEALTH = json_response(b"200 OK", b'{"status":"ok"}')
NOT_FOUND = json_response(b"404 Not Found", b'{"error":{"message":"not found"}}')
BAD_REQUEST = (b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")


class Counters:
    """What the whole server saw; the flaky path fails every second one of its calls."""

    def __init__(self) -> None:
        self.connections = 0
        self.calls = 0
        self.flaky_calls = 0


class FakeUpstream(asyncio.Protocol):
    def __init__(self, counters: Counters) -> None:
        self.counters = counters
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self.transport = cast(asyncio.Transport, transport)
        self.counters.connections += 1

    def data_received(self, data: bytes) -> None:
        self.buffer = self.buffer + data if self.buffer else data
        while self.transport is not None and self.buffer:
            if not self.answer_one():
                return

    def answer_one(self) -> bool:
        """Answers the first complete request in the buffer; False when it is incomplete."""
        assert self.transport is not None
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buffer) > MAX_HEADER_BYTES:
                self.refuse()
            return False
        head = self.buffer[:end]
        length = content_length(head)
        if length is None:
            self.refuse()
            return False
        total = end + 4 + length
        if len(self.buffer) < total:
            return False
        body = self.buffer[end + 4:total]
        self.buffer = self.buffer[total:]
        self.transport.write(self.respond(head, body))
        return True

    def respond(self, head: bytes, body: bytes) -> bytes:
        line = head[:head.find(b"\r\n")] if b"\r\n" in head else head
        parts = line.split(b" ")
        if len(parts) != 3:
            return NOT_FOUND
        method, path = parts[0], parts[1]
        if method == b"GET" and path == b"/health":
            return HEALTH
        if method != b"POST" or not path.endswith(b"/chat/completions"):
            return NOT_FOUND
        self.counters.calls += 1
        if path.startswith(b"/flaky/"):
            self.counters.flaky_calls += 1
            if self.counters.flaky_calls % 2 == 0:
                return FAILED
        if b'"stream":true' in body or b'"stream": true' in body:
            return OK_STREAM
        return OK_JSON

    def refuse(self) -> None:
        assert self.transport is not None
        self.transport.write(BAD_REQUEST)
        self.transport.close()
        self.transport = None
        self.buffer = b""

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


def content_length(head: bytes) -> int | None:
    """The request's Content-Length (0 when absent); None when it is malformed or chunked."""
    lowered = head.lower()
    if b"\r\ntransfer-encoding:" in lowered:
        return None
    start = lowered.find(b"\r\ncontent-length:")
    if start < 0:
        return 0
    start += len(b"\r\ncontent-length:")
    stop = lowered.find(b"\r\n", start)
    value = lowered[start:stop if stop >= 0 else len(lowered)].strip()
    return int(value) if value.isdigit() else None


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    counters = Counters()
    server = await loop.create_server(lambda: FakeUpstream(counters), host, port, backlog=1024)
    stopped = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopped.set)
    async with server:
        await stopped.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(args.host, args.port))
    else:
        uvloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()

"""The `openai` provider: any OpenAI-compatible server; bodies are relayed as they are."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson

from router.config import Deployment
from router.errors import UpstreamFailure
from router.providers.base import Answer, Chunk, classify_status, parse_json_body, transport_errors
from router.providers.pool import UpstreamSender, sender_of

__all__ = ["OpenAIProvider", "relay_sse", "sse_events"]


class OpenAIProvider:
    def __init__(self, deployment: Deployment, http: UpstreamSender | httpx.AsyncClient) -> None:
        self.deployment = deployment
        self._sender = sender_of(http)
        self._headers = httpx.Headers(self.auth_headers(deployment))
        self._urls: dict[str, httpx.URL] = {}

    @staticmethod
    def auth_headers(deployment: Deployment) -> dict[str, str]:
        headers = {"content-type": "application/json", **deployment.headers}
        if deployment.api_key is not None:
            headers["authorization"] = f"Bearer {deployment.api_key.get_secret_value()}"
        return headers

    def url(self, operation: str) -> str:
        """`operation` is "chat/completions" or "embeddings"."""
        return f"{self.deployment.base_url}/{operation}"

    def payload(self, body: dict[str, Any]) -> bytes:
        return orjson.dumps({**body, "model": self.deployment.model})

    def _request(self, operation: str, body: dict[str, Any]) -> httpx.Request:
        url = self._urls.get(operation)
        if url is None:
            url = self._urls[operation] = httpx.URL(self.url(operation))
        return self._sender.build("POST", url, content=self.payload(body), headers=self._headers)

    async def complete(self, body: dict[str, Any]) -> Answer:
        return await self._post_json(self._request("chat/completions", body))

    async def embed(self, body: dict[str, Any]) -> Answer:
        return await self._post_json(self._request("embeddings", body))

    async def stream(self, body: dict[str, Any]) -> AsyncIterator[Chunk]:
        dep = self.deployment.id
        request = self._request("chat/completions", body)
        with transport_errors(dep):
            response = await self._sender.send(request, stream=True)
        try:
            if response.status_code != 200:
                with transport_errors(dep):
                    raw = await response.aread()
                raise classify_status(dep, response.status_code, raw, response.headers)
            async for chunk in relay_sse(dep, response):
                yield chunk
        finally:
            await response.aclose()

    async def aclose(self) -> None:
        return None

    async def _post_json(self, request: httpx.Request) -> Answer:
        dep = self.deployment.id
        with transport_errors(dep):
            response = await self._sender.send(request)
        if response.status_code != 200:
            raise classify_status(dep, response.status_code, response.content, response.headers)
        return Answer(parse_json_body(dep, response.content), raw=response.content)


async def relay_sse(deployment: str, response: httpx.Response) -> AsyncIterator[Chunk]:
    """Chunks of an OpenAI-style SSE stream; ends at `[DONE]`, fails if the stream breaks.

    A stream that ends before `[DONE]` and before any finish reason broke off: that is a
    failure, so that nothing partial is ever taken for a complete answer. The stream is
    split into events on bytes (no text decoding, no per-line strings): measured in
    bench/PROFILE.md.
    """
    finished = False
    content_type = response.headers.get("content-type", "").partition(";")[0]
    if "text/event-stream" not in content_type:
        raise UpstreamFailure(deployment, "connection error: SSEError")
    with transport_errors(deployment):
        async for event, data in sse_events(response.aiter_bytes()):
            if data == b"[DONE]":
                return
            if not data:
                continue
            parsed = _json_chunk(deployment, data)
            if event == b"error" or "error" in parsed:
                raise UpstreamFailure(deployment, "error event in stream")
            finished = finished or _has_finish_reason(parsed)
            yield Chunk(parsed, raw=data)
    if not finished:
        raise UpstreamFailure(deployment, "stream ended without [DONE]")


def _json_chunk(deployment: str, data: bytes) -> dict[str, Any]:
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError:
        # Text decoding replaces bytes that are not UTF-8; JSON that is valid once they
        # are replaced is read as such.
        try:
            parsed = orjson.loads(data.decode("utf-8", "replace"))
        except orjson.JSONDecodeError:
            raise UpstreamFailure(deployment, "malformed stream chunk") from None
    if not isinstance(parsed, dict):
        raise UpstreamFailure(deployment, "malformed stream chunk")
    return parsed


async def sse_events(pieces: AsyncIterator[bytes]) -> AsyncIterator[tuple[bytes | None, bytes]]:
    """(event type, data) of each server-sent event, as the SSE spec parses them.

    Events end at a blank line; one that the stream leaves unfinished is dropped. The
    common case (one `data:` line, nothing else) takes one `find` and one slice.
    """
    buffer = b""
    async for piece in pieces:
        buffer = buffer + piece if buffer else piece
        if b"\r" in buffer:
            if buffer.endswith(b"\r"):
                continue  # maybe the first half of a CRLF: wait for the rest
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        events, buffer = _split_events(buffer)
        for event in events:
            yield event
    if buffer.endswith(b"\r"):
        events, _ = _split_events(buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n"))
        for event in events:
            yield event
    # Whatever is left is an event the stream never finished: dropped, as the spec says.


def _split_events(buffer: bytes) -> tuple[list[tuple[bytes | None, bytes]], bytes]:
    """The complete events at the start of `buffer` (LF line ends only), and the rest."""
    events: list[tuple[bytes | None, bytes]] = []
    start = 0
    while True:
        end = buffer.find(b"\n\n", start)
        if end < 0:
            break
        block = buffer[start:end]
        start = end + 2
        if block.startswith(b"data: ") and b"\n" not in block:
            events.append((None, block[6:]))
        else:
            parsed = _parse_event(block)
            if parsed is not None:
                events.append(parsed)
    return events, buffer[start:] if start else buffer


def _parse_event(block: bytes) -> tuple[bytes | None, bytes] | None:
    event: bytes | None = None
    data: list[bytes] = []
    for line in block.split(b"\n"):
        if not line or line.startswith(b":"):
            continue
        field, colon, value = line.partition(b":")
        if colon and value.startswith(b" "):
            value = value[1:]
        if field == b"data":
            data.append(value)
        elif field == b"event":
            event = value
    if not data and event is None:
        return None
    return event, b"\n".join(data)


def _has_finish_reason(chunk: dict[str, Any]) -> bool:
    choices = chunk.get("choices")
    return isinstance(choices, list) and any(
        isinstance(c, dict) and c.get("finish_reason") for c in choices
    )

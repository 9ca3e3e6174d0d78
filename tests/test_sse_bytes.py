"""The SSE relay splits streams on bytes: it must read every stream as httpx_sse does."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import httpx
import pytest
from httpx_sse import EventSource

from router.errors import UpstreamFailure
from router.providers.openai import relay_sse, sse_events

STREAMS = [
    b'data: {"a":1}\n\ndata: [DONE]\n\n',
    b'data: {"a":1}\r\n\r\ndata: {"b":2}\r\n\r\n',
    b'data: {"a":1}\r\rdata: {"b":2}\r\r',
    b': keep-alive\n\ndata: {"a":1}\n\n',
    b'event: error\ndata: {"message":"x"}\n\n',
    b'data: {"a":\ndata: 1}\n\n',
    b'data:{"a":1}\n\n\n\ndata: {"b":2}\n\n',
    b'id: 7\nretry: 10\ndata: {"a":1}\n\n',
    b'event: ping\n\ndata: {"a":1}\n\ndata: {"unfinished":true}\n',
    b'data\n\ndata: {"a":1}\n\n',
]


async def _pieces(data: bytes, rng: random.Random) -> AsyncIterator[bytes]:
    at = 0
    while at < len(data):
        size = rng.randint(1, 7)
        yield data[at:at + size]
        at += size


def _reference(data: bytes) -> list[tuple[bytes | None, bytes]]:
    response = httpx.Response(200, content=data, headers={"content-type": "text/event-stream"})
    events = []
    for sse in EventSource(response).iter_sse():
        if sse.data or sse.event != "message":
            events.append((None if sse.event == "message" else sse.event.encode(),
                           sse.data.encode()))
    return events


@pytest.mark.parametrize("data", STREAMS)
async def test_events_match_httpx_sse_however_the_bytes_arrive(data: bytes) -> None:
    expected = [(e, d) for e, d in _reference(data) if d]
    for seed in range(20):
        found = [(e, d) async for e, d in sse_events(_pieces(data, random.Random(seed)))
                 if d]
        assert [(None if e in (None, b"message") else e, d) for e, d in found] == expected


async def test_relay_refuses_an_answer_that_is_not_an_event_stream() -> None:
    response = httpx.Response(200, content=b'{"choices":[]}',
                              headers={"content-type": "application/json"})
    with pytest.raises(UpstreamFailure):
        [chunk async for chunk in relay_sse("d", response)]


async def test_relay_keeps_the_upstream_bytes_of_each_chunk() -> None:
    body = (b'data: {"choices":[{"delta":{"content":"hi"},"finish_reason":null}]}\r\n\r\n'
            b'data: {"choices":[{"delta":{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n')
    response = httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})
    chunks = [chunk async for chunk in relay_sse("d", response)]
    assert [c.raw for c in chunks] == [
        b'{"choices":[{"delta":{"content":"hi"},"finish_reason":null}]}',
        b'{"choices":[{"delta":{},"finish_reason":"stop"}]}']
    assert chunks[1].data["choices"][0]["finish_reason"] == "stop"

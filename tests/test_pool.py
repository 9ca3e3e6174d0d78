"""The upstream connection pool: httpx over aiohttp, one pool per origin, errors by kind."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest

from bench.fake_upstream import Counters, FakeUpstream
from router.providers.pool import ClientPool, UpstreamTransport, environment_proxy
from tests.support import RecordingUpstream, free_port

BODY = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]})


@pytest.fixture
async def fake() -> AsyncIterator[tuple[str, Counters]]:
    counters = Counters()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: FakeUpstream(counters), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"http://127.0.0.1:{port}", counters


async def test_concurrent_requests_share_kept_alive_connections(fake):
    url, counters = fake
    pool = ClientPool()
    client = pool.client_for(f"{url}/v1")
    try:
        for _ in range(3):
            answers = await asyncio.gather(*(
                client.post(f"{url}/v1/chat/completions", content=BODY) for _ in range(8)))
            assert [a.json()["object"] for a in answers] == ["chat.completion"] * 8
    finally:
        await pool.aclose()
    assert counters.calls == 24
    assert counters.connections <= 8


async def test_one_client_per_origin():
    pool = ClientPool()
    try:
        first = pool.client_for("http://up.test:8000/v1")
        assert pool.client_for("http://up.test:8000/other/v1") is first
        assert pool.client_for("http://up.test:8001/v1") is not first
    finally:
        await pool.aclose()


async def test_injected_transport_replaces_the_network():
    upstream = RecordingUpstream()
    pool = ClientPool(upstream.transport())
    try:
        client = pool.client_for("http://up.test/v1")
        answer = await client.post("http://up.test/v1/chat/completions", content=BODY)
    finally:
        await pool.aclose()
    assert answer.status_code == 200
    assert upstream.calls == 1


async def test_streamed_body_arrives_in_order(fake):
    url, _ = fake
    pool = ClientPool()
    client = pool.client_for(url)
    body = orjson.dumps({"model": "m", "messages": [], "stream": True})
    try:
        request = client.build_request("POST", f"{url}/v1/chat/completions", content=body)
        response = await client.send(request, stream=True)
        text = b"".join([part async for part in response.aiter_bytes()])
        await response.aclose()
    finally:
        await pool.aclose()
    events = [e for e in text.split(b"\n\n") if e]
    assert len(events) == 9
    assert events[-1] == b"data: [DONE]"


async def test_refused_connection_is_a_connect_error_not_a_timeout():
    port = free_port()
    transport = UpstreamTransport(f"http://127.0.0.1:{port}", httpx.create_ssl_context())
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(httpx.ConnectError):
            await client.post(f"http://127.0.0.1:{port}/v1/chat/completions", content=BODY)


async def test_dropped_connection_is_a_protocol_error_not_a_timeout():
    async def drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.close()

    server = await asyncio.start_server(drop, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    origin = f"http://127.0.0.1:{port}"
    async with server, httpx.AsyncClient(
        transport=UpstreamTransport(origin, httpx.create_ssl_context())
    ) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.post(f"{origin}/v1/chat/completions", content=BODY)


@pytest.mark.parametrize(
    ("env", "origin", "expected"),
    [
        pytest.param({}, "https://api.openai.com", None, id="no-proxy-configured"),
        pytest.param({"https_proxy": "http://proxy.test:3128"}, "https://api.openai.com",
                     "http://proxy.test:3128", id="https-proxy"),
        pytest.param({"https_proxy": "http://proxy.test:3128"}, "http://127.0.0.1:8000", None,
                     id="https-proxy-not-for-http"),
        pytest.param({"https_proxy": "http://proxy.test:3128", "no_proxy": "api.openai.com"},
                     "https://api.openai.com", None, id="no-proxy-honoured"),
    ],
)
def test_environment_proxy(monkeypatch, env, origin, expected):
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "HTTP_PROXY",
                 "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "REQUEST_METHOD"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    proxy = environment_proxy(origin)
    assert (str(proxy.url) if proxy else None) == expected


async def test_sender_reads_and_closes_a_json_answer(fake):
    url, counters = fake
    pool = ClientPool()
    sender = pool.sender_for(f"{url}/v1")
    try:
        request = sender.build("POST", f"{url}/v1/chat/completions", content=BODY,
                               headers={"content-type": "application/json"})
        answers = await asyncio.gather(*(sender.send(request) for _ in range(4)))
        assert pool.sender_for(f"{url}/other") is sender
    finally:
        await pool.aclose()
    assert [a.json()["object"] for a in answers] == ["chat.completion"] * 4
    assert answers[0].request is request
    assert counters.calls == 4


async def test_sender_and_client_share_the_origins_connections(fake):
    url, counters = fake
    pool = ClientPool()
    try:
        client = pool.client_for(url)
        sender = pool.sender_for(url)
        await client.post(f"{url}/v1/chat/completions", content=BODY)
        await sender.send(sender.build("POST", f"{url}/v1/chat/completions", content=BODY,
                                       headers={}))
    finally:
        await pool.aclose()
    assert counters.calls == 2
    assert counters.connections == 1


async def test_sender_streams_until_the_caller_closes(fake):
    url, _ = fake
    pool = ClientPool()
    sender = pool.sender_for(url)
    body = orjson.dumps({"model": "m", "messages": [], "stream": True})
    try:
        response = await sender.send(
            sender.build("POST", f"{url}/v1/chat/completions", content=body, headers={}),
            stream=True)
        first = await response.aiter_bytes().__anext__()
        await response.aclose()
    finally:
        await pool.aclose()
    assert first.startswith(b"data: ")
    assert response.is_closed


async def test_sender_uses_the_injected_transport():
    upstream = RecordingUpstream()
    pool = ClientPool(upstream.transport())
    sender = pool.sender_for("http://up.test/v1")
    try:
        answer = await sender.send(sender.build("POST", "http://up.test/v1/chat/completions",
                                                content=BODY, headers={}))
    finally:
        await pool.aclose()
    assert answer.json()["choices"][0]["message"]["content"] == "Hello"
    assert upstream.json()["model"] == "m"

"""End to end: the official `openai` SDK against real `turnout serve` processes and Redis."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from redis import Redis

from tests.support import FakeUpstreamProcess, free_port, openai_config, stop, turnout_process

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

MESSAGES = [{"role": "user", "content": "tell me"}]
CACHING = {"caching": True}


def config(fake: FakeUpstreamProcess, redis_url: str | None = None, extra: str = "") -> str:
    text = openai_config(base_url=fake.url)
    if redis_url is None:
        return text + "[cache]\n" + extra
    namespace = uuid.uuid4().hex
    return (text + f'[redis]\nurl = "{redis_url}"\ntimeout = "250ms"\n'
            f'[cache]\nbackend = "redis"\nnamespace = "{namespace}"\n' + extra)


def sdk(base: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=20)


def async_sdk(base: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0,
                              timeout=20)


def ask(client: openai.OpenAI, content: str = "tell me", **kwargs: Any) -> Any:
    return client.chat.completions.with_raw_response.create(
        model="m", messages=[{"role": "user", "content": content}], extra_body=CACHING,
        **kwargs)


def streamed(raw: Any) -> str:
    return "".join(chunk.choices[0].delta.content or "" for chunk in raw.parse()
                   if chunk.choices)


def chat_calls(fake: FakeUpstreamProcess) -> int:
    return sum(1 for call in fake.calls() if call["path"].endswith("/chat/completions"))


def test_hit_after_miss(fresh_upstream, tmp_path):
    with turnout_process(config(fresh_upstream), tmp_path) as base:
        client = sdk(base)
        first = ask(client)
        second = ask(client)
    assert first.headers["x-turnout-cache"] == "miss"
    assert second.headers["x-turnout-cache"] == "hit"
    assert second.headers["x-turnout-cache-key"] == first.headers["x-turnout-cache-key"]
    assert "age" in second.headers
    assert second.parse().choices[0].message.content == first.parse().choices[0].message.content
    assert chat_calls(fresh_upstream) == 1
    assert "caching" not in fresh_upstream.calls()[0]["body"]


def test_streaming_replay(fresh_upstream, tmp_path):
    with turnout_process(config(fresh_upstream), tmp_path) as base:
        client = sdk(base)
        first = ask(client, stream=True)
        first_text = streamed(first)
        second = ask(client, stream=True, stream_options={"include_usage": True})
        chunks = list(second.parse())
        plain = ask(client)
    assert first.headers["x-turnout-cache"] == "miss"
    assert second.headers["x-turnout-cache"] == "hit"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == first_text
    assert chunks[-1].usage is not None and chunks[-1].choices == []
    assert plain.headers["x-turnout-cache"] == "hit"
    assert plain.parse().choices[0].message.content == first_text
    assert chat_calls(fresh_upstream) == 1


async def test_coalescing_concurrent_identical_requests(fresh_upstream, tmp_path):
    fresh_upstream.script({"delay": 0.5})
    with turnout_process(config(fresh_upstream), tmp_path) as base:
        client = async_sdk(base)

        async def one(stream: bool) -> str:
            if stream:
                chunks = await client.chat.completions.create(
                    model="m", messages=MESSAGES, extra_body=CACHING, stream=True)
                return "".join([c.choices[0].delta.content or "" async for c in chunks
                                if c.choices])
            answer = await client.chat.completions.create(model="m", messages=MESSAGES,
                                                          extra_body=CACHING)
            return answer.choices[0].message.content or ""

        texts = await asyncio.gather(*(one(i % 2 == 0) for i in range(8)))
        await client.close()
    assert chat_calls(fresh_upstream) == 1
    assert len(set(texts)) == 1 and texts[0]


def test_stream_cut_by_the_client_is_not_stored(fresh_upstream, tmp_path):
    fresh_upstream.script({"chunks": 6, "chunk_delay": 0.2})
    with turnout_process(config(fresh_upstream), tmp_path) as base:
        client = sdk(base)
        raw = ask(client, stream=True)
        stream = raw.parse()
        next(iter(stream))
        stream.close()
        time.sleep(0.3)  # let the server notice the disconnect (a real socket, no clock)
        again = ask(client)
    assert raw.headers["x-turnout-cache"] == "miss"
    assert again.headers["x-turnout-cache"] == "miss"
    assert chat_calls(fresh_upstream) == 2


async def test_leader_leaving_does_not_cancel_the_call_a_waiter_waits_on(fresh_upstream,
                                                                        tmp_path):
    fresh_upstream.script({"chunks": 5, "chunk_delay": 0.15})
    with turnout_process(config(fresh_upstream), tmp_path) as base:
        client = async_sdk(base)
        leader = await client.chat.completions.create(
            model="m", messages=MESSAGES, extra_body=CACHING, stream=True)
        await leader.__anext__()
        waiter = asyncio.create_task(client.chat.completions.create(
            model="m", messages=MESSAGES, extra_body=CACHING))
        await asyncio.sleep(0.1)
        await leader.close()
        answer = await waiter
        later = await client.chat.completions.with_raw_response.create(
            model="m", messages=MESSAGES, extra_body=CACHING)
        await client.close()
    assert answer.choices[0].message.content
    assert later.headers["x-turnout-cache"] == "hit"
    assert chat_calls(fresh_upstream) == 1


def test_two_processes_sharing_redis_serve_each_others_entries(fresh_upstream, tmp_path):
    text = config(fresh_upstream, os.environ["REDIS_URL"])
    with turnout_process(text, tmp_path) as a, turnout_process(text, tmp_path) as b:
        first = ask(sdk(a))
        second = ask(sdk(b))
        streamed_hit = ask(sdk(b), stream=True)
        text_hit = streamed(streamed_hit)
    assert first.headers["x-turnout-cache"] == "miss"
    assert second.headers["x-turnout-cache"] == "hit"
    assert streamed_hit.headers["x-turnout-cache"] == "hit"
    assert text_hit == first.parse().choices[0].message.content
    assert chat_calls(fresh_upstream) == 1


async def test_two_processes_coalesce_through_redis(fresh_upstream, tmp_path):
    fresh_upstream.script({"delay": 0.6})
    text = config(fresh_upstream, os.environ["REDIS_URL"])
    with turnout_process(text, tmp_path) as a, turnout_process(text, tmp_path) as b:
        clients = [async_sdk(a), async_sdk(b)]
        answers = await asyncio.gather(*(
            clients[i % 2].chat.completions.create(model="m", messages=MESSAGES,
                                                   extra_body=CACHING)
            for i in range(6)))
        for client in clients:
            await client.close()
    assert chat_calls(fresh_upstream) == 1
    assert len({a.choices[0].message.content for a in answers}) == 1


@contextlib.contextmanager
def own_redis(port: int, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A redis-server of our own on `port`, stopped by its PID."""
    binary = os.environ.get("REDIS_SERVER_BIN", "redis-server")
    process = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "",
         "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        with Redis(host="127.0.0.1", port=port, socket_timeout=0.5) as client:
            while True:
                try:
                    client.ping()
                    break
                except Exception:
                    if time.monotonic() > deadline or process.poll() is not None:
                        raise
                    time.sleep(0.05)
        yield process
    finally:
        stop(process)


def test_redis_killed_and_restarted_mid_run(fresh_upstream, tmp_path):
    port = free_port()
    text = config(fresh_upstream, f"redis://127.0.0.1:{port}/0")
    results: list[tuple[int, str]] = []
    with own_redis(port, tmp_path) as redis, turnout_process(text, tmp_path) as base:
        client = sdk(base)

        def round_(label: str, n: int) -> None:
            for i in range(n):
                raw = ask(client, f"{label} {i % 2}")
                results.append((raw.http_response.status_code, raw.headers["x-turnout-cache"]))

        round_("before", 4)
        assert [r[1] for r in results] == ["miss", "miss", "hit", "hit"]
        redis.kill()
        redis.wait()
        started = time.monotonic()
        round_("during", 6)
        during = time.monotonic() - started
        not_ready = httpx.get(f"{base}/health/readiness")
        with own_redis(port, tmp_path):
            # No readiness probe here: the cache must come back by itself.
            deadline = time.monotonic() + 20
            after: list[str] = []
            while time.monotonic() < deadline and after[-2:] != ["miss", "hit"]:
                raw = ask(client, "after")
                results.append((raw.http_response.status_code,
                                raw.headers["x-turnout-cache"]))
                after.append(raw.headers["x-turnout-cache"])
                time.sleep(0.2)
            ready = httpx.get(f"{base}/health/readiness")
    assert all(status == 200 for status, _ in results)
    assert [label for _, label in results[4:10]] == ["bypass"] * 6
    assert during < 6 * 0.5
    assert not_ready.status_code == 503
    assert "redis" in not_ready.json()["reason"]
    assert ready.status_code == 200
    assert after[-2:] == ["miss", "hit"]


def test_turnout_starts_and_answers_while_redis_is_down(fresh_upstream, tmp_path):
    text = config(fresh_upstream, f"redis://127.0.0.1:{free_port()}/0")
    with turnout_process(text, tmp_path) as base:
        answers = [ask(sdk(base)) for _ in range(3)]
        ready = httpx.get(f"{base}/health/readiness")
    assert [a.headers["x-turnout-cache"] for a in answers] == ["bypass"] * 3
    assert all(a.parse().choices[0].message.content for a in answers)
    assert ready.status_code == 503
    assert ready.json() == {"status": "unavailable",
                            "reason": "cache backend redis is not answering"}

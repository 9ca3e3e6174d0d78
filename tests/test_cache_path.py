"""The cache on the request path, in-process: controls, headers, streams, stale, coalescing."""

from __future__ import annotations

import asyncio
from typing import Any

import fakeredis
import httpx
import orjson
import pytest

from tests.support import (
    RecordingUpstream,
    app_client,
    chat_answer,
    config_from,
    openai_config,
    sse_body,
)

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
CACHED = {**CHAT, "caching": True}
REDIS = '[redis]\nurl = "redis://127.0.0.1:1/0"\ntimeout = "250ms"\n'


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def honest_stream(request: httpx.Request) -> httpx.Response:
    """Like RecordingUpstream.ok, with the usage chunk OpenAI sends when asked for it."""
    body = orjson.loads(request.content)
    if not body.get("stream"):
        return RecordingUpstream.ok(request)
    content = sse_body(body["model"], ["Hel", "lo"]).removesuffix(b"data: [DONE]\n\n")
    if (body.get("stream_options") or {}).get("include_usage"):
        usage = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
                 "model": body["model"], "choices": [],
                 "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}}
        content += b"data: " + orjson.dumps(usage) + b"\n\n"
    return httpx.Response(200, content=content + b"data: [DONE]\n\n",
                          headers={"content-type": "text/event-stream"})


# One attempt per request: these tests count upstream calls to prove what the cache does;
# retries have their own tests (test_router_*).
ONE_ATTEMPT = "[router]\nnum_retries = 0\n"


def cache_config(extra: str = "", *, keys: str = "") -> Any:
    server = f"[server]\napi_keys = [{keys}]\n" if keys else ""
    return config_from(server + ONE_ATTEMPT + openai_config() + "[cache]\n" + extra)


def events(response: httpx.Response) -> list[Any]:
    found = [line[6:] for line in response.text.split("\n\n") if line.startswith("data: ")]
    return [e if e == "[DONE]" else orjson.loads(e) for e in found]


def streamed_text(response: httpx.Response) -> str:
    return "".join(e["choices"][0]["delta"].get("content") or ""
                   for e in events(response) if e != "[DONE]" and e["choices"])


async def test_identical_request_is_served_from_cache(upstream):
    async with app_client(cache_config(), upstream.transport()) as client:
        first = await client.post("/v1/chat/completions", json=CACHED)
        second = await client.post("/v1/chat/completions", json=CACHED)
        metrics = (await client.get("/metrics")).text
    assert first.headers["x-turnout-cache"] == "miss"
    assert first.headers["x-turnout-deployment"] == "d0"
    assert second.headers["x-turnout-cache"] == "hit"
    assert second.json()["choices"] == first.json()["choices"]
    assert second.headers["x-turnout-cache-key"] == first.headers["x-turnout-cache-key"]
    assert second.headers["x-turnout-cache-key"].startswith("turnout:v1:")
    assert second.headers["age"] == "0"
    assert second.headers["x-turnout-model-group"] == "m"
    assert "x-turnout-deployment" not in second.headers
    assert second.headers["x-turnout-attempts"] == "0"
    assert upstream.calls == 1
    assert "caching" not in upstream.json() and "cache" not in upstream.json()
    assert 'turnout_cache_lookups_total{result="hit"} 1.0' in metrics
    assert 'turnout_cache_lookups_total{result="miss"} 1.0' in metrics


async def test_opt_in_mode_bypasses_requests_that_do_not_ask(upstream):
    async with app_client(cache_config(), upstream.transport()) as client:
        first = await client.post("/v1/chat/completions", json=CHAT)
        second = await client.post("/v1/chat/completions", json=CHAT)
    assert second.headers["x-turnout-cache"] == "bypass"
    assert "x-turnout-cache-key" not in second.headers
    assert first.status_code == 200 and upstream.calls == 2


async def test_always_mode_caches_unless_caching_false(upstream):
    async with app_client(cache_config('mode = "always"\n'), upstream.transport()) as client:
        await client.post("/v1/chat/completions", json=CHAT)
        hit = await client.post("/v1/chat/completions", json=CHAT)
        off = await client.post("/v1/chat/completions", json={**CHAT, "caching": False})
    assert hit.headers["x-turnout-cache"] == "hit"
    assert off.headers["x-turnout-cache"] == "bypass"
    assert upstream.calls == 2


async def test_use_cache_control_opts_in(upstream):
    body = {**CHAT, "cache": {"use-cache": True}}
    async with app_client(cache_config(), upstream.transport()) as client:
        await client.post("/v1/chat/completions", json=body)
        hit = await client.post("/v1/chat/completions", json=body)
    assert hit.headers["x-turnout-cache"] == "hit"
    assert upstream.calls == 1


@pytest.mark.parametrize(("scope", "shared"), [("per-key", False), ("shared", True)])
async def test_scope_decides_whether_client_keys_share_entries(upstream, scope, shared):
    config = cache_config(f'scope = "{scope}"\n', keys='"k1", "k2"')
    async with app_client(config, upstream.transport()) as client:
        await client.post("/v1/chat/completions", json=CACHED,
                          headers={"authorization": "Bearer k1"})
        other = await client.post("/v1/chat/completions", json=CACHED,
                                  headers={"authorization": "Bearer k2"})
        same = await client.post("/v1/chat/completions", json=CACHED,
                                 headers={"authorization": "Bearer k1"})
    assert other.headers["x-turnout-cache"] == ("hit" if shared else "miss")
    assert same.headers["x-turnout-cache"] == "hit"
    assert upstream.calls == (1 if shared else 2)


async def test_no_cache_refreshes_the_entry():
    texts = iter(["old", "new"])
    upstream = RecordingUpstream(lambda r: httpx.Response(200, json=chat_answer("x",
                                                                               next(texts))))
    async with app_client(cache_config(), upstream.transport()) as client:
        await client.post("/v1/chat/completions", json=CACHED)
        fresh = await client.post("/v1/chat/completions",
                                  json={**CACHED, "cache": {"no-cache": True}})
        after = await client.post("/v1/chat/completions", json=CACHED)
    assert fresh.headers["x-turnout-cache"] == "refresh"
    assert "x-turnout-cache-key" in fresh.headers
    assert fresh.json()["choices"][0]["message"]["content"] == "new"
    assert after.headers["x-turnout-cache"] == "hit"
    assert after.json()["choices"][0]["message"]["content"] == "new"
    assert upstream.calls == 2


async def test_no_store_looks_up_but_stores_nothing(upstream):
    body = {**CACHED, "cache": {"no-store": True}}
    async with app_client(cache_config(), upstream.transport()) as client:
        await client.post("/v1/chat/completions", json=body)
        second = await client.post("/v1/chat/completions", json=CACHED)
        third = await client.post("/v1/chat/completions", json=body)
    assert second.headers["x-turnout-cache"] == "miss"
    assert third.headers["x-turnout-cache"] == "hit"
    assert upstream.calls == 2


async def test_entries_expire_after_their_ttl(upstream):
    clock = Clock()
    async with app_client(cache_config('ttl = "60s"\n'), upstream.transport(),
                          clock=clock) as client:
        await client.post("/v1/chat/completions", json=CACHED)
        clock.now += 59
        aged = await client.post("/v1/chat/completions", json=CACHED)
        clock.now += 1
        expired = await client.post("/v1/chat/completions", json=CACHED)
        await client.post("/v1/chat/completions",
                          json={**CACHED, "cache": {"ttl": 5, "no-cache": True}})
        clock.now += 5
        short = await client.post("/v1/chat/completions", json=CACHED)
    assert aged.headers["x-turnout-cache"] == "hit"
    assert aged.headers["age"] == "59"
    assert expired.headers["x-turnout-cache"] == "miss"
    assert short.headers["x-turnout-cache"] == "miss"
    assert upstream.calls == 4


async def test_s_maxage_accepts_only_younger_entries(upstream):
    clock = Clock()
    async with app_client(cache_config(), upstream.transport(), clock=clock) as client:
        await client.post("/v1/chat/completions", json=CACHED)
        clock.now += 30
        young = await client.post("/v1/chat/completions",
                                  json={**CACHED, "cache": {"s-maxage": 60}})
        old = await client.post("/v1/chat/completions",
                                json={**CACHED, "cache": {"s-maxage": 10}})
    assert young.headers["x-turnout-cache"] == "hit"
    assert old.headers["x-turnout-cache"] == "miss"
    assert upstream.calls == 2


async def test_namespace_is_a_separate_key_space(upstream):
    async with app_client(cache_config(), upstream.transport()) as client:
        await client.post("/v1/chat/completions", json=CACHED)
        other = await client.post("/v1/chat/completions",
                                  json={**CACHED, "cache": {"namespace": "b"}})
    assert other.headers["x-turnout-cache"] == "miss"
    assert upstream.calls == 2


@pytest.mark.parametrize("status", [400, 500])
async def test_errors_are_never_stored(status):
    statuses = iter([status, 200])

    def answer(request: httpx.Request) -> httpx.Response:
        code = next(statuses)
        if code != 200:
            return httpx.Response(code, json={"error": {"message": "no", "type": "x",
                                                        "param": None, "code": None}})
        return httpx.Response(200, json=chat_answer("x", "fine"))

    upstream = RecordingUpstream(answer)
    async with app_client(cache_config(), upstream.transport()) as client:
        failed = await client.post("/v1/chat/completions", json=CACHED)
        second = await client.post("/v1/chat/completions", json=CACHED)
    assert failed.status_code in (400, 502)
    assert second.status_code == 200
    assert second.headers["x-turnout-cache"] == "miss"
    assert upstream.calls == 2


async def test_stream_that_broke_off_is_not_stored():
    bodies = iter([sse_body("x", ["Hel", "lo"], done=False), sse_body("x", ["Hel", "lo"])])
    upstream = RecordingUpstream(lambda r: httpx.Response(
        200, content=next(bodies), headers={"content-type": "text/event-stream"}))
    body = {**CACHED, "stream": True}
    async with app_client(cache_config(), upstream.transport()) as client:
        broken = await client.post("/v1/chat/completions", json=body)
        second = await client.post("/v1/chat/completions", json=body)
        third = await client.post("/v1/chat/completions", json=body)
    assert "[DONE]" not in events(broken)
    assert second.headers["x-turnout-cache"] == "miss"
    assert third.headers["x-turnout-cache"] == "hit"
    assert upstream.calls == 2


async def test_streamed_miss_is_replayed_as_sse():
    upstream = RecordingUpstream(honest_stream)
    body = {**CACHED, "stream": True}
    async with app_client(cache_config(), upstream.transport()) as client:
        first = await client.post("/v1/chat/completions", json=body)
        second = await client.post("/v1/chat/completions", json=body)
        with_usage = await client.post(
            "/v1/chat/completions",
            json={**body, "stream_options": {"include_usage": True}})
    assert upstream.calls == 1
    assert upstream.json()["stream_options"] == {"include_usage": True}
    assert first.headers["x-turnout-cache"] == "miss"
    assert not any(e != "[DONE]" and not e["choices"] for e in events(first))
    assert second.headers["x-turnout-cache"] == "hit"
    assert second.headers["content-type"].startswith("text/event-stream")
    replay = events(second)
    assert replay[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert replay[-2]["choices"][0]["finish_reason"] == "stop"
    assert replay[-1] == "[DONE]"
    assert streamed_text(second) == streamed_text(first) == "Hello"
    usage = events(with_usage)[-2]
    assert usage["choices"] == [] and usage["usage"]["total_tokens"] == 3


async def test_streamed_entry_answers_a_plain_request_and_back():
    upstream = RecordingUpstream(honest_stream)
    async with app_client(cache_config(), upstream.transport()) as client:
        await client.post("/v1/chat/completions", json={**CACHED, "stream": True})
        plain = await client.post("/v1/chat/completions", json=CACHED)
        other = {**CACHED, "messages": [{"role": "user", "content": "second"}]}
        await client.post("/v1/chat/completions", json=other)
        streamed = await client.post("/v1/chat/completions", json={**other, "stream": True})
    assert plain.headers["x-turnout-cache"] == "hit"
    assert plain.json()["object"] == "chat.completion"
    assert plain.json()["choices"][0]["message"]["content"] == "Hello"
    assert plain.json()["usage"]["total_tokens"] == 3
    assert streamed.headers["x-turnout-cache"] == "hit"
    assert streamed_text(streamed) == "Hello"
    assert upstream.calls == 2


TOOL_CALLS = [{"id": "call_1", "type": "function",
               "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}}]


def tool_sse() -> bytes:
    def event(delta: dict[str, Any], finish: str | None = None) -> bytes:
        chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "x",
                 "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    return (event({"role": "assistant", "content": None, "tool_calls": [
                {"index": 0, "id": "call_1", "type": "function",
                 "function": {"name": "get_weather", "arguments": ""}}]})
            + event({"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]})
            + event({"tool_calls": [{"index": 0, "function": {"arguments": '"Oslo"}'}}]})
            + event({}, "tool_calls") + b"data: [DONE]\n\n")


async def test_tool_calls_survive_a_streamed_entry():
    upstream = RecordingUpstream(lambda r: httpx.Response(
        200, content=tool_sse(), headers={"content-type": "text/event-stream"}))
    async with app_client(cache_config(), upstream.transport()) as client:
        await client.post("/v1/chat/completions", json={**CACHED, "stream": True})
        plain = await client.post("/v1/chat/completions", json=CACHED)
        streamed = await client.post("/v1/chat/completions", json={**CACHED, "stream": True})
    message = plain.json()["choices"][0]["message"]
    assert message["tool_calls"] == TOOL_CALLS
    assert plain.json()["choices"][0]["finish_reason"] == "tool_calls"
    calls = [e["choices"][0]["delta"]["tool_calls"] for e in events(streamed)
             if e != "[DONE]" and e["choices"][0]["delta"].get("tool_calls")]
    assert calls == [[{"index": 0, **TOOL_CALLS[0]}]]
    assert upstream.calls == 1


async def test_tool_calls_survive_a_plain_entry_replayed_as_stream():
    answer = chat_answer("x", "")
    answer["choices"][0]["message"] = {"role": "assistant", "content": None,
                                       "tool_calls": TOOL_CALLS}
    answer["choices"][0]["finish_reason"] = "tool_calls"
    upstream = RecordingUpstream(lambda r: httpx.Response(200, json=answer))
    async with app_client(cache_config(), upstream.transport()) as client:
        await client.post("/v1/chat/completions", json=CACHED)
        streamed = await client.post("/v1/chat/completions", json={**CACHED, "stream": True})
    replay = [e for e in events(streamed) if e != "[DONE]"]
    assert replay[1]["choices"][0]["delta"]["tool_calls"] == [{"index": 0, **TOOL_CALLS[0]}]
    assert replay[-1]["choices"][0]["finish_reason"] == "tool_calls"


async def test_embeddings_are_cached(upstream):
    body = {"model": "m", "input": "x", "caching": True}
    async with app_client(cache_config(), upstream.transport()) as client:
        first = await client.post("/v1/embeddings", json=body)
        second = await client.post("/v1/embeddings", json={**body, "input": ["x"]})
    assert second.headers["x-turnout-cache"] == "hit"
    assert second.json()["data"] == first.json()["data"]
    assert upstream.calls == 1


async def test_stale_entry_answers_when_every_route_failed():
    clock = Clock()
    failing = {"on": False}

    def answer(request: httpx.Request) -> httpx.Response:
        if failing["on"]:
            return httpx.Response(500, text="down")
        return httpx.Response(200, json=chat_answer("x", "kept"))

    upstream = RecordingUpstream(answer)
    config = cache_config('ttl = "60s"\nstale_if_error = "30s"\n')
    async with app_client(config, upstream.transport(), clock=clock) as client:
        await client.post("/v1/chat/completions", json=CACHED)
        failing["on"] = True
        clock.now += 80
        stale = await client.post("/v1/chat/completions", json=CACHED)
        stale_stream = await client.post("/v1/chat/completions",
                                         json={**CACHED, "stream": True})
        clock.now += 11
        gone = await client.post("/v1/chat/completions", json=CACHED)
        metrics = (await client.get("/metrics")).text
    assert stale.status_code == 200
    assert stale.headers["x-turnout-cache"] == "stale"
    assert stale.headers["age"] == "80"
    assert stale.json()["choices"][0]["message"]["content"] == "kept"
    assert streamed_text(stale_stream) == "kept"
    assert stale_stream.headers["x-turnout-cache"] == "stale"
    assert gone.status_code == 502
    assert 'turnout_cache_lookups_total{result="stale"} 2.0' in metrics
    assert 'turnout_cache_lookups_total{result="miss"} 2.0' in metrics


async def test_stale_is_not_used_for_the_clients_own_errors():
    clock = Clock()
    statuses = iter([200, 400])
    upstream = RecordingUpstream(lambda r: httpx.Response(
        next(statuses), json=chat_answer("x", "kept")))
    config = cache_config('ttl = "60s"\nstale_if_error = "30s"\n')
    async with app_client(config, upstream.transport(), clock=clock) as client:
        await client.post("/v1/chat/completions", json=CACHED)
        clock.now += 70
        rejected = await client.post("/v1/chat/completions", json=CACHED)
    assert rejected.status_code == 400


class SlowUpstream:
    """An async upstream that answers after `delay`, counting calls."""

    def __init__(self, delay: float = 0.2, status: int = 200) -> None:
        self.delay = delay
        self.status = status
        self.calls = 0
        self.bodies: list[Any] = []

    async def handle(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        body = orjson.loads(request.content)
        self.bodies.append(body)
        await asyncio.sleep(self.delay)
        if self.status != 200:
            return httpx.Response(self.status, text="down")
        if body.get("stream"):
            return httpx.Response(200, content=sse_body("x", ["Hel", "lo"]),
                                  headers={"content-type": "text/event-stream"})
        return httpx.Response(200, json=chat_answer("x", "Hello"))

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)


async def test_concurrent_identical_misses_make_one_upstream_call():
    upstream = SlowUpstream()
    async with app_client(cache_config(), upstream.transport()) as client:
        bodies = [CACHED, {**CACHED, "stream": True}] * 4
        responses = await asyncio.gather(*(client.post("/v1/chat/completions", json=b)
                                           for b in bodies))
        status = (await client.get("/admin/status")).status_code
    assert upstream.calls == 1
    assert status == 401
    assert sorted(r.headers["x-turnout-cache"] for r in responses) == ["hit"] * 7 + ["miss"]
    for body, response in zip(bodies, responses, strict=True):
        if body.get("stream"):
            assert streamed_text(response) == "Hello"
            assert events(response)[-1] == "[DONE]"
        else:
            assert response.json()["choices"][0]["message"]["content"] == "Hello"


async def test_waiters_share_the_leaders_failure_without_calling_again():
    upstream = SlowUpstream(status=500)
    async with app_client(cache_config(), upstream.transport()) as client:
        responses = await asyncio.gather(*(client.post("/v1/chat/completions", json=CACHED)
                                           for _ in range(4)))
    assert [r.status_code for r in responses] == [502] * 4
    assert upstream.calls == 1


async def test_without_coalescing_each_miss_calls_upstream():
    upstream = SlowUpstream(delay=0.05)
    async with app_client(cache_config("coalesce = false\n"), upstream.transport()) as client:
        await asyncio.gather(*(client.post("/v1/chat/completions", json=CACHED)
                               for _ in range(3)))
    assert upstream.calls == 3


async def test_admin_status_shows_cache_statistics(upstream):
    config = config_from('[server]\nadmin_key = "adm"\n' + openai_config())
    async with app_client(config, upstream.transport()) as client:
        await client.post("/v1/chat/completions", json=CACHED)
        await client.post("/v1/chat/completions", json=CACHED)
        status = (await client.get("/admin/status",
                                   headers={"authorization": "Bearer adm"})).json()
    cache = status["cache"]
    assert cache["backend"] == "memory"
    assert cache["lookups"]["hit"] == 1 and cache["lookups"]["miss"] == 1
    assert cache["hit_ratio"] == 0.5
    assert cache["entries"] == 1


def redis_config(extra: str = "") -> Any:
    return config_from(REDIS + openai_config() + '[cache]\nbackend = "redis"\n' + extra)


async def test_redis_backend_serves_hits(upstream):
    redis = fakeredis.FakeAsyncRedis()
    async with app_client(redis_config(), upstream.transport(), redis=redis) as client:
        first = await client.post("/v1/chat/completions", json=CACHED)
        second = await client.post("/v1/chat/completions", json={**CACHED, "stream": True})
        ready = await client.get("/health/readiness")
    key = first.headers["x-turnout-cache-key"]
    assert await redis.exists(key)
    assert 3_590_000 < await redis.pttl(key) <= 3_600_000
    assert second.headers["x-turnout-cache"] == "hit"
    assert streamed_text(second) == "Hello"
    assert ready.status_code == 200
    assert upstream.calls == 1


async def test_two_replicas_sharing_redis_serve_each_others_entries(upstream):
    server = fakeredis.FakeServer()
    one, two = (fakeredis.FakeAsyncRedis(server=server) for _ in range(2))
    config = redis_config()
    async with (app_client(config, upstream.transport(), redis=one) as a,
                app_client(config, upstream.transport(), redis=two) as b):
        await a.post("/v1/chat/completions", json=CACHED)
        hit = await b.post("/v1/chat/completions", json=CACHED)
    assert hit.headers["x-turnout-cache"] == "hit"
    assert upstream.calls == 1


async def test_identical_misses_on_two_replicas_make_one_upstream_call():
    server = fakeredis.FakeServer()
    upstream = SlowUpstream(delay=0.3)
    config = redis_config()
    async with (app_client(config, upstream.transport(),
                           redis=fakeredis.FakeAsyncRedis(server=server)) as a,
                app_client(config, upstream.transport(),
                           redis=fakeredis.FakeAsyncRedis(server=server)) as b):
        responses = await asyncio.gather(
            *(client.post("/v1/chat/completions", json=body)
              for client in (a, b) for body in (CACHED, {**CACHED, "stream": True})))
    assert upstream.calls == 1
    assert sorted(r.headers["x-turnout-cache"] for r in responses) == ["hit"] * 3 + ["miss"]
    assert all(r.status_code == 200 for r in responses)


async def test_replica_takes_over_from_a_leader_that_died():
    redis = fakeredis.FakeAsyncRedis()
    upstream = SlowUpstream(delay=0)
    async with app_client(redis_config(), upstream.transport(), redis=redis) as client:
        probe = await client.post("/v1/chat/completions",
                                  json={**CACHED, "cache": {"no-store": True}})
        key = probe.headers["x-turnout-cache-key"]
        # Another replica took the lock and died: the lock expires, no entry ever comes.
        await redis.set(f"{key}:lock", b"dead-replica", px=300)
        loop = asyncio.get_running_loop()
        started = loop.time()
        response = await client.post("/v1/chat/completions", json=CACHED)
        took = loop.time() - started
    # It waited for the dead leader's lock to expire (Redis's own clock), then took over.
    assert 0.25 <= took < 2
    assert response.status_code == 200
    assert response.headers["x-turnout-cache"] == "miss"
    assert upstream.calls == 2


class Switchable:
    """A fakeredis client that can be made to fail like a dead server."""

    def __init__(self) -> None:
        self.real = fakeredis.FakeAsyncRedis()
        self.down = False
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        command = getattr(self.real, name)

        async def run(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            if self.down:
                raise ConnectionRefusedError("redis is down")
            return await command(*args, **kwargs)

        return run


async def test_dead_redis_is_bypassed_reported_and_recovered_from(upstream):
    redis = Switchable()
    clock = Clock()
    async with app_client(redis_config(), upstream.transport(), redis=redis,
                          clock=clock) as client:
        redis.down = True
        answers = [await client.post("/v1/chat/completions", json=CACHED) for _ in range(3)]
        calls_while_down = redis.calls
        not_ready = await client.get("/health/readiness")
        redis.down = False
        clock.now += 20
        ready = await client.get("/health/readiness")
        miss = await client.post("/v1/chat/completions", json=CACHED)
        hit = await client.post("/v1/chat/completions", json=CACHED)
    assert [a.status_code for a in answers] == [200] * 3
    assert [a.headers["x-turnout-cache"] for a in answers] == ["bypass"] * 3
    assert calls_while_down == 1
    assert not_ready.status_code == 503
    assert "redis" in not_ready.json()["reason"]
    assert ready.status_code == 200
    assert miss.headers["x-turnout-cache"] == "miss"
    assert hit.headers["x-turnout-cache"] == "hit"


async def test_unreadable_entry_is_a_miss(upstream):
    redis = fakeredis.FakeAsyncRedis()
    async with app_client(redis_config(), upstream.transport(), redis=redis) as client:
        first = await client.post("/v1/chat/completions", json=CACHED)
        await redis.set(first.headers["x-turnout-cache-key"], b"garbage")
        second = await client.post("/v1/chat/completions", json=CACHED)
    assert second.status_code == 200
    assert second.headers["x-turnout-cache"] == "miss"



class Hanging:
    """A Redis client whose commands never answer (a Redis that stalls), counting calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        async def run(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            await asyncio.sleep(3600)

        return run


async def test_slow_redis_stalls_no_request_beyond_its_timeout(upstream):
    redis = Hanging()
    config = config_from(REDIS.replace('"250ms"', '"100ms"') + openai_config()
                         + '[cache]\nbackend = "redis"\n')
    async with app_client(config, upstream.transport(), redis=redis) as client:
        loop = asyncio.get_running_loop()
        started = loop.time()
        first = await client.post("/v1/chat/completions", json=CACHED)
        first_took = loop.time() - started
        started = loop.time()
        second = await client.post("/v1/chat/completions", json=CACHED)
        second_took = loop.time() - started
    assert first.status_code == second.status_code == 200
    assert first.headers["x-turnout-cache"] == second.headers["x-turnout-cache"] == "bypass"
    assert first_took < 1.0
    assert second_took < 0.5
    assert redis.calls == 1


async def test_configured_namespace_prefixes_the_key(upstream):
    async with app_client(cache_config('namespace = "team-a"\n'), upstream.transport()) as c:
        response = await c.post("/v1/chat/completions", json=CACHED)
    assert response.headers["x-turnout-cache-key"].startswith("team-a:v1:")

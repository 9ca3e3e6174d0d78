"""The router in real processes: `turnout serve` against the fake upstream process, for what
needs real sockets (time to first content, dropped connections, clients that go away), and
two replicas sharing a real redis-server."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest

from tests.support import FakeUpstreamProcess, turnout_process

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

CHAT = {"messages": [{"role": "user", "content": "hi"}]}


def deployment(dep_id: str, url: str, extra: str = "") -> str:
    return (f'[[models.deployments]]\nid = "{dep_id}"\nprovider = "openai"\nbase_url = "{url}"\n'
            f'api_key = "sk-test"\nmodel = "{dep_id}"\n{extra}\n')


@pytest.fixture(scope="module")
def single(fake_upstream: FakeUpstreamProcess, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[str]:
    """One turnout: group `slow-start` (s0 is picked first and is slow to its first content;
    s1 is fine) and group `solo` (o0 alone)."""
    url = fake_upstream.url
    text = ('[router]\ntimeout = "400ms"\nallowed_fails = 9\nretry_backoff = "1ms"\n'
            '[[models]]\nname = "slow-start"\n'
            + deployment("s0", url, "weight = 1000") + deployment("s1", url, "weight = 0.001")
            + '[[models]]\nname = "solo"\n' + deployment("o0", url))
    with turnout_process(text, tmp_path_factory.mktemp("single")) as base:
        yield base


def calls_for(fake: FakeUpstreamProcess, model: str) -> list[dict[str, Any]]:
    return [c for c in fake.calls() if c["model"] == model]


def wait_for(predicate: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_stream_slow_to_first_content_fails_over_invisibly(single, fresh_upstream):
    # s0 sends its role chunk at once, then nothing for 2s: past the 400ms to first content
    fresh_upstream.script({"model": "s0", "chunk_delay": 2, "times": -1})
    client = openai.OpenAI(base_url=f"{single}/v1", api_key="unused", max_retries=0)
    stream = client.chat.completions.create(model="slow-start", stream=True, **CHAT)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == "fake answer to: hi"
    assert len(calls_for(fresh_upstream, "s0")) == 1
    assert len(calls_for(fresh_upstream, "s1")) == 1
    assert wait_for(lambda: calls_for(fresh_upstream, "s0")[0].get("stream_end") == "cut")


@pytest.mark.parametrize("step", [
    pytest.param({"drop": True}, id="connection-dropped-mid-body"),
    pytest.param({"body": "<html>bad gateway</html>"}, id="malformed-body"),
    pytest.param({"status": 503}, id="503"),
    pytest.param({"status": 429, "retry_after": 0}, id="429-retry-after-0"),
])
def test_a_failed_answer_over_the_wire_is_retried(single, fresh_upstream, step):
    fresh_upstream.script({"model": "o0", **step})
    response = httpx.post(f"{single}/v1/chat/completions", json={"model": "solo", **CHAT},
                          timeout=10)
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "fake answer to: hi"
    assert response.headers["x-turnout-attempts"] == "2"
    assert len(calls_for(fresh_upstream, "o0")) == 2


def test_connection_dropped_after_first_content_ends_the_stream_with_an_error(
        single, fresh_upstream):
    fresh_upstream.script({"model": "o0", "drop_after": 2})
    with httpx.stream("POST", f"{single}/v1/chat/completions",
                      json={"model": "solo", "stream": True, **CHAT}, timeout=10) as response:
        body = response.read().decode()
    events = [line[6:] for line in body.split("\n\n") if line.startswith("data: ")]
    assert response.status_code == 200
    assert "[DONE]" not in events
    assert orjson.loads(events[-1])["error"]["code"] == "upstream_error"
    assert [orjson.loads(e)["choices"][0]["delta"].get("content") for e in events[:-1]] == [
        "", "fake", " answer"]
    assert len(calls_for(fresh_upstream, "o0")) == 1


def test_openai_sdk_sees_a_broken_stream_as_an_error(single, fresh_upstream):
    fresh_upstream.script({"model": "o0", "error_after": 1})
    client = openai.OpenAI(base_url=f"{single}/v1", api_key="unused", max_retries=0)
    received = []
    with pytest.raises(openai.APIError):
        for chunk in client.chat.completions.create(model="solo", stream=True, **CHAT):
            received.append(chunk.choices[0].delta.content)
    assert received == ["", "fake"]


def test_client_that_goes_away_cancels_the_upstream_stream(single, fresh_upstream):
    fresh_upstream.script({"model": "o0", "chunks": 40, "chunk_delay": 0.1})
    with httpx.stream("POST", f"{single}/v1/chat/completions",
                      json={"model": "solo", "stream": True, **CHAT}, timeout=10) as response:
        for line in response.iter_lines():
            if '"content":"fake"' in line:
                break  # leave after the first content: closes the connection
    # the whole stream would take 4s; it is cut well before
    assert wait_for(lambda: calls_for(fresh_upstream, "o0")[0].get("stream_end") == "cut",
                    timeout=2.5)


@pytest.fixture(scope="module")
def redis_url() -> str:
    url = os.environ.get("REDIS_URL")
    if not url:
        pytest.skip("needs a redis-server: REDIS_URL (make test starts one)")
    return url


@pytest.fixture(scope="module")
def replicas(fake_upstream: FakeUpstreamProcess, redis_url: str,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, str]]:
    """Two turnouts with state = "redis": group `limited` (one deployment, rpm = 4) and group
    `cool` (`<tag>c0` picked first, `<tag>c1`). Yields both base URLs and the id tag."""
    tag = uuid.uuid4().hex[:8]  # fresh Redis keys for this run
    url = fake_upstream.url
    text = (f'[redis]\nurl = "{redis_url}"\n'
            '[router]\nstate = "redis"\nallowed_fails = 0\ncooldown = "30s"\n'
            'retry_backoff = "1ms"\n'
            '[[models]]\nname = "limited"\n' + deployment(f"{tag}l0", url, "rpm = 4")
            + '[[models]]\nname = "cool"\n' + deployment(f"{tag}c0", url, "weight = 1000")
            + deployment(f"{tag}c1", url, "weight = 0.001"))
    path = tmp_path_factory.mktemp("replicas")
    with turnout_process(text, Path(path)) as first, turnout_process(text, Path(path)) as second:
        yield first, second, tag


def test_rpm_limit_holds_across_two_replicas(replicas, fresh_upstream):
    first, second, tag = replicas
    codes = [httpx.post(f"{base}/v1/chat/completions", json={"model": "limited", **CHAT},
                        timeout=10).status_code
             for base in (first, second) * 3]
    assert sorted(codes) == [200, 200, 200, 200, 429, 429]
    assert len(calls_for(fresh_upstream, f"{tag}l0")) == 4


def test_cooldown_seen_by_one_replica_is_honoured_by_the_other(replicas, fresh_upstream):
    first, second, tag = replicas
    bad, good = f"{tag}c0", f"{tag}c1"
    fresh_upstream.script({"model": bad, "status": 500, "times": -1})
    response = httpx.post(f"{first}/v1/chat/completions", json={"model": "cool", **CHAT},
                          timeout=10)
    assert response.status_code == 200
    assert response.headers["x-turnout-deployment"] == good
    assert len(calls_for(fresh_upstream, bad)) == 1
    time.sleep(1.0)  # "within a second": the other process's next look at Redis
    for _ in range(8):
        response = httpx.post(f"{second}/v1/chat/completions", json={"model": "cool", **CHAT},
                              timeout=10)
        assert response.status_code == 200
        assert response.headers["x-turnout-deployment"] == good
    assert len(calls_for(fresh_upstream, bad)) == 1

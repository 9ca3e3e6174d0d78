"""SIGTERM and SIGHUP on a real `turnout serve`, with requests and streams in flight."""

from __future__ import annotations

import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import orjson
import pytest

from tests.procs import turnout

pytestmark = pytest.mark.e2e

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def upstream_config(url: str, grace: str = "10s") -> str:
    return (f'[server]\nshutdown_grace = "{grace}"\n[[models]]\nname = "m"\n'
            f'[[models.deployments]]\nprovider = "openai"\nbase_url = "{url}"\n'
            'api_key = "sk-up"\nmodel = "up"\n')


def mock_config(reply: str, extra: str = "") -> str:
    return (f'[[models]]\nname = "m"\n[[models.deployments]]\nprovider = "mock"\n'
            f'mock_response = "{reply}"\n[[models]]\nname = "slow"\n'
            f'[[models.deployments]]\nprovider = "mock"\nmock_response = "{reply}"\n'
            f'mock_latency = "600ms"\n{extra}')


def read_stream(url: str, started: threading.Event) -> list[str]:
    """The SSE data payloads of one streamed completion; sets `started` at the first."""
    events: list[str] = []
    with httpx.stream("POST", f"{url}/v1/chat/completions", json={**CHAT, "stream": True},
                      timeout=30) as response:
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(line[6:])
                started.set()
    return events


def content_of(events: list[str]) -> str:
    return "".join(orjson.loads(e)["choices"][0]["delta"].get("content") or ""
                   for e in events if e != "[DONE]" and "choices" in orjson.loads(e))


def test_sigterm_lets_streams_in_flight_finish_then_exits_0(fresh_upstream, tmp_path):
    fresh_upstream.script(*[{"chunks": 8, "chunk_delay": 0.1}] * 3)
    with turnout(upstream_config(fresh_upstream.url), tmp_path) as server, \
            ThreadPoolExecutor(3) as pool:
        started = [threading.Event() for _ in range(3)]
        streams = [pool.submit(read_stream, server.url, s) for s in started]
        assert all(s.wait(10) for s in started)
        server.process.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        with pytest.raises(httpx.TransportError):
            httpx.post(f"{server.url}/v1/chat/completions", json=CHAT, timeout=2)
        results = [s.result(timeout=20) for s in streams]
        assert server.process.wait(timeout=10) == 0
    for events in results:
        assert events[-1] == "[DONE]"
        assert len(content_of(events).split()) == 8


def test_sigterm_cuts_a_stream_longer_than_the_grace_and_still_exits_0(fresh_upstream, tmp_path):
    fresh_upstream.script({"chunks": 100, "chunk_delay": 0.1})
    with turnout(upstream_config(fresh_upstream.url, grace="500ms"), tmp_path) as server, \
            ThreadPoolExecutor(1) as pool:
        started = threading.Event()
        stream = pool.submit(read_stream, server.url, started)
        assert started.wait(10)
        began = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=10) == 0
        assert time.monotonic() - began < 5
        with pytest.raises(httpx.TransportError):
            stream.result(timeout=10)


def test_sighup_with_valid_config_switches_routing_without_a_failed_request(tmp_path):
    with turnout(mock_config("before"), tmp_path) as server, ThreadPoolExecutor(4) as pool:
        stop_traffic = threading.Event()

        def traffic() -> list[tuple[int, str]]:
            seen = []
            with httpx.Client(base_url=server.url, timeout=10) as client:
                while not stop_traffic.is_set():
                    r = client.post("/v1/chat/completions", json=CHAT)
                    text = r.json()["choices"][0]["message"]["content"] if r.is_success else ""
                    seen.append((r.status_code, text))
            return seen

        workers = [pool.submit(traffic) for _ in range(2)]
        slow = pool.submit(httpx.post, f"{server.url}/v1/chat/completions",
                           json={**CHAT, "model": "slow"}, timeout=10)
        time.sleep(0.2)
        server.config.write_text(mock_config("after", '[[models]]\nname = "new"\n'
                                             '[[models.deployments]]\nprovider = "mock"\n'))
        server.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            models = httpx.get(f"{server.url}/v1/models").json()["data"]
            if "new" in [m["id"] for m in models]:
                break
            time.sleep(0.05)
        time.sleep(0.3)
        stop_traffic.set()
        seen = [item for w in workers for item in w.result(timeout=20)]
        in_flight = slow.result(timeout=10)
        assert server.alive()
        log = server.log_text()
    assert {status for status, _ in seen} == {200}
    assert {text for _, text in seen} == {"before", "after"}
    assert seen[-1][1] == "after"
    # The request that was in flight during the reload finished on the old config.
    assert in_flight.status_code == 200
    assert in_flight.json()["choices"][0]["message"]["content"] == "before"
    assert "config reloaded" in log


def test_sighup_with_invalid_config_keeps_the_old_one_and_logs_why(tmp_path):
    with turnout(mock_config("before"), tmp_path) as server:
        server.config.write_text(mock_config("after").replace('provider = "mock"\nmock_response',
                                                              'provider = "mock"\nweight = -1\n'
                                                              'mock_response', 1))
        server.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "config reload refused" not in server.log_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        response = httpx.post(f"{server.url}/v1/chat/completions", json=CHAT)
        log = server.log_text()
        assert server.alive()
    assert "config reload refused" in log
    assert "weight" in log
    assert response.json()["choices"][0]["message"]["content"] == "before"


def answer_of(url: str) -> str:
    response = httpx.post(f"{url}/v1/chat/completions", json=CHAT, timeout=10)
    assert response.status_code == 200
    content: str = response.json()["choices"][0]["message"]["content"]
    return content


def wait_for_answer(url: str, expected: str, within: float) -> None:
    """Until `expected` is all that several requests in a row get (or `within` runs out)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if all(answer_of(url) == expected for _ in range(6)):
            return
        time.sleep(0.1)


def test_workers_reload_on_sighup_keep_the_old_config_when_invalid_and_exit_0(tmp_path):
    args = [sys.executable, "-m", "router"]
    with turnout(mock_config("before"), tmp_path, module=args,
                 extra_args=["--workers", "2"]) as server:
        server.config.write_text(mock_config("broken").replace("mock_response", "mock_respons", 1))
        server.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 15
        while "config not loaded" not in server.log_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert {answer_of(server.url) for _ in range(6)} == {"before"}
        server.config.write_text(mock_config("after"))
        server.process.send_signal(signal.SIGHUP)
        wait_for_answer(server.url, "after", within=20)
        assert {answer_of(server.url) for _ in range(6)} == {"after"}
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=20) == 0
        log = server.log_text()
    assert "mock_respons" in log

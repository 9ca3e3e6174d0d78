"""Clients that vanish mid-stream or mid-upload, and slow readers: nothing leaks, nothing hangs.

Tasks are counted inside the daemon (tests.fakes.instrumented), file descriptors in /proc;
the upstream connection is one of those descriptors, so its count falling back before the
upstream's stream would have ended shows that the upstream call was cancelled.
"""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.procs import Turnout, turnout

pytestmark = pytest.mark.e2e

INSTRUMENTED = [sys.executable, "-m", "tests.fakes.instrumented"]
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def server(fresh_upstream, tmp_path) -> Iterator[Turnout]:
    text = (f'[[models]]\nname = "m"\n[[models.deployments]]\nprovider = "openai"\n'
            f'base_url = "{fresh_upstream.url}"\napi_key = "sk-up"\nmodel = "up"\n')
    with turnout(text, tmp_path, module=INSTRUMENTED) as running:
        # Warm up: one complete stream leaves one pooled upstream connection behind.
        with httpx.stream("POST", f"{running.url}/v1/chat/completions",
                          json={**CHAT, "stream": True}) as response:
            response.read()
        yield running


def counts(server: Turnout) -> dict[str, int]:
    result: dict[str, int] = httpx.get(f"{server.url}/_debug/counts").json()
    return result


def settle(server: Turnout, baseline: dict[str, int], within: float) -> dict[str, int]:
    """The counts once they are back at (or under) the baseline, or as they are at `within`."""
    deadline = time.monotonic() + within
    now = counts(server)
    while time.monotonic() < deadline:
        if now["tasks"] <= baseline["tasks"] and now["fds"] <= baseline["fds"]:
            break
        time.sleep(0.05)
        now = counts(server)
    return now


def test_client_leaving_mid_stream_cancels_the_upstream_call(server, fresh_upstream):
    baseline = counts(server)
    for _ in range(5):
        fresh_upstream.script({"chunks": 60, "chunk_delay": 0.1})
        with httpx.stream("POST", f"{server.url}/v1/chat/completions",
                          json={**CHAT, "stream": True}) as response:
            lines = response.iter_lines()
            assert next(lines).startswith("data: ")
            assert next(lines) == ""
            assert next(lines).startswith("data: ")
        # The upstream would stream for 6 s more; everything is released well before.
    after = settle(server, baseline, within=3)
    assert after["tasks"] <= baseline["tasks"]
    assert after["fds"] <= baseline["fds"]
    assert "Traceback" not in server.log_text()
    assert server.alive()


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream-before-first-content"])
def test_client_leaving_before_the_answer_cancels_the_upstream_call(server, fresh_upstream,
                                                                    stream):
    baseline = counts(server)
    fresh_upstream.script(*[{"hang": 10}] * 3)
    for _ in range(3):
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{server.url}/v1/chat/completions", json={**CHAT, "stream": stream},
                       timeout=httpx.Timeout(5, read=0.5))
    # The upstream would answer in 10 s; the requests' tasks and upstream connections are
    # released as soon as their clients are gone.
    after = settle(server, baseline, within=3)
    assert after["tasks"] <= baseline["tasks"]
    assert after["fds"] <= baseline["fds"]
    assert "Traceback" not in server.log_text()


def test_client_leaving_mid_upload_leaks_nothing(server):
    baseline = counts(server)
    port = int(server.url.rsplit(":", 1)[1])
    for _ in range(20):
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\n"
                         b"content-length: 100000\r\n\r\n" + b'{"model": "m", "messages"' * 40)
    after = settle(server, baseline, within=3)
    assert after == {"tasks": min(after["tasks"], baseline["tasks"]),
                     "fds": min(after["fds"], baseline["fds"])}
    assert "Traceback" not in server.log_text()
    assert server.alive()


def test_slow_reader_gets_the_whole_stream_and_others_are_not_held_up(server, fresh_upstream):
    baseline = counts(server)
    fresh_upstream.script({"chunks": 30, "chunk_delay": 0})
    events = []
    with httpx.stream("POST", f"{server.url}/v1/chat/completions",
                      json={**CHAT, "stream": True}) as response:
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(line)
                time.sleep(0.02)
                if len(events) == 5:
                    began = time.monotonic()
                    other = httpx.post(f"{server.url}/v1/chat/completions", json=CHAT)
                    assert other.status_code == 200
                    assert time.monotonic() - began < 2
    assert events[-1] == "data: [DONE]"
    assert len(events) == 30 + 3
    after = settle(server, baseline, within=3)
    assert after["tasks"] <= baseline["tasks"]
    assert after["fds"] <= baseline["fds"] + 1  # the other request's pooled connection

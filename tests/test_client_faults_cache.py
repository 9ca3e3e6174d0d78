"""Client faults with the cache on: a stream abandoned by its client is never cached,
and an abandoned call that coalesced requests wait on still completes for them."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from tests.support import turnout_process

pytestmark = pytest.mark.e2e

CHAT = {"model": "m", "messages": [{"role": "user", "content": "abandon me"}],
        "stream": True, "caching": True}


def config(url: str) -> str:
    return (f'[cache]\nbackend = "memory"\nmode = "opt-in"\ncoalesce = true\n'
            f'[[models]]\nname = "m"\n[[models.deployments]]\nprovider = "openai"\n'
            f'base_url = "{url}"\napi_key = "sk-up"\nmodel = "up"\n')


def test_stream_abandoned_mid_way_is_not_cached(fresh_upstream, tmp_path):
    fresh_upstream.script({"chunks": 40, "chunk_delay": 0.05})
    with turnout_process(config(fresh_upstream.url), tmp_path) as url:
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=CHAT) as response:
            lines = response.iter_lines()
            next(lines)
            assert response.headers["x-turnout-cache"] == "miss"
        time.sleep(0.5)
        again = httpx.post(f"{url}/v1/chat/completions", json=CHAT, timeout=30)
    assert again.status_code == 200
    assert again.headers["x-turnout-cache"] == "miss"
    assert len(fresh_upstream.calls()) == 2


def test_coalesced_waiter_gets_the_whole_answer_when_the_first_client_leaves(
        fresh_upstream, tmp_path):
    fresh_upstream.script({"chunks": 20, "chunk_delay": 0.05})
    with turnout_process(config(fresh_upstream.url), tmp_path) as url:
        waiter_body: list[str] = []
        first_started = threading.Event()

        def waiter() -> None:
            first_started.wait(10)
            with httpx.stream("POST", f"{url}/v1/chat/completions", json=CHAT,
                              timeout=30) as response:
                waiter_body.append(response.read().decode())

        thread = threading.Thread(target=waiter)
        thread.start()
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=CHAT) as response:
            lines = response.iter_lines()
            next(lines)
            first_started.set()
            time.sleep(0.2)  # the waiter is now coalesced on this call
        thread.join(30)
        cached = httpx.post(f"{url}/v1/chat/completions", json=CHAT, timeout=30)
    assert waiter_body and waiter_body[0].rstrip().endswith("data: [DONE]")
    assert len(fresh_upstream.calls()) == 1
    assert cached.headers["x-turnout-cache"] == "hit"

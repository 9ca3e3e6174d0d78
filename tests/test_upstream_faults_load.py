"""Upstream faults under load: one deployment of two misbehaves, clients never notice.

A two-deployment group (d0 faulty, d1 healthy) takes concurrent traffic while d0 answers
with one kind of fault. Contract: failures are retried on the other deployment (zero
failed client requests), and once d0 has failed more than `allowed_fails` times it cools
down for `cooldown` (or for Retry-After on a 429) and gets no more calls; requests already
in flight when it cooled may still reach it, hence the concurrency allowance.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest

from tests.support import FakeUpstreamProcess, fake_upstream_process, free_port, turnout_process

pytestmark = pytest.mark.e2e

CONCURRENCY = 8
REQUESTS = 240
ALLOWED_FAILS = 1
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def healthy() -> Iterator[FakeUpstreamProcess]:
    with fake_upstream_process() as fake:
        yield fake


@pytest.fixture(scope="module")
def faulty() -> Iterator[FakeUpstreamProcess]:
    with fake_upstream_process() as fake:
        yield fake


def config(faulty_url: str, healthy_url: str) -> str:
    return f"""
[router]
num_retries = 2
retry_backoff = "10ms"
allowed_fails = {ALLOWED_FAILS}
cooldown = "1h"
timeout = "500ms"

[[models]]
name = "m"
  [[models.deployments]]
  id = "d0"
  provider = "openai"
  base_url = "{faulty_url}"
  api_key = "sk-d0"
  model = "up"
  [[models.deployments]]
  id = "d1"
  provider = "openai"
  base_url = "{healthy_url}"
  api_key = "sk-d1"
  model = "up"
"""


async def load(url: str, *, stream: bool) -> list[str]:
    """REQUESTS requests, CONCURRENCY at a time; returns a description of each failure."""
    failures: list[str] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(REQUESTS):
        queue.put_nowait(i)

    async def worker(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            i = queue.get_nowait()
            body = {**CHAT, "messages": [{"role": "user", "content": f"q{i}"}], "stream": stream}
            try:
                if stream:
                    async with client.stream("POST", "/v1/chat/completions", json=body) as r:
                        text = (await r.aread()).decode()
                    if r.status_code != 200 or not text.rstrip().endswith("data: [DONE]"):
                        failures.append(f"{i}: {r.status_code} {text[-200:]}")
                else:
                    r = await client.post("/v1/chat/completions", json=body)
                    if r.status_code != 200:
                        failures.append(f"{i}: {r.status_code} {r.text[:200]}")
            except httpx.HTTPError as exc:
                failures.append(f"{i}: {type(exc).__name__}")

    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        await asyncio.gather(*(worker(client) for _ in range(CONCURRENCY)))
    return failures


FAULTS = [
    pytest.param({"status": 500}, False, id="500"),
    pytest.param({"status": 503}, False, id="503"),
    pytest.param({"status": 429, "retry_after": 600}, False, id="429-retry-after"),
    pytest.param({"hang": 3}, False, id="hang"),
    pytest.param({"body": "this is not json"}, False, id="malformed-body"),
    pytest.param({"break_after": 0}, True, id="stream-broken-before-content"),
    pytest.param({"hang": 3}, True, id="stream-hang-before-first-content"),
    pytest.param({"status": 500}, True, id="stream-500"),
]


@pytest.mark.parametrize(("fault", "stream"), FAULTS)
def test_faulty_deployment_costs_no_client_request(faulty, healthy, tmp_path, fault, stream):
    faulty.reset()
    healthy.reset()
    faulty.script(*[fault] * REQUESTS)
    with turnout_process(config(faulty.url, healthy.url), tmp_path) as url:
        failures = asyncio.run(load(url, stream=stream))
    assert failures == []
    faulty_calls = len(faulty.calls())
    # Cooled after ALLOWED_FAILS + 1 failures; requests already in flight may still land.
    assert 1 <= faulty_calls <= ALLOWED_FAILS + 1 + CONCURRENCY
    assert len(healthy.calls()) >= REQUESTS


def test_refused_connections_cost_no_client_request(healthy, tmp_path):
    healthy.reset()
    dead = f"http://127.0.0.1:{free_port()}/v1"
    with turnout_process(config(dead, healthy.url), tmp_path) as url:
        failures = asyncio.run(load(url, stream=False))
        status = httpx.get(f"{url}/metrics").text
    assert failures == []
    assert len(healthy.calls()) == REQUESTS
    cooled = [line for line in status.splitlines()
              if line.startswith('turnout_deployment_cooldowns_total{deployment="d0"}')]
    assert cooled and float(cooled[0].split()[-1]) >= 1


def test_stream_broken_after_content_is_not_retried_and_ends_with_an_error_event(
        faulty, healthy, tmp_path):
    faulty.reset()
    healthy.reset()
    text = config(faulty.url, healthy.url).replace('  [[models.deployments]]\n  id = "d1"',
                                                   '  [[models.deployments]]\n  id = "d1"\n'
                                                   '  weight = 0.000001', 1)
    faulty.script({"break_after": 2})
    with turnout_process(text, tmp_path) as url, httpx.stream(
            "POST", f"{url}/v1/chat/completions", json={**CHAT, "stream": True}) as response:
        body = response.read().decode()
    assert "data: [DONE]" not in body
    assert '"error"' in body.strip().splitlines()[-1]
    assert len(faulty.calls()) == 1
    assert len(healthy.calls()) == 0

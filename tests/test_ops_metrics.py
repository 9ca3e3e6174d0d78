"""Metrics: bounded labels, the contract's names on /metrics, and sums across --workers."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from router.metrics import Metrics
from tests.support import app_client, config_from, openai_config, turnout_process

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


@pytest.mark.parametrize(("collector", "labels", "expected"), [
    pytest.param("requests", ("m", "200"), ("m", "200"), id="known-group"),
    pytest.param("requests", ("prompt text as a group", "200"), ("other", "200"),
                 id="unknown-group-is-other"),
    pytest.param("fallbacks", ("m", "nope"), ("m", "other"), id="unknown-fallback-target"),
    pytest.param("upstream_attempts", ("d0", "ok"), ("d0", "ok"), id="known-deployment"),
    pytest.param("upstream_attempts", ("sk-secret-key", "ok"), ("other", "ok"),
                 id="unknown-deployment-is-other"),
    pytest.param("cache_lookups", ("hit",), ("hit",), id="word"),
    pytest.param("cache_lookups", ("not a word!",), ("other",), id="non-word-is-other"),
])
def test_label_values_are_bounded(collector, labels, expected):
    metrics = Metrics()
    metrics.allow({"m"}, {"d0"})
    getattr(metrics, collector).labels(*labels).inc()
    counter = getattr(metrics, collector)
    names = dict(zip(counter._labelnames, expected, strict=True))
    assert metrics.registry.get_sample_value(counter._name + "_total", names) == 1


def test_a_label_takes_at_most_32_distinct_words():
    metrics = Metrics()
    for i in range(40):
        metrics.cache_lookups.labels(result=f"r{i}").inc()
    values = {s.labels["result"] for family in metrics.registry.collect()
              if family.name == "turnout_cache_lookups" for s in family.samples
              if s.name.endswith("_total")}
    assert len(values) == 33
    assert "other" in values and "r39" not in values


async def test_metrics_page_has_every_contract_metric(upstream):
    async with app_client(config_from(openai_config()), upstream.transport()) as client:
        assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 200
        assert (await client.post("/v1/chat/completions", json={**CHAT, "model": "x"})
                ).status_code == 404
        text = (await client.get("/metrics")).text
    found = samples(text)
    assert found[("turnout_requests_total", (("model_group", "m"), ("status", "200")))] == 1
    assert found[("turnout_requests_total", (("model_group", "-"), ("status", "404")))] == 1
    assert found[("turnout_request_duration_seconds_count", ())] == 2
    # Overhead is observed for requests that were routed, not for the 404.
    assert found[("turnout_overhead_seconds_count", ())] == 1
    assert found[("turnout_inflight_requests", ())] == 0
    for name in ("turnout_upstream_attempts", "turnout_cache_lookups", "turnout_fallbacks",
                 "turnout_deployment_cooldowns"):
        assert name in text
    assert "sk-upstream-secret" not in text


async def test_overhead_excludes_the_wait_on_the_upstream():
    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.3)
        return httpx.Response(200, json={"id": "x", "object": "chat.completion", "created": 1,
                                         "model": "u", "choices": []})

    async with app_client(config_from(openai_config()), httpx.MockTransport(slow)) as client:
        await client.post("/v1/chat/completions", json=CHAT)
        found = samples((await client.get("/metrics")).text)
    assert found[("turnout_request_duration_seconds_sum", ())] >= 0.3
    assert found[("turnout_overhead_seconds_sum", ())] < 0.1


MOCK_CONFIG = """
[[models]]
name = "m"
  [[models.deployments]]
  id = "a"
  provider = "mock"
"""


@pytest.mark.e2e
def test_workers_share_one_sum_on_metrics(tmp_path):
    shared = tmp_path / "prometheus"
    shared.mkdir()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(shared)}
    with (turnout_process(MOCK_CONFIG, tmp_path, env=env, extra_args=["--workers", "2"]) as base,
          httpx.Client(base_url=base, headers={"connection": "close"}) as client):
        sent = 0
        # A new connection each time, until both workers have answered some requests.
        while sent < 10 or (len(list(shared.glob("counter_*.db"))) < 2 and sent < 400):
            assert client.post("/v1/chat/completions", json=CHAT).status_code == 200
            sent += 1
        assert len(list(shared.glob("counter_*.db"))) == 2
        pages = [client.get("/metrics").text for _ in range(6)]
    for page in pages:
        found = samples(page)
        key = ("turnout_requests_total", (("model_group", "m"), ("status", "200")))
        assert found[key] == sent
        assert found[("turnout_request_duration_seconds_count", ())] == sent
        assert found[("turnout_inflight_requests", ())] == 0


def test_serve_makes_and_removes_a_multiprocess_directory(monkeypatch):
    from router.cli import _multiprocess_metrics

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "")  # empty counts as unset; undone after
    with _multiprocess_metrics():
        made = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
        assert made.is_dir() and not any(made.iterdir())
    assert not made.exists()

"""The router in-process against fake upstreams that fail on command (httpx.MockTransport).

Each test asserts what the client got and how many calls each upstream saw. Time that
matters to cooldowns and rate windows is a FakeClock moved by the test.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time

import orjson
import pytest

from router.app import build_gateway
from router.metrics import Metrics
from tests.router_fleet import (
    CHAT,
    FakeClock,
    Fleet,
    context_length,
    dropped,
    hang,
    malformed,
    no_choices,
    refused,
    router_toml,
    sse_events,
    status,
    stream_breaking,
    stream_error_event,
)
from tests.support import app_client, config_from

STREAM = {**CHAT, "stream": True}
ADMIN = {"authorization": "Bearer admin-key"}


def two_deployments(router: str = "allowed_fails = 1\ncooldown = \"30s\"", **kw: str) -> str:
    server = '[server]\nadmin_key = "admin-key"\n'
    return server + router_toml({"m": 2}, router=router, **kw)


FAULTS = [
    pytest.param(status(500), id="500"),
    pytest.param(status(503), id="503"),
    pytest.param(status(408), id="408"),
    pytest.param(status(409), id="409"),
    pytest.param(status(429), id="429-without-retry-after"),
    pytest.param(dropped(), id="dropped-connection"),
    pytest.param(refused(), id="connection-refused"),
    pytest.param(malformed(), id="malformed-body"),
    pytest.param(no_choices(), id="json-without-choices"),
]


@pytest.mark.parametrize("fault", FAULTS)
async def test_failing_deployment_gets_at_most_allowed_fails_plus_one_calls_per_cooldown(fault):
    fleet, clock = Fleet(), FakeClock()
    fleet.fail("m0", fault)
    config = config_from(two_deployments())
    async with app_client(config, fleet.transport(), clock=clock, rng=random.Random(3)) as client:
        for _ in range(12):
            response = await client.post("/v1/chat/completions", json=CHAT)
            assert response.status_code == 200
            assert response.headers["x-turnout-deployment"] == "m1"
        assert 1 <= fleet.calls["m0"] <= 2  # allowed_fails + 1
        first_window = fleet.calls["m0"]
        clock.advance(30)
        for _ in range(12):
            assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 200
    assert fleet.calls["m0"] == first_window + 1  # one half-open probe, which failed


async def test_concurrent_requests_do_not_pile_onto_a_failing_deployment():
    fleet, clock, release = Fleet(), FakeClock(), asyncio.Event()
    fleet.fail("m0", status(500), times=1)
    config = config_from(two_deployments(router='allowed_fails = 2\ncooldown = "30s"'))
    async with app_client(config, fleet.transport(), clock=clock, rng=random.Random(3)) as client:
        while fleet.calls["m0"] == 0:
            assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 200

        async def slow_500(request: object, body: dict[str, object]) -> object:
            await release.wait()
            return await status(500)(request, body)  # type: ignore[arg-type]

        fleet.fail("m0", slow_500)  # type: ignore[arg-type]
        requests = [asyncio.create_task(client.post("/v1/chat/completions", json=CHAT))
                    for _ in range(12)]
        await asyncio.sleep(0.05)  # scheduling, not a clock: let the requests make their picks
        release.set()
        responses = await asyncio.gather(*requests)
    assert {r.status_code for r in responses} == {200}
    assert fleet.calls["m0"] <= 3  # allowed_fails + 1, however many arrived at once


async def test_attempt_timeout_fails_over_and_cools_the_slow_deployment():
    fleet, clock = Fleet(), FakeClock()
    fleet.fail("m0", hang())
    config = config_from(two_deployments(deployment='timeout = "50ms"'))
    async with app_client(config, fleet.transport(), clock=clock, rng=random.Random(3)) as client:
        for _ in range(8):
            response = await client.post("/v1/chat/completions", json=CHAT)
            assert response.status_code == 200
            assert response.headers["x-turnout-deployment"] == "m1"
    assert 1 <= fleet.calls["m0"] <= 2
    assert fleet.cancelled["m0"] == fleet.calls["m0"]  # each timed-out call was cancelled


async def test_429_with_retry_after_cools_at_once_for_that_long(caplog):
    caplog.set_level(logging.INFO, logger="turnout.events")
    fleet, clock = Fleet(), FakeClock()
    fleet.fail("m0", status(429, retry_after="5"))
    async with app_client(config_from(two_deployments()), fleet.transport(), clock=clock,
                          rng=random.Random(3)) as client:
        for _ in range(10):
            assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 200
        assert fleet.calls["m0"] == 1
        clock.advance(4.9)
        for _ in range(10):
            await client.post("/v1/chat/completions", json=CHAT)
        assert fleet.calls["m0"] == 1
        fleet.heal("m0")
        clock.advance(0.2)
        for _ in range(20):
            await client.post("/v1/chat/completions", json=CHAT)
    assert fleet.calls["m0"] > 2  # the probe succeeded: back in rotation
    events = [(getattr(r, "event", None), getattr(r, "deployment", None)) for r in caplog.records]
    assert events.count(("deployment_cooled_down", "m0")) == 1
    assert events.count(("deployment_recovered", "m0")) == 1
    [cooled] = [r for r in caplog.records if getattr(r, "event", None) == "deployment_cooled_down"]
    assert cooled.seconds == 5.0


@pytest.mark.parametrize("code", [401, 403])
async def test_auth_failure_cools_and_the_client_never_sees_that_upstream(code):
    fleet, clock = Fleet(), FakeClock()
    fleet.fail("m0", status(code))
    async with app_client(config_from(two_deployments()), fleet.transport(), clock=clock,
                          rng=random.Random(3)) as client:
        for _ in range(10):
            response = await client.post("/v1/chat/completions", json=CHAT)
            assert response.status_code == 200
        assert fleet.calls["m0"] == 1
        fleet.fail("m1", status(code))
        clock.advance(31)
        response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_error"
    assert "upstream says" not in response.text
    assert "secret" not in response.text


@pytest.mark.parametrize("code", [400, 404, 413, 422])
async def test_client_error_passes_through_at_once_without_retry(code):
    fleet = Fleet()
    fleet.fail("m0", status(code, error={"message": "bad 'temperature' for sk-m0-secret",
                                         "type": "invalid_request_error",
                                         "param": "temperature", "code": None}))
    fleet.fail("m1", status(code, error={"message": "bad 'temperature'",
                                         "type": "invalid_request_error",
                                         "param": "temperature", "code": None}))
    async with app_client(config_from(two_deployments()), fleet.transport(),
                          clock=FakeClock()) as client:
        response = await client.post("/v1/chat/completions", json=CHAT)
        status_page = (await client.get("/admin/status", headers=ADMIN)).json()
    assert response.status_code == code
    assert response.json()["error"]["param"] == "temperature"
    assert "sk-m0-secret" not in response.text
    assert sum(fleet.calls.values()) == 1
    assert {d["state"] for d in status_page["deployments"]} == {"healthy"}


async def test_retries_try_every_deployment_before_repeating_one():
    fleet = Fleet()
    for dep in ("m0", "m1", "m2"):
        fleet.fail(dep, status(500))
    config = config_from(router_toml({"m": 3}, router="num_retries = 2\nallowed_fails = 9"))
    async with app_client(config, fleet.transport(), clock=FakeClock()) as client:
        response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_error"
    assert dict(fleet.calls) == {"m0": 1, "m1": 1, "m2": 1}


async def test_one_deployment_is_retried_num_retries_times():
    fleet = Fleet()
    fleet.fail("m0", status(502), times=2)
    config = config_from(router_toml({"m": 1}, router="num_retries = 2\nallowed_fails = 9"))
    async with app_client(config, fleet.transport(), clock=FakeClock()) as client:
        response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 200
    assert response.headers["x-turnout-attempts"] == "3"
    assert fleet.calls["m0"] == 3


async def test_no_retry_beyond_num_retries():
    fleet = Fleet()
    fleet.fail("m0", status(500))
    config = config_from(router_toml({"m": 1}, router="num_retries = 1\nallowed_fails = 9"))
    async with app_client(config, fleet.transport(), clock=FakeClock()) as client:
        response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 502
    assert fleet.calls["m0"] == 2


async def test_whole_group_down_its_fallbacks_answer_in_order():
    fleet = Fleet()
    for dep in ("m0", "m1", "a0"):
        fleet.fail(dep, status(500))
    text = router_toml({"m": 2, "a": 1, "b": 1}, router="num_retries = 1\nallowed_fails = 9",
                       extra='[fallbacks]\nm = ["a", "b"]\n')
    async with app_client(config_from(text), fleet.transport(), clock=FakeClock()) as client:
        response = await client.post("/v1/chat/completions", json=CHAT)
        metrics = (await client.get("/metrics")).text
    assert response.status_code == 200
    assert response.headers["x-turnout-model-group"] == "b"
    assert response.headers["x-turnout-deployment"] == "b0"
    assert response.headers["x-turnout-attempts"] == "5"
    assert dict(fleet.calls) == {"m0": 1, "m1": 1, "a0": 2, "b0": 1}  # each group its retries
    assert 'turnout_fallbacks_total{from_group="m",to_group="a"} 1.0' in metrics
    assert 'turnout_fallbacks_total{from_group="a",to_group="b"} 1.0' in metrics


async def test_context_length_error_goes_to_context_window_fallbacks_only():
    fleet = Fleet()
    fleet.fail("m0", context_length())
    fleet.fail("m1", context_length())
    extra = '[fallbacks]\nm = ["small"]\n[context_window_fallbacks]\nm = ["big"]\n'
    text = router_toml({"m": 2, "small": 1, "big": 1}, extra=extra)
    async with app_client(config_from(text), fleet.transport(), clock=FakeClock()) as client:
        response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 200
    assert response.headers["x-turnout-model-group"] == "big"
    assert fleet.calls["small0"] == 0
    assert fleet.calls["m0"] + fleet.calls["m1"] == 1  # not retried within the group


async def test_context_length_error_without_context_window_fallback_is_passed_through():
    fleet = Fleet()
    fleet.fail("m0", context_length())
    text = router_toml({"m": 1, "small": 1}, extra='[fallbacks]\nm = ["small"]\n')
    async with app_client(config_from(text), fleet.transport(), clock=FakeClock()) as client:
        response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "context_length_exceeded"
    assert dict(fleet.calls) == {"m0": 1}


async def test_every_deployment_cooling_is_503():
    fleet, clock = Fleet(), FakeClock()
    fleet.fail("m0", status(429))
    fleet.fail("m1", status(429))
    async with app_client(config_from(two_deployments()), fleet.transport(),
                          clock=clock) as client:
        first = await client.post("/v1/chat/completions", json=CHAT)
        second = await client.post("/v1/chat/completions", json=CHAT)
    assert first.status_code == 502
    assert second.status_code == 503
    assert second.json()["error"]["code"] == "no_healthy_deployment"
    assert dict(fleet.calls) == {"m0": 1, "m1": 1}


async def test_every_deployment_of_every_route_at_its_rpm_is_429():
    fleet, clock = Fleet(), FakeClock()
    text = router_toml({"m": 2, "f": 1}, deployment="rpm = 2",
                       extra='[fallbacks]\nm = ["f"]\n')
    async with app_client(config_from(text), fleet.transport(), clock=clock) as client:
        answers = [await client.post("/v1/chat/completions", json=CHAT) for _ in range(7)]
        calls = dict(fleet.calls)
        clock.advance(60.1)
        later = await client.post("/v1/chat/completions", json=CHAT)
    assert [r.status_code for r in answers] == [200] * 6 + [429]
    assert answers[6].json()["error"]["code"] == "rate_limit_exceeded"
    assert answers[6].headers["retry-after"] == "60"  # the first requests leave the minute
    assert [r.headers["x-turnout-model-group"] for r in answers[4:6]] == ["f", "f"]
    assert calls == {"m0": 2, "m1": 2, "f0": 2}
    assert later.status_code == 200


async def test_tpm_counts_the_tokens_upstream_reported():
    fleet, clock = Fleet(), FakeClock()
    text = router_toml({"m": 1}, deployment="tpm = 5")  # each answer reports 2 tokens
    async with app_client(config_from(text), fleet.transport(), clock=clock) as client:
        codes = [(await client.post("/v1/chat/completions", json=CHAT)).status_code
                 for _ in range(4)]
        clock.advance(60.1)
        after = await client.post("/v1/chat/completions", json=CHAT)
    assert codes == [200, 200, 200, 429]
    assert after.status_code == 200


async def test_rate_limit_answer_says_when_there_is_room_again():
    fleet, clock = Fleet(), FakeClock()
    text = router_toml({"m": 1}, deployment="rpm = 2")
    async with app_client(config_from(text), fleet.transport(), clock=clock) as client:
        await client.post("/v1/chat/completions", json=CHAT)
        clock.advance(20)
        await client.post("/v1/chat/completions", json=CHAT)
        clock.advance(10)
        limited = await client.post("/v1/chat/completions", json=CHAT)
    assert limited.status_code == 429
    assert limited.headers["retry-after"] == "30"  # the first request leaves the minute


async def test_max_concurrency_holds_and_overflow_is_429():
    fleet, release = Fleet(), asyncio.Event()
    fleet.fail("m0", hang(release))
    text = router_toml({"m": 1}, deployment="max_concurrency = 1")
    async with app_client(config_from(text), fleet.transport(), clock=FakeClock()) as client:
        first = asyncio.create_task(client.post("/v1/chat/completions", json=CHAT))
        await fleet.arrived["m0"].wait()
        second = await client.post("/v1/chat/completions", json=CHAT)
        release.set()
        assert (await first).status_code == 200
    assert second.status_code == 429
    assert fleet.calls["m0"] == 1


async def test_request_timeout_is_504_and_bounds_the_whole_request():
    fleet = Fleet()
    fleet.fail("m0", hang())
    fleet.fail("m1", hang())
    text = '[server]\nrequest_timeout = "150ms"\n' + router_toml(
        {"m": 2}, router='timeout = "100ms"\nnum_retries = 5')
    started = time.monotonic()
    async with app_client(config_from(text), fleet.transport()) as client:
        response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "upstream_timeout"
    assert time.monotonic() - started < 1.0
    assert sum(fleet.calls.values()) == 2  # m0 timed out at 100ms; m1 ran into the deadline


async def test_backoff_never_runs_past_the_request_timeout():
    fleet = Fleet()
    fleet.fail("m0", status(500))
    text = '[server]\nrequest_timeout = "200ms"\n' + router_toml(
        {"m": 1}, router='retry_backoff = "10s"\nnum_retries = 3\nallowed_fails = 9')
    started = time.monotonic()
    async with app_client(config_from(text), fleet.transport()) as client:
        response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 504
    assert time.monotonic() - started < 1.0
    assert fleet.calls["m0"] == 1


async def test_hedge_races_a_silent_attempt_and_cancels_the_loser():
    fleet = Fleet()
    fleet.fail("m0", hang())
    config = config_from(two_deployments(router='hedge_after = "20ms"\nallowed_fails = 9'))
    async with app_client(config, fleet.transport(), clock=FakeClock(),
                          rng=random.Random(3)) as client:
        responses = [await client.post("/v1/chat/completions", json=CHAT) for _ in range(6)]
    assert {r.status_code for r in responses} == {200}
    assert {r.headers["x-turnout-deployment"] for r in responses} == {"m1"}
    hedged = [r for r in responses if r.headers["x-turnout-attempts"] == "2"]
    assert len(hedged) == fleet.calls["m0"] >= 1
    assert fleet.cancelled["m0"] == fleet.calls["m0"]  # every loser was cancelled
    assert fleet.calls["m1"] == 6


async def test_hedge_races_a_stream_slow_to_its_first_content():
    fleet = Fleet()
    fleet.fail("m0", hang())
    config = config_from(two_deployments(router='hedge_after = "20ms"\nallowed_fails = 9'))
    async with app_client(config, fleet.transport(), clock=FakeClock(),
                          rng=random.Random(3)) as client:
        responses = [await client.post("/v1/chat/completions", json=STREAM) for _ in range(6)]
    assert {sse_events(r.text)[-1] for r in responses} == {"[DONE]"}
    assert {r.headers["x-turnout-deployment"] for r in responses} == {"m1"}
    assert fleet.cancelled["m0"] == fleet.calls["m0"] >= 1


async def test_no_hedge_when_the_first_attempt_answers_in_time():
    fleet = Fleet()
    config = config_from(two_deployments(router='hedge_after = "5s"'))
    async with app_client(config, fleet.transport(), clock=FakeClock()) as client:
        responses = [await client.post("/v1/chat/completions", json=CHAT) for _ in range(6)]
    assert {r.headers["x-turnout-attempts"] for r in responses} == {"1"}
    assert sum(fleet.calls.values()) == 6


@pytest.mark.parametrize("fault", [
    pytest.param(stream_breaking(0), id="ends-before-content"),
    pytest.param(stream_error_event(), id="error-event-before-content"),
    pytest.param(status(500), id="500"),
    pytest.param(dropped(), id="dropped"),
])
async def test_stream_failure_before_first_content_fails_over_invisibly(fault):
    fleet, clock = Fleet(), FakeClock()
    fleet.fail("m0", fault)
    async with app_client(config_from(two_deployments()), fleet.transport(), clock=clock,
                          rng=random.Random(3)) as client:
        responses = [await client.post("/v1/chat/completions", json=STREAM) for _ in range(8)]
    for response in responses:
        events = sse_events(response.text)
        assert events[-1] == "[DONE]"
        assert "error" not in response.text
        text = "".join(orjson.loads(e)["choices"][0]["delta"].get("content") or ""
                       for e in events[:-1])
        assert text == "Hello"
        assert response.headers["x-turnout-deployment"] == "m1"
    assert 1 <= fleet.calls["m0"] <= 2


async def test_stream_failure_after_first_content_ends_with_error_event_and_no_done():
    fleet = Fleet()
    fleet.fail("m0", stream_breaking(2))
    config = config_from(router_toml({"m": 1}, router="allowed_fails = 0"))
    async with app_client(config, fleet.transport(), clock=FakeClock()) as client:
        response = await client.post("/v1/chat/completions", json=STREAM)
    events = sse_events(response.text)
    assert response.status_code == 200
    assert "[DONE]" not in events
    assert orjson.loads(events[-1])["error"]["type"] == "upstream_error"
    contents = [orjson.loads(e)["choices"][0]["delta"].get("content") for e in events[:-1]]
    assert contents == ["", "Par", "tial"]
    assert fleet.calls["m0"] == 1  # committed: never retried


async def test_failure_after_commit_counts_towards_cooldown():
    fleet, clock = Fleet(), FakeClock()
    fleet.fail("m0", stream_breaking(1))
    config = config_from(router_toml({"m": 1}, router="allowed_fails = 0"))
    async with app_client(config, fleet.transport(), clock=clock) as client:
        await client.post("/v1/chat/completions", json=STREAM)
        second = await client.post("/v1/chat/completions", json=STREAM)
    assert second.status_code == 503
    assert fleet.calls["m0"] == 1


async def test_embeddings_are_routed_with_retries():
    fleet = Fleet()
    fleet.fail("m0", status(500))
    async with app_client(config_from(two_deployments()), fleet.transport(),
                          clock=FakeClock(), rng=random.Random(3)) as client:
        responses = [await client.post("/v1/embeddings", json={"model": "m", "input": "x"})
                     for _ in range(4)]
    assert {r.status_code for r in responses} == {200}
    assert {r.headers["x-turnout-deployment"] for r in responses} == {"m1"}


async def test_status_and_metrics_show_a_cooled_deployment():
    fleet, clock = Fleet(), FakeClock()
    fleet.fail("m0", status(500))
    async with app_client(config_from(two_deployments(router="allowed_fails = 0")),
                          fleet.transport(), clock=clock, rng=random.Random(3)) as client:
        for _ in range(6):
            await client.post("/v1/chat/completions", json=CHAT)
        clock.advance(10)
        page = (await client.get("/admin/status", headers=ADMIN)).json()
        metrics = (await client.get("/metrics")).text
    by_id = {d["id"]: d for d in page["deployments"]}
    assert by_id["m0"]["state"] == "cooling down"
    assert by_id["m0"]["cooling_down_for"] == 20.0
    assert by_id["m0"]["recent_failures"][0]["reason"] == "answered 500"
    assert by_id["m1"]["state"] == "healthy"
    assert by_id["m1"]["in_flight"] == 0
    assert "sk-m0-secret" not in orjson.dumps(page).decode()
    assert 'turnout_deployment_cooldowns_total{deployment="m0"} 1.0' in metrics
    assert 'turnout_upstream_attempts_total{deployment="m0",outcome="failure"} 1.0' in metrics
    assert 'turnout_upstream_attempts_total{deployment="m1",outcome="success"} 6.0' in metrics


async def test_cancelling_a_request_cancels_its_upstream_call_and_frees_the_deployment():
    fleet = Fleet()
    fleet.fail("m0", hang())
    config = config_from(router_toml({"m": 1}))
    gateway = build_gateway(config, metrics=Metrics(), transport=fleet.transport(),
                            clock=FakeClock())
    try:
        task = asyncio.create_task(gateway.dispatcher.complete("m", dict(CHAT)))
        await fleet.arrived["m0"].wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert fleet.cancelled["m0"] == 1
        assert gateway.dispatcher.status()[0]["in_flight"] == 0
        assert gateway.dispatcher.status()[0]["state"] == "healthy"
    finally:
        await gateway.aclose()


async def test_closing_a_committed_stream_frees_the_deployment():
    fleet = Fleet()
    gateway = build_gateway(config_from(router_toml({"m": 1})), metrics=Metrics(),
                            transport=fleet.transport(), clock=FakeClock())
    try:
        routed = await gateway.dispatcher.open_stream("m", dict(STREAM))
        assert gateway.dispatcher.status()[0]["in_flight"] == 1
        first = await routed.chunks.__anext__()
        assert first.data["choices"][0]["delta"]["role"] == "assistant"
        await routed.chunks.aclose()  # type: ignore[attr-defined]
        assert gateway.dispatcher.status()[0]["in_flight"] == 0
    finally:
        await gateway.aclose()

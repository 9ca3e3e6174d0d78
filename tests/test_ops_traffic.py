"""The traffic windows behind /ui: buckets over time, and status()["traffic"]."""

from __future__ import annotations

from router.traffic import Traffic
from tests.support import app_client, config_from, openai_config

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


class FakeClock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_requests_fill_the_current_bucket_and_age_out():
    clock = FakeClock()
    traffic = Traffic(bucket_seconds=10, window_seconds=60, clock=clock)
    traffic.record_request("g", 200, 0.5, "hit")
    traffic.record_request("g", 502, 1.5, "miss")
    window = traffic.snapshot(["g"], [])["groups"]["g"]
    assert window["requests"][-1] == 2
    assert window["errors"][-1] == 1
    assert window["latency_ms_sum"][-1] == 2000
    assert (window["cache_hits"][-1], window["cache_lookups"][-1]) == (1, 2)

    clock.now += 10
    traffic.record_request("g", 200, 0.1, "bypass")
    window = traffic.snapshot(["g"], [])["groups"]["g"]
    assert window["requests"][-2:] == [2, 1]
    assert window["cache_lookups"][-1] == 0  # bypass consulted no cache

    clock.now += 60  # the whole window later: a reused slot starts from zero
    traffic.record_request("g", 200, 0.1, None)
    window = traffic.snapshot(["g"], [])["groups"]["g"]
    assert sum(window["requests"]) == 1
    assert len(window["requests"]) == 6


def test_attempts_count_failures_per_deployment_and_unknown_names_are_empty():
    traffic = Traffic(bucket_seconds=10, window_seconds=30, clock=FakeClock())
    traffic.record_attempt("d0", True, 0.2)
    traffic.record_attempt("d0", False, 0.4)
    snapshot = traffic.snapshot(["g"], ["d0", "d1"])
    assert snapshot["deployments"]["d0"]["attempts"][-1] == 2
    assert snapshot["deployments"]["d0"]["failures"][-1] == 1
    assert snapshot["deployments"]["d1"]["attempts"] == [0, 0, 0]
    assert snapshot["groups"]["g"]["requests"] == [0, 0, 0]
    assert snapshot["start"] == (1_000_000 // 10 - 2) * 10


async def test_admin_status_shows_traffic_of_groups_and_deployments(upstream):
    config = config_from(openai_config(deployments=2, extra='[server]\nadmin_key = "adm-key"\n'
                                       ))
    async with app_client(config, upstream.transport()) as client:
        for _ in range(3):
            await client.post("/v1/chat/completions", json=CHAT)
        status = (await client.get("/admin/status",
                                   headers={"authorization": "Bearer adm-key"})).json()
    traffic = status["traffic"]
    assert sum(traffic["groups"]["m"]["requests"]) == 3
    attempts = sum(sum(traffic["deployments"][d]["attempts"]) for d in ("d0", "d1"))
    assert attempts == 3
    assert traffic["bucket_seconds"] == 10

"""Per-deployment state with an injected clock: cooldown windows, half-open probes, limits."""

from __future__ import annotations

from router.config import Deployment
from router.deployments import DeploymentState


def state(**fields: object) -> DeploymentState:
    deployment = Deployment.model_validate({"id": "d", "provider": "mock", **fields})
    return DeploymentState(deployment, "g", cooldown=30.0, allowed_fails=2)


def fail(s: DeploymentState, now: float, **kwargs: object) -> float | None:
    probe = s.begin(now)
    s.release()
    return s.failed(now, probe, "answered 500", **kwargs)  # type: ignore[arg-type]


def test_more_than_allowed_fails_within_window_cools():
    s = state()
    assert fail(s, 0.0) is None
    assert fail(s, 1.0) is None
    assert s.health(2.0) == "healthy"
    assert fail(s, 2.0) == 30.0
    assert s.health(2.0) == "cooling"
    assert s.health(31.9) == "cooling"
    assert s.health(32.0) == "half-open"


def test_failures_older_than_the_window_do_not_count():
    s = state()
    fail(s, 0.0)
    fail(s, 10.0)
    assert fail(s, 31.0) is None  # the failure at 0 has left the 30 s window
    assert s.health(31.0) == "healthy"


def test_429_cools_at_once_for_retry_after():
    s = state()
    assert fail(s, 5.0, cool_for=7.0) == 7.0
    assert s.health(11.9) == "cooling"
    assert s.health(12.0) == "half-open"


def test_half_open_lets_exactly_one_probe_through():
    s = state()
    fail(s, 0.0, cool_for=10.0)
    assert s.usable(10.0)
    probe = s.begin(10.0)
    assert probe is True
    assert s.health(10.0) == "probing"
    assert not s.usable(10.0)  # no second request while the probe is out


def test_failed_probe_cools_again_for_the_full_cooldown():
    s = state()
    fail(s, 0.0, cool_for=10.0)
    assert fail(s, 10.0) == 30.0  # a single failure: the probe decides
    assert s.health(39.0) == "cooling"
    assert s.health(40.0) == "half-open"


def test_successful_probe_recovers():
    s = state()
    fail(s, 0.0, cool_for=10.0)
    probe = s.begin(10.0)
    s.release()
    s.succeeded(10.5, probe, 0.5)
    assert s.health(10.5) == "healthy"
    assert s.cooled_until is None
    assert s.latency == 0.5


def test_cancelled_probe_reopens_the_slot():
    s = state()
    fail(s, 0.0, cool_for=10.0)
    probe = s.begin(10.0)
    s.release()
    s.abandoned(probe)
    assert s.health(10.0) == "half-open"


def test_failure_of_an_attempt_started_before_the_cooldown_does_not_extend_it():
    s = state()
    late = s.begin(0.0)
    fail(s, 1.0, cool_for=10.0)
    s.release()
    assert s.failed(2.0, late, "answered 500") is None
    assert s.health(11.0) == "half-open"


def test_rpm_is_a_sliding_minute():
    s = state(rpm=3)
    for t in (0.0, 10.0, 20.0):
        assert not s.saturated(t)
        s.begin(t)
        s.release()
    assert s.saturated(59.0)
    assert not s.saturated(60.5)  # the request at 0 has left the minute


def test_tpm_counts_tokens_of_the_minute():
    s = state(tpm=100)
    s.usage.add_tokens(0.0, 60)
    assert not s.saturated(1.0)
    s.usage.add_tokens(1.0, 40)
    assert s.saturated(2.0)
    assert not s.saturated(60.5)
    assert s.usage.tokens(60.5) == 40


def test_max_concurrency_saturates_while_in_flight():
    s = state(max_concurrency=2)
    s.begin(0.0)
    s.begin(0.0)
    assert s.saturated(0.0)
    s.release()
    assert not s.saturated(0.0)


def test_a_failing_deployment_is_held_to_its_remaining_allowance():
    s = state()  # allowed_fails = 2: three failures cool it
    fail(s, 0.0)
    s.begin(0.1)
    assert not s.saturated(0.1)  # 1 failure + 1 in flight: one more may go
    s.begin(0.1)
    assert s.saturated(0.1)  # 1 failure + 2 in flight = the allowance


def test_a_success_lifts_the_hold_on_a_flaky_deployment():
    s = state()
    fail(s, 0.0)
    s.succeeded(0.2, False, 0.1)
    for _ in range(5):
        s.begin(0.3)
    assert not s.saturated(0.3)


def test_latency_estimate_is_a_moving_average():
    s = state()
    s.succeeded(0.0, False, 1.0)
    s.succeeded(0.0, False, 2.0)
    assert s.latency is not None and 1.0 < s.latency < 2.0


def test_status_shows_cooling_and_recent_failures():
    s = state(rpm=10)
    fail(s, 0.0, cool_for=10.0)
    status = s.status(4.0)
    assert status["state"] == "cooling down"
    assert status["cooling_down_for"] == 6.0
    assert status["recent_failures"] == [{"seconds_ago": 4.0, "reason": "answered 500"}]
    assert status["rpm_used"] == 1 and status["rpm_limit"] == 10
    assert "api_key" not in status


def test_frees_in_tells_when_the_oldest_usage_leaves_the_minute():
    s = state(rpm=2, tpm=100)
    s.usage.add_request(0.0)
    s.usage.add_request(10.0)
    assert s.usage.frees_in(15.0, 2, 0) == 45.0
    assert s.usage.frees_in(15.0, 3, 0) == 0.0
    s.usage.add_tokens(5.0, 80)
    s.usage.add_tokens(12.0, 30)
    assert s.usage.frees_in(15.0, 0, 100) == 50.0  # once the 80 tokens at 5 s are gone


def test_usage_window_stays_bounded_without_limits():
    # No rpm/tpm: nothing on the request path asks for usage, so adding must prune (a soak
    # showed RSS climbing about 1 MiB a minute before it did).
    from router.deployments import UsageWindow

    window = UsageWindow()
    for second in range(600):
        for _ in range(10):
            window.add_request(float(second))
            window.add_tokens(float(second), 7)
    assert len(window) <= 2 * 10 * 61

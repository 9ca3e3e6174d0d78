"""The soak, shortened for CI: mixed traffic with faults, no failure, no growth."""

from __future__ import annotations

import asyncio

import pytest

from bench.soak import report, run, soak_servers

pytestmark = pytest.mark.e2e


@pytest.mark.timeout(120)
def test_short_soak_has_no_failures_and_no_resource_growth(tmp_path):
    with soak_servers(tmp_path) as (server, flaky):
        tally, samples = asyncio.run(run(server, flaky, duration=24, interval=6))
        assert server.alive()
    print(report(tally, samples, 24))
    assert tally.failures == 0, tally.failure_examples
    assert tally.sent > 200
    assert tally.faults > 20
    # The first sample is the idle daemon; the second has warmed its pools and caches.
    warm, last = samples[1], samples[-1]
    assert last.fds <= warm.fds + 4
    assert last.tasks <= warm.tasks + 4
    assert last.rss_kib - warm.rss_kib < 16 * 1024

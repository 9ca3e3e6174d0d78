"""Fixtures shared by the whole suite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import FakeUpstreamProcess, RecordingUpstream, fake_upstream_process


@pytest.fixture
def upstream() -> RecordingUpstream:
    return RecordingUpstream()


@pytest.fixture(scope="module")
def fake_upstream() -> Iterator[FakeUpstreamProcess]:
    with fake_upstream_process() as fake:
        yield fake


@pytest.fixture
def fresh_upstream(fake_upstream: FakeUpstreamProcess) -> FakeUpstreamProcess:
    fake_upstream.reset()
    return fake_upstream

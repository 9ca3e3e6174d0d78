"""Fixtures shared by the whole suite."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
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


@pytest.fixture(autouse=True)
def close_sdk_clients(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Closes every sync `openai.OpenAI` client a test made, when the test ends.

    Tests make many short-lived SDK clients; each holds a connection pool whose sockets
    would otherwise be closed by the garbage collector during some later test, as a
    ResourceWarning, which this suite turns into an error in whatever test is running.
    """
    made: list[openai.OpenAI] = []
    original = openai.OpenAI.__init__

    def tracked_init(self: openai.OpenAI, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(openai.OpenAI, "__init__", tracked_init)
    yield
    for client in made:
        client.close()

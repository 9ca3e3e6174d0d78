"""Failover across providers: a failing Anthropic deployment, a working OpenAI one.

Written against the contract (retries and failover within a group, num_retries >= 1), for
the branch where the dispatcher retries; it needs tests/fakes/anthropic.py and
tests/fakes/control.py from the `providers` branch.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.fakes.control import FakeVendor, fake_vendor
from tests.support import FakeUpstreamProcess, turnout_process

pytestmark = pytest.mark.e2e

KEY = "sk-ant-failover"
USER = {"role": "user", "content": "hi"}


def config(anthropic_url: str, anthropic_key: str, openai_url: str) -> str:
    # The Anthropic deployment weighs 1000 times more, so it is nearly always tried first.
    return f"""
[router]
num_retries = 2
retry_backoff = "0s"
allowed_fails = 100
cooldown = "1s"

[[models]]
name = "smart"

  [[models.deployments]]
  id = "claude"
  provider = "anthropic"
  base_url = "{anthropic_url}"
  api_key = "{anthropic_key}"
  model = "claude-x"
  weight = 1000

  [[models.deployments]]
  id = "oai"
  provider = "openai"
  base_url = "{openai_url}"
  api_key = "sk-openai"
  model = "gpt-x"
  weight = 1
"""


@pytest.fixture(scope="module")
def anthropic() -> Iterator[FakeVendor]:
    with fake_vendor("anthropic", KEY) as fake:
        yield fake


@pytest.fixture(scope="module")
def turnout(anthropic: FakeVendor, fake_upstream: FakeUpstreamProcess,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    text = config(anthropic.url, KEY, fake_upstream.url)
    with turnout_process(text, Path(tmp_path_factory.mktemp("failover"))) as url:
        yield url


@pytest.fixture
def sdk(turnout: str, anthropic: FakeVendor, fake_upstream: FakeUpstreamProcess
        ) -> openai.OpenAI:
    anthropic.reset()
    fake_upstream.reset()
    return openai.OpenAI(base_url=f"{turnout}/v1", api_key="unused", max_retries=0)


def test_streams_fail_over_before_their_first_content(sdk: openai.OpenAI,
                                                      anthropic: FakeVendor) -> None:
    anthropic.script(*[{"break_after": 0}] * 10)
    for _ in range(3):
        raw = sdk.chat.completions.with_raw_response.create(model="smart", messages=[USER],
                                                           stream=True)
        assert raw.headers["x-turnout-deployment"] == "oai"
        chunks = list(raw.parse())
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert anthropic.calls()


@pytest.mark.parametrize("step", [
    pytest.param({"status": 529, "message": "Overloaded"}, id="overloaded"),
    pytest.param({"status": 500}, id="server-error"),
    pytest.param({"body": "{not json"}, id="malformed-body"),
    # Last: a 429 cools the deployment for its Retry-After, and this process is shared.
    pytest.param({"status": 429, "retry_after": 1}, id="rate-limited"),
])
def test_every_request_succeeds_from_openai_when_claude_fails(
        sdk: openai.OpenAI, anthropic: FakeVendor, step: dict[str, Any]) -> None:
    anthropic.script(*[step] * 10)
    for _ in range(5):
        raw = sdk.chat.completions.with_raw_response.create(model="smart", messages=[USER])
        completion = raw.parse()
        assert completion.choices[0].message.content
        assert raw.headers["x-turnout-deployment"] == "oai"
    assert anthropic.calls(), "the Anthropic deployment was never tried"


def test_a_wrong_anthropic_key_is_hidden_and_openai_answers(
        anthropic: FakeVendor, fake_upstream: FakeUpstreamProcess, tmp_path: Path) -> None:
    text = config(anthropic.url, "sk-ant-wrong", fake_upstream.url)
    with turnout_process(text, tmp_path) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        for _ in range(3):
            raw = client.chat.completions.with_raw_response.create(model="smart",
                                                                   messages=[USER])
            assert raw.headers["x-turnout-deployment"] == "oai"
            assert "x-api-key" not in raw.http_response.text

"""End to end: the official `openai` SDK against a real `turnout serve` and a real upstream."""

from __future__ import annotations

import time

import openai
import pytest

from tests.support import ROOT, turnout_process

pytestmark = pytest.mark.e2e


def upstream_config(url: str) -> str:
    return f"""
[server]
api_keys = ["client-key-1"]
[[models]]
name = "chat"
  [[models.deployments]]
  id = "fake"
  provider = "openai"
  base_url = "{url}"
  api_key = "sk-fake-upstream-key"
  model = "fake-model"
[[models]]
name = "embed"
  [[models.deployments]]
  provider = "openai"
  base_url = "{url}"
  api_key = "sk-fake-upstream-key"
  model = "fake-embedding"
"""


@pytest.fixture(scope="module")
def turnout(fake_upstream, tmp_path_factory):
    with turnout_process(upstream_config(fake_upstream.url), tmp_path_factory.mktemp("t")) as url:
        yield url


@pytest.fixture
def sdk(turnout):
    return openai.OpenAI(base_url=f"{turnout}/v1", api_key="client-key-1", max_retries=0)


def test_chat_completion_through_turnout(sdk, fresh_upstream):
    answer = sdk.chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "ping"}],
        extra_body={"caching": False})
    assert answer.choices[0].message.content == "fake answer to: ping"
    assert answer.usage is not None and answer.usage.total_tokens == 7
    [call] = fresh_upstream.calls()
    assert call["body"]["model"] == "fake-model"
    assert "caching" not in call["body"]
    assert call["headers"]["authorization"] == "Bearer sk-fake-upstream-key"


def test_stream_chunks_arrive_as_they_are_sent(sdk, fresh_upstream):
    fresh_upstream.script({"chunks": 4, "chunk_delay": 0.3})
    arrivals = []
    pieces = []
    stream = sdk.chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "a b c d"}], stream=True)
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.monotonic())
            pieces.append(chunk.choices[0].delta.content)
    assert "".join(pieces) == "fake answer to: a"
    assert len(arrivals) == 4
    # Relayed as they come: the first content reached us long before the last was sent.
    assert arrivals[-1] - arrivals[0] > 0.6


def test_embeddings_through_turnout(sdk, fresh_upstream):
    result = sdk.embeddings.create(model="embed", input=["a", "b"])
    assert [d.index for d in result.data] == [0, 1]
    assert fresh_upstream.calls()[0]["body"]["model"] == "fake-embedding"


def test_models_through_sdk(sdk):
    assert sorted(m.id for m in sdk.models.list()) == ["chat", "embed"]


def test_errors_surface_as_sdk_exception_types(sdk, turnout, fresh_upstream):
    with pytest.raises(openai.NotFoundError) as not_found:
        sdk.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    assert not_found.value.code == "model_not_found"

    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{turnout}/v1", api_key="wrong", max_retries=0).models.list()

    with pytest.raises(openai.BadRequestError) as forbidden:
        sdk.chat.completions.create(model="chat", messages=[{"role": "user", "content": "x"}],
                                    extra_body={"api_base": "http://169.254.169.254"})
    assert forbidden.value.code == "forbidden_field"

    fresh_upstream.script({"status": 400, "error": {
        "message": "This model's maximum context length is 10 tokens", "type":
        "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}})
    with pytest.raises(openai.BadRequestError) as too_long:
        sdk.chat.completions.create(model="chat", messages=[{"role": "user", "content": "x"}])
    assert too_long.value.code == "context_length_exceeded"

    fresh_upstream.script({"status": 500}, {"status": 500}, {"status": 500})  # 1 + 2 retries
    with pytest.raises(openai.InternalServerError) as failed:
        sdk.chat.completions.create(model="chat", messages=[{"role": "user", "content": "x"}])
    assert failed.value.status_code == 502


def test_repo_router_toml_answers_with_mock_groups(tmp_path):
    config = (ROOT / "router.toml").read_text()
    with turnout_process(config, tmp_path) as url:
        sdk = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        answer = sdk.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}])
        streamed = "".join(
            chunk.choices[0].delta.content or ""
            for chunk in sdk.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}],
                stream=True)
            if chunk.choices)
        vectors = sdk.embeddings.create(model="text-embedding-3-small", input="x")
    assert answer.choices[0].message.content.endswith(": hello")
    assert streamed.endswith(": hello")
    assert len(vectors.data[0].embedding) == 8


def test_sdk_does_not_retry_what_turnout_already_retried(fresh_upstream, tmp_path):
    config = "[router]\nallowed_fails = 100\nretry_backoff = 0\n" + upstream_config(
        fresh_upstream.url)
    fresh_upstream.script(*[{"status": 500}] * 9)
    with turnout_process(config, tmp_path) as url:
        sdk = openai.OpenAI(base_url=f"{url}/v1", api_key="client-key-1", max_retries=2)
        with pytest.raises(openai.InternalServerError):
            sdk.chat.completions.create(model="chat",
                                        messages=[{"role": "user", "content": "x"}])
    assert len(fresh_upstream.calls()) == 3  # Turnout's 1 + 2 retries, not 3 x 3

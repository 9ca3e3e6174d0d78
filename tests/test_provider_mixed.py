"""Every provider answers the openai SDK in the same form, streaming or not, with tools."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from tests.fakes.control import fake_vendor
from tests.support import FakeUpstreamProcess, turnout_process

pytestmark = pytest.mark.e2e

USER = {"role": "user", "content": "hi"}
TOOL = {"type": "function", "function": {"name": "weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}}}}
KEYS = {"anthropic": "sk-ant-mixed", "gemini": "AIza-mixed", "azure": "azure-mixed"}
PROVIDERS = ["openai", "azure", "anthropic", "gemini"]


def deployment(provider: str, url: str) -> str:
    key = KEYS.get(provider, "sk-openai-mixed")
    model = {"openai": "gpt-x", "azure": "gpt4o-prod", "anthropic": "claude-x",
             "gemini": "gemini-x"}[provider]
    return (f'[[models.deployments]]\nid = "{provider}"\nprovider = "{provider}"\n'
            f'base_url = "{url}"\napi_key = "{key}"\nmodel = "{model}"\n')


@pytest.fixture(scope="module")
def vendors(fake_upstream: FakeUpstreamProcess) -> Iterator[dict[str, str]]:
    with (fake_vendor("anthropic", KEYS["anthropic"]) as anthropic,
          fake_vendor("gemini", KEYS["gemini"]) as gemini,
          fake_vendor("azure", KEYS["azure"], "--deployment", "gpt4o-prod") as azure):
        yield {"openai": fake_upstream.url, "azure": azure.url, "anthropic": anthropic.url,
               "gemini": gemini.url}


@pytest.fixture(scope="module")
def turnout(vendors: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    config = ""
    for provider in PROVIDERS:
        config += f'[[models]]\nname = "only-{provider}"\n'
        config += deployment(provider, vendors[provider]).replace(
            f'id = "{provider}"', f'id = "only-{provider}"')
    config += '[[models]]\nname = "mixed"\n'
    config += "".join(deployment(p, vendors[p]) for p in PROVIDERS)
    with turnout_process(config, Path(tmp_path_factory.mktemp("mixed"))) as url:
        yield url


def form(value: Any, like: Any) -> Any:
    """The type structure of `value`, on the keys `like` has (what OpenAI itself sends)."""
    if isinstance(like, dict):
        assert isinstance(value, dict), value
        missing = set(like) - set(value)
        assert not missing, f"missing {missing} in {value}"
        return {k: form(value[k], like[k]) for k in like}
    if isinstance(like, list) and like:
        assert isinstance(value, list) and value, value
        return [form(value[0], like[0])]
    if like is None or value is None:
        return "null-or-value"
    return type(value).__name__


def chat(turnout: str, group: str, **extra: Any) -> httpx.Response:
    response = httpx.post(f"{turnout}/v1/chat/completions", timeout=10,
                          json={"model": group, "messages": [USER], **extra})
    assert response.status_code == 200, response.text
    return response


def sse_events(response: httpx.Response) -> list[str]:
    return [line[6:] for line in response.text.split("\n\n") if line.startswith("data: ")]


def test_every_provider_answers_in_openai_form(turnout: str) -> None:
    reference = chat(turnout, "only-openai").json()
    for provider in PROVIDERS[1:]:
        answer = chat(turnout, f"only-{provider}").json()
        ChatCompletion.model_validate(answer)
        assert form(answer, reference) == form(reference, reference), provider
        assert answer["choices"][0]["finish_reason"] == "stop"
        assert answer["object"] == "chat.completion"


def test_every_provider_streams_in_openai_form(turnout: str) -> None:
    reference = [orjson.loads(e) for e in
                 sse_events(chat(turnout, "only-openai", stream=True))[:-1]]
    for provider in PROVIDERS[1:]:
        events = sse_events(chat(turnout, f"only-{provider}", stream=True,
                                 stream_options={"include_usage": True}))
        assert events[-1] == "[DONE]", provider
        chunks = [orjson.loads(e) for e in events[:-1]]
        for item in chunks:
            ChatCompletionChunk.model_validate(item)
        with_choices = [c for c in chunks if c["choices"]]
        assert form(with_choices[0], reference[0]) == form(reference[0], reference[0])
        assert with_choices[0]["choices"][0]["delta"]["role"] == "assistant"
        finishes = [c["choices"][0]["finish_reason"] for c in with_choices]
        assert finishes[-1] == "stop" and finishes.count("stop") == 1, provider
        assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0


def test_tool_calls_have_the_same_form_everywhere(turnout: str, vendors: dict[str, str]) -> None:
    scripts = {"azure": {"tool_call": {"name": "weather", "arguments": '{"city":"Oslo"}'}},
               "anthropic": {"tool_use": {"name": "weather", "input": {"city": "Oslo"}}},
               "gemini": {"function_call": {"name": "weather", "args": {"city": "Oslo"}}}}
    forms = {}
    for provider, step in scripts.items():
        httpx.post(f"{vendors[provider]}/_script", json={"steps": [step, step]})
        answer = chat(turnout, f"only-{provider}", tools=[TOOL]).json()
        choice = ChatCompletion.model_validate(answer).choices[0]
        assert choice.finish_reason == "tool_calls"
        call = choice.message.tool_calls[0]
        assert orjson.loads(call.function.arguments) == {"city": "Oslo"}
        forms[provider] = form(answer["choices"][0]["message"]["tool_calls"],
                               answer["choices"][0]["message"]["tool_calls"])
        events = sse_events(chat(turnout, f"only-{provider}", tools=[TOOL], stream=True))
        deltas = [orjson.loads(e)["choices"][0]["delta"] for e in events[:-1]
                  if orjson.loads(e)["choices"]]
        streamed = [tc for d in deltas for tc in d.get("tool_calls") or []]
        assert streamed[0]["id"] and streamed[0]["function"]["name"] == "weather", provider
        assert orjson.loads("".join(tc["function"].get("arguments", "") for tc in streamed)) \
            == {"city": "Oslo"}
    assert forms["anthropic"] == forms["azure"] == forms["gemini"]


def test_a_mixed_group_answers_from_every_provider(turnout: str) -> None:
    client = openai.OpenAI(base_url=f"{turnout}/v1", api_key="unused", max_retries=0)
    seen: set[str] = set()
    for _ in range(80):
        raw = client.chat.completions.with_raw_response.create(model="mixed", messages=[USER])
        completion = raw.parse()
        assert completion.choices[0].message.content
        assert completion.choices[0].finish_reason == "stop"
        seen.add(raw.headers["x-turnout-deployment"])
        if seen == set(PROVIDERS):
            break
    assert seen == set(PROVIDERS)

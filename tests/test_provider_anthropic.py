"""The `anthropic` provider: translation both ways (tables), and end to end through the SDK."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from router.config import Deployment
from router.errors import (
    ContextLengthExceeded,
    UpstreamAuthFailed,
    UpstreamFailure,
    UpstreamRateLimited,
    UpstreamRejected,
)
from router.providers.anthropic import AnthropicProvider, classify_anthropic_error
from router.providers.anthropic_wire import (
    DEFAULT_MAX_TOKENS,
    StreamTranslator,
    to_chat_completion,
    to_messages_request,
)
from router.providers.translate import MalformedAnswer, StreamError, TranslationError
from tests.fakes.control import FakeVendor, fake_vendor
from tests.support import turnout_process

KEY = "sk-ant-fake-key-123"
USER = {"role": "user", "content": "hi"}


def request_of(**body: Any) -> dict[str, Any]:
    return to_messages_request({"messages": [USER], **body}, "claude-x")


def text(value: str) -> dict[str, Any]:
    return {"type": "text", "text": value}


TOOL = {"type": "function", "function": {"name": "weather", "description": "Weather in a city",
                                         "parameters": {"type": "object", "properties": {
                                             "city": {"type": "string"}}}}}
CALL = {"id": "toolu_1", "type": "function",
        "function": {"name": "weather", "arguments": '{"city": "Oslo"}'}}


@pytest.mark.parametrize(("body", "expected"), [
    pytest.param({}, {"model": "claude-x", "max_tokens": DEFAULT_MAX_TOKENS,
                      "messages": [{"role": "user", "content": [text("hi")]}]},
                 id="plain-with-default-max-tokens"),
    pytest.param({"messages": [{"role": "system", "content": "Be brief"},
                               {"role": "developer", "content": [text("Be kind")]}, USER]},
                 {"system": "Be brief\n\nBe kind"}, id="system-and-developer-lifted"),
    pytest.param({"messages": [USER, {"role": "user", "content": [text("again")]}]},
                 {"messages": [{"role": "user", "content": [text("hi"), text("again")]}]},
                 id="consecutive-user-turns-merged"),
    pytest.param({"max_tokens": 50, "max_completion_tokens": 70, "stop": "END",
                  "temperature": 0.5, "top_p": 0.9, "top_k": 5, "user": "u-1"},
                 {"max_tokens": 70, "stop_sequences": ["END"], "temperature": 0.5,
                  "top_p": 0.9, "top_k": 5, "metadata": {"user_id": "u-1"}},
                 id="sampling-parameters"),
    pytest.param({"n": 1, "presence_penalty": 0, "logprobs": False, "seed": 7, "store": False,
                  "prompt_cache_key": "k", "safety_identifier": "s", "metadata": {"a": "b"},
                  "response_format": {"type": "text"}, "stream_options": None},
                 {"model": "claude-x", "max_tokens": DEFAULT_MAX_TOKENS,
                  "messages": [{"role": "user", "content": [text("hi")]}]},
                 id="defaults-and-harmless-parameters-dropped"),
    pytest.param({"messages": [{"role": "user", "content": [
        text("look"), {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}},
        {"type": "image_url", "image_url": {"url": "https://x.test/a.jpg"}}]}]},
        {"messages": [{"role": "user", "content": [
            text("look"),
            {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": "iVBO"}},
            {"type": "image", "source": {"type": "url", "url": "https://x.test/a.jpg"}}]}]},
        id="image-parts"),
    pytest.param({"tools": [TOOL], "tool_choice": "required"},
                 {"tools": [{"name": "weather", "description": "Weather in a city",
                             "input_schema": TOOL["function"]["parameters"]}],
                  "tool_choice": {"type": "any"}}, id="tools-required"),
    pytest.param({"tools": [TOOL], "tool_choice": {"type": "function",
                                                   "function": {"name": "weather"}},
                  "parallel_tool_calls": False},
                 {"tool_choice": {"type": "tool", "name": "weather",
                                  "disable_parallel_tool_use": True}},
                 id="named-tool-without-parallel-calls"),
    pytest.param({"tools": [TOOL], "tool_choice": "none"}, {"tool_choice": {"type": "none"}},
                 id="tool-choice-none"),
    pytest.param({"messages": [
        USER, {"role": "assistant", "content": None, "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "12C"},
        {"role": "user", "content": "thanks"}]},
        {"messages": [
            {"role": "user", "content": [text("hi")]},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1",
                                               "name": "weather", "input": {"city": "Oslo"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                                          "content": "12C"}, text("thanks")]}]},
        id="tool-round-trip"),
])
def test_openai_request_becomes_messages_request(body: dict[str, Any],
                                                 expected: dict[str, Any]) -> None:
    translated = request_of(**body)
    assert {k: translated.get(k) for k in expected} == expected


@pytest.mark.parametrize(("body", "param"), [
    pytest.param({"n": 2}, "n", id="n"),
    pytest.param({"presence_penalty": 0.5}, "presence_penalty", id="presence-penalty"),
    pytest.param({"frequency_penalty": 1}, "frequency_penalty", id="frequency-penalty"),
    pytest.param({"logprobs": True}, "logprobs", id="logprobs"),
    pytest.param({"logit_bias": {"50256": -100}}, "logit_bias", id="logit-bias"),
    pytest.param({"response_format": {"type": "json_object"}}, "response_format",
                 id="json-mode"),
    pytest.param({"temperature": 1.5}, "temperature", id="temperature-above-1"),
    pytest.param({"functions": [{"name": "f"}]}, "functions", id="legacy-functions"),
    pytest.param({"some_new_parameter": 1}, "some_new_parameter", id="unknown-parameter"),
    pytest.param({"reasoning_effort": "high"}, "reasoning_effort", id="reasoning-effort"),
    pytest.param({"messages": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": "x", "format": "wav"}}]}]},
        "messages[0].content[0]", id="audio-part"),
    pytest.param({"messages": [{"role": "function", "name": "f", "content": "x"}]},
                 "messages[0].role", id="function-role"),
    pytest.param({"messages": [USER, {"role": "assistant", "tool_calls": [
        {**CALL, "function": {"name": "weather", "arguments": "{not json"}}]}]},
        "messages[1].tool_calls[0].function.arguments", id="arguments-not-json"),
])
def test_parameters_anthropic_cannot_honour_are_refused(body: dict[str, Any], param: str) -> None:
    with pytest.raises(TranslationError) as caught:
        request_of(**body)
    assert caught.value.param == param
    assert "anthropic" in caught.value.message or "JSON" in caught.value.message


def message(content: list[dict[str, Any]], stop_reason: str = "end_turn",
            **usage: int) -> dict[str, Any]:
    return {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x-2024",
            "content": content, "stop_reason": stop_reason, "stop_sequence": None,
            "usage": {"input_tokens": 10, "output_tokens": 3, **usage}}


TOOL_USE = {"type": "tool_use", "id": "toolu_9", "name": "weather", "input": {"city": "Oslo"}}


@pytest.mark.parametrize(("answer", "content", "finish", "calls"), [
    pytest.param(message([text("Hel"), text("lo")]), "Hello", "stop", None, id="text"),
    pytest.param(message([text("Hel")], "max_tokens"), "Hel", "length", None, id="max-tokens"),
    pytest.param(message([text("a")], "stop_sequence"), "a", "stop", None, id="stop-sequence"),
    pytest.param(message([text("no")], "refusal"), "no", "content_filter", None, id="refusal"),
    pytest.param(message([TOOL_USE], "tool_use"), None, "tool_calls",
                 [("toolu_9", "weather", {"city": "Oslo"})], id="tool-use"),
    pytest.param(message([text("Let me look."), TOOL_USE], "tool_use"), "Let me look.",
                 "tool_calls", [("toolu_9", "weather", {"city": "Oslo"})], id="text-and-tool"),
])
def test_messages_answer_becomes_chat_completion(answer: dict[str, Any], content: str | None,
                                                 finish: str, calls: list[Any] | None) -> None:
    completion = ChatCompletion.model_validate(to_chat_completion(answer, "claude-x"))
    choice = completion.choices[0]
    assert choice.message.content == content
    assert choice.finish_reason == finish
    got = [(c.id, c.function.name, orjson.loads(c.function.arguments))
           for c in choice.message.tool_calls or []] or None
    assert got == calls
    assert completion.model == "claude-x-2024"
    assert completion.usage is not None and completion.usage.total_tokens == 13


def test_usage_counts_prompt_cache_tokens_as_prompt() -> None:
    answer = message([text("x")], cache_read_input_tokens=100, cache_creation_input_tokens=5)
    usage = to_chat_completion(answer, "m")["usage"]
    assert usage["prompt_tokens"] == 115
    assert usage["prompt_tokens_details"] == {"cached_tokens": 100}
    assert usage["total_tokens"] == 118


@pytest.mark.parametrize("answer", [
    pytest.param({"type": "message"}, id="no-content"),
    pytest.param({"content": "text"}, id="content-not-a-list"),
    pytest.param({"content": ["x"]}, id="block-not-an-object"),
    pytest.param([], id="not-an-object"),
])
def test_malformed_answer_is_detected(answer: Any) -> None:
    with pytest.raises(MalformedAnswer):
        to_chat_completion(answer, "m")


def events_for_text_and_tool() -> list[tuple[str, dict[str, Any]]]:
    start = message([], stop_reason=None)
    return [
        ("message_start", {"type": "message_start", "message": start}),
        ("ping", {"type": "ping"}),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": text("")}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "text_delta", "text": "Checking"}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("content_block_start", {"type": "content_block_start", "index": 1,
                                 "content_block": {**TOOL_USE, "input": {}}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 1,
                                 "delta": {"type": "input_json_delta", "partial_json": '{"ci'}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 1,
                                 "delta": {"type": "input_json_delta",
                                           "partial_json": 'ty": "Oslo"}'}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 1}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use"},
                           "usage": {"output_tokens": 21}}),
        ("message_stop", {"type": "message_stop"}),
    ]


def test_stream_events_become_chunks_with_finish_and_usage_last() -> None:
    translator = StreamTranslator("claude-x", include_usage=True)
    chunks = []
    for name, data in events_for_text_and_tool():
        assert not translator.finished
        chunks += translator.feed(name, data)
    assert translator.finished
    parsed = [ChatCompletionChunk.model_validate(c) for c in chunks]
    assert parsed[0].choices[0].delta.role == "assistant"
    assert "".join(p.choices[0].delta.content or "" for p in parsed if p.choices) == "Checking"
    calls = [tc for p in parsed if p.choices for tc in p.choices[0].delta.tool_calls or []]
    assert calls[0].id == "toolu_9" and calls[0].function.name == "weather"
    assert orjson.loads("".join(c.function.arguments or "" for c in calls)) == {"city": "Oslo"}
    assert {c.index for c in calls} == {0}
    assert parsed[-2].choices[0].finish_reason == "tool_calls"
    assert parsed[-1].choices == []
    assert parsed[-1].usage is not None
    assert (parsed[-1].usage.prompt_tokens, parsed[-1].usage.completion_tokens) == (10, 21)


def test_finish_reason_waits_for_message_stop() -> None:
    translator = StreamTranslator("claude-x", include_usage=False)
    emitted = [c for name, data in events_for_text_and_tool()[:-1]
               for c in translator.feed(name, data)]
    assert not any(ch["finish_reason"] for c in emitted for ch in c["choices"])
    assert not translator.finished


def test_stream_error_event_raises() -> None:
    translator = StreamTranslator("m", include_usage=False)
    translator.feed("message_start", {"type": "message_start", "message": message([])})
    with pytest.raises(StreamError) as caught:
        translator.feed("error", {"type": "error", "error": {"type": "overloaded_error"}})
    assert caught.value.kind == "overloaded_error"


def test_content_before_message_start_is_malformed() -> None:
    with pytest.raises(MalformedAnswer):
        StreamTranslator("m", include_usage=False).feed(
            "content_block_delta", {"type": "content_block_delta", "index": 0,
                                    "delta": {"type": "text_delta", "text": "x"}})


def anthropic_error(kind: str, text: str) -> bytes:
    return orjson.dumps({"type": "error", "error": {"type": kind, "message": text}})


@pytest.mark.parametrize(("status", "raw", "kind", "code"), [
    pytest.param(401, anthropic_error("authentication_error", "invalid x-api-key"),
                 UpstreamAuthFailed, None, id="401"),
    pytest.param(403, anthropic_error("permission_error", "no"), UpstreamAuthFailed, None,
                 id="403"),
    pytest.param(429, anthropic_error("rate_limit_error", "slow"), UpstreamRateLimited, None,
                 id="429"),
    pytest.param(529, anthropic_error("overloaded_error", "Overloaded"), UpstreamFailure, None,
                 id="529-overloaded"),
    pytest.param(500, b"<html>", UpstreamFailure, None, id="500"),
    pytest.param(400, anthropic_error("invalid_request_error",
                                      "prompt is too long: 210000 tokens > 200000 maximum"),
                 ContextLengthExceeded, "context_length_exceeded", id="prompt-too-long"),
    pytest.param(400, anthropic_error("invalid_request_error", "Your credit balance is too "
                                      "low to access the Anthropic API."),
                 UpstreamFailure, None, id="out-of-credit"),
    pytest.param(400, anthropic_error("invalid_request_error", "messages: bad"),
                 UpstreamRejected, "invalid_request_error", id="client-error"),
    pytest.param(404, anthropic_error("not_found_error", "model: claude-nope"),
                 UpstreamRejected, "not_found_error", id="unknown-model"),
    pytest.param(413, anthropic_error("request_too_large", "too big"), UpstreamRejected,
                 "request_too_large", id="too-large"),
])
def test_anthropic_errors_map_to_the_contract(status: int, raw: bytes, kind: type,
                                              code: str | None) -> None:
    exc = classify_anthropic_error("d", status, raw, {"retry-after": "7"}, KEY)
    assert type(exc) is kind
    if isinstance(exc, UpstreamRejected):
        assert exc.status == status
        assert exc.upstream_body["error"]["code"] == code
        assert set(exc.upstream_body["error"]) == {"message", "type", "param", "code"}
    if isinstance(exc, UpstreamRateLimited):
        assert exc.retry_after == 7


def test_relayed_error_message_never_holds_the_key() -> None:
    raw = anthropic_error("invalid_request_error", f"bad header x-api-key: {KEY}")
    exc = classify_anthropic_error("d", 400, raw, {}, KEY)
    assert isinstance(exc, UpstreamRejected)
    assert KEY not in orjson.dumps(exc.upstream_body).decode()


def deployment(**extra: Any) -> Deployment:
    return Deployment(id="claude-a", provider="anthropic", base_url="https://api.anthropic.test",
                      api_key=KEY, model="claude-x", **extra)


async def test_request_goes_to_messages_endpoint_with_key_and_version() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=message([text("hello")]))

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        provider = AnthropicProvider(deployment(headers={"X-Team": "a"}), client)
        answer = await provider.complete({"model": "group", "messages": [USER]})
    assert str(seen[0].url) == "https://api.anthropic.test/v1/messages"
    assert seen[0].headers["x-api-key"] == KEY
    assert seen[0].headers["anthropic-version"] == "2023-06-01"
    assert seen[0].headers["x-team"] == "a"
    assert "authorization" not in seen[0].headers
    assert orjson.loads(seen[0].content)["model"] == "claude-x"
    assert answer.data["choices"][0]["message"]["content"] == "hello"
    assert orjson.loads(answer.encode()) == answer.data


@pytest.mark.parametrize("body", [
    pytest.param(b"not json", id="not-json"),
    pytest.param(b'{"type": "message"}', id="no-content"),
])
async def test_malformed_200_is_a_failure(body: bytes) -> None:
    transport = httpx.MockTransport(lambda r: httpx.Response(200, content=body))
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(UpstreamFailure):
            await AnthropicProvider(deployment(), client).complete({"messages": [USER]})


async def test_stream_cut_before_message_stop_is_a_failure() -> None:
    events = b"".join(
        f"event: {name}\ndata: ".encode() + orjson.dumps(data) + b"\n\n"
        for name, data in events_for_text_and_tool()[:-1])
    transport = httpx.MockTransport(lambda r: httpx.Response(
        200, content=events, headers={"content-type": "text/event-stream"}))
    received = []
    async with httpx.AsyncClient(transport=transport) as client:
        provider = AnthropicProvider(deployment(), client)
        with pytest.raises(UpstreamFailure, match="message_stop"):
            async for item in provider.stream({"messages": [USER], "stream": True}):
                received.append(item)
    assert received and not any(c["finish_reason"] for r in received
                                for c in r.data["choices"])


async def test_embeddings_are_refused_naming_the_provider() -> None:
    async with httpx.AsyncClient() as client:
        with pytest.raises(UpstreamRejected) as caught:
            await AnthropicProvider(deployment(), client).embed({"input": "x"})
    assert caught.value.status == 400
    assert "anthropic" in caught.value.message


NO_RETRIES = "[router]\nnum_retries = 0\nallowed_fails = 1000\n"


# End to end: the openai SDK -> `turnout serve` -> the fake Anthropic API.

def group(name: str, url: str, key: str) -> str:
    return (f'[[models]]\nname = "{name}"\n[[models.deployments]]\nid = "{name}-dep"\n'
            f'provider = "anthropic"\nbase_url = "{url}"\napi_key = "{key}"\n'
            'model = "claude-fake-1"\n')


@pytest.fixture(scope="module")
def vendor() -> Iterator[FakeVendor]:
    with fake_vendor("anthropic", KEY) as fake:
        yield fake


@pytest.fixture(scope="module")
def turnout(vendor: FakeVendor, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    # One attempt per request and no cooldowns: these tests are about translation, so a
    # scripted vendor failure must reach the client (retries are tested in test_router_*).
    config = NO_RETRIES + group("claude", vendor.url, KEY)
    config += group("claude-badkey", vendor.url, "sk-wrong")
    with turnout_process(config, Path(tmp_path_factory.mktemp("anthropic"))) as url:
        yield url


@pytest.fixture
def sdk(turnout: str, vendor: FakeVendor) -> openai.OpenAI:
    vendor.reset()
    return openai.OpenAI(base_url=f"{turnout}/v1", api_key="unused", max_retries=0)



@pytest.mark.e2e
def test_plain_chat(sdk: openai.OpenAI, vendor: FakeVendor) -> None:
    completion = sdk.chat.completions.create(model="claude", messages=[USER])
    assert completion.choices[0].message.content == "Claude heard: hi"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.object == "chat.completion"
    assert completion.usage is not None and completion.usage.completion_tokens == 3
    sent = vendor.last_body()
    assert sent["max_tokens"] == DEFAULT_MAX_TOKENS and sent["model"] == "claude-fake-1"


@pytest.mark.e2e
def test_system_prompt_and_multi_turn(sdk: openai.OpenAI, vendor: FakeVendor) -> None:
    completion = sdk.chat.completions.create(model="claude", messages=[
        {"role": "system", "content": "Be brief"},
        {"role": "user", "content": "one"},
        {"role": "user", "content": "two"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "three"},
    ])
    assert completion.choices[0].message.content == "[Be brief] Claude heard: three"
    sent = vendor.last_body()
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "user"]
    assert sent["system"] == "Be brief"


@pytest.mark.e2e
def test_image_part_reaches_claude(sdk: openai.OpenAI) -> None:
    completion = sdk.chat.completions.create(model="claude", messages=[{"role": "user", "content": [
        {"type": "text", "text": "what is this"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}])
    assert completion.choices[0].message.content == "Claude heard: what is this [1 image]"


@pytest.mark.e2e
def test_tool_calling_round_trip(sdk: openai.OpenAI, vendor: FakeVendor) -> None:
    vendor.script({"tool_use": {"id": "toolu_abc", "name": "weather",
                                "input": {"city": "Oslo"}}})
    first = sdk.chat.completions.create(model="claude", messages=[USER], tools=[TOOL])
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert (call.id, call.function.name) == ("toolu_abc", "weather")
    assert orjson.loads(call.function.arguments) == {"city": "Oslo"}
    second = sdk.chat.completions.create(model="claude", tools=[TOOL], messages=[
        USER, choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "12C and rain"}])
    assert second.choices[0].message.content == "tool said: 12C and rain"
    assert vendor.last_body()["messages"][-1]["content"][0]["tool_use_id"] == "toolu_abc"


@pytest.mark.e2e
def test_streaming_text_with_usage(sdk: openai.OpenAI) -> None:
    stream = sdk.chat.completions.create(model="claude", messages=[USER], stream=True,
                                         stream_options={"include_usage": True})
    chunks = list(stream)
    text_out = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text_out == "Claude heard: hi"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop" and finishes.count("stop") == 1
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 3


@pytest.mark.e2e
def test_streaming_tool_call(sdk: openai.OpenAI, vendor: FakeVendor) -> None:
    vendor.script({"tool_use": {"name": "weather", "input": {"city": "Bergen"}}})
    chunks = list(sdk.chat.completions.create(model="claude", messages=[USER], tools=[TOOL],
                                              stream=True))
    calls = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
    assert calls[0].function.name == "weather"
    arguments = "".join(tc.function.arguments or "" for tc in calls)
    assert orjson.loads(arguments) == {"city": "Bergen"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


@pytest.mark.e2e
@pytest.mark.parametrize(("extra", "content", "finish"), [
    pytest.param({"stop": ["heard"]}, "Claude ", "stop", id="stop-sequence"),
    pytest.param({"max_tokens": 2}, "Claude heard:", "length", id="max-tokens"),
])
def test_stop_reasons(sdk: openai.OpenAI, extra: dict[str, Any], content: str,
                      finish: str) -> None:
    completion = sdk.chat.completions.create(model="claude", messages=[USER], **extra)
    assert completion.choices[0].message.content == content
    assert completion.choices[0].finish_reason == finish


@pytest.mark.e2e
def test_prompt_too_long_is_a_context_length_error(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(model="claude", messages=[
            {"role": "user", "content": "word " * 1000}])
    assert caught.value.code == "context_length_exceeded"
    assert "prompt is too long" in caught.value.message


@pytest.mark.e2e
def test_unsupported_parameter_is_a_400_naming_it_and_the_provider(sdk: openai.OpenAI,
                                                                   vendor: FakeVendor) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(model="claude", messages=[USER], n=3)
    assert caught.value.param == "n"
    assert "anthropic" in caught.value.message
    assert vendor.calls() == []


@pytest.mark.e2e
def test_upstream_client_error_is_passed_through_openai_shaped(sdk: openai.OpenAI) -> None:
    bad_tool = {"type": "function", "function": {"name": "bad name!", "parameters": {
        "type": "object", "properties": {}}}}
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(model="claude", messages=[USER], tools=[bad_tool])
    assert "tools.0.name" in caught.value.message
    assert caught.value.code == "invalid_request_error"


@pytest.mark.e2e
@pytest.mark.parametrize("step", [
    pytest.param({"status": 529, "message": "Overloaded"}, id="overloaded"),
    pytest.param({"status": 500}, id="server-error"),
    pytest.param({"body": "{not json"}, id="malformed-body"),
])
def test_vendor_failures_are_502(sdk: openai.OpenAI, vendor: FakeVendor,
                                 step: dict[str, Any]) -> None:
    vendor.script(step)
    with pytest.raises(openai.APIStatusError) as caught:
        sdk.chat.completions.create(model="claude", messages=[USER])
    assert caught.value.status_code == 502


@pytest.mark.e2e
def test_wrong_key_is_hidden_from_the_client(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        sdk.chat.completions.create(model="claude-badkey", messages=[USER])
    assert caught.value.status_code == 502
    assert "x-api-key" not in caught.value.message
    assert "sk-wrong" not in caught.value.response.text


@pytest.mark.e2e
def test_stream_broken_before_content_is_a_502(sdk: openai.OpenAI, vendor: FakeVendor) -> None:
    vendor.script({"break_after": 0})
    with pytest.raises(openai.APIStatusError) as caught:
        list(sdk.chat.completions.create(model="claude", messages=[USER], stream=True))
    assert caught.value.status_code == 502


@pytest.mark.e2e
@pytest.mark.parametrize("step", [
    pytest.param({"break_after": 2}, id="cut"),
    pytest.param({"error_after": 2}, id="overloaded-event"),
])
def test_stream_broken_after_content_ends_in_an_error(sdk: openai.OpenAI, vendor: FakeVendor,
                                                      step: dict[str, Any]) -> None:
    vendor.script(step)
    received = []
    with pytest.raises(openai.APIError):
        for item in sdk.chat.completions.create(model="claude", messages=[USER], stream=True):
            received.append(item)
    assert "".join(c.choices[0].delta.content or "" for c in received if c.choices)
    assert not any(c.choices[0].finish_reason for c in received if c.choices)


def test_fake_api_rejects_what_the_real_api_rejects() -> None:
    from tests.fakes.anthropic import validate

    ok = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    use = {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f",
                                             "input": {}}]}
    result = {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1"}]}
    assert validate(ok) is None
    assert validate({**ok, "messages": [USER, use, result]}) is None
    problems = {
        "two-user-turns": {**ok, "messages": [USER, USER]},
        "no-max-tokens": {"model": "m", "messages": [USER]},
        "unknown-field": {**ok, "n": 2},
        "tool-use-unanswered": {**ok, "messages": [USER, use, USER]},
        "tool-result-unasked": {**ok, "messages": [USER, {"role": "assistant",
                                                         "content": "x"}, result]},
        "empty-text": {**ok, "messages": [{"role": "user", "content": ""}]},
        "temperature-above-1": {**ok, "temperature": 1.2},
        "system-role": {**ok, "messages": [{"role": "system", "content": "x"}]},
    }
    assert {name: bool(validate(body)) for name, body in problems.items()} == dict.fromkeys(
        problems, True)

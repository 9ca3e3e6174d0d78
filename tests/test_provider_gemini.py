"""The `gemini` provider: translation both ways (tables), and end to end through the SDK."""

from __future__ import annotations

import base64
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest
from openai.types import CreateEmbeddingResponse
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from router.config import Deployment
from router.errors import (
    ContextLengthExceeded,
    UpstreamAuthFailed,
    UpstreamFailure,
    UpstreamRateLimited,
    UpstreamRejected,
)
from router.providers.gemini import GeminiProvider, classify_gemini_error
from router.providers.gemini_wire import (
    GeminiStreamTranslator,
    from_embed_response,
    to_chat_completion,
    to_embed_request,
    to_gemini_request,
)
from router.providers.translate import MalformedAnswer, TranslationError
from tests.fakes.control import FakeVendor, fake_vendor
from tests.support import turnout_process

KEY = "AIza-fake-gemini-key"
USER = {"role": "user", "content": "hi"}
TOOL = {"type": "function", "function": {"name": "weather", "description": "Weather in a city",
                                         "parameters": {"type": "object", "properties": {
                                             "city": {"type": "string"}},
                                             "additionalProperties": False}}}
CALL = {"id": "call_1", "type": "function",
        "function": {"name": "weather", "arguments": '{"city": "Oslo"}'}}


def request_of(**body: Any) -> dict[str, Any]:
    return to_gemini_request({"messages": [USER], **body})


@pytest.mark.parametrize(("body", "expected"), [
    pytest.param({}, {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}, id="plain"),
    pytest.param({"messages": [{"role": "system", "content": "Be brief"}, USER]},
                 {"systemInstruction": {"parts": [{"text": "Be brief"}]}}, id="system"),
    pytest.param({"messages": [USER, {"role": "assistant", "content": "yo"}, USER, USER]},
                 {"contents": [{"role": "user", "parts": [{"text": "hi"}]},
                               {"role": "model", "parts": [{"text": "yo"}]},
                               {"role": "user", "parts": [{"text": "hi"}, {"text": "hi"}]}]},
                 id="model-role-and-merged-turns"),
    pytest.param({"temperature": 0.3, "top_p": 0.8, "max_tokens": 9, "stop": ["x", "y"],
                  "n": 2, "presence_penalty": 0.5, "frequency_penalty": 0.1, "seed": 4},
                 {"generationConfig": {"temperature": 0.3, "topP": 0.8, "maxOutputTokens": 9,
                                       "stopSequences": ["x", "y"], "candidateCount": 2,
                                       "presencePenalty": 0.5, "frequencyPenalty": 0.1,
                                       "seed": 4}}, id="generation-config"),
    pytest.param({"response_format": {"type": "json_schema", "json_schema": {
        "name": "x", "schema": {"type": "object"}}}},
        {"generationConfig": {"responseMimeType": "application/json",
                              "responseJsonSchema": {"type": "object"}}}, id="json-schema"),
    pytest.param({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "look"},
        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/"}}]}]},
        {"contents": [{"role": "user", "parts": [
            {"text": "look"}, {"inlineData": {"mimeType": "image/jpeg", "data": "/9j/"}}]}]},
        id="inline-image"),
    pytest.param({"tools": [TOOL], "tool_choice": {"type": "function",
                                                   "function": {"name": "weather"}}},
                 {"tools": [{"functionDeclarations": [{
                     "name": "weather", "description": "Weather in a city",
                     "parametersJsonSchema": TOOL["function"]["parameters"]}]}],
                  "toolConfig": {"functionCallingConfig": {
                      "mode": "ANY", "allowedFunctionNames": ["weather"]}}},
                 id="tools-and-named-choice"),
    pytest.param({"messages": [
        USER, {"role": "assistant", "content": None, "tool_calls": [
            CALL, {**CALL, "id": "call_2", "function": {"name": "time", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "12C"},
        {"role": "tool", "tool_call_id": "call_2", "content": '{"hour": 9}'}]},
        {"contents": [
            {"role": "user", "parts": [{"text": "hi"}]},
            {"role": "model", "parts": [
                {"functionCall": {"name": "weather", "args": {"city": "Oslo"}}},
                {"functionCall": {"name": "time", "args": {}}}]},
            {"role": "user", "parts": [
                {"functionResponse": {"name": "weather", "response": {"content": "12C"}}},
                {"functionResponse": {"name": "time", "response": {"hour": 9}}}]}]},
        id="tool-round-trip"),
])
def test_openai_request_becomes_generate_content_request(body: dict[str, Any],
                                                         expected: dict[str, Any]) -> None:
    translated = request_of(**body)
    assert {k: translated.get(k) for k in expected} == expected


@pytest.mark.parametrize(("body", "param"), [
    pytest.param({"logprobs": True}, "logprobs", id="logprobs"),
    pytest.param({"logit_bias": {"1": 1}}, "logit_bias", id="logit-bias"),
    pytest.param({"parallel_tool_calls": False}, "parallel_tool_calls", id="no-parallel-calls"),
    pytest.param({"reasoning_effort": "low"}, "reasoning_effort", id="unknown-parameter"),
    pytest.param({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://x.test/a.png"}}]}]},
        "messages[0].content[0].image_url", id="image-by-url"),
    pytest.param({"messages": [USER, {"role": "tool", "tool_call_id": "nope", "content": "x"}]},
                 "messages[1].tool_call_id", id="tool-result-without-call"),
])
def test_parameters_gemini_cannot_honour_are_refused(body: dict[str, Any], param: str) -> None:
    with pytest.raises(TranslationError) as caught:
        request_of(**body)
    assert caught.value.param == param


def candidate(parts: list[dict[str, Any]] | None, reason: str = "STOP",
              index: int = 0) -> dict[str, Any]:
    found: dict[str, Any] = {"index": index, "finishReason": reason}
    if parts is not None:
        found["content"] = {"role": "model", "parts": parts}
    return found


def answer(*candidates: dict[str, Any]) -> dict[str, Any]:
    return {"candidates": list(candidates), "modelVersion": "gemini-x-001", "responseId": "r1",
            "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 4,
                              "thoughtsTokenCount": 2, "totalTokenCount": 11}}


FUNCTION_CALL = {"functionCall": {"name": "weather", "args": {"city": "Oslo"}}}


@pytest.mark.parametrize(("data", "content", "finish", "calls"), [
    pytest.param(answer(candidate([{"text": "Hel"}, {"text": "lo"}])), "Hello", "stop", None,
                 id="text"),
    pytest.param(answer(candidate([{"text": "Hm", "thought": True}, {"text": "Yes"}])), "Yes",
                 "stop", None, id="thoughts-left-out"),
    pytest.param(answer(candidate([{"text": "Hel"}], "MAX_TOKENS")), "Hel", "length", None,
                 id="max-tokens"),
    pytest.param(answer(candidate(None, "SAFETY")), "", "content_filter", None,
                 id="safety-block"),
    pytest.param(answer(candidate([{"text": "x"}], "RECITATION")), "x", "content_filter", None,
                 id="recitation"),
    pytest.param(answer(candidate([FUNCTION_CALL])), None, "tool_calls",
                 [("weather", {"city": "Oslo"})], id="function-call"),
    pytest.param({"promptFeedback": {"blockReason": "SAFETY"}}, None, "content_filter", None,
                 id="prompt-blocked"),
])
def test_generate_content_answer_becomes_chat_completion(
        data: dict[str, Any], content: str | None, finish: str, calls: list[Any] | None) -> None:
    completion = ChatCompletion.model_validate(to_chat_completion(data, "gemini-x", 1))
    choice = completion.choices[0]
    assert choice.message.content == content
    assert choice.finish_reason == finish
    got = [(c.function.name, orjson.loads(c.function.arguments))
           for c in choice.message.tool_calls or []] or None
    assert got == calls
    if choice.message.tool_calls:
        assert choice.message.tool_calls[0].id.startswith("call_")


def test_usage_counts_thoughts_as_completion() -> None:
    completion = to_chat_completion(answer(candidate([{"text": "x"}])), "gemini-x", 1)
    assert completion["usage"] == {"prompt_tokens": 5, "completion_tokens": 6,
                                   "total_tokens": 11}
    assert completion["model"] == "gemini-x-001"


def test_candidates_become_choices() -> None:
    data = answer(candidate([{"text": "a"}]), candidate([{"text": "b"}], index=1))
    choices = to_chat_completion(data, "m", 2)["choices"]
    assert [(c["index"], c["message"]["content"]) for c in choices] == [(0, "a"), (1, "b")]


def test_blocked_prompt_answers_every_requested_choice() -> None:
    choices = to_chat_completion({"promptFeedback": {"blockReason": "OTHER"}}, "m", 3)["choices"]
    assert [c["finish_reason"] for c in choices] == ["content_filter"] * 3


@pytest.mark.parametrize("data", [
    pytest.param({}, id="no-candidates"),
    pytest.param({"candidates": "x"}, id="candidates-not-a-list"),
    pytest.param({"candidates": [{"content": {"parts": "x"}}]}, id="parts-not-a-list"),
    pytest.param([], id="not-an-object"),
])
def test_malformed_answer_is_detected(data: Any) -> None:
    with pytest.raises(MalformedAnswer):
        to_chat_completion(data, "m", 1)


def stream_chunks(*chunks: dict[str, Any], n: int = 1,
                  usage: bool = True) -> list[ChatCompletionChunk]:
    translator = GeminiStreamTranslator("gemini-x", n, usage)
    out = [c for data in chunks for c in translator.feed(data)] + translator.close()
    return [ChatCompletionChunk.model_validate(c) for c in out]


def test_stream_becomes_chunks_with_finish_and_usage_last() -> None:
    parsed = stream_chunks({"candidates": [candidate([{"text": "Hel"}], "")]},
                           answer(candidate([{"text": "lo"}])))
    assert parsed[0].choices[0].delta.role == "assistant"
    assert "".join(p.choices[0].delta.content or "" for p in parsed if p.choices) == "Hello"
    assert parsed[-2].choices[0].finish_reason == "stop"
    assert parsed[-1].choices == [] and parsed[-1].usage is not None
    assert parsed[-1].usage.total_tokens == 11


def test_stream_function_call_becomes_tool_call_chunk() -> None:
    parsed = stream_chunks(answer(candidate([FUNCTION_CALL])), usage=False)
    calls = [tc for p in parsed for tc in p.choices[0].delta.tool_calls or []]
    assert [(c.index, c.function.name) for c in calls] == [(0, "weather")]
    assert orjson.loads(calls[0].function.arguments) == {"city": "Oslo"}
    assert parsed[-1].choices[0].finish_reason == "tool_calls"


@pytest.mark.parametrize("chunks", [
    pytest.param([{"candidates": [candidate([{"text": "Hel"}], "")]}], id="no-finish-reason"),
    pytest.param([], id="empty-stream"),
])
def test_stream_without_finish_reason_is_broken(chunks: list[dict[str, Any]]) -> None:
    with pytest.raises(MalformedAnswer):
        stream_chunks(*chunks)


def test_stream_with_two_candidates_needs_both_finished() -> None:
    with pytest.raises(MalformedAnswer):
        stream_chunks(answer(candidate([{"text": "a"}])), n=2)
    parsed = stream_chunks(answer(candidate([{"text": "a"}]), candidate([{"text": "b"}],
                                                                        index=1)), n=2)
    assert sorted(p.choices[0].index for p in parsed if p.choices and
                  p.choices[0].finish_reason) == [0, 1]


@pytest.mark.parametrize(("body", "expected"), [
    pytest.param({"input": "a"}, {"requests": [
        {"model": "models/emb", "content": {"parts": [{"text": "a"}]}}]}, id="one"),
    pytest.param({"input": ["a", "b"], "dimensions": 8}, {"requests": [
        {"model": "models/emb", "content": {"parts": [{"text": "a"}]},
         "outputDimensionality": 8},
        {"model": "models/emb", "content": {"parts": [{"text": "b"}]},
         "outputDimensionality": 8}]}, id="batch-with-dimensions"),
])
def test_embeddings_request_becomes_batch_embed(body: dict[str, Any],
                                                expected: dict[str, Any]) -> None:
    assert to_embed_request(body, "emb") == expected


def test_token_array_input_is_refused() -> None:
    with pytest.raises(TranslationError) as caught:
        to_embed_request({"input": [[1, 2, 3]]}, "emb")
    assert caught.value.param == "input"


@pytest.mark.parametrize("encoding", [None, "float", "base64"])
def test_batch_embed_answer_becomes_embeddings(encoding: str | None) -> None:
    data = from_embed_response({"embeddings": [{"values": [0.5, -1]}, {"values": [2, 0]}]},
                               "emb", 2, encoding)
    first = data["data"][0]["embedding"]
    if encoding == "base64":
        # What the openai SDK asks for by default, and decodes before parsing.
        assert struct.unpack("<2f", base64.b64decode(first)) == (0.5, -1.0)
        return
    parsed = CreateEmbeddingResponse.model_validate(data)
    assert parsed.data[0].embedding == [0.5, -1.0]
    assert [d.index for d in parsed.data] == [0, 1]


def test_batch_embed_answer_with_missing_embeddings_is_malformed() -> None:
    with pytest.raises(MalformedAnswer):
        from_embed_response({"embeddings": [{"values": [1.0]}]}, "emb", 2, None)


def google_error(code: int, message: str, status: str, *details: dict[str, Any]) -> bytes:
    return orjson.dumps({"error": {"code": code, "message": message, "status": status,
                                   "details": list(details)}})


KEY_INVALID = {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}


@pytest.mark.parametrize(("status", "raw", "kind", "code"), [
    pytest.param(400, google_error(400, "API key not valid.", "INVALID_ARGUMENT", KEY_INVALID),
                 UpstreamAuthFailed, None, id="api-key-invalid"),
    pytest.param(403, google_error(403, "denied", "PERMISSION_DENIED"), UpstreamAuthFailed,
                 None, id="403"),
    pytest.param(429, google_error(429, "quota", "RESOURCE_EXHAUSTED", {
        "@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "12s"}),
        UpstreamRateLimited, None, id="429"),
    pytest.param(503, google_error(503, "overloaded", "UNAVAILABLE"), UpstreamFailure, None,
                 id="503"),
    pytest.param(400, google_error(400, "The input token count (1200000) exceeds the maximum "
                                        "number of tokens allowed (1048576).",
                                   "INVALID_ARGUMENT"),
                 ContextLengthExceeded, "context_length_exceeded", id="context-length"),
    pytest.param(400, google_error(400, "Unknown name", "INVALID_ARGUMENT"), UpstreamRejected,
                 "invalid_argument", id="client-error"),
    pytest.param(404, google_error(404, "models/x is not found", "NOT_FOUND"),
                 UpstreamRejected, "not_found", id="unknown-model"),
])
def test_gemini_errors_map_to_the_contract(status: int, raw: bytes, kind: type,
                                           code: str | None) -> None:
    exc = classify_gemini_error("d", status, raw, {}, KEY)
    assert type(exc) is kind
    if isinstance(exc, UpstreamRejected):
        assert exc.upstream_body["error"]["code"] == code
        assert set(exc.upstream_body["error"]) == {"message", "type", "param", "code"}
    if isinstance(exc, UpstreamRateLimited):
        assert exc.retry_after == 12


def test_relayed_error_message_never_holds_the_key() -> None:
    raw = google_error(400, f"bad request for key={KEY}", "INVALID_ARGUMENT")
    exc = classify_gemini_error("d", 400, raw, {}, KEY)
    assert isinstance(exc, UpstreamRejected)
    assert KEY not in orjson.dumps(exc.upstream_body).decode()


def deployment(model: str = "gemini-x") -> Deployment:
    return Deployment(id="gem-a", provider="gemini",
                      base_url="https://generativelanguage.test", api_key=KEY, model=model)


async def test_requests_go_to_model_methods_with_the_key_header() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path.endswith(":batchEmbedContents"):
            return httpx.Response(200, json={"embeddings": [{"values": [1.0]}]})
        if request.url.path.endswith(":streamGenerateContent"):
            data = orjson.dumps(answer(candidate([{"text": "hi"}])))
            return httpx.Response(200, content=b"data: " + data + b"\r\n\r\n",
                                  headers={"content-type": "text/event-stream"})
        return httpx.Response(200, json=answer(candidate([{"text": "hi"}])))

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        provider = GeminiProvider(deployment("models/gemini-x"), client)
        await provider.complete({"messages": [USER]})
        chunks = [c async for c in provider.stream({"messages": [USER], "stream": True})]
        await provider.embed({"input": "x"})
    base = "https://generativelanguage.test/v1beta/models/gemini-x"
    assert [str(r.url) for r in seen] == [f"{base}:generateContent",
                                          f"{base}:streamGenerateContent?alt=sse",
                                          f"{base}:batchEmbedContents"]
    assert all(r.headers["x-goog-api-key"] == KEY for r in seen)
    assert all("key=" not in str(r.url) for r in seen)
    assert chunks[-1].data["choices"][0]["finish_reason"] == "stop"


NO_RETRIES = "[router]\nnum_retries = 0\nallowed_fails = 1000\n"


# End to end: the openai SDK -> `turnout serve` -> the fake Gemini API.

def group(name: str, url: str, key: str, model: str = "gemini-fake") -> str:
    return (f'[[models]]\nname = "{name}"\n[[models.deployments]]\nid = "{name}-dep"\n'
            f'provider = "gemini"\nbase_url = "{url}"\napi_key = "{key}"\nmodel = "{model}"\n')


@pytest.fixture(scope="module")
def vendor() -> Iterator[FakeVendor]:
    with fake_vendor("gemini", KEY) as fake:
        yield fake


@pytest.fixture(scope="module")
def turnout(vendor: FakeVendor, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    # One attempt per request and no cooldowns: these tests are about translation, so a
    # scripted vendor failure must reach the client (retries are tested in test_router_*).
    config = NO_RETRIES + group("gem", vendor.url, KEY)
    config += (group("gem-badkey", vendor.url, "AIza-wrong")
               + group("gem-embed", vendor.url, KEY, "text-embedding-004")
               + group("gem-limited", vendor.url, KEY))
    with turnout_process(config, Path(tmp_path_factory.mktemp("gemini"))) as url:
        yield url


@pytest.fixture
def sdk(turnout: str, vendor: FakeVendor) -> openai.OpenAI:
    vendor.reset()
    return openai.OpenAI(base_url=f"{turnout}/v1", api_key="unused", max_retries=0)


@pytest.mark.e2e
def test_plain_chat(sdk: openai.OpenAI) -> None:
    completion = sdk.chat.completions.create(model="gem", messages=[USER])
    assert completion.choices[0].message.content == "Gemini heard: hi"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.prompt_tokens == 1


@pytest.mark.e2e
def test_system_prompt_and_multi_turn(sdk: openai.OpenAI, vendor: FakeVendor) -> None:
    completion = sdk.chat.completions.create(model="gem", messages=[
        {"role": "system", "content": "Be brief"}, {"role": "user", "content": "one"},
        {"role": "assistant", "content": "ok"}, {"role": "user", "content": "two"}])
    assert completion.choices[0].message.content == "[Be brief] Gemini heard: two"
    assert [c["role"] for c in vendor.last_body()["contents"]] == ["user", "model", "user"]


@pytest.mark.e2e
def test_n_becomes_candidate_count(sdk: openai.OpenAI, vendor: FakeVendor) -> None:
    completion = sdk.chat.completions.create(model="gem", messages=[USER], n=2)
    assert [c.message.content for c in completion.choices] == ["Gemini heard: hi",
                                                               "Gemini heard: hi #1"]
    assert vendor.last_body()["generationConfig"]["candidateCount"] == 2


@pytest.mark.e2e
def test_tool_calling_round_trip(sdk: openai.OpenAI, vendor: FakeVendor) -> None:
    vendor.script({"function_call": {"name": "weather", "args": {"city": "Oslo"}}})
    first = sdk.chat.completions.create(model="gem", messages=[USER], tools=[TOOL])
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert orjson.loads(call.function.arguments) == {"city": "Oslo"}
    second = sdk.chat.completions.create(model="gem", tools=[TOOL], messages=[
        USER, choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "12C"}])
    assert second.choices[0].message.content == 'tool said: {"content":"12C"}'
    sent = vendor.last_body()["contents"][-1]["parts"][0]
    assert sent == {"functionResponse": {"name": "weather", "response": {"content": "12C"}}}


@pytest.mark.e2e
def test_streaming_text_with_usage(sdk: openai.OpenAI, vendor: FakeVendor) -> None:
    chunks = list(sdk.chat.completions.create(model="gem", messages=[USER], stream=True,
                                              stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == \
        "Gemini heard: hi"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3
    assert vendor.calls()[-1]["query"] == {"alt": "sse"}


@pytest.mark.e2e
def test_streaming_tool_call(sdk: openai.OpenAI, vendor: FakeVendor) -> None:
    vendor.script({"function_call": {"name": "weather", "args": {"city": "Bergen"}}})
    chunks = list(sdk.chat.completions.create(model="gem", messages=[USER], tools=[TOOL],
                                              stream=True))
    calls = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
    assert orjson.loads(calls[0].function.arguments) == {"city": "Bergen"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


@pytest.mark.e2e
@pytest.mark.parametrize(("extra", "step", "content", "finish"), [
    pytest.param({"stop": ["heard"]}, {}, "Gemini ", "stop", id="stop-sequence"),
    pytest.param({"max_tokens": 1}, {}, "Gemini", "length", id="max-tokens"),
    pytest.param({}, {"finish": "SAFETY"}, "", "content_filter", id="safety"),
    pytest.param({}, {"prompt_block": "SAFETY"}, None, "content_filter", id="prompt-blocked"),
])
def test_stop_reasons(sdk: openai.OpenAI, vendor: FakeVendor, extra: dict[str, Any],
                      step: dict[str, Any], content: str | None, finish: str) -> None:
    vendor.script(step)
    completion = sdk.chat.completions.create(model="gem", messages=[USER], **extra)
    assert completion.choices[0].message.content == content
    assert completion.choices[0].finish_reason == finish


@pytest.mark.e2e
def test_embeddings_through_batch_embed(sdk: openai.OpenAI, vendor: FakeVendor) -> None:
    result = sdk.embeddings.create(model="gem-embed", input=["a", "b"], dimensions=3)
    assert [len(d.embedding) for d in result.data] == [3, 3]
    assert vendor.calls()[-1]["path"] == "/v1beta/models/text-embedding-004:batchEmbedContents"


@pytest.mark.e2e
def test_input_too_long_is_a_context_length_error(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(model="gem", messages=[
            {"role": "user", "content": "word " * 1000}])
    assert caught.value.code == "context_length_exceeded"


@pytest.mark.e2e
def test_wrong_key_is_a_hidden_failure(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        sdk.chat.completions.create(model="gem-badkey", messages=[USER])
    assert caught.value.status_code == 502
    assert "API key not valid" not in caught.value.response.text


@pytest.mark.e2e
def test_unsupported_parameter_is_a_400_naming_it_and_the_provider(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(model="gem", messages=[USER], logprobs=True)
    assert caught.value.param == "logprobs"
    assert "gemini" in caught.value.message


@pytest.mark.e2e
@pytest.mark.parametrize("step", [
    pytest.param({"status": 503}, id="unavailable"),
    pytest.param({"body": "[]"}, id="malformed-body"),
    pytest.param({"break_after": 0}, id="empty-stream"),
])
def test_vendor_failures_are_502(sdk: openai.OpenAI, vendor: FakeVendor,
                                 step: dict[str, Any]) -> None:
    vendor.script(step)
    with pytest.raises(openai.APIStatusError) as caught:
        list(sdk.chat.completions.create(model="gem", messages=[USER], stream=True))
    assert caught.value.status_code == 502


@pytest.mark.e2e
def test_rate_limit_is_a_502_then_cools_the_deployment(sdk: openai.OpenAI,
                                                       vendor: FakeVendor) -> None:
    vendor.script({"status": 429, "retry_after": 3})
    with pytest.raises(openai.APIStatusError) as first:
        sdk.chat.completions.create(model="gem-limited", messages=[USER])
    with pytest.raises(openai.APIStatusError) as second:
        sdk.chat.completions.create(model="gem-limited", messages=[USER])
    assert first.value.status_code == 502
    assert second.value.status_code == 503
    assert second.value.code == "no_healthy_deployment"


@pytest.mark.e2e
def test_stream_closed_before_finish_ends_in_an_error(sdk: openai.OpenAI,
                                                      vendor: FakeVendor) -> None:
    vendor.script({"break_after": 2})
    received = []
    with pytest.raises(openai.APIError):
        for item in sdk.chat.completions.create(model="gem", messages=[USER], stream=True):
            received.append(item)
    assert "".join(c.choices[0].delta.content or "" for c in received if c.choices)
    assert not any(c.choices[0].finish_reason for c in received if c.choices)


def test_fake_api_rejects_what_the_real_api_rejects() -> None:
    from tests.fakes.gemini import validate

    user = {"role": "user", "parts": [{"text": "hi"}]}
    call = {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {}}}]}
    answer_ = {"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {}}}]}
    assert validate({"contents": [user, call, answer_]}) is None
    problems = {
        "unknown-field": {"contents": [user], "temperature": 1},
        "unknown-config": {"contents": [user], "generationConfig": {"max_tokens": 3}},
        "assistant-role": {"contents": [{"role": "assistant", "parts": [{"text": "x"}]}]},
        "no-contents": {"contents": []},
        "empty-parts": {"contents": [{"role": "user", "parts": []}]},
        "call-unanswered": {"contents": [user, call, user]},
        "response-unasked": {"contents": [user, answer_]},
    }
    assert {name: bool(validate(body)) for name, body in problems.items()} == dict.fromkeys(
        problems, True)

"""The `azure` provider: deployment URLs, api-version and api-key; end to end through the SDK."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest

from router.config import Deployment
from router.errors import ContextLengthExceeded, UpstreamAuthFailed, UpstreamRejected
from router.providers.azure import DEFAULT_API_VERSION, AzureProvider
from tests.fakes.control import FakeVendor, fake_vendor
from tests.support import chat_answer, sse_body, turnout_process

KEY = "azure-fake-key-0123456789"
USER = {"role": "user", "content": "hi"}


def deployment(base_url: str = "https://res.openai.azure.test", **extra: Any) -> Deployment:
    return Deployment(id="az-a", provider="azure", base_url=base_url, api_key=KEY,
                      model="gpt4o-prod", **extra)


class Recorder:
    def __init__(self, response: httpx.Response | None = None) -> None:
        self.requests: list[httpx.Request] = []
        self.response = response

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.response is not None:
            return self.response
        if request.url.path.endswith("/embeddings"):
            return httpx.Response(200, json={"object": "list", "model": "x", "data": [],
                                             "usage": {"prompt_tokens": 0, "total_tokens": 0}})
        if orjson.loads(request.content).get("stream"):
            return httpx.Response(200, content=sse_body("x", ["a"]),
                                  headers={"content-type": "text/event-stream"})
        return httpx.Response(200, json=chat_answer("x", "hello"))


@pytest.mark.parametrize(("base_url", "extra", "expected"), [
    pytest.param("https://res.openai.azure.test", {},
                 "https://res.openai.azure.test/openai/deployments/gpt4o-prod/{op}"
                 f"?api-version={DEFAULT_API_VERSION}", id="default-api-version"),
    pytest.param("https://res.openai.azure.test/openai", {"api_version": "2025-01-01-preview"},
                 "https://res.openai.azure.test/openai/deployments/gpt4o-prod/{op}"
                 "?api-version=2025-01-01-preview", id="configured-version-and-openai-suffix"),
])
async def test_requests_use_the_deployment_url_and_api_key(base_url: str, extra: dict[str, Any],
                                                           expected: str) -> None:
    recorder = Recorder()
    async with httpx.AsyncClient(transport=httpx.MockTransport(recorder)) as client:
        provider = AzureProvider(deployment(base_url, **extra), client)
        answer = await provider.complete({"model": "group", "messages": [USER]})
        chunks = [c async for c in provider.stream({"model": "group", "messages": [USER],
                                                    "stream": True})]
        await provider.embed({"model": "group", "input": "x"})
    urls = [str(r.url) for r in recorder.requests]
    assert urls == [expected.format(op="chat/completions")] * 2 + [
        expected.format(op="embeddings")]
    for request in recorder.requests:
        assert request.headers["api-key"] == KEY
        assert "authorization" not in request.headers
        assert "model" not in orjson.loads(request.content)
    assert answer.data["choices"][0]["message"]["content"] == "hello"
    assert chunks[-1].data["choices"][0]["finish_reason"] == "stop"


def azure_error(status: int, code: str, message: str) -> httpx.Response:
    return httpx.Response(status, json={"error": {"code": code, "message": message,
                                                  "param": None, "type": None}})


@pytest.mark.parametrize(("response", "kind"), [
    pytest.param(azure_error(401, "401", "Access denied due to invalid subscription key"),
                 UpstreamAuthFailed, id="wrong-key"),
    pytest.param(azure_error(400, "context_length_exceeded", "maximum context length is 8192"),
                 ContextLengthExceeded, id="context-length"),
    pytest.param(azure_error(400, "content_filter", "The response was filtered"),
                 UpstreamRejected, id="content-filter"),
])
async def test_azure_errors_map_to_the_contract(response: httpx.Response, kind: type) -> None:
    async with httpx.AsyncClient(transport=httpx.MockTransport(Recorder(response))) as client:
        with pytest.raises(kind):
            await AzureProvider(deployment(), client).complete({"messages": [USER]})


# End to end: the openai SDK -> `turnout serve` -> the fake Azure OpenAI resource.

def group(name: str, url: str, key: str, version: str | None = None) -> str:
    text = (f'[[models]]\nname = "{name}"\n[[models.deployments]]\nid = "{name}-dep"\n'
            f'provider = "azure"\nbase_url = "{url}"\napi_key = "{key}"\nmodel = "gpt4o-prod"\n')
    return text + (f'api_version = "{version}"\n' if version else "")


@pytest.fixture(scope="module")
def vendor() -> Iterator[FakeVendor]:
    with fake_vendor("azure", KEY, "--deployment", "gpt4o-prod") as fake:
        yield fake


@pytest.fixture(scope="module")
def turnout(vendor: FakeVendor, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    config = (group("az", vendor.url, KEY) + group("az-badkey", vendor.url, "wrong-key")
              + group("az-preview", vendor.url, KEY, "2025-01-01-preview"))
    with turnout_process(config, Path(tmp_path_factory.mktemp("azure"))) as url:
        yield url


@pytest.fixture
def sdk(turnout: str, vendor: FakeVendor) -> openai.OpenAI:
    vendor.reset()
    return openai.OpenAI(base_url=f"{turnout}/v1", api_key="unused", max_retries=0)


@pytest.mark.e2e
def test_plain_chat_with_default_api_version(sdk: openai.OpenAI, vendor: FakeVendor) -> None:
    completion = sdk.chat.completions.create(model="az", messages=[
        {"role": "system", "content": "Be brief"}, USER])
    assert completion.choices[0].message.content == "Azure heard: hi"
    call = vendor.calls()[-1]
    assert call["query"] == {"api-version": DEFAULT_API_VERSION}
    assert call["path"] == "/openai/deployments/gpt4o-prod/chat/completions"


@pytest.mark.e2e
def test_configured_api_version_is_used(sdk: openai.OpenAI, vendor: FakeVendor) -> None:
    sdk.chat.completions.create(model="az-preview", messages=[USER])
    assert vendor.calls()[-1]["query"] == {"api-version": "2025-01-01-preview"}


@pytest.mark.e2e
def test_streaming_with_usage_skips_azure_filter_chunk(sdk: openai.OpenAI) -> None:
    chunks = list(sdk.chat.completions.create(model="az", messages=[USER], stream=True,
                                              stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == \
        "Azure heard: hi"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3


@pytest.mark.e2e
def test_tool_calling_round_trip(sdk: openai.OpenAI, vendor: FakeVendor) -> None:
    tool = {"type": "function", "function": {"name": "weather", "parameters": {
        "type": "object", "properties": {}}}}
    vendor.script({"tool_call": {"name": "weather", "arguments": '{"city":"Oslo"}'}})
    first = sdk.chat.completions.create(model="az", messages=[USER], tools=[tool])
    call = first.choices[0].message.tool_calls[0]
    second = sdk.chat.completions.create(model="az", tools=[tool], messages=[
        USER, first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "12C"}])
    assert second.choices[0].message.content == "tool said: 12C"


@pytest.mark.e2e
def test_embeddings(sdk: openai.OpenAI, vendor: FakeVendor) -> None:
    result = sdk.embeddings.create(model="az", input=["a", "b"])
    assert [d.embedding for d in result.data] == [[0.5, 0.0], [0.5, 1.0]]
    assert vendor.calls()[-1]["path"] == "/openai/deployments/gpt4o-prod/embeddings"


@pytest.mark.e2e
def test_errors(sdk: openai.OpenAI, vendor: FakeVendor) -> None:
    with pytest.raises(openai.APIStatusError) as bad_key:
        sdk.chat.completions.create(model="az-badkey", messages=[USER])
    assert bad_key.value.status_code == 502
    assert "subscription key" not in bad_key.value.response.text
    with pytest.raises(openai.BadRequestError) as too_long:
        sdk.chat.completions.create(model="az", messages=[{"role": "user", "content": "w" * 5000}])
    assert too_long.value.code == "context_length_exceeded"
    vendor.script({"content_filter": True})
    with pytest.raises(openai.BadRequestError) as filtered:
        sdk.chat.completions.create(model="az", messages=[USER])
    assert filtered.value.code == "content_filter"

"""The request path in-process: what the upstream receives and what the client gets."""

from __future__ import annotations

import httpx
import orjson
import pytest

from tests.support import RecordingUpstream, app_client, config_from, openai_config, sse_body

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


async def test_upstream_gets_its_model_and_key_and_no_turnout_fields(upstream):
    config = config_from(openai_config())
    async with app_client(config, upstream.transport()) as client:
        body = {**CHAT, "caching": False, "cache": {"ttl": 5}, "temperature": 0.2}
        response = await client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "Hello"
    sent = upstream.json()
    assert sent == {"model": "upstream-model-0", "messages": CHAT["messages"], "temperature": 0.2}
    request = upstream.requests[0]
    assert str(request.url) == "http://up.test/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer sk-upstream-secret"
    assert response.headers["x-turnout-deployment"] == "d0"
    assert response.headers["x-turnout-model-group"] == "m"
    assert response.headers["x-turnout-attempts"] == "1"


async def test_unprefixed_path_and_extra_headers_reach_upstream(upstream):
    text = openai_config().replace('model = "upstream-model-0"\n',
                                   'model = "upstream-model-0"\nheaders = {"X-Title" = "app"}\n')
    async with app_client(config_from(text), upstream.transport()) as client:
        response = await client.post("/chat/completions", json=CHAT)
    assert response.status_code == 200
    assert upstream.requests[0].headers["x-title"] == "app"


async def test_stream_is_relayed_as_sse_ending_in_done(upstream):
    async with app_client(config_from(openai_config()), upstream.transport()) as client:
        response = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [line[6:] for line in response.text.split("\n\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    pieces = [orjson.loads(e)["choices"][0]["delta"].get("content") for e in events[:-1]]
    assert pieces == ["", "Hel", "lo", None]
    assert upstream.json()["stream"] is True


async def test_embeddings_are_forwarded(upstream):
    async with app_client(config_from(openai_config()), upstream.transport()) as client:
        response = await client.post("/v1/embeddings", json={"model": "m", "input": "x"})
    assert response.status_code == 200
    assert response.json()["data"][0]["embedding"] == [0.5, 0.25]
    assert str(upstream.requests[0].url) == "http://up.test/v1/embeddings"
    assert upstream.json() == {"model": "upstream-model-0", "input": "x"}


async def test_upstream_client_error_is_passed_through_with_secrets_masked():
    def reject(request: httpx.Request) -> httpx.Response:
        error = {"message": "bad key sk-upstream-secret in param", "type": "invalid_request_error",
                 "param": "messages", "code": "bad_thing"}
        return httpx.Response(400, json={"error": error})

    upstream = RecordingUpstream(reject)
    async with app_client(config_from(openai_config()), upstream.transport()) as client:
        response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "bad_thing"
    assert "sk-upstream-secret" not in response.text
    assert "***" in error["message"]


async def test_upstream_server_error_becomes_502_without_its_body():
    upstream = RecordingUpstream(lambda r: httpx.Response(500, text="boom sk-upstream-secret"))
    async with app_client(config_from(openai_config()), upstream.transport()) as client:
        response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 502
    assert response.json()["error"]["type"] == "upstream_error"
    assert response.json()["error"]["code"] == "upstream_error"
    assert "boom" not in response.text


async def test_stream_breaking_after_content_ends_with_error_event_and_no_done():
    def broken(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=sse_body("x", ["Hel", "lo"], done=False),
                              headers={"content-type": "text/event-stream"})

    upstream = RecordingUpstream(broken)
    async with app_client(config_from(openai_config()), upstream.transport()) as client:
        response = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    events = [line[6:] for line in response.text.split("\n\n") if line.startswith("data: ")]
    assert "[DONE]" not in events
    assert "error" in orjson.loads(events[-1])


async def test_models_lists_groups(upstream):
    text = openai_config() + '[[models]]\nname = "other"\n'
    text += '[[models.deployments]]\nprovider = "mock"\n'
    async with app_client(config_from(text), upstream.transport()) as client:
        response = await client.get("/v1/models")
        unprefixed = await client.get("/models")
    assert [m["id"] for m in response.json()["data"]] == ["m", "other"]
    assert response.json()["object"] == "list"
    assert all(m["owned_by"] == "turnout" and m["object"] == "model"
               for m in response.json()["data"])
    assert unprefixed.json() == response.json()


@pytest.mark.parametrize("path", ["/health/liveness", "/health/readiness", "/openapi.json", "/"])
async def test_public_endpoints_answer_without_key(upstream, path):
    text = '[server]\napi_keys = ["k1"]\n' + openai_config()
    async with app_client(config_from(text), upstream.transport()) as client:
        response = await client.get(path)
    assert response.status_code == 200


async def test_swagger_ui_is_served_from_local_assets(upstream):
    async with app_client(config_from(openai_config()), upstream.transport()) as client:
        page = await client.get("/")
        script = await client.get("/static/swagger/swagger-ui-bundle.js")
        style = await client.get("/static/swagger/swagger-ui.css")
    assert page.headers["content-type"].startswith("text/html")
    assert 'src="/static/swagger/swagger-ui-bundle.js"' in page.text
    assert "/openapi.json" in page.text
    assert "http://" not in page.text and "https://" not in page.text
    assert script.status_code == 200 and b"SwaggerUIBundle" in script.content
    assert style.status_code == 200

"""The contract's error table, auth and admin-key rules, body limits: every answer OpenAI-shaped."""

from __future__ import annotations

import pytest

from tests.support import app_client, config_from, openai_config

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
KEYED = '[server]\napi_keys = ["ck-1", "ck-2", ""]\nadmin_key = "ak-1"\nmax_body_bytes = 2000\n'


def assert_error(response, status: int, type_: str, code: str | None, param: str | None = None):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["code"]) == (type_, code)
    if param is not None:
        assert error["param"] == param
    assert error["message"]


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        pytest.param(b"{not json", "invalid_json", None, id="malformed"),
        pytest.param(b"", "invalid_json", None, id="empty-body"),
        pytest.param(b"\xff\xfe{}", "invalid_json", None, id="invalid-utf8"),
        pytest.param(b"[1, 2]", "invalid_type", None, id="not-an-object"),
        pytest.param(b'{"messages": []}', "missing_field", "model", id="no-model"),
        pytest.param(b'{"model": "m"}', "missing_field", "messages", id="no-messages"),
        pytest.param(b'{"model": 5, "messages": []}', "invalid_type", "model", id="model-number"),
        pytest.param(b'{"model": "m", "messages": "hi"}', "invalid_type", "messages",
                     id="messages-string"),
        pytest.param(b'{"model": "m", "messages": [{"content": "x"}]}', "missing_field",
                     "messages[0].role", id="message-without-role"),
        pytest.param(b'{"model": "m", "messages": [{"role": "user", "content": 5}]}',
                     "invalid_type", "messages[0].content", id="content-number"),
        pytest.param(b'{"model": "m", "messages": [{"role": "user"}], "temperature": "hot"}',
                     "invalid_type", "temperature", id="temperature-string"),
        pytest.param(b'{"model": "m", "messages": [{"role": "user"}], "stream": "yes"}',
                     "invalid_type", "stream", id="stream-string"),
        pytest.param(b'{"model": "m", "messages": [{"role": "user"}], "stop": [1]}',
                     "invalid_type", "stop", id="stop-numbers"),
        pytest.param(b'{"model": "m", "messages": [{"role": "user"}], "caching": "on"}',
                     "invalid_type", "caching", id="caching-string"),
        pytest.param(b'{"model": "m", "messages": [{"role": "user"}], "cache": {"ttl": -1}}',
                     "invalid_type", "cache.ttl", id="negative-ttl"),
        pytest.param(b'{"model": "m", "messages": [{"role": "user"}], "api_base": "http://x"}',
                     "forbidden_field", "api_base", id="api-base"),
        pytest.param(b'{"model": "m", "messages": [{"role": "user"}], "base_url": "http://x"}',
                     "forbidden_field", "base_url", id="base-url"),
        pytest.param(b'{"model": "m", "messages": [{"role": "user"}], "api_key": "k"}',
                     "forbidden_field", "api_key", id="api-key"),
        pytest.param(b'{"model": "m", "messages": [{"role": "user"}], "api_version": "1"}',
                     "forbidden_field", "api_version", id="api-version"),
    ],
)
async def test_bad_chat_request_is_a_400_with_its_code(upstream, body, code, param):
    async with app_client(config_from(openai_config()), upstream.transport()) as client:
        response = await client.post("/v1/chat/completions", content=body,
                                     headers={"content-type": "text/plain"})
    assert_error(response, 400, "invalid_request_error", code, param)
    assert upstream.calls == 0


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        pytest.param({"model": "m"}, "missing_field", "input", id="no-input"),
        pytest.param({"model": "m", "input": 3}, "invalid_type", "input", id="input-number"),
        pytest.param({"model": "m", "input": []}, "invalid_type", "input", id="input-empty"),
        pytest.param({"model": "m", "input": "x", "base_url": "http://e"}, "forbidden_field",
                     "base_url", id="forbidden"),
    ],
)
async def test_bad_embeddings_request_is_a_400(upstream, body, code, param):
    async with app_client(config_from(openai_config()), upstream.transport()) as client:
        response = await client.post("/v1/embeddings", json=body)
    assert_error(response, 400, "invalid_request_error", code, param)
    assert upstream.calls == 0


async def test_unknown_model_group_is_404(upstream):
    async with app_client(config_from(openai_config()), upstream.transport()) as client:
        response = await client.post("/v1/chat/completions", json={**CHAT, "model": "nope"})
    assert_error(response, 404, "invalid_request_error", "model_not_found", "model")


@pytest.mark.parametrize("header", [None, "Bearer wrong", "Basic ck-1", "Bearer ", "ck-1"])
async def test_missing_or_wrong_client_key_is_401_before_the_body(upstream, header):
    headers = {"authorization": header} if header else {}
    async with app_client(config_from(KEYED + openai_config()), upstream.transport()) as client:
        response = await client.post("/v1/chat/completions", content=b"{broken",
                                     headers=headers)
        models = await client.get("/v1/models", headers=headers)
    assert_error(response, 401, "authentication_error", "invalid_api_key")
    assert_error(models, 401, "authentication_error", "invalid_api_key")
    assert upstream.calls == 0


@pytest.mark.parametrize("key", ["ck-1", "ck-2"])
async def test_any_configured_client_key_is_accepted(upstream, key):
    async with app_client(config_from(KEYED + openai_config()), upstream.transport()) as client:
        response = await client.post("/v1/chat/completions", json=CHAT,
                                     headers={"authorization": f"Bearer {key}"})
    assert response.status_code == 200
    assert "ck-" not in upstream.requests[0].headers["authorization"]


async def test_admin_status_needs_the_admin_key_not_a_client_key(upstream):
    async with app_client(config_from(KEYED + openai_config()), upstream.transport()) as client:
        nothing = await client.get("/admin/status")
        client_key = await client.get("/admin/status", headers={"authorization": "Bearer ck-1"})
        admin = await client.get("/admin/status", headers={"authorization": "Bearer ak-1"})
    assert_error(nothing, 401, "authentication_error", "invalid_api_key")
    assert_error(client_key, 401, "authentication_error", "invalid_api_key")
    assert admin.status_code == 200
    assert [d["id"] for d in admin.json()["deployments"]] == ["d0"]
    for secret in ("ck-1", "ak-1", "sk-upstream-secret"):
        assert secret not in admin.text


async def test_admin_refuses_everyone_without_an_admin_key(upstream):
    async with app_client(config_from(openai_config()), upstream.transport()) as client:
        response = await client.get("/admin/status", headers={"authorization": "Bearer "})
    assert_error(response, 401, "authentication_error", "invalid_api_key")


async def test_body_over_limit_by_content_length_is_413(upstream):
    async with app_client(config_from(KEYED + openai_config()), upstream.transport()) as client:
        big = {**CHAT, "messages": [{"role": "user", "content": "x" * 5000}]}
        response = await client.post("/v1/chat/completions", json=big,
                                     headers={"authorization": "Bearer ck-1"})
    assert_error(response, 413, "invalid_request_error", "request_too_large")
    assert upstream.calls == 0


async def test_chunked_body_over_limit_is_413(upstream):
    async def chunks():
        for _ in range(10):
            yield b" " * 500

    async with app_client(config_from(KEYED + openai_config()), upstream.transport()) as client:
        response = await client.post("/v1/chat/completions", content=chunks(),
                                     headers={"authorization": "Bearer ck-1"})
    assert "content-length" not in response.request.headers
    assert_error(response, 413, "invalid_request_error", "request_too_large")


async def test_unknown_path_and_wrong_method_are_openai_shaped(upstream):
    async with app_client(config_from(openai_config()), upstream.transport()) as client:
        missing = await client.get("/v1/nothing")
        wrong = await client.get("/v1/chat/completions")
    assert_error(missing, 404, "invalid_request_error", "not_found")
    assert_error(wrong, 405, "invalid_request_error", "method_not_allowed")


async def test_upstream_auth_failure_is_not_shown_to_the_client():
    import httpx

    from tests.support import RecordingUpstream

    upstream = RecordingUpstream(lambda r: httpx.Response(
        401, json={"error": {"message": "Incorrect API key sk-upstream-secret", "code": "x"}}))
    async with app_client(config_from(openai_config()), upstream.transport()) as client:
        response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code in (502, 503)
    assert response.json()["error"]["type"] == "upstream_error"
    # The router already retried: the OpenAI SDK must not multiply the retries.
    assert response.headers["x-should-retry"] == "false"
    assert "Incorrect API key" not in response.text

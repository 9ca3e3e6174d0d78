"""Keys compared in constant time; no configured secret in any output; no client-chosen upstream."""

from __future__ import annotations

import hmac
import signal
import subprocess
import time

import httpx
import pytest
from starlette.requests import Request

from router.errors import AuthenticationFailed
from router.inbound import FORBIDDEN_FIELDS, authenticate
from tests.procs import turnout
from tests.support import TURNOUT, RecordingUpstream, app_client, config_from, openai_config

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
SECRETS = {
    "client": "sk-client-AAAA1111",
    "client2": "sk-client-BBBB2222",
    "admin": "sk-admin-CCCC3333",
    "upstream": "sk-upstream-DDDD4444",
    "redis": "redispass-EEEE5555",
}


def request_with(header: str | None) -> Request:
    headers = [(b"authorization", header.encode())] if header is not None else []
    return Request({"type": "http", "method": "POST", "path": "/", "headers": headers})


@pytest.mark.parametrize("presented", ["Bearer k2", "Bearer k1", "Bearer nope", None])
def test_every_key_is_compared_with_compare_digest_whatever_matches(monkeypatch, presented):
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def recording(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr("router.inbound.hmac.compare_digest", recording)
    keys = [b"k1", b"k2", b"k3"]
    try:
        result = authenticate(request_with(presented), keys)
    except AuthenticationFailed:
        result = None
    # No early exit on a match: the time taken says nothing about which key matched.
    assert [b for _, b in compared] == keys
    assert result == (presented[7:] if presented in ("Bearer k1", "Bearer k2") else None)


async def test_admin_endpoint_refuses_client_keys_and_wrong_keys(upstream):
    text = '[server]\napi_keys = ["ck"]\nadmin_key = "ak"\n' + openai_config()
    async with app_client(config_from(text), upstream.transport()) as client:
        statuses = [
            (await client.get("/admin/status", headers=h)).status_code
            for h in ({}, {"authorization": "Bearer ck"}, {"authorization": "Bearer ak2"},
                      {"authorization": "Basic ak"}, {"authorization": "Bearer ak"})
        ]
    assert statuses == [401, 401, 401, 401, 200]


@pytest.mark.parametrize("field", sorted(FORBIDDEN_FIELDS))
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/embeddings"])
async def test_fields_choosing_the_upstream_are_refused(upstream, field, path):
    body = {**CHAT, "input": "x", field: "http://169.254.169.254/latest"}
    async with app_client(config_from(openai_config()), upstream.transport()) as client:
        response = await client.post(path, json=body)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "forbidden_field"
    assert response.json()["error"]["param"] == field
    assert upstream.calls == 0


def leaky_upstream(request: httpx.Request) -> httpx.Response:
    """An upstream that echoes every secret it might know, in every kind of answer."""
    echo = " ".join(SECRETS.values())
    body = request.content.decode()
    if "client-error" in body:
        return httpx.Response(400, json={"error": {"message": f"bad {echo}", "type": "x",
                                                   "param": None, "code": "bad"}})
    if "server-error" in body:
        return httpx.Response(500, text=f"boom {echo}")
    if "auth-error" in body:
        return httpx.Response(401, text=f"wrong key {echo}")
    if "stream" in body and '"stream":true' in body.replace(" ", ""):
        chunk = ('data: {"id":"1","object":"chat.completion.chunk","created":1,"model":"x",'
                 '"choices":[{"index":0,"delta":{"content":"' + echo + '"}}]}\n\n')
        return httpx.Response(200, content=chunk.encode(),
                              headers={"content-type": "text/event-stream"})
    return httpx.Response(200, json={"id": "1", "object": "chat.completion", "created": 1,
                                     "model": "x", "choices": [{"index": 0, "message": {
                                         "role": "assistant", "content": echo},
                                         "finish_reason": "stop"}]},
                          headers={"x-leak": echo})


def secret_config() -> str:
    return (f'[server]\napi_keys = ["{SECRETS["client"]}", "{SECRETS["client2"]}"]\n'
            f'admin_key = "{SECRETS["admin"]}"\n'
            f'[redis]\nurl = "redis://user:{SECRETS["redis"]}@127.0.0.1:1/0"\n'
            + openai_config(key=SECRETS["upstream"]))


async def test_no_secret_in_any_answer_header_metrics_or_status(caplog):
    caplog.set_level("DEBUG")
    client_auth = {"authorization": f"Bearer {SECRETS['client']}"}
    outputs: list[str] = []
    upstream = RecordingUpstream(leaky_upstream)
    async with app_client(config_from(secret_config()), upstream.transport()) as client:
        exchanges = [
            ("POST", "/v1/chat/completions", {}, CHAT),
            ("POST", "/v1/chat/completions", {"authorization": "Bearer wrong"}, CHAT),
            ("POST", "/v1/chat/completions", client_auth, CHAT),
            ("POST", "/v1/chat/completions", client_auth, {**CHAT, "stream": True}),
            ("POST", "/v1/chat/completions", client_auth, {**CHAT, "user": "client-error"}),
            ("POST", "/v1/chat/completions", client_auth, {**CHAT, "user": "server-error"}),
            ("POST", "/v1/chat/completions", client_auth, {**CHAT, "user": "auth-error"}),
            ("POST", "/v1/chat/completions", client_auth, {**CHAT, "model": "nope"}),
            ("POST", "/v1/chat/completions", client_auth, {**CHAT, "api_key": "x"}),
            ("POST", "/v1/chat/completions", client_auth, {"model": 3}),
            ("POST", "/v1/embeddings", client_auth, {"model": "m", "input": "server-error"}),
            ("GET", "/v1/models", client_auth, None),
            ("GET", "/admin/status", client_auth, None),
            ("GET", "/admin/status", {"authorization": f"Bearer {SECRETS['admin']}"}, None),
            ("GET", "/metrics", {}, None),
            ("GET", "/health/readiness", {}, None),
            ("GET", "/openapi.json", {}, None),
            ("DELETE", "/v1/models", client_auth, None),
            ("GET", "/nowhere", client_auth, None),
        ]
        for method, path, headers, body in exchanges:
            response = await client.request(method, path, headers=headers, json=body)
            assert response.status_code < 500 or response.status_code in (502, 503), (path, body)
            outputs.append(response.text)
            outputs.extend(f"{k}: {v}" for k, v in response.headers.items())
    outputs.extend(record.getMessage() for record in caplog.records)
    outputs.extend(str(record.__dict__) for record in caplog.records)
    everything = "\n".join(outputs)
    for name, secret in SECRETS.items():
        assert secret not in everything, name
    assert upstream.calls >= 5  # the leaky answers were really relayed


def test_no_secret_in_check_output_or_daemon_log(tmp_path):
    path = tmp_path / "router.toml"
    path.write_text(secret_config())
    check = subprocess.run([*TURNOUT, "check", "--config", str(path)], capture_output=True,
                           text=True, timeout=30)
    bad = tmp_path / "bad.toml"
    bad.write_text(secret_config().replace("weight", "wieght") + "\n[server2]\nx = 1\n")
    invalid = subprocess.run([*TURNOUT, "check", "--config", str(bad)], capture_output=True,
                             text=True, timeout=30)
    with turnout(secret_config(), tmp_path) as server:
        httpx.post(f"{server.url}/v1/chat/completions", json=CHAT,
                   headers={"authorization": f"Bearer {SECRETS['client']}"}, timeout=30)
        httpx.post(f"{server.url}/v1/chat/completions", json=CHAT,
                   headers={"authorization": "Bearer wrong"})
        # Reloads log too: a valid config, then an invalid one.
        for text in (secret_config(), bad.read_text()):
            server.config.write_text(text)
            server.process.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 10
            while server.log_text().count("config reload") < 1 + (text != secret_config()) \
                    and time.monotonic() < deadline:
                time.sleep(0.05)
        log = server.log_text()
        assert "config reloaded" in log and "config reload refused" in log
    assert check.returncode == 0 and invalid.returncode == 2
    everything = "\n".join([check.stdout, check.stderr, invalid.stdout, invalid.stderr, log])
    for name, secret in SECRETS.items():
        assert secret not in everything, name

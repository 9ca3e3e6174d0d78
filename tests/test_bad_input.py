"""Bad input against a real `turnout serve`: every answer is a contract error or a success.

Schemathesis drives Turnout's own /openapi.json (every check) and the seed's (no server
errors); hand-written cases cover what a generator does not send: broken bytes, huge and
deep documents, slow and chunked bodies over the limit, wrong content types, header
injection. After each, the daemon still serves and its log holds no traceback.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from tests.procs import Turnout, turnout

pytestmark = pytest.mark.e2e

KEY = "client-key-for-fuzzing"
ADMIN_KEY = "admin-key-for-fuzzing"
MAX_BODY = 1_000_000
CONFIG = f"""
[server]
api_keys = ["{KEY}"]
admin_key = "{ADMIN_KEY}"
max_body_bytes = {MAX_BODY}

[[models]]
name = "m"
  [[models.deployments]]
  provider = "mock"

[[models]]
name = "e"
  [[models.deployments]]
  provider = "mock"
"""
AUTH = {"authorization": f"Bearer {KEY}"}
SEED = Path(__file__).parent / "data" / "seed-openapi.json"
ERROR_CODES = {"invalid_json", "missing_field", "invalid_type", "forbidden_field",
               "invalid_api_key", "model_not_found", "request_too_large", "not_found",
               "method_not_allowed"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Turnout]:
    with turnout(CONFIG, tmp_path_factory.mktemp("bad-input")) as running:
        yield running


def schemathesis(*args: str, cwd: Path, key: str = KEY) -> subprocess.CompletedProcess[str]:
    st = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert st is not None
    # One worker: with several, Hypothesis (6.170) trips over its own AST cache across threads.
    return subprocess.run([st, "run", *args, "--seed", "7", "--no-shrink", "-w", "1",
                           "--request-timeout", "10", "-H", f"Authorization: Bearer {key}"],
                          cwd=cwd, capture_output=True, text=True, timeout=120)


def assert_healthy(server: Turnout) -> None:
    assert server.alive()
    log = server.log_text()
    assert "Traceback" not in log
    assert "internal error" not in log


def test_schemathesis_finds_no_mismatch_with_turnouts_own_document(server, tmp_path):
    result = schemathesis(f"{server.url}/openapi.json", "--checks", "all",
                          "--max-examples", "25", "--max-time", "20", cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-6000:]
    admin = schemathesis(f"{server.url}/openapi.json", "--checks", "all", "--include-path",
                         "/admin/status", "--max-examples", "10", "--max-time", "5",
                         cwd=tmp_path, key=ADMIN_KEY)
    assert admin.returncode == 0, admin.stdout[-6000:]
    assert_healthy(server)


def test_schemathesis_on_the_seed_document_finds_no_server_error(server, tmp_path):
    result = schemathesis(str(SEED), "--url", server.url, "--checks", "not_a_server_error",
                          "--max-examples", "25", "--max-time", "10", cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-6000:]
    assert_healthy(server)


def chat(**extra: object) -> bytes:
    return orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}], **extra})


def deep(levels: int) -> str:
    return "[" * levels + "]" * levels


CASES = [
    pytest.param(b'{"model": "m", "messages": [{"role": "us', 400, "invalid_json", id="truncated"),
    pytest.param(b'{"model": "m\xff\xfe", "messages": []}', 400, "invalid_json",
                 id="invalid-utf8"),
    pytest.param(b'{"model":"m","messages":[{"role":"user","content":"\\ud800"}]}', 400,
                 "invalid_json", id="lone-surrogate"),
    pytest.param(b"", 400, "invalid_json", id="empty"),
    pytest.param(b"null", 400, "invalid_type", id="null-body"),
    pytest.param(b"[1, 2]", 400, "invalid_type", id="array-body"),
    pytest.param(chat()[:-1] + b',"temperature":1e400}', 400, "invalid_json", id="float-overflow"),
    pytest.param(chat()[:-1] + b',"max_tokens":100000000000000000000000}', 400, "invalid_type",
                 id="int-past-64-bits"),
    pytest.param(chat()[:-1] + b',"seed":18446744073709551615}', 400, "invalid_type",
                 id="int-past-int64"),
    pytest.param(chat()[:-1] + b',"temperature":1e308}', 200, None, id="huge-but-finite-float"),
    pytest.param(chat()[:-1] + f',"x":{deep(100)}}}'.encode(), 200, None, id="nested-100"),
    pytest.param(chat()[:-1] + f',"x":{deep(300)}}}'.encode(), 400, "invalid_json",
                 id="nested-300"),
    pytest.param(chat()[:-1] + f',"x":{deep(5000)}}}'.encode(), 400, "invalid_json",
                 id="nested-5000"),
    pytest.param(orjson.dumps({"model": "m", "messages": [
        {"role": "user", "content": f"message {i}"} for i in range(10_000)]}), 200, None,
        id="10000-messages"),
    pytest.param(orjson.dumps({"model": "m", "messages": [{"role": "user", "content": [1]}]}),
                 400, "invalid_type", id="content-part-not-object"),
    pytest.param(chat(api_base="http://169.254.169.254/"), 400, "forbidden_field", id="ssrf"),
    pytest.param(b"x" * (MAX_BODY + 1), 413, "request_too_large", id="over-limit"),
]


@pytest.mark.parametrize(("body", "status", "code"), CASES)
def test_bad_body_gets_a_contract_error(server, body, status, code):
    response = httpx.post(f"{server.url}/v1/chat/completions", content=body, headers=AUTH,
                          timeout=30)
    assert response.status_code == status, response.text[:300]
    if code is not None:
        assert response.json()["error"]["code"] == code
    assert_healthy(server)


@pytest.mark.parametrize("content_type", [
    "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
    "application/xml", "image/png", "application/json; charset=latin-1", None])
def test_body_is_parsed_as_json_whatever_the_content_type(server, content_type):
    headers = {**AUTH, **({"content-type": content_type} if content_type else {})}
    response = httpx.post(f"{server.url}/v1/chat/completions", content=chat(), headers=headers)
    assert response.status_code == 200
    form = httpx.post(f"{server.url}/v1/chat/completions", content=b"model=m&messages=x",
                      headers=headers)
    assert form.json()["error"]["code"] == "invalid_json"


def raw_exchange(server: Turnout, head: bytes, pieces: list[bytes], pause: float = 0.0) -> bytes:
    """Sends `head` and `pieces` (pausing between them) over one socket; returns the answer."""
    port = int(server.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head)
        try:
            for piece in pieces:
                sock.sendall(piece)
                time.sleep(pause)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed early, as it should
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    return answer


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def test_declared_body_over_the_limit_sent_slowly_is_refused_before_it_arrives(server):
    head = (b"POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\n"
            + f"authorization: Bearer {KEY}\r\ncontent-length: {MAX_BODY * 4}\r\n\r\n".encode())
    began = time.monotonic()
    answer = raw_exchange(server, head, [b"x" * 1000] * 5, pause=0.2)
    assert status_of(answer) == 413
    assert b"request_too_large" in answer
    assert time.monotonic() - began < 5
    assert_healthy(server)


def test_chunked_body_over_the_limit_is_refused(server):
    head = (b"POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\n"
            + f"authorization: Bearer {KEY}\r\ntransfer-encoding: chunked\r\n\r\n".encode())
    piece = b"x" * 65536
    chunk = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    answer = raw_exchange(server, head, [chunk] * (MAX_BODY // len(piece) + 4), pause=0.01)
    assert status_of(answer) == 413
    assert b"request_too_large" in answer
    assert_healthy(server)


def test_model_name_cannot_inject_headers(server):
    body = orjson.dumps({"model": "m\r\nx-injected: 1", "messages": [
        {"role": "user", "content": "hi"}]})
    response = httpx.post(f"{server.url}/v1/chat/completions", content=body, headers=AUTH)
    assert response.status_code == 404
    assert "x-injected" not in response.headers
    assert response.json()["error"]["code"] == "model_not_found"


@pytest.mark.parametrize("header", [
    b"authorization: Bearer x\r\n\r\nGET /admin/status HTTP/1.1\r\nhost: t\r\n",
    b"x-evil: a\rb\r\n", b"authorization: Bearer \xff\xfe\r\n", b"authorization: \r\n"])
def test_header_injection_attempts_get_no_500(server, header):
    request = (b"POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\n" + header
               + f"content-length: {len(chat())}\r\n\r\n".encode() + chat())
    answer = raw_exchange(server, request, [])
    assert answer == b"" or status_of(answer) in (400, 401)
    assert b"\r\nx-injected" not in answer
    assert_healthy(server)

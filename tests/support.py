"""Shared test helpers: configs from TOML text, recording upstreams, real processes on loopback."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson

from router.app import create_app
from router.config import Config, parse_config

ROOT = Path(__file__).resolve().parent.parent
TURNOUT = [sys.executable, "-m", "router"]


def config_from(text: str, env: dict[str, str] | None = None) -> Config:
    return parse_config(text, env or {})


def openai_config(*, extra: str = "", deployments: int = 1, base_url: str = "http://up.test/v1",
                  key: str = "sk-upstream-secret") -> str:
    """A router.toml with group `m` of `deployments` openai deployments `d0`, `d1`, ..."""
    text = '[[models]]\nname = "m"\n'
    for i in range(deployments):
        text += (f'[[models.deployments]]\nid = "d{i}"\nprovider = "openai"\n'
                 f'base_url = "{base_url}"\napi_key = "{key}"\nmodel = "upstream-model-{i}"\n')
    return text + extra


class RecordingUpstream:
    """An httpx.MockTransport handler: records each request, answers from `responder`."""

    def __init__(self, responder: Callable[[httpx.Request], httpx.Response] | None = None) -> None:
        self.requests: list[httpx.Request] = []
        self.responder = responder or self.ok

    @property
    def calls(self) -> int:
        return len(self.requests)

    def json(self, index: int = -1) -> Any:
        return orjson.loads(self.requests[index].content)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.responder(request)

    @staticmethod
    def ok(request: httpx.Request) -> httpx.Response:
        body = orjson.loads(request.content)
        if request.url.path.endswith("/embeddings"):
            return httpx.Response(200, json={"object": "list", "model": body.get("model"), "data": [
                {"object": "embedding", "index": 0, "embedding": [0.5, 0.25]}],
                "usage": {"prompt_tokens": 1, "total_tokens": 1}})
        if body.get("stream"):
            return httpx.Response(200, content=sse_body(body.get("model", "m"), ["Hel", "lo"]),
                                  headers={"content-type": "text/event-stream"})
        return httpx.Response(200, json=chat_answer(body.get("model", "m"), "Hello"))


def chat_answer(model: str, text: str) -> dict[str, Any]:
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "logprobs": None, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}


def sse_body(model: str, pieces: list[str], *, done: bool = True) -> bytes:
    def event(delta: dict[str, Any], finish: str | None = None) -> bytes:
        chunk = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
                 "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    out = event({"role": "assistant", "content": ""})
    out += b"".join(event({"content": p}) for p in pieces)
    if done:
        out += event({}, "stop") + b"data: [DONE]\n\n"
    return out


@contextlib.asynccontextmanager
async def app_client(config: Config, transport: httpx.AsyncBaseTransport | None = None,
                     **kwargs: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The app in-process, lifespan run, behind an httpx client."""
    app = create_app(config, transport=transport, **kwargs)
    asgi = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=asgi, base_url="http://turnout.test") as client,
    ):
        yield client


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until_up(url: str, process: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before {url} answered")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=0.5).status_code < 500:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stops a process we started, by its PID."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def running(args: list[str], ready_url: str, env: dict[str, str] | None = None,
            log: Path | None = None) -> Iterator[subprocess.Popen[bytes]]:
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115
    process = subprocess.Popen(args, cwd=ROOT, env={**os.environ, **(env or {})},
                               stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until_up(ready_url, process)
        yield process
    finally:
        stop(process)
        if log:
            out.close()  # type: ignore[union-attr]


class FakeUpstreamProcess:
    """tests.fakes.upstream in its own process; `url` is its OpenAI base URL."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.url = f"{self.base}/v1"

    def script(self, *steps: dict[str, Any]) -> None:
        httpx.post(f"{self.base}/_script", json={"steps": list(steps)}).raise_for_status()

    def calls(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = httpx.get(f"{self.base}/_calls").json()
        return result

    def reset(self) -> None:
        httpx.post(f"{self.base}/_reset").raise_for_status()


@contextlib.contextmanager
def fake_upstream_process() -> Iterator[FakeUpstreamProcess]:
    port = free_port()
    args = [sys.executable, "-m", "tests.fakes.upstream", "--port", str(port)]
    with running(args, f"http://127.0.0.1:{port}/_calls"):
        yield FakeUpstreamProcess(port)


@contextlib.contextmanager
def turnout_process(config_text: str, tmp_path: Path, *, env: dict[str, str] | None = None,
                    extra_args: list[str] | None = None) -> Iterator[str]:
    """`turnout serve` on a free port with `config_text`; yields its base URL."""
    port = free_port()
    path = tmp_path / f"router-{port}.toml"
    path.write_text(config_text)
    args = [*TURNOUT, "serve", "--config", str(path), "--port", str(port), *(extra_args or [])]
    with running(args, f"http://127.0.0.1:{port}/health/liveness", env=env,
                 log=tmp_path / f"turnout-{port}.log"):
        yield f"http://127.0.0.1:{port}"

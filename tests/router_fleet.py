"""In-process fake upstreams for the router tests: several deployments behind one
httpx.MockTransport, each failing on command, each counting the calls it saw."""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import orjson

from tests.support import chat_answer, sse_body

Fault = Callable[[httpx.Request, dict[str, Any]], Awaitable[httpx.Response]]

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def router_toml(groups: dict[str, int], *, router: str = "", extra: str = "",
                deployment: str = "") -> str:
    """Groups of openai deployments named `<group><index>`, whose upstream model is that id.

    Retries back off by 1ms unless `router` says otherwise.
    """
    backoff = "" if "retry_backoff" in router else 'retry_backoff = "1ms"\n'
    text = f"[router]\n{backoff}{router}\n"
    for name, count in groups.items():
        text += f'[[models]]\nname = "{name}"\n'
        for i in range(count):
            dep = f"{name}{i}"
            text += (f'[[models.deployments]]\nid = "{dep}"\nprovider = "openai"\n'
                     f'base_url = "http://up.test/v1"\napi_key = "sk-{dep}-secret"\n'
                     f'model = "{dep}"\n{deployment}\n')
    return text + extra


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Fleet:
    """Deployment id (the upstream model name) -> behaviour; answers normally by default."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.cancelled: Counter[str] = Counter()
        self.faults: dict[str, tuple[Fault, int]] = {}
        self.bodies: list[dict[str, Any]] = []
        self.arrived: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def fail(self, deployment: str, fault: Fault, times: int = -1) -> None:
        """`deployment` answers with `fault` for its next `times` calls (-1: until healed)."""
        self.faults[deployment] = (fault, times)

    def heal(self, deployment: str) -> None:
        self.faults.pop(deployment, None)

    async def handle(self, request: httpx.Request) -> httpx.Response:
        body = orjson.loads(request.content)
        dep = body["model"]
        self.calls[dep] += 1
        self.arrived[dep].set()
        self.bodies.append(body)
        fault, times = self.faults.get(dep, (None, 0))
        try:
            if fault is not None:
                if times > 0:
                    self.faults[dep] = (fault, times - 1)
                    if times == 1:
                        del self.faults[dep]
                return await fault(request, body)
            return ok(request, body)
        except asyncio.CancelledError:
            self.cancelled[dep] += 1
            raise


def ok(request: httpx.Request, body: dict[str, Any]) -> httpx.Response:
    if request.url.path.endswith("/embeddings"):
        return httpx.Response(200, json={"object": "list", "model": body["model"], "data": [
            {"object": "embedding", "index": 0, "embedding": [0.5]}],
            "usage": {"prompt_tokens": 4, "total_tokens": 4}})
    if body.get("stream"):
        return httpx.Response(200, content=sse_body(body["model"], ["Hel", "lo"]),
                              headers={"content-type": "text/event-stream"})
    return httpx.Response(200, json=chat_answer(body["model"], f"Hello from {body['model']}"))


def status(code: int, *, retry_after: str | None = None,
           error: dict[str, Any] | None = None) -> Fault:
    async def fault(request: httpx.Request, body: dict[str, Any]) -> httpx.Response:
        headers = {"retry-after": retry_after} if retry_after is not None else {}
        payload = error or {"message": f"upstream says {code} for key sk-{body['model']}-secret",
                            "type": "server_error", "param": None, "code": None}
        return httpx.Response(code, json={"error": payload}, headers=headers)
    return fault


def context_length() -> Fault:
    return status(400, error={"message": "This model's maximum context length is 8192 tokens",
                              "type": "invalid_request_error", "param": "messages",
                              "code": "context_length_exceeded"})


def hang(event: asyncio.Event | None = None, seconds: float = 30.0) -> Fault:
    """Answers only once `event` is set (or after `seconds`)."""
    async def fault(request: httpx.Request, body: dict[str, Any]) -> httpx.Response:
        if event is None:
            await asyncio.sleep(seconds)
        else:
            await event.wait()
        return ok(request, body)
    return fault


def dropped() -> Fault:
    async def fault(request: httpx.Request, body: dict[str, Any]) -> httpx.Response:
        raise httpx.RemoteProtocolError("peer closed connection", request=request)
    return fault


def refused() -> Fault:
    async def fault(request: httpx.Request, body: dict[str, Any]) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)
    return fault


def malformed() -> Fault:
    async def fault(request: httpx.Request, body: dict[str, Any]) -> httpx.Response:
        return httpx.Response(200, content=b"<html>gateway hiccup</html>")
    return fault


def no_choices() -> Fault:
    async def fault(request: httpx.Request, body: dict[str, Any]) -> httpx.Response:
        return httpx.Response(200, json={"id": "x", "object": "chat.completion"})
    return fault


def stream_breaking(after_pieces: int) -> Fault:
    """A stream that stops without [DONE] after `after_pieces` content chunks (0: before any
    content: only the role chunk)."""
    async def fault(request: httpx.Request, body: dict[str, Any]) -> httpx.Response:
        pieces = ["Par", "tial", "!"][:after_pieces]
        return httpx.Response(200, content=sse_body(body["model"], pieces, done=False),
                              headers={"content-type": "text/event-stream"})
    return fault


def stream_error_event() -> Fault:
    async def fault(request: httpx.Request, body: dict[str, Any]) -> httpx.Response:
        content = b'data: {"error": {"message": "overloaded", "type": "server_error"}}\n\n'
        return httpx.Response(200, content=content, headers={"content-type": "text/event-stream"})
    return fault


def sse_events(text: str) -> list[str]:
    return [line[6:] for line in text.split("\n\n") if line.startswith("data: ")]

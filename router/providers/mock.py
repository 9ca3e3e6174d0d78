"""The built-in `mock` provider: deterministic local answers for demos, tests and benchmarks."""

from __future__ import annotations

import asyncio
import hashlib
import struct
import time
from collections.abc import AsyncIterator
from typing import Any

from router.config import Deployment
from router.providers.base import Answer, Chunk

__all__ = ["MockProvider"]


class MockProvider:
    """Echoes the last user message (or says `mock_response`), after `mock_latency`.

    The same request always gets the same text, so the mock is usable in cache tests;
    `id` and `created` differ between calls, as they do upstream.
    """

    def __init__(self, deployment: Deployment) -> None:
        self.deployment = deployment

    def reply_text(self, body: dict[str, Any]) -> str:
        if self.deployment.mock_response is not None:
            return self.deployment.mock_response
        return f"Mock reply from {self.deployment.id}: {_last_user_text(body)}"

    async def complete(self, body: dict[str, Any]) -> Answer:
        await self._wait()
        text = self.reply_text(body)
        n = _choice_count(body)
        choices = [
            {"index": i, "message": {"role": "assistant", "content": text, "refusal": None},
             "logprobs": None, "finish_reason": "stop"}
            for i in range(n)
        ]
        return Answer({
            "id": _completion_id(), "object": "chat.completion", "created": int(time.time()),
            "model": self._model(body), "choices": choices,
            "usage": _usage(body, text, n), "system_fingerprint": None,
        })

    async def stream(self, body: dict[str, Any]) -> AsyncIterator[Chunk]:
        await self._wait()
        text = self.reply_text(body)
        n = _choice_count(body)
        base = {"id": _completion_id(), "object": "chat.completion.chunk",
                "created": int(time.time()), "model": self._model(body),
                "system_fingerprint": None}

        def chunk(i: int, delta: dict[str, Any], finish: str | None = None) -> Chunk:
            choice = {"index": i, "delta": delta, "logprobs": None, "finish_reason": finish}
            return Chunk({**base, "choices": [choice]})

        for i in range(n):
            yield chunk(i, {"role": "assistant", "content": ""})
            for piece in _pieces(text):
                yield chunk(i, {"content": piece})
            yield chunk(i, {}, "stop")
        options = body.get("stream_options")
        if isinstance(options, dict) and options.get("include_usage"):
            yield Chunk({**base, "choices": [], "usage": _usage(body, text, n)})

    async def embed(self, body: dict[str, Any]) -> Answer:
        await self._wait()
        raw_input = body.get("input")
        inputs = raw_input if isinstance(raw_input, list) else [raw_input]
        dims = body.get("dimensions")
        size = dims if isinstance(dims, int) and 0 < dims <= 4096 else 8
        data = [
            {"object": "embedding", "index": i, "embedding": _vector(repr(item), size)}
            for i, item in enumerate(inputs)
        ]
        tokens = sum(len(str(item).split()) for item in inputs)
        return Answer({"object": "list", "data": data, "model": self._model(body),
                       "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    async def aclose(self) -> None:
        return None

    def _model(self, body: dict[str, Any]) -> str:
        return self.deployment.model or str(body.get("model"))

    async def _wait(self) -> None:
        if self.deployment.mock_latency > 0:
            await asyncio.sleep(self.deployment.mock_latency)


def _completion_id() -> str:
    return f"chatcmpl-mock-{time.time_ns():x}"


def _choice_count(body: dict[str, Any]) -> int:
    n = body.get("n")
    return n if isinstance(n, int) and 1 <= n <= 16 else 1


def _last_user_text(body: dict[str, Any]) -> str:
    messages = body.get("messages")
    for message in reversed(messages if isinstance(messages, list) else []):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return " ".join(
                    str(p.get("text", "")) for p in content
                    if isinstance(p, dict) and p.get("type") == "text"
                )
    return ""


def _pieces(text: str) -> list[str]:
    words = text.split(" ")
    return [w if i == 0 else f" {w}" for i, w in enumerate(words)]


def _usage(body: dict[str, Any], text: str, n: int) -> dict[str, int]:
    prompt = sum(
        len(str(m.get("content", "")).split())
        for m in body.get("messages") or [] if isinstance(m, dict)
    )
    completion = len(text.split()) * n
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


def _vector(seed: str, size: int) -> list[float]:
    digest = b""
    counter = 0
    while len(digest) < size * 4:
        digest += hashlib.sha256(f"{seed}:{counter}".encode()).digest()
        counter += 1
    ints = struct.unpack(f"<{size}I", digest[: size * 4])
    return [round(i / 2**32 * 2 - 1, 6) for i in ints]

"""What every provider shares: answers and chunks, the Provider protocol, error mapping."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
import orjson

from router.config import Deployment
from router.errors import (
    ContextLengthExceeded,
    UpstreamAuthFailed,
    UpstreamFailure,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
)

__all__ = [
    "Answer",
    "Chunk",
    "Provider",
    "classify_status",
    "is_content",
    "parse_json_body",
    "parse_retry_after",
    "transport_errors",
]

# What a client's own mistake looks like upstream: passed through, not retried.
CLIENT_ERROR_STATUSES = frozenset({400, 404, 413, 422})


@dataclass(slots=True)
class _Json:
    """OpenAI-shaped JSON; `raw` is its encoding: the upstream's own bytes when relayed
    as they came, else made once, on first use."""

    data: dict[str, Any]
    raw: bytes | None = None

    def encode(self) -> bytes:
        if self.raw is None:
            self.raw = orjson.dumps(self.data)
        return self.raw


@dataclass(slots=True)
class Answer(_Json):
    """A complete answer (chat completion or embeddings)."""


@dataclass(slots=True)
class Chunk(_Json):
    """One `chat.completion.chunk` of a stream."""


class Provider(Protocol):
    """One deployment's upstream, speaking OpenAI's shapes on Turnout's side.

    `body` is the client's JSON without Turnout's own fields; the provider substitutes the
    upstream model and translates. Failures raise UpstreamFailure (or a subclass); the
    client's own mistakes raise UpstreamRejected.
    """

    deployment: Deployment

    async def complete(self, body: dict[str, Any]) -> Answer: ...

    def stream(self, body: dict[str, Any]) -> AsyncIterator[Chunk]: ...

    async def embed(self, body: dict[str, Any]) -> Answer: ...

    async def aclose(self) -> None: ...


def is_content(chunk: dict[str, Any]) -> bool:
    """True for a chunk that commits a stream: text, a tool call or a finish reason."""
    choices = chunk.get("choices")
    if not isinstance(choices, list):
        return False
    for choice in choices:
        if not isinstance(choice, dict):
            continue
        if choice.get("finish_reason"):
            return True
        delta = choice.get("delta")
        if isinstance(delta, dict) and (
            delta.get("content") or delta.get("tool_calls") or delta.get("function_call")
            or delta.get("refusal")
        ):
            return True
    return False


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("retry-after-ms")
    if value is not None:
        with contextlib.suppress(ValueError):
            return max(0.0, float(value) / 1000)
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def parse_json_body(deployment: str, raw: bytes) -> dict[str, Any]:
    """The upstream's 200 body as a JSON object; anything else is a malformed-body failure."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise UpstreamFailure(deployment, "malformed JSON body") from None
    if not isinstance(data, dict):
        raise UpstreamFailure(deployment, "malformed body: not a JSON object")
    return data


def openai_error_body(raw: bytes, status: int) -> dict[str, Any]:
    """An upstream error body in the OpenAI shape, whatever it was."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        return data
    if isinstance(data, dict) and isinstance(data.get("error"), str):
        message = data["error"]
    elif isinstance(data, dict) and isinstance(data.get("message"), str):
        message = data["message"]
    else:
        message = raw[:500].decode("utf-8", "replace") or f"upstream answered {status}"
    return {"error": {"message": message, "type": "invalid_request_error", "param": None,
                      "code": None}}


_CONTEXT_MARKERS = ("context_length_exceeded", "maximum context length", "context window")


def is_context_length(body: dict[str, Any]) -> bool:
    error = body.get("error")
    if not isinstance(error, dict):
        return False
    if error.get("code") == "context_length_exceeded":
        return True
    message = str(error.get("message") or "").lower()
    return any(marker in message for marker in _CONTEXT_MARKERS)


def classify_status(
    deployment: str, status: int, raw: bytes, headers: Mapping[str, str]
) -> Exception:
    """The exception for an OpenAI-style non-200 answer (contract: how upstream answers count)."""
    if status == 429:
        return UpstreamRateLimited(deployment, parse_retry_after(headers))
    if status in (401, 403):
        return UpstreamAuthFailed(deployment, f"rejected the deployment's key ({status})",
                                  status=status)
    if status in CLIENT_ERROR_STATUSES:
        body = openai_error_body(raw, status)
        if is_context_length(body):
            return ContextLengthExceeded(deployment, status, body)
        return UpstreamRejected(deployment, status, body)
    return UpstreamFailure(deployment, f"answered {status}", status=status)


@contextlib.contextmanager
def transport_errors(deployment: str) -> Iterator[None]:
    """Turn httpx's exceptions into UpstreamFailure: the one place that does it."""
    try:
        yield
    except httpx.TimeoutException:
        raise UpstreamTimeout(deployment, "timed out") from None
    except httpx.HTTPError as exc:
        raise UpstreamFailure(deployment, f"connection error: {type(exc).__name__}") from None

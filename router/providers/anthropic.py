"""The `anthropic` provider: Claude through the Messages API, spoken to as OpenAI's chat API."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx
import orjson

from router.config import Deployment
from router.errors import (
    ContextLengthExceeded,
    UpstreamAuthFailed,
    UpstreamFailure,
    UpstreamRateLimited,
    UpstreamRejected,
)
from router.providers.anthropic_wire import (
    ANTHROPIC_VERSION,
    StreamTranslator,
    to_chat_completion,
    to_messages_request,
)
from router.providers.base import CLIENT_ERROR_STATUSES, Answer, Chunk, parse_retry_after
from router.providers.pool import UpstreamSender
from router.providers.translate import (
    MalformedAnswer,
    StreamError,
    TranslationError,
    rejected,
    scrub,
    wants_usage,
)
from router.providers.vendor import VendorClient

__all__ = ["AnthropicProvider", "classify_anthropic_error"]


class AnthropicProvider:
    def __init__(self, deployment: Deployment,
                 client: UpstreamSender | httpx.AsyncClient) -> None:
        self.deployment = deployment
        assert deployment.model is not None and deployment.base_url is not None
        self._model = deployment.model
        self._url = f"{deployment.base_url}/v1/messages"
        key = deployment.api_key.get_secret_value() if deployment.api_key else None
        headers = {"anthropic-version": ANTHROPIC_VERSION}
        if key:
            headers["x-api-key"] = key
        self._http = VendorClient(
            deployment, client, headers,
            lambda status, raw, hdrs: classify_anthropic_error(deployment.id, status, raw,
                                                               hdrs, key))

    def _request(self, body: dict[str, Any]) -> dict[str, Any]:
        try:
            return to_messages_request(body, self._model)
        except TranslationError as exc:
            raise rejected(self.deployment.id, exc) from None

    async def complete(self, body: dict[str, Any]) -> Answer:
        data = await self._http.post(self._url, self._request(body))
        try:
            return Answer(to_chat_completion(data, self._model))
        except MalformedAnswer as exc:
            raise UpstreamFailure(self.deployment.id, f"malformed body: {exc}") from None

    async def stream(self, body: dict[str, Any]) -> AsyncIterator[Chunk]:
        """Chunks until Anthropic's message_stop; a stream cut before it raises UpstreamFailure."""
        dep = self.deployment.id
        request = {**self._request(body), "stream": True}
        translator = StreamTranslator(self._model, wants_usage(body))
        events = self._http.events(self._url, request)
        try:
            async for event, data in events:
                try:
                    chunks = translator.feed(event.event, data)
                except MalformedAnswer as exc:
                    raise UpstreamFailure(dep, f"malformed stream: {exc}") from None
                except StreamError as exc:
                    if exc.kind == "rate_limit_error":
                        raise UpstreamRateLimited(dep, None) from None
                    raise UpstreamFailure(dep, f"error event in stream: {exc.kind}") from None
                for item in chunks:
                    yield Chunk(item)
                if translator.finished:
                    return
        finally:
            await events.aclose()  # type: ignore[attr-defined]
        raise UpstreamFailure(dep, "stream ended before message_stop")

    async def embed(self, body: dict[str, Any]) -> Answer:
        error = TranslationError("Provider 'anthropic' has no embeddings endpoint", "model",
                                 "unsupported_endpoint")
        raise rejected(self.deployment.id, error)

    async def aclose(self) -> None:
        return None


def classify_anthropic_error(deployment: str, status: int, raw: bytes,
                             headers: Mapping[str, str], key: str | None) -> Exception:
    """The exception for a non-200 Messages API answer (contract: how upstream answers count).

    Anthropic's errors are `{"type": "error", "error": {"type", "message"}}`; 529 is its
    `overloaded_error`, a failure of the deployment like a 5xx.
    """
    if status == 429:
        return UpstreamRateLimited(deployment, parse_retry_after(headers))
    if status in (401, 403):
        return UpstreamAuthFailed(deployment, f"rejected the deployment's key ({status})",
                                  status=status)
    if status not in CLIENT_ERROR_STATUSES:
        reason = "overloaded (529)" if status == 529 else f"answered {status}"
        return UpstreamFailure(deployment, reason, status=status)
    kind, message = _error_fields(raw)
    message = scrub(message or f"upstream answered {status}", key)
    if "credit balance" in message.lower():
        # Anthropic answers an account out of credit with a 400: the deployment's problem,
        # which another deployment may not have.
        return UpstreamFailure(deployment, f"account cannot pay ({status})", status=status)
    if "prompt is too long" in message.lower():
        body = {"error": {"message": message, "type": "invalid_request_error",
                          "param": "messages", "code": "context_length_exceeded"}}
        return ContextLengthExceeded(deployment, status, body)
    rejection: dict[str, Any] = {"error": {"message": message, "type": "invalid_request_error",
                                           "param": None, "code": kind}}
    return UpstreamRejected(deployment, status, rejection)


def _error_fields(raw: bytes) -> tuple[str | None, str | None]:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None, raw[:500].decode("utf-8", "replace") or None
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict):
        return None, None
    kind = error.get("type")
    message = error.get("message")
    return (str(kind) if kind else None), (str(message) if message else None)

"""The `gemini` provider: Gemini's generateContent API, spoken to as OpenAI's chat API."""

from __future__ import annotations

import re
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
from router.providers.base import CLIENT_ERROR_STATUSES, Answer, Chunk, parse_retry_after
from router.providers.gemini_wire import (
    GeminiStreamTranslator,
    from_embed_response,
    to_chat_completion,
    to_embed_request,
    to_gemini_request,
)
from router.providers.pool import UpstreamSender
from router.providers.translate import (
    MalformedAnswer,
    TranslationError,
    rejected,
    scrub,
    wants_usage,
)
from router.providers.vendor import VendorClient

__all__ = ["GeminiProvider", "classify_gemini_error"]


class GeminiProvider:
    def __init__(self, deployment: Deployment,
                 client: UpstreamSender | httpx.AsyncClient) -> None:
        self.deployment = deployment
        assert deployment.model is not None and deployment.base_url is not None
        # Google's SDKs accept "models/gemini-…" as well as the bare name.
        self._model = deployment.model.removeprefix("models/")
        self._root = f"{deployment.base_url}/v1beta/models/{self._model}"
        key = deployment.api_key.get_secret_value() if deployment.api_key else None
        headers = {"x-goog-api-key": key} if key else {}
        self._http = VendorClient(
            deployment, client, headers,
            lambda status, raw, hdrs: classify_gemini_error(deployment.id, status, raw, hdrs,
                                                            key))

    async def complete(self, body: dict[str, Any]) -> Answer:
        request = self._translated(to_gemini_request, body)
        data = await self._http.post(f"{self._root}:generateContent", request)
        try:
            return Answer(to_chat_completion(data, self._model, _choices(body)))
        except MalformedAnswer as exc:
            raise UpstreamFailure(self.deployment.id, f"malformed body: {exc}") from None

    async def stream(self, body: dict[str, Any]) -> AsyncIterator[Chunk]:
        """Chunks until Gemini closes the stream; one closed early raises UpstreamFailure."""
        dep = self.deployment.id
        request = self._translated(to_gemini_request, body)
        translator = GeminiStreamTranslator(self._model, _choices(body), wants_usage(body))
        events = self._http.events(f"{self._root}:streamGenerateContent?alt=sse", request)
        try:
            async for _event, data in events:
                if isinstance(data, dict) and "error" in data:
                    raise UpstreamFailure(dep, "error in stream")
                for item in self._fed(translator, data):
                    yield Chunk(item)
        finally:
            await events.aclose()  # type: ignore[attr-defined]
        try:
            tail = translator.close()
        except MalformedAnswer as exc:
            raise UpstreamFailure(dep, f"broken stream: {exc}") from None
        for item in tail:
            yield Chunk(item)

    def _fed(self, translator: GeminiStreamTranslator, data: Any) -> list[dict[str, Any]]:
        try:
            return translator.feed(data)
        except MalformedAnswer as exc:
            raise UpstreamFailure(self.deployment.id, f"malformed stream: {exc}") from None

    async def embed(self, body: dict[str, Any]) -> Answer:
        request = self._translated(lambda b: to_embed_request(b, self._model), body)
        data = await self._http.post(f"{self._root}:batchEmbedContents", request)
        try:
            return Answer(from_embed_response(data, self._model, len(request["requests"]),
                                              body.get("encoding_format")))
        except MalformedAnswer as exc:
            raise UpstreamFailure(self.deployment.id, f"malformed body: {exc}") from None

    async def aclose(self) -> None:
        return None

    def _translated(self, translate: Any, body: dict[str, Any]) -> dict[str, Any]:
        try:
            request: dict[str, Any] = translate(body)
        except TranslationError as exc:
            raise rejected(self.deployment.id, exc) from None
        return request


def _choices(body: Mapping[str, Any]) -> int:
    n = body.get("n")
    return n if isinstance(n, int) and n > 0 else 1


_DELAY = re.compile(r"^(\d+(?:\.\d+)?)s$")


def classify_gemini_error(deployment: str, status: int, raw: bytes,
                          headers: Mapping[str, str], key: str | None) -> Exception:
    """The exception for a non-200 Gemini answer (contract: how upstream answers count).

    Google's errors are `{"error": {"code", "message", "status", "details"}}`; a wrong key
    is a 400 whose details hold an ErrorInfo with reason API_KEY_INVALID.
    """
    error = _error_object(raw)
    raw_details = error.get("details")
    details: list[Any] = raw_details if isinstance(raw_details, list) else []
    reasons = {d.get("reason") for d in details if isinstance(d, dict)}
    if status in (401, 403) or "API_KEY_INVALID" in reasons:
        return UpstreamAuthFailed(deployment, f"rejected the deployment's key ({status})",
                                  status=status)
    if status == 429:
        return UpstreamRateLimited(deployment, _retry_delay(details)
                                   or parse_retry_after(headers))
    if status not in CLIENT_ERROR_STATUSES:
        return UpstreamFailure(deployment, f"answered {status}", status=status)
    message = scrub(str(error.get("message") or f"upstream answered {status}"), key)
    lowered = message.lower()
    if "input token count" in lowered and "exceeds" in lowered:
        body = {"error": {"message": message, "type": "invalid_request_error",
                          "param": "messages", "code": "context_length_exceeded"}}
        return ContextLengthExceeded(deployment, status, body)
    code = str(error["status"]).lower() if error.get("status") else None
    rejection: dict[str, Any] = {"error": {"message": message, "type": "invalid_request_error",
                                           "param": None, "code": code}}
    return UpstreamRejected(deployment, status, rejection)


def _error_object(raw: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {"message": raw[:500].decode("utf-8", "replace")}
    # Some Google front ends wrap the error in a one-element list.
    if isinstance(data, list) and len(data) == 1:
        data = data[0]
    error = data.get("error") if isinstance(data, dict) else None
    return error if isinstance(error, dict) else {}


def _retry_delay(details: list[Any]) -> float | None:
    for detail in details:
        if isinstance(detail, dict) and isinstance(detail.get("retryDelay"), str):
            match = _DELAY.match(detail["retryDelay"])
            if match:
                return float(match.group(1))
    return None

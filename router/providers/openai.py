"""The `openai` provider: any OpenAI-compatible server; bodies are relayed as they are."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
from httpx_sse import EventSource

from router.config import Deployment
from router.errors import UpstreamFailure
from router.providers.base import Answer, Chunk, classify_status, parse_json_body, transport_errors
from router.providers.pool import UpstreamSender, sender_of

__all__ = ["OpenAIProvider"]


class OpenAIProvider:
    def __init__(self, deployment: Deployment, http: UpstreamSender | httpx.AsyncClient) -> None:
        self.deployment = deployment
        self._sender = sender_of(http)
        self._headers = httpx.Headers(self.auth_headers(deployment))
        self._urls: dict[str, httpx.URL] = {}

    @staticmethod
    def auth_headers(deployment: Deployment) -> dict[str, str]:
        headers = {"content-type": "application/json", **deployment.headers}
        if deployment.api_key is not None:
            headers["authorization"] = f"Bearer {deployment.api_key.get_secret_value()}"
        return headers

    def url(self, operation: str) -> str:
        """`operation` is "chat/completions" or "embeddings"."""
        return f"{self.deployment.base_url}/{operation}"

    def payload(self, body: dict[str, Any]) -> bytes:
        return orjson.dumps({**body, "model": self.deployment.model})

    def _request(self, operation: str, body: dict[str, Any]) -> httpx.Request:
        url = self._urls.get(operation)
        if url is None:
            url = self._urls[operation] = httpx.URL(self.url(operation))
        return self._sender.build("POST", url, content=self.payload(body), headers=self._headers)

    async def complete(self, body: dict[str, Any]) -> Answer:
        return await self._post_json(self._request("chat/completions", body))

    async def embed(self, body: dict[str, Any]) -> Answer:
        return await self._post_json(self._request("embeddings", body))

    async def stream(self, body: dict[str, Any]) -> AsyncIterator[Chunk]:
        dep = self.deployment.id
        request = self._request("chat/completions", body)
        with transport_errors(dep):
            response = await self._sender.send(request, stream=True)
        try:
            if response.status_code != 200:
                with transport_errors(dep):
                    raw = await response.aread()
                raise classify_status(dep, response.status_code, raw, response.headers)
            async for chunk in relay_sse(dep, response):
                yield chunk
        finally:
            await response.aclose()

    async def aclose(self) -> None:
        return None

    async def _post_json(self, request: httpx.Request) -> Answer:
        dep = self.deployment.id
        with transport_errors(dep):
            response = await self._sender.send(request)
        if response.status_code != 200:
            raise classify_status(dep, response.status_code, response.content, response.headers)
        return Answer(parse_json_body(dep, response.content), raw=response.content)


async def relay_sse(deployment: str, response: httpx.Response) -> AsyncIterator[Chunk]:
    """Chunks of an OpenAI-style SSE stream; ends at `[DONE]`, fails if the stream breaks.

    A stream that ends before `[DONE]` and before any finish reason broke off: that is a
    failure, so that nothing partial is ever taken for a complete answer.
    """
    finished = False
    with transport_errors(deployment):
        async for event in EventSource(response).aiter_sse():
            data = event.data
            if data == "[DONE]":
                return
            if not data:
                continue
            try:
                parsed = orjson.loads(data)
            except orjson.JSONDecodeError:
                raise UpstreamFailure(deployment, "malformed stream chunk") from None
            if not isinstance(parsed, dict):
                raise UpstreamFailure(deployment, "malformed stream chunk")
            if event.event == "error" or "error" in parsed:
                raise UpstreamFailure(deployment, "error event in stream")
            finished = finished or _has_finish_reason(parsed)
            yield Chunk(parsed, raw=data.encode())
    if not finished:
        raise UpstreamFailure(deployment, "stream ended without [DONE]")


def _has_finish_reason(chunk: dict[str, Any]) -> bool:
    choices = chunk.get("choices")
    return isinstance(choices, list) and any(
        isinstance(c, dict) and c.get("finish_reason") for c in choices
    )

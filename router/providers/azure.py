"""The `azure` provider: Azure OpenAI's deployment URLs, `api-version` and `api-key` header.

Azure speaks OpenAI's wire format, so bodies and streams are relayed as the `openai`
provider relays them; only the URL and the authentication differ.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import httpx
import orjson

from router.config import Deployment
from router.providers.base import Chunk
from router.providers.openai import OpenAIProvider
from router.providers.pool import UpstreamSender

__all__ = ["DEFAULT_API_VERSION", "AzureProvider"]

# The data-plane inference API version used when a deployment sets no `api_version`:
# the current generally available (non-preview) one, documented in README.md, "Providers".
DEFAULT_API_VERSION = "2024-10-21"


class AzureProvider(OpenAIProvider):
    def __init__(self, deployment: Deployment,
                 client: UpstreamSender | httpx.AsyncClient) -> None:
        super().__init__(deployment, client)
        assert deployment.model is not None and deployment.base_url is not None
        # The SDK's azure_endpoint is the resource URL; tolerate one that already ends in
        # /openai, as copied from some portal pages.
        endpoint = deployment.base_url.removesuffix("/openai")
        name = quote(deployment.model, safe="")
        self._prefix = f"{endpoint}/openai/deployments/{name}"
        self._version = quote(deployment.api_version or DEFAULT_API_VERSION, safe="")

    @staticmethod
    def auth_headers(deployment: Deployment) -> dict[str, str]:
        headers = {"content-type": "application/json", **deployment.headers}
        if deployment.api_key is not None:
            headers["api-key"] = deployment.api_key.get_secret_value()
        return headers

    def url(self, operation: str) -> str:
        return f"{self._prefix}/{operation}?api-version={self._version}"

    def payload(self, body: dict[str, Any]) -> bytes:
        # The deployment in the URL chooses the model; Azure ignores `model` in the body,
        # and the client's group name means nothing to it.
        return orjson.dumps({k: v for k, v in body.items() if k != "model"})

    async def stream(self, body: dict[str, Any]) -> AsyncIterator[Chunk]:
        """OpenAI's stream, without Azure's prompt-filter announcements.

        Azure opens a stream with a chunk holding only `prompt_filter_results` (no choices,
        an empty `object`), which is not a valid `chat.completion.chunk`; it carries nothing
        of the answer.
        """
        chunks = super().stream(body)
        try:
            async for chunk in chunks:
                if chunk.data.get("choices") or chunk.data.get("usage") is not None:
                    yield chunk
        finally:
            await chunks.aclose()  # type: ignore[attr-defined]

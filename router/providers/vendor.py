"""HTTP plumbing shared by the providers that translate: JSON posts and SSE event streams."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx
import orjson
from httpx_sse import EventSource, ServerSentEvent

from router.config import Deployment
from router.errors import UpstreamFailure
from router.providers.base import parse_json_body, transport_errors
from router.providers.pool import UpstreamSender, sender_of

__all__ = ["VendorClient"]


class VendorClient:
    """Posts JSON to one deployment's vendor; non-200 answers go through `classify`.

    `classify(status, raw, headers)` returns the exception for a non-200 answer (the
    vendor's error mapping); malformed bodies and broken connections raise UpstreamFailure.
    """

    def __init__(self, deployment: Deployment, http: UpstreamSender | httpx.AsyncClient,
                 headers: Mapping[str, str], classify: Any) -> None:
        self.deployment = deployment
        self._sender = sender_of(http)
        self._headers = httpx.Headers(
            {"content-type": "application/json", **headers, **deployment.headers})
        self._classify = classify

    async def post(self, url: str, payload: dict[str, Any]) -> dict[str, Any]:
        """The vendor's 200 JSON object."""
        dep = self.deployment.id
        request = self._sender.build("POST", url, content=orjson.dumps(payload),
                                     headers=self._headers)
        with transport_errors(dep):
            response = await self._sender.send(request)
        if response.status_code != 200:
            raise self._classify(response.status_code, response.content, response.headers)
        return parse_json_body(dep, response.content)

    async def events(self, url: str, payload: dict[str, Any]
                     ) -> AsyncIterator[tuple[ServerSentEvent, Any]]:
        """Each SSE event of the vendor's stream with its JSON data parsed.

        Ends when the connection does: deciding whether that was the vendor's end of the
        stream is the caller's job. Closing the iterator closes the connection.
        """
        dep = self.deployment.id
        request = self._sender.build("POST", url, content=orjson.dumps(payload),
                                     headers=self._headers)
        with transport_errors(dep):
            response = await self._sender.send(request, stream=True)
        try:
            if response.status_code != 200:
                with transport_errors(dep):
                    raw = await response.aread()
                raise self._classify(response.status_code, raw, response.headers)
            with transport_errors(dep):
                async for event in EventSource(response).aiter_sse():
                    if not event.data:
                        continue
                    try:
                        data = orjson.loads(event.data)
                    except orjson.JSONDecodeError:
                        raise UpstreamFailure(dep, "malformed stream event") from None
                    yield event, data
        finally:
            await response.aclose()

"""One shared HTTP connection pool per upstream origin, opened and closed by the lifespan."""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx

__all__ = ["ClientPool"]


class ClientPool:
    """Hands out one `httpx.AsyncClient` per scheme://host:port.

    `transport` replaces the network for every client (tests pass an `httpx.MockTransport`).
    Timeouts are the dispatcher's business, so the clients themselves have generous ones.
    """

    def __init__(self, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._transport = transport
        self._clients: dict[str, httpx.AsyncClient] = {}

    def client_for(self, base_url: str) -> httpx.AsyncClient:
        parts = urlsplit(base_url)
        origin = f"{parts.scheme}://{parts.netloc}"
        client = self._clients.get(origin)
        if client is None:
            client = httpx.AsyncClient(
                transport=self._transport,
                timeout=httpx.Timeout(connect=10.0, read=None, write=30.0, pool=None),
                limits=httpx.Limits(max_connections=1000, max_keepalive_connections=200),
                follow_redirects=False,
            )
            self._clients[origin] = client
        return client

    async def aclose(self) -> None:
        clients, self._clients = self._clients, {}
        for client in clients.values():
            await client.aclose()

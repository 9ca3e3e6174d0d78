"""One shared HTTP connection pool per upstream origin, opened and closed by the lifespan.

httpx is the client API; the bytes move through aiohttp (httpx-aiohttp's transport).
Measured in bench/ (bench/PROFILE.md): under 32 concurrent requests, httpx's default
transport (httpcore) spends most of Turnout's CPU in its pool, checking every idle
connection's socket for readability before each request; aiohttp's connector learns
about closed connections from the event loop instead.
"""

from __future__ import annotations

import contextlib
import ssl
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from urllib.parse import urlsplit

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

__all__ = ["ClientPool", "UpstreamTransport", "environment_proxy"]

MAX_CONNECTIONS = 1000  # per origin
KEEPALIVE_SECONDS = 30.0


class ClientPool:
    """Hands out one `httpx.AsyncClient` per scheme://host:port.

    `transport` replaces the network for every client (tests pass an `httpx.MockTransport`).
    Timeouts are the dispatcher's business, so the clients themselves have generous ones.
    """

    def __init__(self, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._transport = transport
        self._clients: dict[str, httpx.AsyncClient] = {}
        self._tls: ssl.SSLContext | None = None

    def client_for(self, base_url: str) -> httpx.AsyncClient:
        parts = urlsplit(base_url)
        origin = f"{parts.scheme}://{parts.netloc}"
        client = self._clients.get(origin)
        if client is None:
            client = httpx.AsyncClient(
                transport=self._transport or UpstreamTransport(origin, self._tls_context()),
                timeout=httpx.Timeout(connect=10.0, read=None, write=30.0, pool=None),
                follow_redirects=False,
                trust_env=False,  # UpstreamTransport applies the environment's proxy settings
            )
            self._clients[origin] = client
        return client

    def _tls_context(self) -> ssl.SSLContext:
        # Loading the CA bundle takes milliseconds: once per pool, not once per origin.
        if self._tls is None:
            self._tls = httpx.create_ssl_context()
        return self._tls

    async def aclose(self) -> None:
        clients, self._clients = self._clients, {}
        for client in clients.values():
            await client.aclose()


class UpstreamTransport(httpx.AsyncBaseTransport):
    """httpx requests over one aiohttp connection pool, to the upstream at `origin`.

    The environment's proxy settings (HTTPS_PROXY, NO_PROXY, ...) are read once, here,
    not on every request. The aiohttp session opens on the first request, inside the
    event loop; `aclose` closes it with its connections.
    """

    def __init__(self, origin: str, tls: ssl.SSLContext) -> None:
        self._inner = AiohttpTransport(
            verify=tls,
            proxy=environment_proxy(origin),
            client=_session_factory(tls),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        with _true_timeouts_only():
            response = await self._inner.handle_async_request(request)
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = _RemappedStream(response.stream)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


class _RemappedStream(httpx.AsyncByteStream):
    def __init__(self, inner: httpx.AsyncByteStream) -> None:
        self._inner = inner

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _true_timeouts_only():
            async for chunk in self._inner:
                yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


@contextlib.contextmanager
def _true_timeouts_only() -> Iterator[None]:
    # httpx-aiohttp maps every aiohttp.ClientConnectionError to httpx.ConnectTimeout; an
    # upstream that refused or dropped the connection did not time out, and failures are
    # counted and reported by kind.
    try:
        yield
    except httpx.ConnectTimeout as exc:
        cause = exc.__cause__
        if isinstance(cause, TimeoutError):
            raise
        if isinstance(cause, aiohttp.ClientConnectorError):
            raise httpx.ConnectError(f"upstream refused the connection: {cause}") from exc
        raise httpx.RemoteProtocolError(f"upstream dropped the connection: {cause}") from exc


def _session_factory(tls: ssl.SSLContext) -> Callable[[], aiohttp.ClientSession]:
    def open_session() -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(limit=MAX_CONNECTIONS, keepalive_timeout=KEEPALIVE_SECONDS,
                                         ssl=tls)
        # httpx keeps the cookies; a second jar in aiohttp would only cost time.
        return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar())

    return open_session


def environment_proxy(origin: str) -> httpx.Proxy | None:
    """The proxy the environment names for `origin` (NO_PROXY honoured), else None."""
    parts = urlsplit(origin)
    proxies = urllib.request.getproxies()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if not proxy or urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    return httpx.Proxy(proxy)

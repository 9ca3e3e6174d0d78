"""One shared HTTP connection pool per upstream origin, opened and closed by the lifespan.

httpx is the client API; the bytes move through aiohttp (httpx-aiohttp's transport).
Measured in bench/ (bench/PROFILE.md): under 32 concurrent requests, httpx's default
transport (httpcore) spends most of Turnout's CPU in its pool, checking every idle
connection's socket for readability before each request; aiohttp's connector learns
about closed connections from the event loop instead. `sender_for` is the hot path:
prepared requests straight to that transport, without AsyncClient's per-request work.
"""

from __future__ import annotations

import contextlib
import ssl
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import httpx
import yarl
from httpx_aiohttp import AiohttpTransport
from httpx_aiohttp.transport import AiohttpResponseStream, map_aiohttp_exceptions

__all__ = ["ClientPool", "Sender", "UpstreamSender", "UpstreamTransport", "environment_proxy",
           "origin_of", "sender_of"]

MAX_CONNECTIONS = 1000  # per origin
KEEPALIVE_SECONDS = 30.0
_MAX_CACHED_URLS = 256


# Timeouts are the dispatcher's business; these only bound a dead network.
TIMEOUT = httpx.Timeout(connect=10.0, read=None, write=30.0, pool=None)
_TIMEOUTS = TIMEOUT.as_dict()


class ClientPool:
    """One transport per scheme://host:port, reached through `client_for` or `sender_for`.

    `transport` replaces the network for every origin (tests pass an `httpx.MockTransport`).
    Transports and clients are closed by `aclose`.
    """

    def __init__(self, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._injected = transport
        self._transports: dict[str, httpx.AsyncBaseTransport] = {}
        self._clients: dict[str, httpx.AsyncClient] = {}
        self._senders: dict[str, UpstreamSender] = {}
        self._tls: ssl.SSLContext | None = None

    def client_for(self, base_url: str) -> httpx.AsyncClient:
        """A full `httpx.AsyncClient` on the origin's shared transport."""
        origin = origin_of(base_url)
        client = self._clients.get(origin)
        if client is None:
            client = httpx.AsyncClient(
                transport=self._transport_for(origin),
                timeout=TIMEOUT,
                follow_redirects=False,
                trust_env=False,  # UpstreamTransport applies the environment's proxy settings
            )
            self._clients[origin] = client
        return client

    def sender_for(self, base_url: str) -> UpstreamSender:
        """The hot path to the origin: see UpstreamSender."""
        origin = origin_of(base_url)
        sender = self._senders.get(origin)
        if sender is None:
            sender = self._senders[origin] = UpstreamSender(self._transport_for(origin))
        return sender

    def _transport_for(self, origin: str) -> httpx.AsyncBaseTransport:
        transport = self._injected or self._transports.get(origin)
        if transport is None:
            transport = UpstreamTransport(origin, self._tls_context())
            self._transports[origin] = transport
        return transport

    def _tls_context(self) -> ssl.SSLContext:
        # Loading the CA bundle takes milliseconds: once per pool, not once per origin.
        if self._tls is None:
            self._tls = httpx.create_ssl_context()
        return self._tls

    async def aclose(self) -> None:
        clients, self._clients = self._clients, {}
        transports, self._transports = self._transports, {}
        self._senders = {}
        for client in clients.values():
            await client.aclose()
        for transport in transports.values():
            await transport.aclose()  # a second close of a client's transport does nothing


class UpstreamSender:
    """Sends prepared `httpx.Request`s straight to an origin's transport.

    This is what `httpx.AsyncClient.send` does minus the parts Turnout never uses and pays
    for on every request: base-URL merging, the cookie jar (it runs every response through
    http.cookiejar), auth and redirect handling, event hooks and httpx's INFO log line.
    Measured under 32 connections (bench/PROFILE.md): about half the client-side CPU of
    `client.post` over the same transport. Transport errors are httpx's, as with a client.
    """

    def __init__(self, transport: httpx.AsyncBaseTransport) -> None:
        self._transport = transport

    @staticmethod
    def build(method: str, url: httpx.URL | str, *, content: bytes,
              headers: httpx.Headers | Mapping[str, str]) -> httpx.Request:
        """The request `httpx.Request(method, url, content=..., headers=...)` would be.

        Built from a stream, so httpx skips sniffing and encoding the content and merging
        its own headers: Host and Content-Length are set here.
        """
        if not isinstance(url, httpx.URL):
            url = httpx.URL(url)
        given = headers.raw if isinstance(headers, httpx.Headers) else [
            (k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
        named = {k.lower() for k, _ in given}
        raw = [(b"Host", url.netloc), *given] if url.host and b"host" not in named \
            else list(given)
        if b"content-length" not in named:
            raw.append((b"Content-Length", str(len(content)).encode()))
        request = httpx.Request(method, url, headers=raw, stream=httpx.ByteStream(content),
                                extensions={"timeout": _TIMEOUTS})
        request.read()
        return request

    async def send(self, request: httpx.Request, *, stream: bool = False) -> httpx.Response:
        """The response; read and closed, unless `stream`: then the caller must `aclose` it."""
        response = await self._transport.handle_async_request(request)
        response.request = request
        if stream:
            return response
        try:
            await response.aread()
        finally:
            await response.aclose()
        return response


class _ClientSender:
    """The UpstreamSender interface over a whole `httpx.AsyncClient` (what tests pass)."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    def build(self, method: str, url: httpx.URL | str, *, content: bytes,
              headers: httpx.Headers | Mapping[str, str]) -> httpx.Request:
        return self._client.build_request(method, url, content=content, headers=headers)

    async def send(self, request: httpx.Request, *, stream: bool = False) -> httpx.Response:
        return await self._client.send(request, stream=stream)


Sender = UpstreamSender | _ClientSender


def sender_of(http: UpstreamSender | httpx.AsyncClient) -> Sender:
    """What a provider sends through: the pool's sender, or a client handed to it."""
    return _ClientSender(http) if isinstance(http, httpx.AsyncClient) else http


class UpstreamTransport(httpx.AsyncBaseTransport):
    """httpx requests over one aiohttp connection pool, to the upstream at `origin`.

    The environment's proxy settings (HTTPS_PROXY, NO_PROXY, ...) are read once, here,
    not on every request. The aiohttp session opens on the first request, inside the
    event loop; `aclose` closes it with its connections.
    """

    def __init__(self, origin: str, tls: ssl.SSLContext) -> None:
        self._inner = _LeanAiohttpTransport(
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


class _LeanAiohttpTransport(AiohttpTransport):
    """httpx-aiohttp's transport, minus what it redoes on every request.

    The same aiohttp call, error mapping and response stream; but the `ClientTimeout` is
    built once per timeout setting, the URL is handed to aiohttp already parsed (yarl,
    cached per URL), and headers go as pairs rather than as a mapping aiohttp re-reads.
    """

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._timeouts: dict[tuple[Any, ...], aiohttp.ClientTimeout] = {}
        self._urls: dict[str, yarl.URL] = {}
        proxy = self.proxy
        self._proxy_options: dict[str, Any] = {
            "proxy": str(proxy.url) if proxy else None,
            "proxy_auth": aiohttp.BasicAuth(proxy.auth[0], proxy.auth[1])
            if proxy and proxy.auth else None,
            "proxy_headers": proxy.headers if proxy else None,
        }

    def _timeout(self, timeout: dict[str, Any]) -> aiohttp.ClientTimeout:
        key = (timeout.get("connect"), timeout.get("read"), timeout.get("pool"))
        found = self._timeouts.get(key)
        if found is None:
            found = self._timeouts[key] = aiohttp.ClientTimeout(
                sock_connect=key[0], sock_read=key[1], connect=key[2])
        return found

    def _url(self, url: httpx.URL) -> yarl.URL:
        text = str(url)
        found = self._urls.get(text)
        if found is None:
            found = yarl.URL(text, encoded=True)
            if len(self._urls) < _MAX_CACHED_URLS:
                self._urls[text] = found
        return found

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if not isinstance(self.client, aiohttp.ClientSession):
            self.client = self.get_client()
        try:
            data: Any = request.content or None
        except httpx.RequestNotRead:
            return await super().handle_async_request(request)
        with map_aiohttp_exceptions():
            response = await self.client.request(
                request.method, self._url(request.url),
                headers=request.headers.multi_items(), data=data,
                allow_redirects=False, auto_decompress=False, compress=False,
                timeout=self._timeout(request.extensions.get("timeout", {})),
                server_hostname=request.extensions.get("sni_hostname"),
                **self._proxy_options,
            ).__aenter__()
        extensions = {"http_version": b"HTTP/1.1"}
        if response.reason:
            extensions["reason_phrase"] = response.reason.encode()
        return httpx.Response(status_code=response.status, headers=response.raw_headers,
                              stream=AiohttpResponseStream(response), request=request,
                              extensions=extensions)


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


def origin_of(base_url: str) -> str:
    parts = urlsplit(base_url)
    return f"{parts.scheme}://{parts.netloc}"


def environment_proxy(origin: str) -> httpx.Proxy | None:
    """The proxy the environment names for `origin` (NO_PROXY honoured), else None."""
    parts = urlsplit(origin)
    proxies = urllib.request.getproxies()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if not proxy or urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    return httpx.Proxy(proxy)

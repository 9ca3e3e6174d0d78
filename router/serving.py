"""The uvicorn server Turnout runs under one worker: its signals are the contract's.

SIGTERM (or SIGINT) stops accepting, lets in-flight requests and streams finish for up to
`server.shutdown_grace`, runs the lifespan shutdown and returns, so `turnout serve` exits
0 (uvicorn itself re-raises the signal after a graceful shutdown, which would end the
process with -SIGTERM). SIGHUP re-reads router.toml and swaps the gateway in.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import threading
from collections.abc import Generator
from types import FrameType
from typing import Any, cast

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from router.lifecycle import reload_config

__all__ = ["CoalescingHttpTools", "Server"]

# uvicorn's `http` option for Turnout's protocol (an import string, so workers find it).
HTTP_PROTOCOL = "router.serving:CoalescingHttpTools"


class Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, *, app: Any, config_path: str) -> None:
        super().__init__(config)
        self._app = app
        self._config_path = config_path
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reloads: set[asyncio.Task[bool]] = set()

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        originals = {
            signal.SIGINT: signal.signal(signal.SIGINT, self.handle_exit),
            signal.SIGTERM: signal.signal(signal.SIGTERM, self.handle_exit),
            signal.SIGHUP: signal.signal(signal.SIGHUP, self._handle_hup),
        }
        try:
            yield
        finally:
            for sig, handler in originals.items():
                signal.signal(sig, handler)

    def _handle_hup(self, sig: int, frame: FrameType | None) -> None:
        # A signal handler runs between two bytecodes of the main thread: hand the work
        # to the event loop rather than touch the app from here.
        if self._loop is not None and not self.should_exit:
            self._loop.call_soon_threadsafe(self._start_reload)

    def _start_reload(self) -> None:
        if not self.started or self.should_exit:
            return
        task = asyncio.create_task(reload_config(self._app, self._config_path))
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)


class CoalescingHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol, its writes joined per event-loop pass.

    uvicorn writes a response's head and each body message to the socket separately: a
    JSON answer took two send() system calls, an SSE stream one per event. Writes made in
    the same pass of the event loop now go out as one (bench/PROFILE.md); the order of
    bytes is unchanged, and nothing waits past the current pass.
    """

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but behave as one.
        inner = cast(asyncio.Transport, transport)
        super().connection_made(_CoalescingTransport(inner, self.loop))


class _CoalescingTransport(asyncio.Transport):
    """Delegates to `transport`; writes are buffered until the loop's next pass."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(bytes(data))

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        if pending and not self._transport.is_closing():
            self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending = []
        self._transport.abort()

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._flush()
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._pending))

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)

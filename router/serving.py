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
from typing import Any

import uvicorn

from router.lifecycle import reload_config

__all__ = ["Server"]


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

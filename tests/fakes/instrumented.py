"""`turnout` with one extra route for tests and the soak: GET /_debug/counts.

Run as `python -m tests.fakes.instrumented serve ...`: the real CLI and app, plus a count
of the event loop's tasks and the process's open file descriptors. Never part of the
installed daemon.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import router.app
from router.cli import main

_real_create_app = router.app.create_app


async def counts(request: Request) -> Response:
    return Response(orjson.dumps({"tasks": len(asyncio.all_tasks()),
                                  "fds": len(os.listdir("/proc/self/fd"))}),
                    media_type="application/json")


def create_app(*args: Any, **kwargs: Any) -> Any:
    app = _real_create_app(*args, **kwargs)
    app.router.routes.insert(0, Route("/_debug/counts", counts, methods=["GET"]))
    return app


router.app.create_app = create_app  # type: ignore[assignment]

if __name__ == "__main__":
    sys.exit(main())

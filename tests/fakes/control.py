"""What the fake vendor servers share: recorded calls, scripted steps, and running on a port.

Every fake answers these control routes:

    POST /_script   {"steps": [{...}, ...]}  the next calls' behaviours, in order
    GET  /_calls    what it received: [{"path", "query", "headers", "body"}, ...]
    POST /_reset    forget calls and script
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


class Recorder:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.steps: list[dict[str, Any]] = []

    def record(self, request: Request, body: Any) -> dict[str, Any]:
        """Records the call and returns the scripted step for it ({} when none is left)."""
        self.calls.append({"path": request.url.path, "query": dict(request.query_params),
                           "headers": dict(request.headers), "body": body})
        return self.steps.pop(0) if self.steps else {}

    def routes(self) -> list[Route]:
        async def script(request: Request) -> Response:
            self.steps.extend((await request.json())["steps"])
            return Response(b"{}")

        async def calls(request: Request) -> Response:
            return Response(orjson.dumps(self.calls), media_type="application/json")

        async def reset(request: Request) -> Response:
            self.calls.clear()
            self.steps.clear()
            return Response(b"{}")

        return [Route("/_script", script, methods=["POST"]),
                Route("/_calls", calls, methods=["GET"]),
                Route("/_reset", reset, methods=["POST"])]


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None
                  ) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json",
                    headers=headers)


def words(text: str) -> int:
    return len(text.split())


def serve(create: Callable[[argparse.Namespace], Starlette],
          extra: Callable[[argparse.ArgumentParser], None] | None = None) -> None:
    """`python -m tests.fakes.X --port P --key K ...`: the fake on 127.0.0.1:P."""
    import uvicorn

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--key", required=True, help="the only API key the fake accepts")
    if extra is not None:
        extra(parser)
    args = parser.parse_args()
    uvicorn.run(create(args), host="127.0.0.1", port=args.port, log_level="warning")


class FakeVendor:
    """A fake vendor server running in its own process, seen from the tests."""

    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"

    def script(self, *steps: dict[str, Any]) -> None:
        httpx.post(f"{self.url}/_script", json={"steps": list(steps)}).raise_for_status()

    def calls(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = httpx.get(f"{self.url}/_calls").json()
        return result

    def last_body(self) -> Any:
        return self.calls()[-1]["body"]

    def reset(self) -> None:
        httpx.post(f"{self.url}/_reset").raise_for_status()


@contextlib.contextmanager
def fake_vendor(module: str, key: str, *extra: str) -> Iterator[FakeVendor]:
    """`python -m tests.fakes.<module>` on a free loopback port, stopped by its PID."""
    from tests.support import free_port, running

    port = free_port()
    args = [sys.executable, "-m", f"tests.fakes.{module}", "--port", str(port), "--key", key,
            *extra]
    with running(args, f"http://127.0.0.1:{port}/_calls"):
        yield FakeVendor(port)

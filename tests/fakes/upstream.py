"""A fake OpenAI-compatible upstream that records what it received and misbehaves on command.

Run it as `python -m tests.fakes.upstream --port P`. Control it over HTTP:

    POST /_script   {"steps": [{...}, ...]}  the next calls' behaviours, in order
    GET  /_calls    what it received: [{"path", "headers", "body"}, ...]
    POST /_reset    forget calls and script

A step is {"status": 500}, {"status": 429, "retry_after": 2}, {"hang": seconds},
{"delay": seconds}, {"chunks": n, "chunk_delay": seconds}, {"break_after": n} (a stream that
stops after n content chunks without [DONE]), {"body": "raw text"} (a malformed 200),
{"error": {...}} with a status for an OpenAI error body. With no step left: a normal answer.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route


class Upstream:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.steps: list[dict[str, Any]] = []

    def next_step(self) -> dict[str, Any]:
        return self.steps.pop(0) if self.steps else {}


def create_fake(upstream: Upstream | None = None) -> Starlette:
    state = upstream or Upstream()

    async def chat(request: Request) -> Response:
        body = orjson.loads(await request.body())
        state.calls.append({"path": request.url.path, "headers": dict(request.headers),
                            "body": body})
        step = state.next_step()
        if "hang" in step:
            await asyncio.sleep(step["hang"])
        if "delay" in step:
            await asyncio.sleep(step["delay"])
        if "status" in step:
            error = step.get("error") or {"message": f"fake upstream error {step['status']}",
                                          "type": "server_error", "param": None, "code": None}
            headers = {}
            if "retry_after" in step:
                headers["retry-after"] = str(step["retry_after"])
            return Response(orjson.dumps({"error": error}), status_code=step["status"],
                            media_type="application/json", headers=headers)
        if "body" in step:
            return Response(step["body"], media_type="application/json")
        text = f"fake answer to: {last_user_text(body)}"
        if body.get("stream"):
            return StreamingResponse(stream(body, text, step), media_type="text/event-stream")
        return Response(orjson.dumps(completion(body, text)), media_type="application/json")

    async def embeddings(request: Request) -> Response:
        body = orjson.loads(await request.body())
        state.calls.append({"path": request.url.path, "headers": dict(request.headers),
                            "body": body})
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = [{"object": "embedding", "index": i, "embedding": [0.1, 0.2, float(i)]}
                for i, _ in enumerate(inputs)]
        return Response(orjson.dumps({"object": "list", "data": data, "model": body["model"],
                                      "usage": {"prompt_tokens": 1, "total_tokens": 1}}),
                        media_type="application/json")

    async def script(request: Request) -> Response:
        state.steps.extend((await request.json())["steps"])
        return Response(b"{}")

    async def calls(request: Request) -> Response:
        return Response(orjson.dumps(state.calls), media_type="application/json")

    async def reset(request: Request) -> Response:
        state.calls.clear()
        state.steps.clear()
        return Response(b"{}")

    return Starlette(routes=[
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/v1/embeddings", embeddings, methods=["POST"]),
        Route("/_script", script, methods=["POST"]),
        Route("/_calls", calls, methods=["GET"]),
        Route("/_reset", reset, methods=["POST"]),
    ])


def last_user_text(body: dict[str, Any]) -> str:
    for message in reversed(body.get("messages", [])):
        if message.get("role") == "user" and isinstance(message.get("content"), str):
            return str(message["content"])
    return ""


def completion(body: dict[str, Any], text: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()),
        "model": body["model"],
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                     "logprobs": None, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
    }


async def stream(body: dict[str, Any], text: str, step: dict[str, Any]) -> AsyncIterator[bytes]:
    base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk",
            "created": int(time.time()), "model": body["model"]}

    def event(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return b"data: " + orjson.dumps({**base, "choices": [choice]}) + b"\n\n"

    count = step.get("chunks", 4)
    words = (text.split(" ") * count)[:count] if count else []
    yield event({"role": "assistant", "content": ""})
    for i, word in enumerate(words):
        if "break_after" in step and i >= step["break_after"]:
            return
        await asyncio.sleep(step.get("chunk_delay", 0))
        yield event({"content": word if i == 0 else f" {word}"})
    yield event({}, "stop")
    if (body.get("stream_options") or {}).get("include_usage"):
        usage = {"prompt_tokens": 3, "completion_tokens": count, "total_tokens": 3 + count}
        yield b"data: " + orjson.dumps({**base, "choices": [], "usage": usage}) + b"\n\n"
    yield b"data: [DONE]\n\n"


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(create_fake(), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()

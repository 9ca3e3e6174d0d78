"""A fake OpenAI-compatible upstream that records what it received and misbehaves on command.

Run it as `python -m tests.fakes.upstream --port P`. Control it over HTTP:

    POST /_script   {"steps": [{...}, ...]}  the next calls' behaviours, in order
    GET  /_calls    what it received: [{"path", "headers", "body"}, ...]
    POST /_reset    forget calls and script

A step is {"status": 500}, {"status": 429, "retry_after": 2}, {"hang": seconds},
{"delay": seconds}, {"chunks": n, "chunk_delay": seconds}, {"break_after": n} (a stream that
stops after n content chunks without [DONE]), {"drop_after": n} (a stream whose connection
is dropped after n content chunks), {"error_after": n} (a stream that sends an error event
after n content chunks), {"drop": true} (a non-streamed answer whose connection drops
mid-body), {"body": "raw text"} (a malformed 200), {"context_length": true} (OpenAI's 400
context_length_exceeded), {"error": {...}} with a status for an OpenAI error body.
A step may carry "model": it then applies only to calls for that upstream model (so one
process can fake several deployments), and "times": n to apply to n calls (-1: all).
With no step left: a normal answer.

Each recorded call has "model"; a streamed call also "stream_end" once its stream is over:
"complete", or "cut" when it was cancelled first (as when Turnout's client went away).
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

    def next_step(self, model: str | None) -> dict[str, Any]:
        for i, step in enumerate(self.steps):
            if step.get("model") not in (None, model):
                continue
            times = step.get("times", 1)
            if times == 1:
                self.steps.pop(i)
            elif times > 1:
                self.steps[i] = {**step, "times": times - 1}
            return step
        return {}


CONTEXT_LENGTH_ERROR = {
    "message": "This model's maximum context length is 8192 tokens.",
    "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded",
}


class DroppedConnection(Exception):
    """Raised inside a response body: uvicorn then closes the connection mid-answer."""


def create_fake(upstream: Upstream | None = None) -> Starlette:
    state = upstream or Upstream()

    async def chat(request: Request) -> Response:
        body = orjson.loads(await request.body())
        call = {"path": request.url.path, "headers": dict(request.headers), "body": body,
                "model": body.get("model")}
        state.calls.append(call)
        step = state.next_step(body.get("model"))
        if step.get("context_length"):
            step = {**step, "status": 400, "error": CONTEXT_LENGTH_ERROR}
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
            return StreamingResponse(watched(call, stream(body, text, step)),
                                     media_type="text/event-stream")
        answer = orjson.dumps(completion(body, text))
        if step.get("drop"):
            return StreamingResponse(dropped(answer), media_type="application/json",
                                     headers={"content-length": str(len(answer))})
        return Response(answer, media_type="application/json")

    async def embeddings(request: Request) -> Response:
        body = orjson.loads(await request.body())
        state.calls.append({"path": request.url.path, "headers": dict(request.headers),
                            "body": body, "model": body.get("model")})
        step = state.next_step(body.get("model"))
        if "hang" in step:
            await asyncio.sleep(step["hang"])
        if "status" in step:
            error = {"message": f"fake upstream error {step['status']}", "type": "server_error",
                     "param": None, "code": None}
            return Response(orjson.dumps({"error": error}), status_code=step["status"],
                            media_type="application/json")
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
        if "drop_after" in step and i >= step["drop_after"]:
            raise DroppedConnection
        if "error_after" in step and i >= step["error_after"]:
            error = {"message": "fake upstream failed mid-stream", "type": "server_error"}
            yield b"data: " + orjson.dumps({"error": error}) + b"\n\n"
            return
        await asyncio.sleep(step.get("chunk_delay", 0))
        yield event({"content": word if i == 0 else f" {word}"})
    yield event({}, "stop")
    if (body.get("stream_options") or {}).get("include_usage"):
        usage = {"prompt_tokens": 3, "completion_tokens": count, "total_tokens": 3 + count}
        yield b"data: " + orjson.dumps({**base, "choices": [], "usage": usage}) + b"\n\n"
    yield b"data: [DONE]\n\n"


async def watched(call: dict[str, Any], body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """`body`, noting in `call` how it ended: "stream_end" is "complete", or "cut" when the
    other side went away (or the fake dropped it) first; absent while it runs."""
    ended = "cut"
    try:
        async for piece in body:
            yield piece
        ended = "complete"
    finally:
        call["stream_end"] = ended


async def dropped(answer: bytes) -> AsyncIterator[bytes]:
    yield answer[: len(answer) // 2]
    raise DroppedConnection


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(create_fake(), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()

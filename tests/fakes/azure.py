"""A fake Azure OpenAI resource: one deployment, `api-key` auth, a required `api-version`.

Run it as `python -m tests.fakes.azure --port P --key K --deployment NAME`. Routes:
`/openai/deployments/{name}/chat/completions` and `/embeddings`, each needing
`?api-version=` (missing: 404 "Resource not found", as Azure answers; unknown: 400) and the
`api-key` header (wrong or missing: 401). A wrong deployment name is a 404
DeploymentNotFound. Answers are OpenAI's with Azure's additions: prompt_filter_results
(a first stream chunk with no choices) and content_filter_results. A prompt over 4000
characters is a 400 `context_length_exceeded`.

Scripted steps: {"status": 500|429|...}, {"content_filter": true} (Azure's 400),
{"tool_call": {"name", "arguments"}}, {"break_after": n} (a stream cut after n deltas).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tests.fakes.control import Recorder, json_response, serve, words

PROMPT_LIMIT = 4000
API_VERSIONS = {"2024-02-01", "2024-06-01", "2024-10-21", "2025-01-01-preview",
                "2025-04-01-preview"}
_FILTER = {"hate": {"filtered": False, "severity": "safe"},
           "violence": {"filtered": False, "severity": "safe"}}


def error(status: int, code: str, message: str, param: str | None = None) -> Response:
    return json_response({"error": {"code": code, "message": message, "param": param,
                                    "type": "invalid_request_error" if status == 400 else None,
                                    "status": status}}, status)


def prompt_text(body: dict[str, Any]) -> str:
    texts = []
    for message in body.get("messages", []):
        content = message.get("content")
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            texts += [p.get("text", "") for p in content if isinstance(p, dict)]
    return " ".join(texts)


def reply_of(body: dict[str, Any]) -> str:
    last = body["messages"][-1]
    if last.get("role") == "tool":
        return f"tool said: {last.get('content')}"
    content = last.get("content")
    text = content if isinstance(content, str) else " ".join(
        p.get("text", "") for p in content or [] if isinstance(p, dict))
    return f"Azure heard: {text}"


def message_of(body: dict[str, Any], step: dict[str, Any]) -> tuple[dict[str, Any], str]:
    if "tool_call" in step:
        call = {"id": "call_azure1", "type": "function",
                "function": {"name": step["tool_call"]["name"],
                             "arguments": step["tool_call"]["arguments"]}}
        return {"role": "assistant", "content": None, "tool_calls": [call]}, "tool_calls"
    return {"role": "assistant", "content": reply_of(body)}, "stop"


def usage_of(body: dict[str, Any], text: str) -> dict[str, int]:
    prompt, completion = words(prompt_text(body)), words(text)
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


async def stream(body: dict[str, Any], step: dict[str, Any], model: str
                 ) -> AsyncIterator[bytes]:
    base = {"id": "chatcmpl-azure", "object": "chat.completion.chunk",
            "created": int(time.time()), "model": model, "system_fingerprint": "fp_azure"}

    def event(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None,
                  "content_filter_results": _FILTER}
        return b"data: " + orjson.dumps({**base, "choices": [choice]}) + b"\n\n"

    # Azure opens every stream with the prompt's filter results and no choices.
    yield b"data: " + orjson.dumps({"id": "", "object": "", "created": 0, "model": "",
                                    "choices": [], "prompt_filter_results": [
                                        {"prompt_index": 0,
                                         "content_filter_results": _FILTER}]}) + b"\n\n"
    message, finish = message_of(body, step)
    yield event({"role": "assistant", "content": ""})
    if message.get("tool_calls"):
        call = message["tool_calls"][0]
        yield event({"tool_calls": [{"index": 0, **call}]})
        text = ""
    else:
        text = message["content"]
        for i, word in enumerate(text.split(" ")):
            if i == step.get("break_after"):
                return
            yield event({"content": word if i == 0 else f" {word}"})
    yield event({}, finish)
    if (body.get("stream_options") or {}).get("include_usage"):
        yield b"data: " + orjson.dumps({**base, "choices": [],
                                        "usage": usage_of(body, text)}) + b"\n\n"
    yield b"data: [DONE]\n\n"


def create_fake(key: str, deployment: str) -> Starlette:
    recorder = Recorder()

    def refuse(request: Request, name: str) -> Response | None:
        version = request.query_params.get("api-version")
        if version is None:
            return error(404, "404", "Resource not found")
        if version not in API_VERSIONS:
            return error(400, "BadRequest", "API version not supported")
        if request.headers.get("api-key") != key:
            return error(401, "401", "Access denied due to invalid subscription key or wrong "
                                     "API endpoint.")
        if name != deployment:
            return error(404, "DeploymentNotFound",
                         "The API deployment for this resource does not exist.")
        return None

    async def chat(request: Request) -> Response:
        body = orjson.loads(await request.body())
        step = recorder.record(request, body)
        refused = refuse(request, request.path_params["name"])
        if refused is not None:
            return refused
        if "status" in step:
            return error(step["status"], str(step["status"]), "fake failure")
        if not isinstance(body.get("messages"), list) or not body["messages"]:
            return error(400, "invalid_request_error", "'messages' is a required property",
                         "messages")
        if len(prompt_text(body)) > PROMPT_LIMIT:
            return error(400, "context_length_exceeded",
                         "This model's maximum context length is 1000 tokens. However, your "
                         "messages resulted in more tokens.", "messages")
        if step.get("content_filter"):
            return error(400, "content_filter", "The response was filtered due to the prompt "
                         "triggering Azure OpenAI's content management policy.", "prompt")
        if body.get("stream"):
            return StreamingResponse(stream(body, step, deployment),
                                     media_type="text/event-stream")
        message, finish = message_of(body, step)
        return json_response({
            "id": "chatcmpl-azure", "object": "chat.completion", "created": int(time.time()),
            "model": deployment, "system_fingerprint": "fp_azure",
            "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": _FILTER}],
            "choices": [{"index": 0, "message": message, "finish_reason": finish,
                         "logprobs": None, "content_filter_results": _FILTER}],
            "usage": usage_of(body, message.get("content") or ""),
        })

    async def embeddings(request: Request) -> Response:
        body = orjson.loads(await request.body())
        recorder.record(request, body)
        refused = refuse(request, request.path_params["name"])
        if refused is not None:
            return refused
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = [{"object": "embedding", "index": i, "embedding": [0.5, float(i)]}
                for i, _ in enumerate(inputs)]
        return json_response({"object": "list", "data": data, "model": deployment,
                              "usage": {"prompt_tokens": 2, "total_tokens": 2}})

    return Starlette(routes=[
        Route("/openai/deployments/{name}/chat/completions", chat, methods=["POST"]),
        Route("/openai/deployments/{name}/embeddings", embeddings, methods=["POST"]),
        *recorder.routes(),
    ])


def _extra(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--deployment", required=True)


def main() -> None:
    serve(lambda args: create_fake(args.key, args.deployment), _extra)


if __name__ == "__main__":
    main()

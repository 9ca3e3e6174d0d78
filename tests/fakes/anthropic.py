"""A fake Anthropic Messages API: validates requests as the real API does, answers in its format.

Run it as `python -m tests.fakes.anthropic --port P --key K`. `POST /v1/messages` checks the
`x-api-key` and `anthropic-version` headers and the body (required max_tokens, alternating
roles, tool_result blocks answering the previous turn's tool_use blocks, non-empty text,
known fields only), then answers "Claude heard: <last user text>" (prefixed with the
system prompt in brackets when there is one, or "tool said: <results>" after tool results),
honouring stop_sequences and max_tokens (counted in words) with the matching stop_reason.
A prompt over 4000 characters is "too long".

Scripted steps (see tests/fakes/control.py): {"status": 529|429|500|...} an error,
{"text": "..."} a fixed reply, {"tool_use": {"name", "input"}} a tool call,
{"body": "raw"} a malformed 200, {"break_after": n} a stream cut after n deltas,
{"error_after": n} an `overloaded_error` event after n deltas.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tests.fakes.control import Recorder, json_response, serve, words

PROMPT_LIMIT = 4000
_TOP_LEVEL = {"model", "max_tokens", "messages", "system", "stop_sequences", "stream",
              "temperature", "top_p", "top_k", "tools", "tool_choice", "metadata",
              "thinking", "service_tier"}
_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error",
                403: "permission_error", 404: "not_found_error", 413: "request_too_large",
                429: "rate_limit_error", 500: "api_error", 529: "overloaded_error"}
_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_MEDIA_TYPES = {"image/jpeg", "image/png", "image/gif", "image/webp"}


def error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    body = {"type": "error", "error": {"type": _ERROR_TYPES.get(status, "api_error"),
                                       "message": message}}
    return json_response(body, status, headers)


def validate(body: Any) -> str | None:
    """The message the real API would send for an invalid body, or None."""
    if not isinstance(body, dict):
        return "body must be an object"
    for key in body:
        if key not in _TOP_LEVEL:
            return f"{key}: Extra inputs are not permitted"
    if not isinstance(body.get("model"), str):
        return "model: Field required"
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        return "max_tokens: Field required"
    temperature = body.get("temperature")
    if temperature is not None and not 0 <= temperature <= 1:
        return "temperature: Input should be less than or equal to 1"
    return (_validate_system(body.get("system")) or _validate_tools(body)
            or _validate_messages(body.get("messages")))


def _validate_system(system: Any) -> str | None:
    if system is None or isinstance(system, str):
        return None
    if isinstance(system, list) and all(
            isinstance(b, dict) and b.get("type") == "text" and b.get("text") for b in system):
        return None
    return "system: Input should be a valid string or list of text blocks"


def _validate_tools(body: dict[str, Any]) -> str | None:
    tools = body.get("tools", [])
    names = set()
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or not _TOOL_NAME.match(str(tool.get("name"))):
            return f"tools.{i}.name: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'"
        schema = tool.get("input_schema")
        if not isinstance(schema, dict) or schema.get("type") != "object":
            return f"tools.{i}.input_schema: Input schema must have type 'object'"
        extra = set(tool) - {"name", "description", "input_schema", "cache_control"}
        if extra:
            return f"tools.{i}.{sorted(extra)[0]}: Extra inputs are not permitted"
        names.add(tool["name"])
    choice = body.get("tool_choice")
    if choice is not None:
        if not isinstance(choice, dict) or choice.get("type") not in {"auto", "any", "tool",
                                                                      "none"}:
            return "tool_choice: Input tag does not match any of the expected tags"
        if choice["type"] == "tool" and choice.get("name") not in names:
            return f"tool_choice: Tool '{choice.get('name')}' not found in tools"
    stops = body.get("stop_sequences", [])
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        return "stop_sequences: Input should be a valid list of strings"
    return None


def _validate_messages(messages: Any) -> str | None:
    if not isinstance(messages, list) or not messages:
        return "messages: at least one message is required"
    pending: list[str] = []
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ("user", "assistant"):
            return f"messages.{i}.role: Input should be 'user' or 'assistant'"
        if i and messages[i - 1]["role"] == role:
            return ("messages: roles must alternate between \"user\" and \"assistant\", but "
                    f"found multiple \"{role}\" roles in a row")
        blocks = message.get("content")
        if isinstance(blocks, str):
            if not blocks:
                return f"messages.{i}: text content blocks must be non-empty"
            blocks = [{"type": "text", "text": blocks}]
        if not isinstance(blocks, list) or not blocks:
            return f"messages.{i}: all messages must have non-empty content"
        results = [b.get("tool_use_id") for b in blocks if b.get("type") == "tool_result"]
        if pending and sorted(pending) != sorted(results):
            return (f"messages.{i}: `tool_use` ids were found without `tool_result` blocks "
                    f"immediately after: {', '.join(pending)}")
        if results and not pending:
            return (f"messages.{i}.content: unexpected `tool_use_id` found in `tool_result` "
                    "blocks; each tool_result block must have a corresponding tool_use block "
                    "in the previous message")
        problem = _validate_blocks(i, role, blocks)
        if problem:
            return problem
        pending = [b["id"] for b in blocks if b.get("type") == "tool_use"]
    return None


def _validate_blocks(i: int, role: str, blocks: list[Any]) -> str | None:
    for j, block in enumerate(blocks):
        kind = block.get("type") if isinstance(block, dict) else None
        here = f"messages.{i}.content.{j}"
        if kind == "text":
            if not block.get("text"):
                return f"{here}: text content blocks must be non-empty"
        elif kind == "image":
            source = block.get("source") or {}
            if source.get("type") == "base64":
                if source.get("media_type") not in _MEDIA_TYPES or not source.get("data"):
                    return f"{here}.source: invalid base64 image source"
            elif source.get("type") != "url" or not str(source.get("url")).startswith("http"):
                return f"{here}.source: Input tag does not match any of the expected tags"
        elif kind == "tool_use":
            if role != "assistant" or not isinstance(block.get("input"), dict):
                return f"{here}: tool_use blocks must be in assistant turns, with an input"
        elif kind == "tool_result":
            if role != "user":
                return f"{here}: tool_result blocks must be in user turns"
        else:
            return f"{here}.type: Input tag '{kind}' does not match any of the expected tags"
    return None


def _texts(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    out = []
    for block in content:
        if block.get("type") == "text":
            out.append(block["text"])
        elif block.get("type") == "tool_result":
            inner = block.get("content", "")
            out += _texts(inner) if isinstance(inner, list) else [str(inner)]
    return out


def prompt_size(body: dict[str, Any]) -> int:
    system = body.get("system") or ""
    size = len(system) if isinstance(system, str) else sum(len(b["text"]) for b in system)
    return size + sum(len(t) for m in body["messages"] for t in _texts(m["content"]))


def default_reply(body: dict[str, Any]) -> str:
    last = body["messages"][-1]["content"]
    blocks = last if isinstance(last, list) else []
    results = [b for b in blocks if b.get("type") == "tool_result"]
    if results:
        reply = "tool said: " + " | ".join(str(b.get("content", "")) for b in results)
    else:
        reply = "Claude heard: " + " ".join(_texts(last))
        images = sum(1 for b in blocks if b.get("type") == "image")
        if images:
            reply += f" [{images} image]"
    system = body.get("system")
    if system:
        text = system if isinstance(system, str) else " ".join(b["text"] for b in system)
        reply = f"[{text}] {reply}"
    return reply


def shape_reply(body: dict[str, Any], text: str) -> tuple[str, str, str | None]:
    """(text, stop_reason, stop_sequence) after stop_sequences and max_tokens (in words)."""
    for stop in body.get("stop_sequences", []):
        if stop and stop in text:
            return text[: text.index(stop)], "stop_sequence", stop
    pieces = text.split(" ")
    if len(pieces) > body["max_tokens"]:
        return " ".join(pieces[: body["max_tokens"]]), "max_tokens", None
    return text, "end_turn", None


def answer(body: dict[str, Any], step: dict[str, Any]) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if "tool_use" in step:
        call = step["tool_use"]
        if step.get("text"):
            content.append({"type": "text", "text": step["text"]})
        content.append({"type": "tool_use", "id": call.get("id", "toolu_fake01"),
                        "name": call["name"], "input": call.get("input", {})})
        stop_reason, stop_sequence, output = "tool_use", None, 12
    else:
        text, stop_reason, stop_sequence = shape_reply(body, step.get("text")
                                                       or default_reply(body))
        content.append({"type": "text", "text": text})
        output = words(text)
    usage = {"input_tokens": words(" ".join(_all_text(body))), "output_tokens": output,
             "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    return {"id": "msg_fake01", "type": "message", "role": "assistant", "model": body["model"],
            "content": content, "stop_reason": stop_reason, "stop_sequence": stop_sequence,
            "usage": usage}


def _all_text(body: dict[str, Any]) -> list[str]:
    system = body.get("system")
    out = [system] if isinstance(system, str) else []
    return out + [t for m in body["messages"] for t in _texts(m["content"])]


def sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: ".encode() + orjson.dumps(data) + b"\n\n"


async def stream_events(message: dict[str, Any], step: dict[str, Any]) -> AsyncIterator[bytes]:
    start = {**message, "content": [], "stop_reason": None, "stop_sequence": None,
             "usage": {**message["usage"], "output_tokens": 1}}
    yield sse("message_start", {"type": "message_start", "message": start})
    yield sse("ping", {"type": "ping"})
    deltas = 0
    for index, block in enumerate(message["content"]):
        if block["type"] == "text":
            opening = {"type": "text", "text": ""}
            pieces = [{"type": "text_delta", "text": w if i == 0 else f" {w}"}
                      for i, w in enumerate(block["text"].split(" "))]
        else:
            opening = {**block, "input": {}}
            encoded = orjson.dumps(block["input"]).decode()
            cut = len(encoded) // 2
            pieces = [{"type": "input_json_delta", "partial_json": p}
                      for p in (encoded[:cut], encoded[cut:]) if p]
        yield sse("content_block_start", {"type": "content_block_start", "index": index,
                                          "content_block": opening})
        for delta in pieces:
            if deltas == step.get("break_after"):
                return
            if deltas == step.get("error_after"):
                yield sse("error", {"type": "error", "error": {"type": "overloaded_error",
                                                              "message": "Overloaded"}})
                return
            deltas += 1
            yield sse("content_block_delta", {"type": "content_block_delta", "index": index,
                                              "delta": delta})
        yield sse("content_block_stop", {"type": "content_block_stop", "index": index})
    yield sse("message_delta", {"type": "message_delta",
                                "delta": {"stop_reason": message["stop_reason"],
                                          "stop_sequence": message["stop_sequence"]},
                                "usage": {"output_tokens": message["usage"]["output_tokens"]}})
    yield sse("message_stop", {"type": "message_stop"})


def create_fake(key: str) -> Starlette:
    recorder = Recorder()

    async def messages(request: Request) -> Response:
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            return error(400, "There was an issue with the format of the request body")
        step = recorder.record(request, body)
        if request.headers.get("x-api-key") != key:
            return error(401, "invalid x-api-key")
        if not request.headers.get("anthropic-version"):
            return error(400, "anthropic-version: header is required")
        if "status" in step:
            headers = {"retry-after": str(step["retry_after"])} if "retry_after" in step else None
            return error(step["status"], step.get("message", "fake failure"), headers)
        problem = validate(body)
        if problem:
            return error(400, problem)
        if prompt_size(body) > PROMPT_LIMIT:
            return error(400, f"prompt is too long: {prompt_size(body)} tokens > "
                              f"{PROMPT_LIMIT} maximum")
        if "body" in step:
            return Response(step["body"], media_type="application/json")
        message = answer(body, step)
        if body.get("stream"):
            return StreamingResponse(stream_events(message, step),
                                     media_type="text/event-stream")
        return json_response(message)

    return Starlette(routes=[Route("/v1/messages", messages, methods=["POST"]),
                             *recorder.routes()])


def main() -> None:
    serve(lambda args: create_fake(args.key))


if __name__ == "__main__":
    main()


"""Shared pieces of the vendor translations: parameter policy, OpenAI answer and chunk shapes."""

from __future__ import annotations

import base64
import re
import struct
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import orjson

from router.errors import UpstreamRejected

__all__ = [
    "MalformedAnswer",
    "StreamError",
    "TranslationError",
    "chat_completion",
    "check_parameters",
    "choice",
    "chunk",
    "chunk_base",
    "data_url",
    "encode_embedding",
    "message_text",
    "new_completion_id",
    "parse_arguments",
    "rejected",
    "scrub",
    "stop_list",
    "tool_call",
    "usage",
    "usage_chunk",
    "wants_usage",
]


class TranslationError(ValueError):
    """The client's request cannot be expressed in the vendor's wire format (a 400)."""

    def __init__(self, message: str, param: str | None, code: str = "unsupported_parameter"):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


class MalformedAnswer(ValueError):
    """The vendor's 200 answer (or stream event) is not what its API documents."""


class StreamError(Exception):
    """The vendor sent an error event mid-stream; `kind` is its error type."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


def rejected(deployment: str, error: TranslationError) -> UpstreamRejected:
    """The client-facing 400 for a request a provider cannot translate."""
    body = {"error": {"message": error.message, "type": "invalid_request_error",
                      "param": error.param, "code": error.code}}
    return UpstreamRejected(deployment, 400, body)


# Parameters whose value at OpenAI's default changes nothing, so a provider without them
# can accept the default and must refuse any other value.
_NEUTRAL_DEFAULTS: dict[str, Any] = {
    "n": 1, "presence_penalty": 0, "frequency_penalty": 0, "logprobs": False,
    "top_logprobs": 0, "logit_bias": {}, "parallel_tool_calls": True,
}
_TEXT_FORMAT = {"type": "text"}

# Parameters that cannot change the answer: storage, billing, tracing and Turnout's own.
HARMLESS = frozenset({"model", "stream", "stream_options", "user", "metadata", "store",
                      "service_tier", "prompt_cache_key", "safety_identifier"})


def check_parameters(body: Mapping[str, Any], provider: str, supported: Iterable[str],
                     harmless: Iterable[str] = ()) -> None:
    """Raises TranslationError for the first parameter `provider` cannot honour.

    `supported` are translated by the provider; `harmless` (and HARMLESS) are dropped;
    the neutral parameters pass at their default value; anything else is refused, since
    dropping an unknown parameter might change the answer the client asked for.
    """
    known = set(supported) | set(harmless) | HARMLESS
    for name, value in body.items():
        if value is None or name in known or name == "messages":
            continue
        if name in _NEUTRAL_DEFAULTS and value == _NEUTRAL_DEFAULTS[name]:
            continue
        if name == "response_format" and value == _TEXT_FORMAT:
            continue
        raise TranslationError(
            f"Parameter '{name}' (value {_short(value)}) is not supported by provider "
            f"'{provider}'", name)


def _short(value: Any) -> str:
    text = orjson.dumps(value).decode()
    return text if len(text) <= 60 else text[:57] + "..."


def stop_list(value: Any) -> list[str]:
    """OpenAI's `stop` (a string or a list of strings) as a list."""
    if value is None:
        return []
    return [value] if isinstance(value, str) else [s for s in value if isinstance(s, str)]


def message_text(content: Any, where: str, provider: str) -> str:
    """The text of a content that may only hold text (system, tool and assistant turns)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    texts = []
    for i, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") != "text":
            kind = part.get("type") if isinstance(part, dict) else type(part).__name__
            raise TranslationError(
                f"Content part of type {kind!r} in {where} is not supported by provider "
                f"'{provider}'", f"{where}.content[{i}]")
        texts.append(str(part.get("text") or ""))
    return "".join(texts)


_DATA_URL = re.compile(r"^data:([\w.+-]+/[\w.+-]+)(?:;[^,]*)?;base64,(.*)$", re.DOTALL)


def data_url(url: str) -> tuple[str, str] | None:
    """(media type, base64 data) of a `data:` URL, or None for any other URL."""
    match = _DATA_URL.match(url)
    if match is None:
        return None
    return match.group(1), match.group(2)


def parse_arguments(arguments: Any, where: str) -> dict[str, Any]:
    """A tool call's `arguments` (a JSON string of an object) as a dict."""
    if isinstance(arguments, dict):
        return arguments
    if arguments in (None, ""):
        return {}
    try:
        parsed = orjson.loads(arguments) if isinstance(arguments, str) else None
    except orjson.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, dict):
        raise TranslationError(f"'{where}' must be a JSON object encoded as a string", where,
                               "invalid_type")
    return parsed


def new_completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def usage(prompt: int, completion: int, cached: int | None = None) -> dict[str, Any]:
    result: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": completion,
                              "total_tokens": prompt + completion}
    if cached:
        result["prompt_tokens_details"] = {"cached_tokens": cached}
    return result


def chat_completion(completion_id: str, model: str, choices: list[dict[str, Any]],
                    usage_: dict[str, Any] | None) -> dict[str, Any]:
    """A `chat.completion` as OpenAI sends it (plain JSON: cacheable, SDK-parseable)."""
    answer: dict[str, Any] = {
        "id": completion_id, "object": "chat.completion", "created": int(time.time()),
        "model": model, "choices": choices, "system_fingerprint": None,
    }
    if usage_ is not None:
        answer["usage"] = usage_
    return answer


def choice(index: int, text: str | None, tool_calls: list[dict[str, Any]],
           finish_reason: str) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {"index": index, "message": message, "logprobs": None, "finish_reason": finish_reason}


def chunk(base: Mapping[str, Any], index: int, delta: dict[str, Any],
          finish_reason: str | None = None) -> dict[str, Any]:
    """One `chat.completion.chunk` with a single choice; `base` holds id, created, model."""
    return {**base, "choices": [{"index": index, "delta": delta, "logprobs": None,
                                 "finish_reason": finish_reason}]}


def chunk_base(completion_id: str, model: str) -> dict[str, Any]:
    return {"id": completion_id, "object": "chat.completion.chunk", "created": int(time.time()),
            "model": model, "system_fingerprint": None}


def usage_chunk(base: Mapping[str, Any], usage_: dict[str, Any]) -> dict[str, Any]:
    """The final chunk of `stream_options.include_usage`: no choices, the whole usage."""
    return {**base, "choices": [], "usage": usage_}


def wants_usage(body: Mapping[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and bool(options.get("include_usage"))


def tool_call(call_id: str, name: str, arguments: Any) -> dict[str, Any]:
    """An OpenAI tool call; `arguments` (a dict) is encoded as the JSON string OpenAI sends."""
    encoded = arguments if isinstance(arguments, str) else orjson.dumps(arguments).decode()
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": encoded}}


def encode_embedding(values: list[float], encoding_format: Any) -> list[float] | str:
    """OpenAI's `encoding_format`: floats, or "base64" of little-endian float32s (the SDK's
    default request)."""
    if encoding_format == "base64":
        return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()
    return values


def scrub(text: str, secret: str | None) -> str:
    """`text` without the deployment's key in it (vendors sometimes echo a bad key)."""
    if secret:
        return text.replace(secret, "***")
    return text



Turn = tuple[str, list[dict[str, Any]]]


def fold_conversation(
    messages: list[dict[str, Any]], provider: str, key: str,
    turn: Callable[[dict[str, Any], str], Turn],
) -> tuple[str, list[dict[str, Any]]]:
    """(system prompt, turns) for vendors whose APIs take the system prompt apart and want
    user and assistant turns to alternate.

    System and developer messages are lifted out and joined; `turn(message, where)` gives
    every other message's vendor role and items (content blocks, parts); consecutive turns
    of one role are merged into one, under `key`.
    """
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if message["role"] in ("system", "developer"):
            text = message_text(message.get("content"), where, provider)
            if text:
                system.append(text)
            continue
        role, items = turn(message, where)
        if not items:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1][key].extend(items)
        else:
            turns.append({"role": role, key: items})
    return "\n\n".join(system), turns

"""Reading a client's request: key, body (size-limited), JSON, and what routing and caching need."""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.types import Receive

from router.errors import AuthenticationFailed, InvalidRequest, RequestTooLarge

__all__ = [
    "FORBIDDEN_FIELDS",
    "MAX_JSON_DEPTH",
    "TURNOUT_FIELDS",
    "Inbound",
    "authenticate",
    "check_key",
    "parse_chat",
    "parse_embeddings",
    "parse_json",
    "read_json",
    "receive_json",
]

# Turnout's own controls: read here, never sent upstream.
TURNOUT_FIELDS = frozenset({"caching", "cache"})

# Fields that would let a client choose where or how Turnout calls an upstream (SSRF,
# credential injection). LiteLLM accepts these per request; Turnout refuses them.
FORBIDDEN_FIELDS = frozenset({
    "api_base", "base_url", "api_key", "api_version", "api_type", "azure_endpoint",
    "azure_ad_token", "azure_deployment", "organization", "custom_llm_provider",
    "extra_headers", "headers", "aws_access_key_id", "aws_secret_access_key",
    "aws_session_token", "aws_region_name", "vertex_project", "vertex_location",
    "vertex_credentials", "proxy", "deployment_id",
})

# orjson reads JSON nested up to 1024 levels but writes only up to 255: a body accepted
# here is re-serialised upstream (and into cache keys), so it must stay well below that.
MAX_JSON_DEPTH = 128

_NUMBER = (int, float)
_CHAT_PARAM_TYPES: dict[str, tuple[type, ...]] = {
    "temperature": _NUMBER, "top_p": _NUMBER, "presence_penalty": _NUMBER,
    "frequency_penalty": _NUMBER, "n": (int,), "max_tokens": (int,),
    "max_completion_tokens": (int,), "seed": (int,), "logprobs": (bool,),
    "top_logprobs": (int,), "stream": (bool,), "stream_options": (dict,),
    "tools": (list,), "tool_choice": (str, dict), "parallel_tool_calls": (bool,),
    "response_format": (dict,), "logit_bias": (dict,), "user": (str,), "metadata": (dict,),
    "stop": (str, list), "functions": (list,), "function_call": (str, dict),
}
_CACHE_CONTROL_TYPES: dict[str, tuple[type, ...]] = {
    "use-cache": (bool,), "ttl": _NUMBER, "s-maxage": _NUMBER, "no-cache": (bool,),
    "no-store": (bool,), "namespace": (str,),
}


@dataclass(slots=True)
class Inbound:
    """A validated request; `body` goes upstream: the client's JSON minus Turnout's fields."""

    endpoint: Literal["chat", "embeddings"]
    group: str
    body: dict[str, Any]
    stream: bool = False
    caching: bool | None = None
    cache_controls: dict[str, Any] = field(default_factory=dict)
    client_key: str | None = None


def authenticate(request: Request, keys: Sequence[bytes]) -> str | None:
    """The client's key when `keys` are configured (raises AuthenticationFailed), else None.

    Every configured key is compared, in constant time, so timing tells nothing.
    """
    if not keys:
        return None
    return check_key(request.headers.get("authorization", ""), keys)


def check_key(header: str, keys: Sequence[bytes]) -> str | None:
    """`authenticate` on the Authorization header's value ("" when there is none)."""
    if not keys:
        return None
    scheme, _, token = header.partition(" ")
    presented = token.strip().encode() if scheme.lower() == "bearer" else b""
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(presented, key)
    if not matched:
        raise AuthenticationFailed("Incorrect API key provided")
    return presented.decode()


async def read_json(request: Request, max_bytes: int) -> Any:
    """The body parsed as JSON, whatever Content-Type says; 413 past `max_bytes`, chunked too."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise RequestTooLarge(f"Request body is larger than {max_bytes} bytes")
    parts: list[bytes] = []
    size = 0
    try:
        async for part in request.stream():
            size += len(part)
            if size > max_bytes:
                raise RequestTooLarge(f"Request body is larger than {max_bytes} bytes")
            parts.append(part)
    except ClientDisconnect:
        raise _half_sent() from None
    return parse_json(parts[0] if len(parts) == 1 else b"".join(parts))


async def receive_json(receive: Receive, declared: bytes | None, max_bytes: int) -> Any:
    """`read_json` for a pure-ASGI handler: the body from `receive`, its Content-Length
    header's value as `declared`."""
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise RequestTooLarge(f"Request body is larger than {max_bytes} bytes")
    raw = b""
    parts: list[bytes] | None = None
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            if message["type"] == "http.disconnect":
                raise _half_sent()
            continue
        part = message.get("body", b"")
        if part:
            size += len(part)
            if size > max_bytes:
                raise RequestTooLarge(f"Request body is larger than {max_bytes} bytes")
            if not raw:
                raw = part
            else:
                if parts is None:
                    parts = [raw]
                parts.append(part)
        if not message.get("more_body", False):
            break
    return parse_json(raw if parts is None else b"".join(parts))


def _half_sent() -> InvalidRequest:
    # Nobody will read this answer; it keeps a half-sent upload from counting as a 500.
    return InvalidRequest("The client closed the connection before sending the whole body",
                          code="invalid_json")


def parse_json(raw: bytes) -> Any:
    """A request body parsed as JSON (400 when it is not JSON or nested too deep)."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(
            f"We could not parse the JSON body of your request: {exc.msg}", code="invalid_json"
        ) from None
    # Counting brackets is a cheap filter (it counts those inside strings too); only a
    # body that could be too deep is walked.
    if raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH and _too_deep(data):
        raise InvalidRequest(
            f"The JSON body of your request is nested deeper than {MAX_JSON_DEPTH} levels",
            code="invalid_json",
        )
    return data


def _too_deep(data: Any) -> bool:
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            return True
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values() if isinstance(v, dict | list))
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value if isinstance(v, dict | list))
    return False


def parse_chat(data: Any, client_key: str | None) -> Inbound:
    body, group, caching, controls = _common(data)
    messages = _required(body, "messages", list)
    if not messages:
        raise InvalidRequest("'messages' must contain at least one message", param="messages",
                             code="invalid_type")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise _invalid_type(f"messages[{i}]", "an object")
        if not isinstance(message.get("role"), str):
            if "role" not in message:
                raise InvalidRequest(f"Missing required parameter: 'messages[{i}].role'",
                                     param=f"messages[{i}].role", code="missing_field")
            raise _invalid_type(f"messages[{i}].role", "a string")
        _check_message(i, message)
    for name, types in _CHAT_PARAM_TYPES.items():
        value = body.get(name)
        if value is not None and not _is_instance(value, types):
            raise _invalid_type(name, " or ".join(_TYPE_NAMES[t] for t in types))
    _check_chat_params(body)
    return Inbound("chat", group, body, bool(body.get("stream")), caching, controls, client_key)


def parse_embeddings(data: Any, client_key: str | None) -> Inbound:
    body, group, caching, controls = _common(data)
    if "input" not in body or body["input"] is None:
        raise InvalidRequest("Missing required parameter: 'input'", param="input",
                             code="missing_field")
    if not _is_embedding_input(body["input"]):
        raise _invalid_type("input", "a string, an array of strings, or an array of token arrays")
    for name, types in (("dimensions", (int,)), ("encoding_format", (str,)), ("user", (str,))):
        value = body.get(name)
        if value is not None and not _is_instance(value, types):
            raise _invalid_type(name, _TYPE_NAMES[types[0]])
    return Inbound("embeddings", group, body, False, caching, controls, client_key)


def _common(data: Any) -> tuple[dict[str, Any], str, bool | None, dict[str, Any]]:
    if not isinstance(data, dict):
        raise InvalidRequest("The request body must be a JSON object", code="invalid_type")
    for name in data:
        if name in FORBIDDEN_FIELDS:
            raise InvalidRequest(
                f"'{name}' cannot be set by a client: Turnout chooses upstreams from its config",
                param=name, code="forbidden_field",
            )
    group = _required(data, "model", str)
    caching = data.get("caching")
    if caching is not None and not isinstance(caching, bool):
        raise _invalid_type("caching", "a boolean")
    controls = data.get("cache")
    if controls is None:
        controls = {}
    elif not isinstance(controls, dict):
        raise _invalid_type("cache", "an object")
    for name, types in _CACHE_CONTROL_TYPES.items():
        value = controls.get(name)
        if value is not None and not _is_instance(value, types):
            raise _invalid_type(f"cache.{name}", _TYPE_NAMES[types[0]])
        if value is not None and types is _NUMBER and value < 0:
            raise InvalidRequest(f"'cache.{name}' must not be negative", param=f"cache.{name}",
                                 code="invalid_type")
    if "caching" in data or "cache" in data:
        body = {k: v for k, v in data.items() if k not in TURNOUT_FIELDS}
    else:
        body = data
    return body, group, caching, controls


_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "a boolean",
               list: "an array", dict: "an object"}


def _check_message(i: int, message: dict[str, Any]) -> None:
    content = message.get("content")
    if isinstance(content, list):
        for j, part in enumerate(content):
            if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                raise _invalid_type(f"messages[{i}].content[{j}]", "an object with a string 'type'")
            if "text" in part and not isinstance(part["text"], str):
                raise _invalid_type(f"messages[{i}].content[{j}].text", "a string")
    elif content is not None and not isinstance(content, str):
        raise _invalid_type(f"messages[{i}].content", "a string or an array of parts")
    for name in ("name", "tool_call_id"):
        if message.get(name) is not None and not isinstance(message[name], str):
            raise _invalid_type(f"messages[{i}].{name}", "a string")
    tool_calls = message.get("tool_calls")
    if tool_calls is not None and not _is_list_of_objects(tool_calls):
        raise _invalid_type(f"messages[{i}].tool_calls", "an array of objects")


def _check_chat_params(body: dict[str, Any]) -> None:
    stop = body.get("stop")
    if isinstance(stop, list) and not all(isinstance(s, str) for s in stop):
        raise _invalid_type("stop", "a string or an array of strings")
    for name in ("tools", "functions"):
        if body.get(name) is not None and not _is_list_of_objects(body[name]):
            raise _invalid_type(name, "an array of objects")
    call = body.get("function_call")
    if isinstance(call, dict) and not isinstance(call.get("name"), str):
        raise _invalid_type("function_call.name", "a string")
    bias = body.get("logit_bias")
    if isinstance(bias, dict) and not all(_is_instance(v, _NUMBER) for v in bias.values()):
        raise _invalid_type("logit_bias", "an object of numbers")
    options = body.get("stream_options")
    if isinstance(options, dict) and not _is_instance(options.get("include_usage", False), (bool,)):
        raise _invalid_type("stream_options.include_usage", "a boolean")


def _is_list_of_objects(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, dict) for v in value)


# JSON numbers past 64 bits: orjson reads them as floats, upstreams refuse them.
_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and _INT_MIN <= value <= _INT_MAX


def _is_instance(value: Any, types: tuple[type, ...]) -> bool:
    # bool is an int in Python, never in JSON Schema.
    if isinstance(value, bool):
        return bool in types
    if isinstance(value, int) and float not in types:
        return int in types and _is_int(value)
    return isinstance(value, types)


def _required(data: dict[str, Any], name: str, kind: type) -> Any:
    if name not in data or data[name] is None:
        raise InvalidRequest(f"Missing required parameter: '{name}'", param=name,
                             code="missing_field")
    value = data[name]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise _invalid_type(name, _TYPE_NAMES[kind])
    return value


def _invalid_type(param: str, expected: str) -> InvalidRequest:
    return InvalidRequest(f"Invalid type for '{param}': expected {expected}", param=param,
                          code="invalid_type")


def _is_embedding_input(value: Any) -> bool:
    if isinstance(value, str):
        return True
    if not isinstance(value, list) or not value:
        return False
    if all(isinstance(v, str) for v in value):
        return True
    if all(_is_int(v) for v in value):
        return True
    return all(isinstance(v, list) and v and all(_is_int(t) for t in v) for v in value)

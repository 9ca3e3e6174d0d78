"""The cache key: a request's canonical form, hashed into a versioned key (pure).

Two requests that must get the same answer get the same key; a request that differs in
anything that can change the answer gets another. The canonical form holds the namespace,
the scope, the endpoint, the model group, the messages (or embedding input) and every
answer-changing parameter, serialised as JSON with sorted keys. The rules, each tested in
tests/test_cache_keys.py:

| rule                                   | equivalent forms                                   |
| -------------------------------------- | -------------------------------------------------- |
| JSON key order does not matter         | `{"a":1,"b":2}` = `{"b":2,"a":1}`, at every depth  |
| one text part is the plain string      | `[{"type":"text","text":"hi"}]` = `"hi"`           |
| a single stop string is a list of one  | `"stop": "x"` = `"stop": ["x"]`                    |
| OpenAI's documented defaults = omitted | temperature 1, top_p 1, n 1, presence_penalty 0,   |
|                                        | frequency_penalty 0 (embeddings: encoding "float") |
| null = omitted                         | `"seed": null` = no seed; also inside messages     |
| integral numbers                       | `"temperature": 0` = `0.0` in parameters           |
| one embedding input = a list of one    | `"input": "x"` = `["x"]`                           |
| excluded (cannot change the answer)    | stream, stream_options, user, metadata, caching,   |
|                                        | cache                                              |
| kept (can change the answer)           | tools, tool_choice, response_format, seed,         |
|                                        | logit_bias, max_tokens, ..., and unknown fields    |

The key is `<prefix>:v1:<sha256 of the canonical form>` (the router passes the configured
namespace as the prefix): `v1` changes whenever these rules change, so entries written
under other rules are never read.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping
from typing import Any, Literal

import orjson

__all__ = ["EXCLUDED_FIELDS", "KEY_VERSION", "canonical_form", "key_for", "scope_of"]

KEY_VERSION = "v1"

Endpoint = Literal["chat", "embeddings"]

# Fields that cannot change the answer (contract, "Cache key"); `model` is the group,
# carried separately.
EXCLUDED_FIELDS = frozenset({
    "model", "stream", "stream_options", "user", "caching", "cache", "metadata",
})

# OpenAI's documented defaults: sending them is the same request as omitting them.
_DEFAULTS: dict[Endpoint, dict[str, Any]] = {
    "chat": {"temperature": 1, "top_p": 1, "n": 1, "presence_penalty": 0,
             "frequency_penalty": 0},
    "embeddings": {"encoding_format": "float"},
}


def scope_of(client_key: str | None, scope: Literal["per-key", "shared"]) -> str:
    """`shared`, or a digest of the client's key (never the key itself) under per-key."""
    if scope == "shared":
        return "shared"
    if client_key is None:
        return "anonymous"
    return _key_scope(client_key)


@functools.lru_cache(maxsize=256)
def _key_scope(client_key: str) -> str:
    # Client keys are the few configured ones: each is hashed once, not on every request.
    return "key:" + hashlib.sha256(client_key.encode()).hexdigest()[:32]


def canonical_form(
    endpoint: Endpoint, group: str, body: Mapping[str, Any], *, namespace: str, scope: str
) -> bytes:
    """The canonical bytes of a request; `body` is the client's JSON object."""
    form: dict[str, Any] = {
        "namespace": namespace, "scope": scope, "endpoint": endpoint, "group": group,
    }
    params: dict[str, Any] = {}
    defaults = _DEFAULTS[endpoint]
    for name, value in body.items():
        if name in EXCLUDED_FIELDS or value is None:
            continue
        if endpoint == "chat" and name == "messages":
            form["messages"] = _messages(value)
            continue
        if endpoint == "embeddings" and name == "input":
            form["input"] = [value] if isinstance(value, str) else value
            continue
        value = _parameter(name, value)
        if name in defaults and _same(value, defaults[name]):
            continue
        params[name] = value
    form["params"] = params
    try:
        return orjson.dumps(form, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        # Integers beyond 64 bits (orjson refuses them; JSON allows them).
        return json.dumps(form, sort_keys=True, separators=(",", ":"),
                          ensure_ascii=False).encode()


def key_for(
    endpoint: Endpoint,
    group: str,
    body: Mapping[str, Any],
    *,
    namespace: str,
    scope: str,
    prefix: str = "turnout",
) -> str:
    form = canonical_form(endpoint, group, body, namespace=namespace, scope=scope)
    return f"{prefix}:{KEY_VERSION}:{hashlib.sha256(form).hexdigest()}"


def _same(value: Any, default: Any) -> bool:
    return type(value) is type(default) and value == default


def _parameter(name: str, value: Any) -> Any:
    if name == "stop" and isinstance(value, str):
        return [value]
    return _numbers(value)


def _numbers(value: Any) -> Any:
    # 0 and 0.0 are the same parameter; JSON does not tell them apart either.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    if isinstance(value, dict):
        # Nulls are kept below the top level: inside a tool's JSON Schema, `"default": null`
        # or `"const": null` is not the same as leaving it out.
        return {k: _numbers(v) for k, v in value.items()}
    return value


def _messages(messages: Any) -> Any:
    if not isinstance(messages, list):
        return messages
    return [_message(m) for m in messages]


def _message(message: Any) -> Any:
    if not isinstance(message, dict):
        return message
    out = {k: v for k, v in message.items() if v is not None}
    content = out.get("content")
    if isinstance(content, list):
        out["content"] = _content(content)
    return out


def _content(parts: list[Any]) -> Any:
    cleaned = [
        {k: v for k, v in p.items() if v is not None} if isinstance(p, dict) else p
        for p in parts
    ]
    if len(cleaned) == 1:
        only = cleaned[0]
        if (isinstance(only, dict) and only.get("type") == "text"
                and isinstance(only.get("text"), str) and set(only) == {"type", "text"}):
            return only["text"]
    return cleaned

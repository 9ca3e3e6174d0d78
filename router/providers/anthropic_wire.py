"""Anthropic's Messages API wire format: OpenAI chat requests to it, its answers back (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from router.providers.translate import (
    MalformedAnswer,
    StreamError,
    TranslationError,
    Turn,
    check_parameters,
    chunk,
    chunk_base,
    data_url,
    fold_conversation,
    message_text,
    parse_arguments,
    stop_list,
    tool_call,
    usage,
    usage_chunk,
)
from router.providers.translate import chat_completion as make_completion
from router.providers.translate import choice as make_choice

__all__ = [
    "ANTHROPIC_VERSION",
    "DEFAULT_MAX_TOKENS",
    "StreamTranslator",
    "to_chat_completion",
    "to_messages_request",
]

PROVIDER = "anthropic"
ANTHROPIC_VERSION = "2023-06-01"
# The Messages API requires max_tokens; OpenAI's doesn't. Used when the client sends neither
# max_tokens nor max_completion_tokens (documented in README.md, "Providers").
DEFAULT_MAX_TOKENS = 4096

_SUPPORTED = frozenset({"max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k",
                        "stop", "tools", "tool_choice", "parallel_tool_calls"})
# A seed only asks for best-effort repeatability; dropping it leaves the answer's distribution
# as it was.
_HARMLESS = frozenset({"seed"})

# stop_reason -> finish_reason
FINISH_REASONS = {
    "end_turn": "stop", "stop_sequence": "stop", "pause_turn": "stop",
    "max_tokens": "length", "model_context_window_exceeded": "length",
    "tool_use": "tool_calls", "refusal": "content_filter",
}


def to_messages_request(body: Mapping[str, Any], model: str) -> dict[str, Any]:
    """The Messages API body for an OpenAI chat body; raises TranslationError (a 400)."""
    check_parameters(body, PROVIDER, _SUPPORTED, _HARMLESS)
    system, messages = _conversation(body["messages"])
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or DEFAULT_MAX_TOKENS
    request: dict[str, Any] = {"model": model, "max_tokens": max_tokens, "messages": messages}
    if system:
        request["system"] = system
    temperature = body.get("temperature")
    if temperature is not None:
        if temperature > 1:
            raise TranslationError(
                f"temperature {temperature} is above 1, the highest provider 'anthropic' "
                "accepts", "temperature")
        request["temperature"] = temperature
    for name in ("top_p", "top_k"):
        if body.get(name) is not None:
            request[name] = body[name]
    stops = stop_list(body.get("stop"))
    if stops:
        request["stop_sequences"] = stops
    request.update(_tools(body))
    user = body.get("user")
    if isinstance(user, str) and user:
        request["metadata"] = {"user_id": user}
    return request


def _conversation(messages: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """(system prompt, turns): system messages lifted out, same-role turns merged.

    The Messages API requires user and assistant turns to alternate; OpenAI's tool messages
    become tool_result blocks of a user turn.
    """
    def turn(message: dict[str, Any], where: str) -> Turn:
        role = message["role"]
        if role == "user":
            return "user", _user_blocks(message.get("content"), where)
        if role == "assistant":
            return "assistant", _assistant_blocks(message, where)
        if role == "tool":
            return "user", [_tool_result(message, where)]
        raise TranslationError(
            f"Message role {role!r} is not supported by provider 'anthropic'", f"{where}.role")

    return fold_conversation(messages, PROVIDER, "content", turn)


def _user_blocks(content: Any, where: str) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[dict[str, Any]] = []
    for i, part in enumerate(content):
        here = f"{where}.content[{i}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            if part.get("text"):
                blocks.append({"type": "text", "text": str(part["text"])})
        elif kind == "image_url":
            blocks.append({"type": "image", "source": _image_source(part, here)})
        else:
            raise TranslationError(
                f"Content part of type {kind!r} is not supported by provider 'anthropic'", here)
    return blocks


def _image_source(part: dict[str, Any], where: str) -> dict[str, Any]:
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str) or not url:
        raise TranslationError(f"'{where}.image_url.url' must be a URL", f"{where}.image_url",
                               "invalid_type")
    inline = data_url(url)
    if inline is not None:
        return {"type": "base64", "media_type": inline[0], "data": inline[1]}
    if url.startswith(("http://", "https://")):
        return {"type": "url", "url": url}
    raise TranslationError(f"'{where}.image_url.url' must be an http(s) or data: URL",
                           f"{where}.image_url", "invalid_type")


def _assistant_blocks(message: dict[str, Any], where: str) -> list[dict[str, Any]]:
    if message.get("function_call") is not None:
        raise TranslationError("Legacy 'function_call' messages are not supported by provider "
                               "'anthropic'; use tool_calls", f"{where}.function_call")
    blocks: list[dict[str, Any]] = []
    text = message_text(message.get("content"), where, PROVIDER)
    if text:
        blocks.append({"type": "text", "text": text})
    for j, call in enumerate(message.get("tool_calls") or []):
        here = f"{where}.tool_calls[{j}]"
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise TranslationError(f"'{here}.function.name' is required", here, "missing_field")
        blocks.append({
            "type": "tool_use", "id": str(call.get("id") or f"toolu_{j}"),
            "name": function["name"],
            "input": parse_arguments(function.get("arguments"), f"{here}.function.arguments"),
        })
    return blocks


def _tool_result(message: dict[str, Any], where: str) -> dict[str, Any]:
    call_id = message.get("tool_call_id")
    if not isinstance(call_id, str) or not call_id:
        raise TranslationError(f"'{where}.tool_call_id' is required", f"{where}.tool_call_id",
                               "missing_field")
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": call_id}
    text = message_text(message.get("content"), where, PROVIDER)
    if text:
        block["content"] = text
    return block


def _tools(body: Mapping[str, Any]) -> dict[str, Any]:
    tools = body.get("tools") or []
    if not tools:
        return {}
    translated = []
    for i, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(
                function, dict) or not isinstance(function.get("name"), str):
            raise TranslationError(
                "Only tools of type 'function' with a name are supported by provider "
                "'anthropic'", f"tools[{i}]")
        entry: dict[str, Any] = {
            "name": function["name"],
            "input_schema": function.get("parameters") or {"type": "object", "properties": {}},
        }
        if function.get("description"):
            entry["description"] = function["description"]
        translated.append(entry)
    out: dict[str, Any] = {"tools": translated}
    choice = _tool_choice(body.get("tool_choice"))
    if body.get("parallel_tool_calls") is False and (choice or {}).get("type") != "none":
        choice = {**(choice or {"type": "auto"}), "disable_parallel_tool_use": True}
    if choice is not None:
        out["tool_choice"] = choice
    return out


def _tool_choice(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    simple = {"auto": "auto", "none": "none", "required": "any"}
    if isinstance(value, str) and value in simple:
        return {"type": simple[value]}
    function = value.get("function") if isinstance(value, dict) else None
    if isinstance(function, dict) and isinstance(function.get("name"), str):
        return {"type": "tool", "name": function["name"]}
    raise TranslationError("tool_choice must be 'auto', 'none', 'required' or a function",
                           "tool_choice", "invalid_type")


def to_chat_completion(message: Any, model: str) -> dict[str, Any]:
    """A `chat.completion` for a Messages API answer; raises MalformedAnswer."""
    if not isinstance(message, dict) or not isinstance(message.get("content"), list):
        raise MalformedAnswer("answer has no content list")
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in message["content"]:
        if not isinstance(block, dict):
            raise MalformedAnswer("content block is not an object")
        if block.get("type") == "text":
            texts.append(str(block.get("text") or ""))
        elif block.get("type") == "tool_use":
            calls.append(tool_call(str(block.get("id")), str(block.get("name")),
                                   block.get("input") or {}))
    text = "".join(texts)
    finish = FINISH_REASONS.get(str(message.get("stop_reason")), "stop")
    choice = make_choice(0, text if text or not calls else None, calls, finish)
    return make_completion(f"chatcmpl-{message.get('id', '')}",
                           str(message.get("model") or model), [choice],
                           _usage(message.get("usage")))


def _prompt_tokens(raw: Any) -> tuple[int, int]:
    """(prompt tokens, of which read from Anthropic's prompt cache)."""
    if not isinstance(raw, dict):
        return 0, 0
    cached = int(raw.get("cache_read_input_tokens") or 0)
    total = int(raw.get("input_tokens") or 0) + cached + int(
        raw.get("cache_creation_input_tokens") or 0)
    return total, cached


def _usage(raw: Any) -> dict[str, Any]:
    prompt, cached = _prompt_tokens(raw)
    completion = int(raw.get("output_tokens") or 0) if isinstance(raw, dict) else 0
    return usage(prompt, completion, cached)


class StreamTranslator:
    """Turns Messages API stream events into `chat.completion.chunk` dicts.

    `feed` returns the chunks an event yields. The finish chunk (and the usage chunk when
    asked) is held back until message_stop, so a stream cut before it never looks complete.
    """

    def __init__(self, model: str, include_usage: bool) -> None:
        self.model = model
        self.include_usage = include_usage
        self.finished = False
        self._base: dict[str, Any] | None = None
        self._tool_index: dict[int, int] = {}
        self._stop_reason: str | None = None
        self._prompt = (0, 0)
        self._completion = 0

    def feed(self, event: str, data: Any) -> list[dict[str, Any]]:
        if not isinstance(data, dict):
            raise MalformedAnswer("stream event is not an object")
        kind = data.get("type") or event
        if kind == "error":
            error = data.get("error")
            raise StreamError(str(error.get("type")) if isinstance(error, dict) else "error")
        if kind == "ping":
            return []
        if kind == "message_start":
            return self._start(data.get("message"))
        if self._base is None:
            raise MalformedAnswer(f"{kind} before message_start")
        if kind == "content_block_start":
            return self._block_start(data)
        if kind == "content_block_delta":
            return self._block_delta(data)
        if kind == "message_delta":
            self._message_delta(data)
            return []
        if kind == "message_stop":
            return self._stop()
        # content_block_stop, and event types added to the API later, carry nothing for us.
        return []

    def _start(self, message: Any) -> list[dict[str, Any]]:
        if not isinstance(message, dict):
            raise MalformedAnswer("message_start without a message")
        self._base = chunk_base(f"chatcmpl-{message.get('id', '')}",
                                str(message.get("model") or self.model))
        self._prompt = _prompt_tokens(message.get("usage"))
        output = message.get("usage", {}).get("output_tokens") if isinstance(
            message.get("usage"), dict) else None
        self._completion = int(output or 0)
        return [chunk(self._base, 0, {"role": "assistant", "content": ""})]

    def _block_start(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        assert self._base is not None
        block = data.get("content_block")
        if not isinstance(block, dict):
            raise MalformedAnswer("content_block_start without a block")
        if block.get("type") == "tool_use":
            index = len(self._tool_index)
            self._tool_index[int(data.get("index", 0))] = index
            call = {"index": index, "id": str(block.get("id")), "type": "function",
                    "function": {"name": str(block.get("name")), "arguments": ""}}
            return [chunk(self._base, 0, {"tool_calls": [call]})]
        if block.get("type") == "text" and block.get("text"):
            return [chunk(self._base, 0, {"content": str(block["text"])})]
        return []

    def _block_delta(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        assert self._base is not None
        delta = data.get("delta")
        if not isinstance(delta, dict):
            raise MalformedAnswer("content_block_delta without a delta")
        if delta.get("type") == "text_delta" and delta.get("text"):
            return [chunk(self._base, 0, {"content": str(delta["text"])})]
        if delta.get("type") == "input_json_delta" and delta.get("partial_json"):
            index = self._tool_index.get(int(data.get("index", 0)))
            if index is None:
                raise MalformedAnswer("input_json_delta for a block that is not a tool_use")
            call = {"index": index, "function": {"arguments": str(delta["partial_json"])}}
            return [chunk(self._base, 0, {"tool_calls": [call]})]
        return []

    def _message_delta(self, data: dict[str, Any]) -> None:
        delta = data.get("delta")
        if isinstance(delta, dict) and delta.get("stop_reason"):
            self._stop_reason = str(delta["stop_reason"])
        raw = data.get("usage")
        if isinstance(raw, dict):
            # Anthropic sends the usage of the prompt in message_start and the running
            # output count in message_delta; OpenAI clients expect both in one final chunk.
            if raw.get("output_tokens") is not None:
                self._completion = int(raw["output_tokens"])
            if raw.get("input_tokens"):
                self._prompt = _prompt_tokens(raw)

    def _stop(self) -> list[dict[str, Any]]:
        assert self._base is not None
        self.finished = True
        finish = FINISH_REASONS.get(self._stop_reason or "end_turn", "stop")
        out = [chunk(self._base, 0, {}, finish)]
        if self.include_usage:
            out.append(usage_chunk(self._base, usage(self._prompt[0], self._completion,
                                                     self._prompt[1])))
        return out

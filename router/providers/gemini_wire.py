"""Gemini's generateContent wire format: OpenAI chat and embedding requests to it, answers back.

Pure functions and a stream translator; the HTTP side is router/providers/gemini.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import orjson

from router.providers.translate import (
    MalformedAnswer,
    TranslationError,
    Turn,
    check_parameters,
    chunk,
    chunk_base,
    data_url,
    encode_embedding,
    fold_conversation,
    message_text,
    new_completion_id,
    parse_arguments,
    stop_list,
    tool_call,
    usage,
    usage_chunk,
)
from router.providers.translate import chat_completion as make_completion
from router.providers.translate import choice as make_choice

__all__ = [
    "GeminiStreamTranslator",
    "from_embed_response",
    "to_chat_completion",
    "to_embed_request",
    "to_gemini_request",
]

PROVIDER = "gemini"

_SUPPORTED = frozenset({"max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k",
                        "stop", "tools", "tool_choice", "n", "presence_penalty",
                        "frequency_penalty", "seed", "response_format"})

_FILTERED = frozenset({"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII",
                       "IMAGE_SAFETY", "LANGUAGE"})


def to_gemini_request(body: Mapping[str, Any]) -> dict[str, Any]:
    """The generateContent body for an OpenAI chat body; raises TranslationError (a 400)."""
    check_parameters(body, PROVIDER, _SUPPORTED)
    system, contents = _conversation(body["messages"])
    request: dict[str, Any] = {"contents": contents}
    if system:
        request["systemInstruction"] = {"parts": [{"text": system}]}
    config = _generation_config(body)
    if config:
        request["generationConfig"] = config
    request.update(_tools(body))
    return request


def _generation_config(body: Mapping[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    names = {"temperature": "temperature", "top_p": "topP", "top_k": "topK",
             "presence_penalty": "presencePenalty", "frequency_penalty": "frequencyPenalty",
             "seed": "seed"}
    for openai_name, gemini_name in names.items():
        if body.get(openai_name) is not None:
            config[gemini_name] = body[openai_name]
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    if max_tokens:
        config["maxOutputTokens"] = max_tokens
    stops = stop_list(body.get("stop"))
    if stops:
        config["stopSequences"] = stops
    n = body.get("n")
    if isinstance(n, int) and n != 1:
        config["candidateCount"] = n
    config.update(_response_format(body.get("response_format")))
    return config


def _response_format(value: Any) -> dict[str, Any]:
    if value is None or value == {"type": "text"}:
        return {}
    kind = value.get("type") if isinstance(value, dict) else None
    if kind == "json_object":
        return {"responseMimeType": "application/json"}
    schema = value.get("json_schema") if isinstance(value, dict) else None
    if kind == "json_schema" and isinstance(schema, dict) and isinstance(
            schema.get("schema"), dict):
        return {"responseMimeType": "application/json", "responseJsonSchema": schema["schema"]}
    raise TranslationError("response_format must be text, json_object or json_schema with a "
                           "schema for provider 'gemini'", "response_format", "invalid_type")


def _conversation(messages: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """(system instruction, contents): user/model roles, same-role turns merged.

    OpenAI's tool messages become functionResponse parts of a user turn; they name the
    function, which Gemini needs and OpenAI only gives in the assistant's tool call.
    """
    call_names: dict[str, str] = {}

    def turn(message: dict[str, Any], where: str) -> Turn:
        role = message["role"]
        if role == "user":
            return "user", _user_parts(message.get("content"), where)
        if role == "assistant":
            return "model", _model_parts(message, where, call_names)
        if role == "tool":
            return "user", [_function_response(message, where, call_names)]
        raise TranslationError(f"Message role {role!r} is not supported by provider "
                               "'gemini'", f"{where}.role")

    return fold_conversation(messages, PROVIDER, "parts", turn)


def _user_parts(content: Any, where: str) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"text": content}] if content else []
    parts: list[dict[str, Any]] = []
    for i, part in enumerate(content):
        here = f"{where}.content[{i}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            if part.get("text"):
                parts.append({"text": str(part["text"])})
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            inline = data_url(url) if isinstance(url, str) else None
            if inline is None:
                raise TranslationError("Provider 'gemini' takes images only as data: URLs "
                                       "(base64)", f"{here}.image_url")
            parts.append({"inlineData": {"mimeType": inline[0], "data": inline[1]}})
        else:
            raise TranslationError(
                f"Content part of type {kind!r} is not supported by provider 'gemini'", here)
    return parts


def _model_parts(message: dict[str, Any], where: str,
                 call_names: dict[str, str]) -> list[dict[str, Any]]:
    if message.get("function_call") is not None:
        raise TranslationError("Legacy 'function_call' messages are not supported by provider "
                               "'gemini'; use tool_calls", f"{where}.function_call")
    parts: list[dict[str, Any]] = []
    text = message_text(message.get("content"), where, PROVIDER)
    if text:
        parts.append({"text": text})
    for j, call in enumerate(message.get("tool_calls") or []):
        here = f"{where}.tool_calls[{j}]"
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise TranslationError(f"'{here}.function.name' is required", here, "missing_field")
        if isinstance(call.get("id"), str):
            call_names[call["id"]] = function["name"]
        args = parse_arguments(function.get("arguments"), f"{here}.function.arguments")
        parts.append({"functionCall": {"name": function["name"], "args": args}})
    return parts


def _function_response(message: dict[str, Any], where: str,
                       call_names: dict[str, str]) -> dict[str, Any]:
    call_id = message.get("tool_call_id")
    name = call_names.get(call_id) if isinstance(call_id, str) else None
    if name is None:
        raise TranslationError(f"'{where}.tool_call_id' does not match a tool call of an "
                               "earlier assistant message", f"{where}.tool_call_id",
                               "invalid_value")
    text = message_text(message.get("content"), where, PROVIDER)
    try:
        parsed = orjson.loads(text) if text else None
    except orjson.JSONDecodeError:
        parsed = None
    # functionResponse.response must be a JSON object; a plain-text result is wrapped.
    response = parsed if isinstance(parsed, dict) else {"content": text}
    return {"functionResponse": {"name": name, "response": response}}


def _tools(body: Mapping[str, Any]) -> dict[str, Any]:
    tools = body.get("tools") or []
    if not tools:
        return {}
    declarations = []
    for i, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(
                function, dict) or not isinstance(function.get("name"), str):
            raise TranslationError("Only tools of type 'function' with a name are supported "
                                   "by provider 'gemini'", f"tools[{i}]")
        declaration: dict[str, Any] = {"name": function["name"]}
        if function.get("description"):
            declaration["description"] = function["description"]
        if function.get("parameters"):
            # parametersJsonSchema takes JSON Schema as OpenAI clients write it, unlike
            # `parameters`, which is an OpenAPI subset.
            declaration["parametersJsonSchema"] = function["parameters"]
        declarations.append(declaration)
    out: dict[str, Any] = {"tools": [{"functionDeclarations": declarations}]}
    config = _tool_config(body.get("tool_choice"))
    if config is not None:
        out["toolConfig"] = {"functionCallingConfig": config}
    return out


def _tool_config(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    modes = {"auto": "AUTO", "none": "NONE", "required": "ANY"}
    if isinstance(value, str) and value in modes:
        return {"mode": modes[value]}
    function = value.get("function") if isinstance(value, dict) else None
    if isinstance(function, dict) and isinstance(function.get("name"), str):
        return {"mode": "ANY", "allowedFunctionNames": [function["name"]]}
    raise TranslationError("tool_choice must be 'auto', 'none', 'required' or a function",
                           "tool_choice", "invalid_type")


def _new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def _finish_reason(reason: Any, has_calls: bool) -> str:
    if reason in _FILTERED:
        return "content_filter"
    if reason == "MAX_TOKENS":
        return "length"
    return "tool_calls" if has_calls else "stop"


def _usage(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        return usage(0, 0)
    completion = int(raw.get("candidatesTokenCount") or 0) + int(
        raw.get("thoughtsTokenCount") or 0)
    return usage(int(raw.get("promptTokenCount") or 0), completion,
                 int(raw.get("cachedContentTokenCount") or 0))


def _parts(candidate: dict[str, Any]) -> list[dict[str, Any]]:
    content = candidate.get("content")
    parts = content.get("parts") if isinstance(content, dict) else None
    if parts is None:
        return []
    if not isinstance(parts, list) or not all(isinstance(p, dict) for p in parts):
        raise MalformedAnswer("candidate parts are not a list of objects")
    # Thought summaries are the model's reasoning, not its answer.
    return [p for p in parts if not p.get("thought")]


def _blocked(data: dict[str, Any]) -> bool:
    feedback = data.get("promptFeedback")
    return isinstance(feedback, dict) and bool(feedback.get("blockReason"))


def to_chat_completion(data: Any, model: str, n: int) -> dict[str, Any]:
    """A `chat.completion` for a generateContent answer; raises MalformedAnswer.

    A prompt Gemini blocked (promptFeedback.blockReason, no candidates) is answered as
    OpenAI answers filtered output: no content, finish_reason `content_filter`.
    """
    if not isinstance(data, dict):
        raise MalformedAnswer("answer is not an object")
    candidates = data.get("candidates")
    if not candidates and _blocked(data):
        choices = [make_choice(i, None, [], "content_filter") for i in range(n)]
    elif isinstance(candidates, list) and candidates:
        choices = [_choice(i, c) for i, c in enumerate(candidates)]
    else:
        raise MalformedAnswer("answer has no candidates")
    response_id = data.get("responseId")
    completion_id = f"chatcmpl-{response_id}" if response_id else new_completion_id()
    return make_completion(completion_id, str(data.get("modelVersion") or model), choices,
                           _usage(data.get("usageMetadata")))


def _choice(position: int, candidate: Any) -> dict[str, Any]:
    if not isinstance(candidate, dict):
        raise MalformedAnswer("candidate is not an object")
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for part in _parts(candidate):
        if "text" in part:
            texts.append(str(part["text"]))
        elif isinstance(part.get("functionCall"), dict):
            call = part["functionCall"]
            calls.append(tool_call(str(call.get("id") or _new_call_id()), str(call.get("name")),
                                   call.get("args") or {}))
    text = "".join(texts)
    finish = _finish_reason(candidate.get("finishReason"), bool(calls))
    index = candidate.get("index", position)
    return make_choice(index if isinstance(index, int) else position,
                       text if text or not calls else None, calls, finish)


class GeminiStreamTranslator:
    """Turns streamGenerateContent (SSE) answers into `chat.completion.chunk` dicts.

    Gemini ends a stream by closing it after a chunk carrying each candidate's
    finishReason. The finish chunks (and usage, when asked) are held until `close()`,
    which raises MalformedAnswer if a candidate never finished: the stream broke.
    """

    def __init__(self, model: str, n: int, include_usage: bool) -> None:
        self.model = model
        self.n = n
        self.include_usage = include_usage
        self._base: dict[str, Any] | None = None
        self._started: set[int] = set()
        self._calls: dict[int, int] = {}
        self._finish: dict[int, str] = {}
        self._usage: Any = None

    def feed(self, data: Any) -> list[dict[str, Any]]:
        if not isinstance(data, dict):
            raise MalformedAnswer("stream chunk is not an object")
        if self._base is None:
            response_id = data.get("responseId")
            self._base = chunk_base(
                f"chatcmpl-{response_id}" if response_id else new_completion_id(),
                str(data.get("modelVersion") or self.model))
        if data.get("usageMetadata") is not None:
            self._usage = data["usageMetadata"]
        candidates = data.get("candidates")
        if not candidates:
            if _blocked(data):
                self._finish.update({i: "content_filter" for i in range(self.n)})
            return []
        if not isinstance(candidates, list):
            raise MalformedAnswer("candidates is not a list")
        out: list[dict[str, Any]] = []
        for position, candidate in enumerate(candidates):
            if not isinstance(candidate, dict):
                raise MalformedAnswer("candidate is not an object")
            index = candidate.get("index", position)
            out += self._candidate(index if isinstance(index, int) else position, candidate)
        return out

    def _candidate(self, index: int, candidate: dict[str, Any]) -> list[dict[str, Any]]:
        assert self._base is not None
        out: list[dict[str, Any]] = []
        if index not in self._started:
            self._started.add(index)
            out.append(chunk(self._base, index, {"role": "assistant", "content": ""}))
        for part in _parts(candidate):
            if part.get("text"):
                out.append(chunk(self._base, index, {"content": str(part["text"])}))
            elif isinstance(part.get("functionCall"), dict):
                call = part["functionCall"]
                position = self._calls.get(index, 0)
                self._calls[index] = position + 1
                entry = {"index": position, **tool_call(str(call.get("id") or _new_call_id()),
                                                        str(call.get("name")),
                                                        call.get("args") or {})}
                out.append(chunk(self._base, index, {"tool_calls": [entry]}))
        reason = candidate.get("finishReason")
        if reason:
            self._finish[index] = _finish_reason(reason, self._calls.get(index, 0) > 0)
        return out

    def close(self) -> list[dict[str, Any]]:
        """The held-back finish (and usage) chunks, once the vendor's stream has ended."""
        missing = [i for i in range(self.n) if i not in self._finish]
        if self._base is None or missing:
            raise MalformedAnswer("stream ended before every candidate had a finishReason")
        out = [chunk(self._base, i, {}, self._finish[i]) for i in sorted(self._finish)]
        if self.include_usage:
            out.append(usage_chunk(self._base, _usage(self._usage)))
        return out


def to_embed_request(body: Mapping[str, Any], model: str) -> dict[str, Any]:
    """The batchEmbedContents body for an OpenAI embeddings body."""
    check_parameters(body, PROVIDER, {"input", "dimensions", "encoding_format"})
    raw = body["input"]
    inputs = [raw] if isinstance(raw, str) else raw
    if not all(isinstance(item, str) for item in inputs):
        raise TranslationError("Provider 'gemini' embeds text only, not token arrays", "input")
    encoding = body.get("encoding_format")
    if encoding not in (None, "float", "base64"):
        raise TranslationError("encoding_format must be 'float' or 'base64'", "encoding_format",
                               "invalid_value")
    requests = []
    for text in inputs:
        request: dict[str, Any] = {"model": f"models/{model}",
                                   "content": {"parts": [{"text": text}]}}
        if body.get("dimensions") is not None:
            request["outputDimensionality"] = body["dimensions"]
        requests.append(request)
    return {"requests": requests}


def from_embed_response(data: Any, model: str, count: int, encoding: Any) -> dict[str, Any]:
    """An OpenAI embeddings answer; Gemini reports no token usage, so usage is zero."""
    embeddings = data.get("embeddings") if isinstance(data, dict) else None
    if not isinstance(embeddings, list) or len(embeddings) != count:
        raise MalformedAnswer("answer does not hold one embedding per input")
    items = []
    for i, embedding in enumerate(embeddings):
        values = embedding.get("values") if isinstance(embedding, dict) else None
        if not isinstance(values, list) or not all(
                isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            raise MalformedAnswer("embedding values are not a list of numbers")
        items.append({"object": "embedding", "index": i,
                      "embedding": encode_embedding([float(v) for v in values], encoding)})
    return {"object": "list", "data": items, "model": model,
            "usage": {"prompt_tokens": 0, "total_tokens": 0}}

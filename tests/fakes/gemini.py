"""A fake Gemini API: validates requests as the real API does and answers in its format.

Run it as `python -m tests.fakes.gemini --port P --key K`. Routes (v1beta):
`models/{model}:generateContent`, `:streamGenerateContent?alt=sse` and
`:batchEmbedContents`. A wrong `x-goog-api-key` gets Google's 400 API_KEY_INVALID; bodies
are checked (known fields only, user/model roles, one datum per part, function responses
answering the previous turn's function calls one for one). The reply is "Gemini heard:
<last user text>" (prefixed with the system instruction in brackets, or "tool said:
<responses>" after function responses), one candidate per candidateCount (" #i" appended
after the first), honouring stopSequences and maxOutputTokens (in words). A prompt over
4000 characters exceeds the input token limit.

Scripted steps: {"status": 503|429|500|...}, {"text": "..."}, {"function_call": {"name",
"args"}}, {"finish": "SAFETY"} (a candidate blocked, no content), {"prompt_block":
"SAFETY"}, {"body": "raw"}, {"break_after": n} (a stream closed after n text chunks).
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tests.fakes.control import Recorder, json_response, serve, words

PROMPT_LIMIT = 4000
_TOP_LEVEL = {"contents", "systemInstruction", "generationConfig", "tools", "toolConfig",
              "safetySettings", "cachedContent"}
_CONFIG = {"temperature", "topP", "topK", "maxOutputTokens", "stopSequences", "candidateCount",
           "presencePenalty", "frequencyPenalty", "seed", "responseMimeType",
           "responseJsonSchema", "responseSchema"}
_PART_DATA = {"text", "inlineData", "functionCall", "functionResponse", "fileData"}
_STATUS = {400: "INVALID_ARGUMENT", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
           429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE",
           504: "DEADLINE_EXCEEDED"}


def error(code: int, message: str, details: list[dict[str, Any]] | None = None) -> Response:
    body = {"error": {"code": code, "message": message,
                      "status": _STATUS.get(code, "UNKNOWN"), "details": details or []}}
    return json_response(body, code)


def bad_key() -> Response:
    return error(400, "API key not valid. Please pass a valid API key.", [
        {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
         "domain": "googleapis.com",
         "metadata": {"service": "generativelanguage.googleapis.com"}}])


def validate(body: Any) -> str | None:
    if not isinstance(body, dict):
        return "Invalid JSON payload received."
    for key in body:
        if key not in _TOP_LEVEL:
            return f'Invalid JSON payload received. Unknown name "{key}": Cannot find field.'
    config = body.get("generationConfig", {})
    for key in config:
        if key not in _CONFIG:
            return (f'Invalid JSON payload received. Unknown name "{key}" at '
                    "'generation_config': Cannot find field.")
    count = config.get("candidateCount", 1)
    if not isinstance(count, int) or not 1 <= count <= 8:
        return "* GenerateContentRequest.generation_config.candidate_count: must be 1 to 8"
    if len(config.get("stopSequences", [])) > 5:
        return "* GenerateContentRequest.generation_config.stop_sequences: at most 5"
    system = body.get("systemInstruction")
    if system is not None and not _text_parts(system.get("parts")):
        return "* GenerateContentRequest.system_instruction.parts: must be text parts"
    return _validate_tools(body) or _validate_contents(body.get("contents"))


def _text_parts(parts: Any) -> bool:
    return isinstance(parts, list) and bool(parts) and all(
        isinstance(p, dict) and set(p) == {"text"} for p in parts)


def _validate_tools(body: dict[str, Any]) -> str | None:
    names = set()
    for i, tool in enumerate(body.get("tools", [])):
        for j, declaration in enumerate(tool.get("functionDeclarations", [])):
            if not declaration.get("name"):
                return f"* GenerateContentRequest.tools[{i}].function_declarations[{j}].name: " \
                       "Name cannot be empty."
            if "parameters" in declaration and "parametersJsonSchema" in declaration:
                return "parameters and parametersJsonSchema are mutually exclusive"
            names.add(declaration["name"])
    calling = body.get("toolConfig", {}).get("functionCallingConfig")
    if calling is not None:
        if calling.get("mode") not in {"AUTO", "ANY", "NONE", "VALIDATED"}:
            return "* GenerateContentRequest.tool_config.function_calling_config.mode: invalid"
        allowed = calling.get("allowedFunctionNames")
        if allowed and (calling["mode"] != "ANY" or not set(allowed) <= names):
            return "allowed_function_names must name declared functions, with mode ANY"
    return None


def _validate_contents(contents: Any) -> str | None:
    if not isinstance(contents, list) or not contents:
        return "* GenerateContentRequest.contents: contents is not specified"
    calls: list[str] = []
    for i, content in enumerate(contents):
        role = content.get("role")
        if role not in ("user", "model"):
            return f"Please use a valid role: user, model. (contents[{i}].role: {role!r})"
        parts = content.get("parts")
        if not isinstance(parts, list) or not parts:
            return f"* GenerateContentRequest.contents[{i}].parts: contents.parts must not " \
                   "be empty."
        for j, part in enumerate(parts):
            if not isinstance(part, dict) or len(set(part) & _PART_DATA) != 1:
                return f"* GenerateContentRequest.contents[{i}].parts[{j}].data: required " \
                       "oneof field 'data' must have one initialized field"
        responses = [p["functionResponse"] for p in parts if "functionResponse" in p]
        if calls and role == "user" and [r.get("name") for r in responses] != calls:
            return ("Please ensure that the number of function response parts is equal to the "
                    "number of function call parts of the function call turn.")
        if responses and (role != "user" or not calls or any(
                not isinstance(r.get("response"), dict) for r in responses)):
            return f"contents[{i}]: function response parts must answer a function call turn"
        calls = [p["functionCall"]["name"] for p in parts if "functionCall" in p]
        if calls and role != "model":
            return f"contents[{i}]: function call parts must be in a model turn"
    return None


def prompt_size(body: dict[str, Any]) -> int:
    system = body.get("systemInstruction", {}).get("parts", [])
    parts = system + [p for c in body["contents"] for p in c["parts"]]
    return sum(len(p.get("text", "")) for p in parts)


def default_reply(body: dict[str, Any]) -> str:
    parts = body["contents"][-1]["parts"]
    responses = [p["functionResponse"] for p in parts if "functionResponse" in p]
    if responses:
        reply = "tool said: " + " | ".join(orjson.dumps(r["response"]).decode()
                                           for r in responses)
    else:
        reply = "Gemini heard: " + " ".join(p["text"] for p in parts if "text" in p)
        images = sum(1 for p in parts if "inlineData" in p)
        if images:
            reply += f" [{images} image]"
    system = body.get("systemInstruction")
    if system:
        reply = f"[{' '.join(p['text'] for p in system['parts'])}] {reply}"
    return reply


def shape_reply(config: dict[str, Any], text: str) -> tuple[str, str]:
    for stop in config.get("stopSequences", []):
        if stop and stop in text:
            return text[: text.index(stop)], "STOP"
    pieces = text.split(" ")
    limit = config.get("maxOutputTokens")
    if limit and len(pieces) > limit:
        return " ".join(pieces[:limit]), "MAX_TOKENS"
    return text, "STOP"


def candidates(body: dict[str, Any], step: dict[str, Any]) -> list[dict[str, Any]]:
    config = body.get("generationConfig", {})
    out = []
    for i in range(config.get("candidateCount", 1)):
        if "finish" in step:
            out.append({"index": i, "finishReason": step["finish"],
                        "safetyRatings": [{"category": "HARM_CATEGORY_DANGEROUS_CONTENT",
                                           "probability": "HIGH", "blocked": True}]})
            continue
        if "function_call" in step:
            parts: list[dict[str, Any]] = [{"functionCall": step["function_call"]}]
            reason = "STOP"
        else:
            base = step.get("text") or default_reply(body)
            text, reason = shape_reply(config, base + (f" #{i}" if i else ""))
            parts = [{"text": text}]
        out.append({"index": i, "content": {"role": "model", "parts": parts},
                    "finishReason": reason})
    return out


def usage_of(body: dict[str, Any], found: list[dict[str, Any]]) -> dict[str, Any]:
    prompt = words(" ".join(p.get("text", "") for c in body["contents"] for p in c["parts"]))
    output = sum(words(p.get("text", "x")) for c in found
                 for p in c.get("content", {}).get("parts", []))
    return {"promptTokenCount": prompt, "candidatesTokenCount": output,
            "totalTokenCount": prompt + output}


async def stream(body: dict[str, Any], model: str, step: dict[str, Any]
                 ) -> AsyncIterator[bytes]:
    found = candidates(body, step)
    usage = usage_of(body, found)
    base = {"modelVersion": model, "responseId": "fake-response-1"}
    sent = 0
    for candidate in found:
        parts = candidate.get("content", {}).get("parts", [])
        pieces: list[dict[str, Any]] = []
        for part in parts:
            if "text" in part:
                pieces += [{"text": w if j == 0 else f" {w}"}
                           for j, w in enumerate(part["text"].split(" "))]
            else:
                pieces.append(part)
        for j, piece in enumerate(pieces):
            if sent == step.get("break_after"):
                return
            sent += 1
            last = j == len(pieces) - 1
            event: dict[str, Any] = {"index": candidate["index"],
                                     "content": {"role": "model", "parts": [piece]}}
            if last:
                event["finishReason"] = candidate["finishReason"]
            yield b"data: " + orjson.dumps({**base, "candidates": [event],
                                            "usageMetadata": usage}) + b"\r\n\r\n"
        if not pieces:
            yield b"data: " + orjson.dumps({**base, "candidates": [candidate],
                                            "usageMetadata": usage}) + b"\r\n\r\n"


def embedding(text: str, size: int) -> list[float]:
    digest = hashlib.sha256(text.encode()).digest()
    return [round(digest[i % len(digest)] / 255, 4) for i in range(size)]


def create_fake(key: str) -> Starlette:
    recorder = Recorder()

    async def models(request: Request) -> Response:
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            return error(400, "Invalid JSON payload received.")
        step = recorder.record(request, body)
        model, _, action = request.path_params["target"].partition(":")
        if request.headers.get("x-goog-api-key") != key:
            return bad_key()
        if "status" in step:
            details = [{"@type": "type.googleapis.com/google.rpc.RetryInfo",
                        "retryDelay": f"{step['retry_after']}s"}] if "retry_after" in step else []
            return error(step["status"], step.get("message", "fake failure"), details)
        if action == "batchEmbedContents":
            return embed(model, body)
        if action not in ("generateContent", "streamGenerateContent"):
            return error(404, f"Method {action} not found")
        problem = validate(body)
        if problem:
            return error(400, problem)
        if prompt_size(body) > PROMPT_LIMIT:
            return error(400, f"The input token count ({prompt_size(body)}) exceeds the "
                              f"maximum number of tokens allowed ({PROMPT_LIMIT}).")
        if "body" in step:
            return Response(step["body"], media_type="application/json")
        if action == "streamGenerateContent":
            if request.query_params.get("alt") != "sse":
                return error(400, "this fake streams only with alt=sse")
            return StreamingResponse(stream(body, model, step), media_type="text/event-stream")
        if "prompt_block" in step:
            return json_response({"promptFeedback": {"blockReason": step["prompt_block"]},
                                  "usageMetadata": usage_of(body, []), "modelVersion": model})
        found = candidates(body, step)
        return json_response({"candidates": found, "usageMetadata": usage_of(body, found),
                              "modelVersion": model, "responseId": "fake-response-1"})

    def embed(model: str, body: Any) -> Response:
        requests = body.get("requests") if isinstance(body, dict) else None
        if not isinstance(requests, list) or not requests:
            return error(400, "* BatchEmbedContentsRequest.requests: must not be empty")
        values = []
        for i, item in enumerate(requests):
            if item.get("model") != f"models/{model}":
                return error(400, f"requests[{i}].model: must match the model in the URL")
            parts = item.get("content", {}).get("parts")
            if not _text_parts(parts):
                return error(400, f"requests[{i}].content: text parts required")
            size = item.get("outputDimensionality", 4)
            values.append({"values": embedding(parts[0]["text"], size)})
        return json_response({"embeddings": values})

    return Starlette(routes=[Route("/v1beta/models/{target:path}", models, methods=["POST"]),
                             *recorder.routes()])


def main() -> None:
    serve(lambda args: create_fake(args.key))


if __name__ == "__main__":
    main()

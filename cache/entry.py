"""The stored entry, its compact serialisation, and turning an entry into stream chunks.

An entry always holds a complete JSON answer (`chat.completion` or the embeddings list),
whichever way it was filled: a recorded stream is assembled into the answer it streamed
(see recorder.py), and a streaming hit is replayed from the answer by `replay_chunks`.
So a streaming request can be answered from a non-streamed entry and the other way round.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

__all__ = ["COMPRESS_ABOVE", "Entry", "EntryError", "decode_entry", "encode_entry",
           "replay_chunks"]

# Entries larger than this are zlib-compressed: long answers and embeddings shrink several
# times, and small ones are not worth the CPU.
COMPRESS_ABOVE = 1024
_PLAIN = b"j"
_ZLIB = b"z"
_FORMAT = 1


class EntryError(ValueError):
    """Stored bytes that are not an entry this version can read (treated as a miss)."""


@dataclass(frozen=True, slots=True)
class Entry:
    """`stored_at` and `expires_at` are on the cache's clock; `group` answered it."""

    body: dict[str, Any]
    group: str
    stored_at: float
    expires_at: float

    def age(self, now: float) -> float:
        return max(0.0, now - self.stored_at)

    def is_fresh(self, now: float) -> bool:
        return now < self.expires_at


def encode_entry(entry: Entry) -> bytes:
    raw = orjson.dumps({"f": _FORMAT, "g": entry.group, "s": entry.stored_at,
                        "e": entry.expires_at, "b": entry.body})
    if len(raw) > COMPRESS_ABOVE:
        return _ZLIB + zlib.compress(raw, 1)
    return _PLAIN + raw


def decode_entry(data: bytes) -> Entry:
    """Raises EntryError for anything but an entry written by `encode_entry`."""
    marker, payload = data[:1], data[1:]
    try:
        if marker == _ZLIB:
            payload = zlib.decompress(payload)
        elif marker != _PLAIN:
            raise EntryError("unknown entry encoding")
        doc = orjson.loads(payload)
        if not isinstance(doc, dict) or doc.get("f") != _FORMAT or not isinstance(
                doc.get("b"), dict):
            raise EntryError("unknown entry format")
        return Entry(body=doc["b"], group=str(doc["g"]), stored_at=float(doc["s"]),
                     expires_at=float(doc["e"]))
    except (zlib.error, orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, EntryError):
            raise
        raise EntryError(f"unreadable entry: {type(exc).__name__}") from None


def replay_chunks(answer: dict[str, Any], *, include_usage: bool) -> Iterator[dict[str, Any]]:
    """The `chat.completion.chunk`s of a stream that would have produced `answer`.

    Per choice: a role chunk, a content (or refusal) chunk, one chunk per tool call, a
    finish chunk; then a usage chunk (empty choices) when the client asked for
    `stream_options.include_usage`. The caller frames them and ends with `[DONE]`.
    """
    base = {"id": answer.get("id", "chatcmpl-cached"), "object": "chat.completion.chunk",
            "created": answer.get("created", 0), "model": answer.get("model", ""),
            "system_fingerprint": answer.get("system_fingerprint")}

    def chunk(index: int, delta: dict[str, Any], finish: str | None = None,
              logprobs: Any = None) -> dict[str, Any]:
        choice = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
        return {**base, "choices": [choice]}

    for choice in answer.get("choices") or []:
        index = choice.get("index", 0)
        message = choice.get("message") or {}
        yield chunk(index, {"role": message.get("role", "assistant"), "content": ""})
        if message.get("content"):
            yield chunk(index, {"content": message["content"]}, logprobs=choice.get("logprobs"))
        if message.get("refusal"):
            yield chunk(index, {"refusal": message["refusal"]})
        for position, call in enumerate(message.get("tool_calls") or []):
            yield chunk(index, {"tool_calls": [{"index": position, **call}]})
        if message.get("function_call"):
            yield chunk(index, {"function_call": message["function_call"]})
        yield chunk(index, {}, choice.get("finish_reason") or "stop")
    if include_usage and answer.get("usage") is not None:
        yield {**base, "choices": [], "usage": answer["usage"]}

"""Entries: serialisation, compression, recording a stream, replaying an answer as chunks."""

from __future__ import annotations

import pytest

from cache.entry import (
    COMPRESS_ABOVE,
    Entry,
    EntryError,
    decode_entry,
    encode_entry,
    replay_chunks,
)
from cache.recorder import StreamRecorder


def answer(text="Hello", **message):
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 5, "model": "x",
            "system_fingerprint": None,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text,
                                                 **message},
                         "logprobs": None, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}}


def test_entry_round_trips():
    entry = Entry(body=answer(), group="m", stored_at=10.5, expires_at=70.5)
    raw = encode_entry(entry)
    assert raw[:1] == b"j"
    assert decode_entry(raw) == entry


def test_large_entry_is_compressed_and_round_trips():
    entry = Entry(body=answer("word " * 2000), group="m", stored_at=1, expires_at=2)
    raw = encode_entry(entry)
    assert raw[:1] == b"z"
    assert len(raw) < COMPRESS_ABOVE * 2
    assert decode_entry(raw) == entry


@pytest.mark.parametrize("raw", [
    pytest.param(b"", id="empty"),
    pytest.param(b"x{}", id="unknown-marker"),
    pytest.param(b"j{not json", id="bad-json"),
    pytest.param(b'j{"f":99,"b":{}}', id="other-format"),
    pytest.param(b"zgarbage", id="bad-zlib"),
    pytest.param(b'j{"f":1,"b":{}}', id="missing-fields"),
])
def test_unreadable_bytes_are_an_entry_error(raw):
    with pytest.raises(EntryError):
        decode_entry(raw)


def test_entry_freshness_and_age():
    entry = Entry(body={}, group="m", stored_at=100, expires_at=160)
    assert entry.is_fresh(159.9) and not entry.is_fresh(160)
    assert entry.age(130) == 30


def chunk(delta, finish=None, index=0, **extra):
    return {"id": "chatcmpl-9", "object": "chat.completion.chunk", "created": 7, "model": "x",
            "choices": [{"index": index, "delta": delta, "finish_reason": finish}], **extra}


def test_recorder_assembles_text_and_usage():
    recorder = StreamRecorder()
    for c in [chunk({"role": "assistant", "content": ""}), chunk({"content": "Hel"}),
              chunk({"content": "lo"}), chunk({}, "stop"),
              {"id": "chatcmpl-9", "choices": [], "usage": {"total_tokens": 3}}]:
        recorder.add(c)
    assert recorder.complete()
    got = recorder.answer()
    assert got["id"] == "chatcmpl-9" and got["object"] == "chat.completion"
    assert got["choices"][0]["message"] == {"role": "assistant", "content": "Hello"}
    assert got["choices"][0]["finish_reason"] == "stop"
    assert got["usage"] == {"total_tokens": 3}


def test_recorder_without_finish_reason_is_incomplete():
    recorder = StreamRecorder()
    recorder.add(chunk({"role": "assistant", "content": "Hel"}))
    assert not recorder.complete()
    assert not StreamRecorder().complete()


def test_recorder_assembles_tool_calls_from_fragments():
    recorder = StreamRecorder()
    recorder.add(chunk({"role": "assistant", "content": None, "tool_calls": [
        {"index": 0, "id": "call_1", "type": "function",
         "function": {"name": "get_weather", "arguments": ""}}]}))
    recorder.add(chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]}))
    recorder.add(chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Oslo"}'}}]}))
    recorder.add(chunk({"tool_calls": [{"index": 1, "id": "call_2", "type": "function",
                                        "function": {"name": "f", "arguments": "{}"}}]}))
    recorder.add(chunk({}, "tool_calls"))
    message = recorder.answer()["choices"][0]["message"]
    assert message["content"] is None
    assert message["tool_calls"] == [
        {"id": "call_1", "type": "function",
         "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}},
        {"id": "call_2", "type": "function", "function": {"name": "f", "arguments": "{}"}},
    ]


def test_recorder_keeps_choices_apart():
    recorder = StreamRecorder()
    recorder.add(chunk({"content": "a"}, index=0))
    recorder.add(chunk({"content": "b"}, index=1))
    recorder.add(chunk({}, "stop", index=0))
    assert not recorder.complete()
    recorder.add(chunk({}, "length", index=1))
    choices = recorder.answer()["choices"]
    assert [c["message"]["content"] for c in choices] == ["a", "b"]
    assert [c["finish_reason"] for c in choices] == ["stop", "length"]


def test_replay_is_role_content_finish_then_usage_when_asked():
    chunks = list(replay_chunks(answer(), include_usage=True))
    deltas = [c["choices"][0]["delta"] if c["choices"] else None for c in chunks]
    assert deltas == [{"role": "assistant", "content": ""}, {"content": "Hello"}, {}, None]
    assert chunks[2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[3]["usage"] == answer()["usage"]
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == "chatcmpl-1"
               for c in chunks)
    assert len(list(replay_chunks(answer(), include_usage=False))) == 3


def test_replay_then_record_gives_back_the_answer_with_tool_calls():
    calls = [{"id": "call_1", "type": "function",
              "function": {"name": "f", "arguments": '{"a":1}'}}]
    original = answer(None, tool_calls=calls)
    original["choices"][0]["finish_reason"] = "tool_calls"
    recorder = StreamRecorder()
    for c in replay_chunks(original, include_usage=True):
        recorder.add(c)
    again = recorder.answer()
    assert again["choices"] == original["choices"]
    assert again["usage"] == original["usage"]

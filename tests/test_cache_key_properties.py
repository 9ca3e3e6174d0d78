"""The cache key against an independent oracle: same key exactly when the same answer is due.

Requests are drawn from small alphabets, so pairs that differ only in form (defaults,
nulls, a stop string versus a list of one, one text part versus a string, excluded fields)
come up as often as pairs that differ in meaning. The oracle below is written from the
contract's rules, not from cache/keys.py: two requests may share a key if and only if their
oracle forms are equal.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from cache.keys import key_for

ABSENT = object()
EXCLUDED = {"model", "stream", "stream_options", "user", "metadata", "caching", "cache"}
DEFAULTS = {"temperature": 1, "top_p": 1, "n": 1, "presence_penalty": 0, "frequency_penalty": 0}

CONTENTS = ["hi", "yo", [{"type": "text", "text": "hi"}], [{"type": "text", "text": "yo"}],
            [{"type": "text", "text": "hi"}, {"type": "text", "text": "yo"}], None]
FIELDS: dict[str, list[Any]] = {
    "temperature": [ABSENT, None, 0, 0.0, 1, 1.0, 0.5],
    "top_p": [ABSENT, None, 1, 0.9],
    "n": [ABSENT, None, 1, 2],
    "presence_penalty": [ABSENT, 0, 0.5],
    "stop": [ABSENT, None, "x", ["x"], "y", ["x", "y"]],
    "seed": [ABSENT, None, 1, 2],
    "max_tokens": [ABSENT, 5, 6],
    "tools": [ABSENT, [{"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"a": {"type": "string", "default": None}}}}}],
        [{"type": "function", "function": {"name": "f", "parameters": {
            "type": "object", "properties": {"a": {"type": "string"}}}}}]],
    "response_format": [ABSENT, {"type": "json_object"}, {"type": "text"}],
    "logit_bias": [ABSENT, {"1": 5}, {"1": 6}],
    "vendor_knob": [ABSENT, "a", "b"],
    "user": [ABSENT, "alice", "bob"],
    "stream": [ABSENT, True, False],
    "metadata": [ABSENT, {"k": "v"}],
    "stream_options": [ABSENT, {"include_usage": True}],
}

message = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant", "system"]),
     "content": st.sampled_from(CONTENTS)},
    optional={"name": st.sampled_from([None, "n1"])},
)
request = st.fixed_dictionaries({
    "group": st.sampled_from(["m", "m2"]),
    "messages": st.lists(message, min_size=1, max_size=2),
    **{name: st.sampled_from(values) for name, values in FIELDS.items()},
})


def body_of(drawn: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    body = {k: v for k, v in drawn.items() if v is not ABSENT and k != "group"}
    return drawn["group"], {"model": drawn["group"], **body}


def oracle(group: str, body: dict[str, Any]) -> str:
    """The contract's equivalences, applied independently of cache/keys.py."""
    out: dict[str, Any] = {}
    for name, value in body.items():
        if name in EXCLUDED or value is None:
            continue
        if name == "messages":
            value = [oracle_message(m) for m in value]
        elif name == "stop" and isinstance(value, str):
            value = [value]
        elif isinstance(value, float) and value.is_integer():
            value = int(value)
        if name in DEFAULTS and value == DEFAULTS[name]:
            continue
        out[name] = value
    return json.dumps([group, out], sort_keys=True)


def oracle_message(message: dict[str, Any]) -> dict[str, Any]:
    message = {k: v for k, v in message.items() if v is not None}
    content = message.get("content")
    if isinstance(content, list) and len(content) == 1 and content[0]["type"] == "text":
        message["content"] = content[0]["text"]
    return message


def key(group: str, body: dict[str, Any]) -> str:
    return key_for("chat", group, body, namespace="turnout", scope="shared")


@settings(max_examples=400, deadline=None)
@given(request, st.data())
def test_same_key_exactly_when_the_oracle_says_same_answer(first, data):
    # The second request redraws a few fields of the first, so that near-misses and
    # equivalent rewrites are common.
    names = data.draw(st.sets(st.sampled_from(["group", "messages", *FIELDS]), max_size=3))
    second = dict(first)
    for name in names:
        if name == "group":
            second["group"] = data.draw(st.sampled_from(["m", "m2"]))
        elif name == "messages":
            second["messages"] = data.draw(st.lists(message, min_size=1, max_size=2))
        else:
            second[name] = data.draw(st.sampled_from(FIELDS[name]))
    a, b = body_of(first), body_of(second)
    assert (key(*a) == key(*b)) == (oracle(*a) == oracle(*b)), (a, b)

"""The canonical form: equivalent requests share a key, answer-changing differences do not."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cache.keys import KEY_VERSION, canonical_form, key_for, scope_of

MSGS = [{"role": "user", "content": "hi"}]
BASE: dict[str, Any] = {"model": "m", "messages": MSGS}


def chat_key(body: dict[str, Any], *, namespace: str = "turnout", scope: str = "shared",
             group: str = "m") -> str:
    return key_for("chat", group, body, namespace=namespace, scope=scope)


def embed_key(body: dict[str, Any]) -> str:
    return key_for("embeddings", "e", body, namespace="turnout", scope="shared")


EQUIVALENT = [
    pytest.param({"model": "m", "messages": MSGS, "temperature": 0.5},
                 {"temperature": 0.5, "messages": MSGS, "model": "m"}, id="key-order"),
    pytest.param({**BASE, "messages": [{"role": "user", "content": "hi", "name": "a"}]},
                 {**BASE, "messages": [{"name": "a", "content": "hi", "role": "user"}]},
                 id="key-order-inside-messages"),
    pytest.param({**BASE, "response_format": {"type": "json_schema", "json_schema": {"a": 1,
                  "b": 2}}},
                 {**BASE, "response_format": {"json_schema": {"b": 2, "a": 1},
                  "type": "json_schema"}}, id="key-order-nested"),
    pytest.param(BASE, {**BASE, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "hi"}]}]}, id="string-vs-one-text-part"),
    pytest.param({**BASE, "stop": "x"}, {**BASE, "stop": ["x"]}, id="stop-string-vs-list"),
    pytest.param(BASE, {**BASE, "temperature": 1}, id="default-temperature"),
    pytest.param(BASE, {**BASE, "temperature": 1.0}, id="default-temperature-float"),
    pytest.param(BASE, {**BASE, "top_p": 1}, id="default-top-p"),
    pytest.param(BASE, {**BASE, "n": 1}, id="default-n"),
    pytest.param(BASE, {**BASE, "presence_penalty": 0}, id="default-presence-penalty"),
    pytest.param(BASE, {**BASE, "frequency_penalty": 0.0}, id="default-frequency-penalty"),
    pytest.param(BASE, {**BASE, "seed": None}, id="null-vs-omitted"),
    pytest.param(BASE, {**BASE, "messages": [{"role": "user", "content": "hi", "name": None}]},
                 id="null-vs-omitted-in-message"),
    pytest.param({**BASE, "temperature": 0}, {**BASE, "temperature": 0.0},
                 id="integral-number"),
    pytest.param(BASE, {**BASE, "stream": True}, id="excluded-stream"),
    pytest.param(BASE, {**BASE, "stream_options": {"include_usage": True}},
                 id="excluded-stream-options"),
    pytest.param(BASE, {**BASE, "user": "alice"}, id="excluded-user"),
    pytest.param(BASE, {**BASE, "metadata": {"trace": "1"}}, id="excluded-metadata"),
    pytest.param(BASE, {**BASE, "caching": True, "cache": {"ttl": 5}},
                 id="excluded-caching-and-cache"),
]

DIFFERENT = [
    pytest.param(BASE, {**BASE, "messages": [{"role": "user", "content": "ho"}]},
                 id="message-text"),
    pytest.param(BASE, {**BASE, "messages": [{"role": "system", "content": "hi"}]},
                 id="message-role"),
    pytest.param(BASE, {**BASE, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "hi"}, {"type": "text", "text": "there"}]}]},
                 id="two-text-parts"),
    pytest.param(BASE, {**BASE, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:x"}}]}]}, id="image-part"),
    pytest.param(BASE, {**BASE, "temperature": 0.2}, id="temperature"),
    pytest.param(BASE, {**BASE, "n": 2}, id="n"),
    pytest.param(BASE, {**BASE, "max_tokens": 5}, id="max-tokens"),
    pytest.param(BASE, {**BASE, "seed": 7}, id="seed"),
    pytest.param({**BASE, "seed": 7}, {**BASE, "seed": 8}, id="seed-value"),
    pytest.param(BASE, {**BASE, "logit_bias": {"50256": -100}}, id="logit-bias"),
    pytest.param(BASE, {**BASE, "response_format": {"type": "json_object"}},
                 id="response-format"),
    pytest.param(BASE, {**BASE, "tools": [{"type": "function", "function": {"name": "f"}}]},
                 id="tools"),
    pytest.param({**BASE, "tools": [{"type": "function", "function": {"name": "f"}}]},
                 {**BASE, "tools": [{"type": "function", "function": {"name": "g"}}]},
                 id="tool-name"),
    pytest.param(BASE, {**BASE, "tool_choice": "required"}, id="tool-choice"),
    pytest.param(BASE, {**BASE, "stop": ["x"]}, id="stop"),
    pytest.param({**BASE, "stop": ["x", "y"]}, {**BASE, "stop": ["y", "x"]}, id="stop-order"),
    pytest.param(BASE, {**BASE, "reasoning_effort": "low"}, id="unknown-field-kept"),
    pytest.param(BASE, {**BASE, "temperature": True}, id="true-is-not-1"),
]


@pytest.mark.parametrize(("a", "b"), EQUIVALENT)
def test_equivalent_requests_share_a_key(a, b):
    assert chat_key(a) == chat_key(b)


@pytest.mark.parametrize(("a", "b"), DIFFERENT)
def test_answer_changing_difference_changes_the_key(a, b):
    assert chat_key(a) != chat_key(b)


@pytest.mark.parametrize(("a", "b"), [
    pytest.param({"model": "e", "input": "x"}, {"model": "e", "input": ["x"]},
                 id="one-input-vs-list"),
    pytest.param({"model": "e", "input": "x"}, {"model": "e", "input": "x",
                                                 "encoding_format": "float"},
                 id="default-encoding-format"),
    pytest.param({"model": "e", "input": "x"}, {"model": "e", "input": "x", "user": "u"},
                 id="excluded-user"),
])
def test_equivalent_embedding_requests_share_a_key(a, b):
    assert embed_key(a) == embed_key(b)


@pytest.mark.parametrize(("a", "b"), [
    pytest.param({"input": "x"}, {"input": "y"}, id="input"),
    pytest.param({"input": ["x", "y"]}, {"input": ["y", "x"]}, id="input-order"),
    pytest.param({"input": "x"}, {"input": "x", "dimensions": 4}, id="dimensions"),
    pytest.param({"input": "x"}, {"input": "x", "encoding_format": "base64"},
                 id="encoding-format"),
])
def test_embedding_differences_change_the_key(a, b):
    assert embed_key(a) != embed_key(b)


def test_group_namespace_scope_and_endpoint_separate_keys():
    base = chat_key(BASE)
    assert chat_key(BASE, group="other") != base
    assert chat_key(BASE, namespace="team-b") != base
    assert chat_key(BASE, scope=scope_of("k1", "per-key")) != base
    assert key_for("embeddings", "m", {"messages": MSGS}, namespace="turnout",
                   scope="shared") != base


def test_per_key_scope_separates_clients_and_hides_the_key():
    one, two = scope_of("sk-client-one", "per-key"), scope_of("sk-client-two", "per-key")
    assert one != two
    assert "sk-client" not in one
    assert scope_of("sk-client-one", "shared") == scope_of("sk-client-two", "shared")


def test_key_is_versioned_and_prefixed():
    key = chat_key(BASE)
    prefix, version, digest = key.split(":")
    assert (prefix, version) == ("turnout", KEY_VERSION)
    assert len(digest) == 64


def test_canonical_form_holds_no_excluded_field():
    form = canonical_form("chat", "m", {**BASE, "user": "alice", "metadata": {"x": 1}},
                          namespace="n", scope="shared")
    assert b"alice" not in form
    assert b"metadata" not in form


# Equivalent rewritings of a request, for the property test.
def _rewrite(body: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    out = dict(body)
    if isinstance(out.get("stop"), list) and len(out["stop"]) == 1 and rng.random() < 0.5:
        out["stop"] = out["stop"][0]
    for name, default in (("temperature", 1), ("top_p", 1.0), ("n", 1),
                          ("presence_penalty", 0), ("frequency_penalty", 0.0)):
        if name not in out and rng.random() < 0.3:
            out[name] = default
    if rng.random() < 0.3:
        out["seed"] = out.get("seed")
    if rng.random() < 0.3:
        out["user"] = "someone"
    if rng.random() < 0.3:
        out["stream"] = rng.random() < 0.5
    messages = []
    for message in out["messages"]:
        message = dict(message)
        if isinstance(message["content"], str) and rng.random() < 0.5:
            message["content"] = [{"type": "text", "text": message["content"]}]
        items = list(message.items())
        rng.shuffle(items)
        messages.append(dict(items))
    out["messages"] = messages
    items = list(out.items())
    rng.shuffle(items)
    return dict(items)


_text = st.text(max_size=12)
_message = st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system"]),
                                  "content": _text})
_request = st.fixed_dictionaries(
    {"model": st.just("m"), "messages": st.lists(_message, min_size=1, max_size=4)},
    optional={
        "temperature": st.floats(0, 2, allow_nan=False),
        "max_tokens": st.integers(1, 4096),
        "stop": st.lists(_text, min_size=1, max_size=3),
        "seed": st.integers(0, 2**31),
        "tools": st.lists(st.fixed_dictionaries({"type": st.just("function"),
                                                 "function": st.fixed_dictionaries(
                                                     {"name": _text})}), max_size=2),
        "x_unknown": st.dictionaries(_text, st.integers(), max_size=3),
    },
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_request, st.randoms(use_true_random=False))
def test_equivalent_rewriting_never_changes_the_key(body, rng):
    assert chat_key(_rewrite(body, rng)) == chat_key(body)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_request, _text)
def test_changing_the_last_message_changes_the_key(body, suffix):
    changed = {**body, "messages": [*body["messages"][:-1],
                                    {**body["messages"][-1],
                                     "content": body["messages"][-1]["content"] + "!" + suffix}]}
    assert chat_key(changed) != chat_key(body)

"""Property: whatever JSON a client sends, parsing ends in an Inbound or a contract error."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from router.errors import TurnoutError
from router.inbound import parse_chat, parse_embeddings

scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                           max_leaves=12)
KNOWN = ["model", "messages", "input", "role", "content", "type", "text", "name", "tool_calls",
         "tool_call_id", "stop", "temperature", "n", "max_tokens", "seed", "tools",
         "function_call", "logit_bias", "stream", "stream_options", "include_usage",
         "caching", "cache", "ttl", "s-maxage", "namespace", "dimensions", "api_base"]
# Objects built mostly from the names the parser looks at, so the fuzz reaches its checks.
shaped = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.sampled_from(KNOWN) | st.text(max_size=4), inner, max_size=6),
    max_leaves=20)
messages = st.lists(st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "system"]) | json_values},
    optional={"content": shaped, "name": json_values, "tool_calls": shaped}), max_size=3)
bodies = st.fixed_dictionaries(
    {"model": st.just("m") | json_values},
    optional={"messages": messages | json_values, "input": shaped, "stop": json_values,
              "temperature": json_values, "max_tokens": json_values, "tools": shaped,
              "function_call": shaped, "logit_bias": shaped, "stream_options": shaped,
              "caching": json_values, "cache": shaped, "dimensions": json_values})


def outcome(parse: Any, data: Any) -> str:
    try:
        parse(data, None)
    except TurnoutError as exc:
        assert exc.status == 400
        return exc.code or ""
    return "ok"


@settings(max_examples=200, deadline=None)
@given(bodies | shaped)
def test_any_json_is_parsed_or_refused_with_a_400(data):
    assert outcome(parse_chat, data) in {"ok", "invalid_type", "missing_field", "forbidden_field"}
    assert outcome(parse_embeddings, data) in {"ok", "invalid_type", "missing_field",
                                               "forbidden_field"}

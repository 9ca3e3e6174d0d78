"""Records a stream's chunks on the side and assembles the complete answer they make.

The recorder never decides to store: its owner commits `answer()` only once the stream
ended normally, and drops the recorder otherwise (error, break-off, client gone).
"""

from __future__ import annotations

from typing import Any

__all__ = ["StreamRecorder"]


class StreamRecorder:
    def __init__(self) -> None:
        self._head: dict[str, Any] = {}
        self._choices: dict[int, dict[str, Any]] = {}
        self._usage: Any = None

    def add(self, chunk: dict[str, Any]) -> None:
        if not self._head:
            self._head = {k: chunk.get(k) for k in ("id", "created", "model",
                                                    "system_fingerprint")}
        if chunk.get("usage") is not None:
            self._usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            if isinstance(choice, dict):
                self._add_choice(choice)

    def complete(self) -> bool:
        """True when every choice seen has a finish reason (and there is at least one)."""
        return bool(self._choices) and all(c["finish_reason"] for c in self._choices.values())

    def answer(self) -> dict[str, Any]:
        """The `chat.completion` the recorded chunks make up."""
        choices = []
        for index in sorted(self._choices):
            state = self._choices[index]
            message: dict[str, Any] = {"role": state["role"],
                                       "content": "".join(state["content"]) or None}
            if state["refusal"]:
                message["refusal"] = "".join(state["refusal"])
            if state["tool_calls"]:
                message["tool_calls"] = [state["tool_calls"][i]
                                         for i in sorted(state["tool_calls"])]
            if state["function_call"] is not None:
                message["function_call"] = state["function_call"]
            logprobs = {"content": state["logprobs"]} if state["logprobs"] else None
            choices.append({"index": index, "message": message, "logprobs": logprobs,
                            "finish_reason": state["finish_reason"]})
        answer = {**self._head, "object": "chat.completion", "choices": choices}
        if self._usage is not None:
            answer["usage"] = self._usage
        return answer

    def _add_choice(self, choice: dict[str, Any]) -> None:
        index = choice.get("index", 0)
        state = self._choices.setdefault(index, {
            "role": "assistant", "content": [], "refusal": [], "tool_calls": {},
            "function_call": None, "logprobs": [], "finish_reason": None,
        })
        delta = choice.get("delta") or {}
        if delta.get("role"):
            state["role"] = delta["role"]
        if delta.get("content"):
            state["content"].append(delta["content"])
        if delta.get("refusal"):
            state["refusal"].append(delta["refusal"])
        for call in delta.get("tool_calls") or []:
            _merge_tool_call(state["tool_calls"], call)
        if delta.get("function_call"):
            state["function_call"] = _merge_function(state["function_call"],
                                                     delta["function_call"])
        logprobs = choice.get("logprobs")
        if isinstance(logprobs, dict) and isinstance(logprobs.get("content"), list):
            state["logprobs"].extend(logprobs["content"])
        if choice.get("finish_reason"):
            state["finish_reason"] = choice["finish_reason"]


def _merge_tool_call(calls: dict[int, dict[str, Any]], delta: dict[str, Any]) -> None:
    # OpenAI streams a tool call as its id, type and name first, then argument fragments,
    # all under the same `index`.
    index = delta.get("index", len(calls))
    call = calls.setdefault(index, {"id": None, "type": "function",
                                    "function": {"name": "", "arguments": ""}})
    if delta.get("id"):
        call["id"] = delta["id"]
    if delta.get("type"):
        call["type"] = delta["type"]
    function = delta.get("function") or {}
    if function.get("name"):
        call["function"]["name"] += function["name"]
    if function.get("arguments"):
        call["function"]["arguments"] += function["arguments"]


def _merge_function(current: dict[str, Any] | None, delta: dict[str, Any]) -> dict[str, Any]:
    merged = current or {"name": "", "arguments": ""}
    return {"name": merged["name"] + (delta.get("name") or ""),
            "arguments": merged["arguments"] + (delta.get("arguments") or "")}

"""Whole replies from streams: OpenAI chunks -> `chat.completion`, Anthropic events -> `message`."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from cortex.protocol import anthropic as A
from cortex.protocol import openai as O
from cortex.translate.errors import error_from_anthropic, error_from_openai
from cortex.translate.mapping import parse_tool_arguments
from cortex.translate.stream_items import StreamItem, item_payload

__all__ = ["collect_chat_completion", "collect_message"]


def collect_chat_completion(chunks: Iterable[StreamItem]) -> O.ChatCompletion:
    """Accumulate an OpenAI chat stream into the non-streamed reply it stands for.

    Content, reasoning and each tool call's arguments concatenate; a tool call's `id` is
    taken once and a `name` repeated whole is not doubled (lax servers repeat them); the
    last `finish_reason` and the last `usage` win. Serve a non-streaming client from a
    streaming upstream with it.

    Args:
        chunks: chunk dicts, envelope models or `SSEEvent`s; `DONE` ends the stream.

    Raises:
        CortexError: when the stream carries an error object.
    """
    head: dict[str, Any] = {}
    content: list[str] = []
    reasoning: list[str] = []
    tools: dict[int, dict[str, Any]] = {}
    finish_reason: str | None = None
    matched_stop: Any = None
    usage: Any = None
    for item in chunks:
        chunk = item_payload(item)
        if chunk is None:
            break
        if chunk.get("error"):
            raise error_from_openai(None, chunk)
        for key in ("id", "created", "model"):
            if key not in head and chunk.get(key) is not None:
                head[key] = chunk[key]
        usage = chunk.get("usage") or usage
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            content.append(delta.get("content") or "")
            reasoning.append(delta.get("reasoning_content") or delta.get("reasoning") or "")
            for call in delta.get("tool_calls") or ():
                tool = tools.setdefault(call.get("index", len(tools)), {"id": "", "name": ""})
                tool["id"] = tool["id"] or call.get("id") or ""
                function = call.get("function") or {}
                if function.get("name") and function["name"] != tool["name"]:
                    tool["name"] += function["name"]
                tool.setdefault("args", []).append(function.get("arguments") or "")
            if choice.get("finish_reason"):
                finish_reason = choice["finish_reason"]
                matched_stop = choice.get("stop_reason")
    calls = [
        {
            "id": t["id"],
            "type": "function",
            "function": {"name": t["name"], "arguments": "".join(t.get("args", []))},
        }
        for _, t in sorted(tools.items())
    ]
    text = "".join(content)
    message: dict[str, Any] = {"role": "assistant", "content": text or (None if calls else "")}
    if calls:
        message["tool_calls"] = calls
    if any(reasoning):
        message["reasoning_content"] = "".join(reasoning)
    choice_out: dict[str, Any] = {
        "index": 0,
        "message": message,
        "finish_reason": finish_reason or "stop",
        "logprobs": None,
    }
    if matched_stop is not None:
        choice_out["stop_reason"] = matched_stop
    return O.ChatCompletion.model_validate(
        {
            "id": head.get("id", ""),
            "created": head.get("created", 0),
            "model": head.get("model", ""),
            "choices": [choice_out],
            "usage": usage,
        }
    )


def collect_message(events: Iterable[StreamItem]) -> A.Message:
    """Accumulate an Anthropic event stream into the message it stands for.

    Follows the official SDK's accumulator: `message_start` gives the message, blocks are
    appended at `content_block_start`, deltas address `content[index]`, `input_json_delta`
    fragments concatenate into the tool input, `message_delta` overwrites stop reason and
    usage (cumulative counts).

    Args:
        events: event dicts, envelope models or `SSEEvent`s.

    Raises:
        CortexError: on an `error` event.
        ValueError: when an event comes before `message_start`.
    """
    message: dict[str, Any] | None = None
    json_parts: dict[int, list[str]] = {}
    for item in events:
        event = item_payload(item)
        if event is None:
            break
        kind = event.get("type")
        if kind == "error":
            raise error_from_anthropic(None, event)
        if kind == "ping":
            continue
        if message is None:
            if kind != "message_start":
                raise ValueError(f"{kind} before message_start")
            message = dict(event["message"])
            message["content"] = list(message.get("content") or [])
            message["usage"] = dict(message.get("usage") or {})
            continue
        if kind == "content_block_start":
            message["content"].append(dict(event["content_block"]))
        elif kind == "content_block_delta":
            index, delta = event["index"], event["delta"]
            block = message["content"][index]
            dtype = delta.get("type")
            if dtype == "text_delta" and block.get("type") == "text":
                block["text"] += delta["text"]
            elif dtype == "thinking_delta" and block.get("type") == "thinking":
                block["thinking"] += delta["thinking"]
            elif dtype == "signature_delta" and block.get("type") == "thinking":
                block["signature"] = delta["signature"]
            elif dtype == "input_json_delta" and block.get("type") == "tool_use":
                json_parts.setdefault(index, []).append(delta["partial_json"])
        elif kind == "message_delta":
            delta = event.get("delta") or {}
            message["stop_reason"] = delta.get("stop_reason")
            message["stop_sequence"] = delta.get("stop_sequence")
            usage = event.get("usage") or {}
            message["usage"].update({k: v for k, v in usage.items() if v is not None})
        elif kind == "message_stop":
            break
    if message is None:
        raise ValueError("the stream had no message_start")
    for index, parts in json_parts.items():
        message["content"][index]["input"] = parse_tool_arguments("".join(parts))
    return A.Message.model_validate(message)

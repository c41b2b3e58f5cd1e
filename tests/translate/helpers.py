"""Shared test helpers: stream validity checkers and stream builders for both dialects."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import TypeAdapter

from cortex.protocol import anthropic as A
from cortex.protocol import openai as O
from cortex.translate import DONE, IdFactory
from cortex.translate.mapping import parse_tool_arguments

SEED = 7
CREATED = 1_700_000_000
_EVENT: TypeAdapter[Any] = TypeAdapter(A.StreamEvent)
_DELTA_FOR_BLOCK = {
    "text": {"text_delta"},
    "thinking": {"thinking_delta", "signature_delta"},
    "tool_use": {"input_json_delta"},
}


def ids() -> IdFactory:
    """The seeded id factory every golden case uses."""
    return IdFactory(seed=SEED, created=CREATED)


def split(text: str, pieces: int) -> list[str]:
    """`text` cut into at most `pieces` non-empty consecutive parts."""
    if not text:
        return []
    size = max(1, -(-len(text) // pieces))
    return [text[i : i + size] for i in range(0, len(text), size)]


def check_anthropic_stream(events: Sequence[dict[str, Any]]) -> None:
    """Assert `events` is a stream the anthropic SDK accepts, with no empty text block.

    message_start first; blocks 0, 1, 2... each start -> deltas of its kind -> stop, one open
    at a time; thinking signed before it stops; message_delta then message_stop at the end.
    """
    for event in events:
        _EVENT.validate_python(event)
    kinds = [e["type"] for e in events if e["type"] != "ping"]
    assert kinds[0] == "message_start", kinds
    assert kinds[-2:] == ["message_delta", "message_stop"], kinds
    assert kinds.count("message_delta") == 1 and kinds.count("message_start") == 1
    assert "usage" in events[0]["message"] and "output_tokens" in events[-2]["usage"]
    open_block: dict[str, Any] | None = None
    next_index = 0
    signed = False
    text_seen = False
    for event in events:
        kind = event["type"]
        if kind == "content_block_start":
            assert open_block is None, "two blocks open"
            assert event["index"] == next_index
            open_block, signed, text_seen = event["content_block"], False, False
            next_index += 1
        elif kind == "content_block_delta":
            assert open_block is not None and event["index"] == next_index - 1
            delta = event["delta"]
            assert delta["type"] in _DELTA_FOR_BLOCK[open_block["type"]], (open_block, delta)
            signed = signed or delta["type"] == "signature_delta"
            text_seen = text_seen or bool(delta.get("text"))
        elif kind == "content_block_stop":
            assert open_block is not None and event["index"] == next_index - 1
            if open_block["type"] == "thinking":
                assert signed, "thinking block closed without a signature"
            if open_block["type"] == "text":
                assert text_seen, "empty text block"
            open_block = None
        elif kind in ("message_delta", "message_stop"):
            assert open_block is None
    assert events[-2]["delta"]["stop_reason"] is not None


def check_openai_stream(chunks: Sequence[Any], *, include_usage: bool) -> None:
    """Assert `chunks` is a chat stream the openai SDK merges correctly.

    Role once, in the first chunk; each tool call's id, type and name once, indices counting
    0, 1, 2...; one finish chunk; the usage chunk (`choices: []`) only when asked; DONE last.
    """
    assert chunks[-1] == DONE
    body = [c for c in chunks[:-1]]
    for chunk in body:
        O.ChatCompletionChunk.model_validate(chunk)
    assert body[0]["choices"][0]["delta"].get("role") == "assistant"
    roles = sum(1 for c in body for ch in c["choices"] if "role" in ch["delta"])
    assert roles == 1
    seen_ids: list[int] = []
    for chunk in body:
        for choice in chunk["choices"]:
            for call in choice["delta"].get("tool_calls") or ():
                if "id" in call:
                    assert call["index"] == len(seen_ids) and call["function"]["name"]
                    seen_ids.append(call["index"])
                else:
                    assert call["index"] in seen_ids and "name" not in call["function"]
            indices = [c["index"] for c in choice["delta"].get("tool_calls") or ()]
            assert len(indices) == len(set(indices)), "duplicate tool index in one chunk"
    finishes = [ch["finish_reason"] for c in body for ch in c["choices"] if ch["finish_reason"]]
    assert len(finishes) == 1
    usage_chunks = [c for c in body if not c["choices"]]
    assert len(usage_chunks) == (1 if include_usage else 0)
    if include_usage:
        assert body[-1] is usage_chunks[0] and body[-1]["usage"]["total_tokens"] >= 0


def events_from_message(message: dict[str, Any], pieces: int = 3) -> list[dict[str, Any]]:
    """The Anthropic event stream of `message`, each text and tool input cut in pieces."""
    usage = message["usage"]
    start_usage = {**usage, "output_tokens": 1}
    head = {**message, "content": [], "stop_reason": None, "stop_sequence": None}
    events: list[dict[str, Any]] = [
        {"type": "message_start", "message": {**head, "usage": start_usage}},
        {"type": "ping"},
    ]
    for index, block in enumerate(message["content"]):
        kind = block["type"]
        deltas: list[dict[str, Any]] = []
        if kind == "text":
            start = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": p} for p in split(block["text"], pieces)]
        elif kind == "thinking":
            start = {"type": "thinking", "thinking": "", "signature": ""}
            deltas = [
                {"type": "thinking_delta", "thinking": p} for p in split(block["thinking"], pieces)
            ]
            deltas.append({"type": "signature_delta", "signature": block["signature"]})
        else:
            start = {**block, "input": {}}
            text = json.dumps(block["input"]) if block["input"] else ""
            deltas = [{"type": "input_json_delta", "partial_json": p} for p in split(text, pieces)]
        events.append({"type": "content_block_start", "index": index, "content_block": start})
        events += [{"type": "content_block_delta", "index": index, "delta": d} for d in deltas]
        events.append({"type": "content_block_stop", "index": index})
    events.append(
        {
            "type": "message_delta",
            "delta": {
                "stop_reason": message["stop_reason"],
                "stop_sequence": message["stop_sequence"],
            },
            "usage": {
                "output_tokens": usage["output_tokens"],
                "input_tokens": usage["input_tokens"],
            },
        }
    )
    events.append({"type": "message_stop"})
    return events


def chunk(
    delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any
) -> dict[str, Any]:
    """One upstream chat chunk with choice 0 carrying `delta` and `finish`."""
    choice: dict[str, Any] = {"index": 0, "delta": delta or {}, "finish_reason": finish}
    choice.update(extra)
    return {
        "id": "chatcmpl-up",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "up",
        "choices": [choice],
    }


def usage_chunk(usage: dict[str, Any]) -> dict[str, Any]:
    """The final `choices: []` usage chunk."""
    return {
        "id": "chatcmpl-up",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "up",
        "choices": [],
        "usage": usage,
    }


def chunks_from_completion(completion: dict[str, Any], pieces: int = 3) -> list[Any]:
    """The upstream chat stream of a non-streamed `completion`, text and arguments in pieces."""
    choice = completion["choices"][0]
    message = choice["message"]
    chunks: list[Any] = [chunk({"role": "assistant", "content": ""})]
    for key in ("reasoning_content", "reasoning", "content"):
        if isinstance(message.get(key), str):
            chunks += [chunk({key: p}) for p in split(message[key], pieces)]
    for index, call in enumerate(message.get("tool_calls") or ()):
        function = call["function"]
        arguments = function["arguments"]
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments)
        first = {
            "index": index,
            "type": "function",
            "function": {"name": function["name"], "arguments": ""},
        }
        if call.get("id"):
            first["id"] = call["id"]
        chunks.append(chunk({"tool_calls": [first]}))
        for part in split(arguments, pieces):
            chunks.append(
                chunk({"tool_calls": [{"index": index, "function": {"arguments": part}}]})
            )
    extra = {"stop_reason": choice["stop_reason"]} if "stop_reason" in choice else {}
    chunks.append(chunk({}, choice["finish_reason"], **extra))
    if completion.get("usage"):
        chunks.append(usage_chunk(completion["usage"]))
    chunks.append(DONE)
    return chunks


def feed_all(translator: Any, items: Iterable[Any]) -> list[Any]:
    """Every event a translator emits for `items`, then `finish()`."""
    out: list[Any] = []
    for item in items:
        out += translator.feed(item)
    return out + translator.finish()


def tool_inputs(message: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI message with each tool call's arguments parsed (to compare by meaning)."""
    out = json.loads(json.dumps(message))
    for call in out.get("tool_calls") or ():
        call["function"]["arguments"] = parse_tool_arguments(call["function"]["arguments"])
    return out

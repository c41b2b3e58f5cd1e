"""Non-streamed reply translation: OpenAI `chat.completion` <-> Anthropic `message`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from cortex.protocol import anthropic as A
from cortex.protocol import openai as O
from cortex.translate.coerce import plain
from cortex.translate.ids import IdFactory
from cortex.translate.mapping import (
    anthropic_usage,
    dump_tool_input,
    finish_reason_for,
    openai_usage,
    parse_tool_arguments,
    stop_reason_for,
)

__all__ = ["anthropic_response_to_openai", "openai_response_to_anthropic", "requested_model"]


def requested_model(request: BaseModel | Mapping[str, Any] | None, fallback: str) -> str:
    """The model name a client asked for (replies echo it), or `fallback`."""
    if request is None:
        return fallback
    name = getattr(request, "model", None)
    if name is None and isinstance(request, Mapping):
        name = request.get("model")
    return name if isinstance(name, str) and name else fallback


def text_of(content: Any) -> str:
    """The text of an OpenAI `content`: a string, or the text of its parts (lax servers)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text") or "" for p in content if isinstance(p, Mapping))
    return ""


def openai_response_to_anthropic(
    response: O.ChatCompletion | Mapping[str, Any],
    *,
    request: A.MessagesRequest | Mapping[str, Any],
    ids: IdFactory | None = None,
) -> A.Message:
    """Translate a non-streamed OpenAI chat reply into an Anthropic message.

    Blocks come in the order thinking (from `reasoning_content` or `reasoning`, with a
    synthetic signature), text (unless empty or whitespace), then one `tool_use` per call (the
    upstream call id is kept so the next turn's `tool_result` matches; arguments that are
    not a JSON object are wrapped, never dropped). `stop_reason` is `tool_use` whenever there
    are tool calls, `stop_sequence` when vLLM's `stop_reason` names the stop string. Usage
    moves cached prompt tokens from `prompt_tokens` to `cache_read_input_tokens`.

    Args:
        response: the OpenAI reply, as an envelope model or a dict.
        request: the Anthropic request it answers (its `model` is echoed).
        ids: makes the message id, tool ids the upstream lacked, and thinking signatures.
    """
    resp = plain(response)
    ids = ids or IdFactory()
    message_id = ids.message_id()
    choices = resp.get("choices") or [{}]
    choice = choices[0]
    msg = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    reasoning = msg.get("reasoning_content") or msg.get("reasoning")
    if reasoning:
        content.append({"type": "thinking", "thinking": reasoning, "signature": ids.signature()})
    text = text_of(msg.get("content")) or (msg.get("refusal") or "")
    if text.strip():  # no block for whitespace alone (the "\n\n" before a tool call)
        content.append({"type": "text", "text": text})
    calls = list(msg.get("tool_calls") or ())
    if msg.get("function_call"):
        calls.append({"function": msg["function_call"]})
    for call in calls:
        function = call.get("function") or {}
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id") or ids.tool_use_id(),
                "name": function.get("name") or "",
                "input": parse_tool_arguments(function.get("arguments")),
            }
        )
    stop_reason, stop_sequence = stop_reason_for(
        choice.get("finish_reason"),
        matched_stop=choice.get("stop_reason"),
        has_tool_use=bool(calls),
    )
    return A.Message.model_validate(
        {
            "id": message_id,
            "model": requested_model(request, resp.get("model") or ""),
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": stop_sequence,
            "usage": anthropic_usage(resp.get("usage")),
        }
    )


def anthropic_response_to_openai(
    response: A.Message | Mapping[str, Any],
    *,
    request: O.ChatCompletionRequest | Mapping[str, Any] | None = None,
    ids: IdFactory | None = None,
) -> O.ChatCompletion:
    """Translate a non-streamed Anthropic message into an OpenAI chat reply.

    Text blocks concatenate into `content` (`null` when there is none), thinking into
    `reasoning_content`, `tool_use` blocks into `tool_calls` with JSON-string arguments.
    `finish_reason` maps from `stop_reason` (`tool_calls` whenever there are tool calls);
    a matched stop sequence is kept in the choice's `stop_reason`, as vLLM does. Usage:
    `prompt_tokens` is every input token, cached ones also in `cached_tokens`.

    Args:
        response: the Anthropic message, as an envelope model or a dict.
        request: the OpenAI request it answers (its `model` is echoed), if at hand.
        ids: makes the completion id and `created`.
    """
    resp = plain(response)
    ids = ids or IdFactory()
    blocks = resp.get("content") or []
    texts = [b.get("text") or "" for b in blocks if b.get("type") == "text"]
    thinking = "".join(b.get("thinking") or "" for b in blocks if b.get("type") == "thinking")
    calls = [
        {
            "id": b.get("id") or ids.call_id(),
            "type": "function",
            "function": {"name": b.get("name") or "", "arguments": dump_tool_input(b.get("input"))},
        }
        for b in blocks
        if b.get("type") == "tool_use"
    ]
    text = "".join(texts)
    message: dict[str, Any] = {"role": "assistant", "content": text or (None if calls else "")}
    if calls:
        message["tool_calls"] = calls
    if thinking:
        message["reasoning_content"] = thinking
    choice: dict[str, Any] = {
        "index": 0,
        "message": message,
        "finish_reason": finish_reason_for(resp.get("stop_reason"), has_tool_calls=bool(calls)),
        "logprobs": None,
    }
    if resp.get("stop_sequence"):
        choice["stop_reason"] = resp["stop_sequence"]
    return O.ChatCompletion.model_validate(
        {
            "id": ids.chat_completion_id(),
            "created": ids.created(),
            "model": requested_model(request, resp.get("model") or ""),
            "choices": [choice],
            "usage": openai_usage(resp.get("usage")),
        }
    )

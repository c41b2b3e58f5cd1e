"""OpenAI response bodies and stream chunks built from a harness's `GenerationEvent`s.

Choices that end carry vLLM's `stop_reason`: the stop string that ended the reply, or null.
A reasoning model's thought streams as `delta.reasoning_content` and, for clients that read
vLLM's newer name, `delta.reasoning`; whole replies carry it as `message.reasoning_content`
(and `message.reasoning`), never inside `content`.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any, Literal

from cortex.neuron.types import GenerationEvent, TokenUsage, ToolCall, ToolCallDelta

__all__ = ["CompletionBuilder", "sse", "usage_json"]

SSE_DONE = b"data: [DONE]\n\n"


def sse(payload: dict[str, Any]) -> bytes:
    """One server-sent event carrying `payload` as JSON."""
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def usage_json(usage: TokenUsage) -> dict[str, Any]:
    """OpenAI's `usage` object (prompt tokens include the cached ones, completion tokens the
    reasoning ones)."""
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


def _tool_call_json(call: ToolCall, index: int | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": call.arguments},
    }
    return body if index is None else {"index": index, **body}


def _delta_json(deltas: tuple[ToolCallDelta, ...], index: int) -> list[dict[str, Any]]:
    """Streamed call pieces as OpenAI tool call deltas: `id`, `type` and `name` once per call,
    then argument fragments; `index` is the first new call's."""
    out: list[dict[str, Any]] = []
    current = index - 1  # a piece without an id continues the call before this event's first
    for delta in deltas:
        if delta.id is not None:
            current += 1
            function = {"name": delta.name or "", "arguments": delta.arguments}
            out.append({"index": current, "id": delta.id, "type": "function", "function": function})
        else:
            out.append({"index": current, "function": {"arguments": delta.arguments}})
    return out


class CompletionBuilder:
    """Collects the events of one generation into a chat or text completion, or its chunks.

    Args:
        kind: `chat` (`/v1/chat/completions`) or `text` (`/v1/completions`).
        completion_id: `chatcmpl-...` or `cmpl-...`.
        created: unix time of the request.
        include_usage: streamed: add the usage chunk (`stream_options.include_usage`).
        index: the choice this builds (`n > 1` builds one per sample).
    """

    def __init__(
        self,
        kind: Literal["chat", "text"],
        completion_id: str,
        created: int,
        model: str,
        *,
        include_usage: bool = False,
        index: int = 0,
    ) -> None:
        self.kind = kind
        self.index = index
        self.id = completion_id
        self.created = created
        self.model = model
        self.include_usage = include_usage
        self.text: list[str] = []
        self.reasoning: list[str] = []
        self.tool_calls: list[ToolCall] = []
        self.logprobs: list[dict[str, Any]] = []
        self.finish_reason: str | None = None
        self.stop_string: str | None = None
        self.usage: TokenUsage | None = None
        self.completion_tokens = 0
        self._started = False
        self._frame: tuple[bytes, bytes] | None = None

    def add(self, event: GenerationEvent) -> None:
        """Take one event (for the non-streamed body)."""
        if event.text:
            self.text.append(event.text)
        if event.reasoning:
            self.reasoning.append(event.reasoning)
        self.tool_calls.extend(event.tool_calls)
        for delta in event.tool_call_deltas:
            if delta.id is not None:
                self.tool_calls.append(ToolCall(delta.id, delta.name or "", delta.arguments))
            elif self.tool_calls:
                last = self.tool_calls[-1]
                self.tool_calls[-1] = replace(last, arguments=last.arguments + delta.arguments)
        if event.logprobs:
            self.logprobs.extend(event.logprobs)
        self.completion_tokens += event.token_count
        if event.finish_reason is not None:
            self.finish_reason = event.finish_reason
            self.stop_string = event.stop_string
        if event.usage is not None:
            self.usage = event.usage

    def prompt_usages(self) -> list[TokenUsage]:
        """The usage of each prompt the engine looked up in its prefix cache (for metrics)."""
        return [] if self.usage is None else [self.usage]

    def body(self) -> dict[str, Any]:
        """The whole (non-streamed) completion."""
        usage = usage_json(self.usage) if self.usage else None
        if self.kind == "chat":
            text = "".join(self.text)
            message: dict[str, Any] = {
                "role": "assistant",
                "content": text if text or not self.tool_calls else None,
                "refusal": None,
            }
            if self.tool_calls:
                message["tool_calls"] = [_tool_call_json(call) for call in self.tool_calls]
            if self.reasoning:
                thought = "".join(self.reasoning)
                message["reasoning_content"] = message["reasoning"] = thought
            choice: dict[str, Any] = {
                "index": self.index,
                "message": message,
                "finish_reason": self.finish_reason,
                "stop_reason": self.stop_string,
                "logprobs": {"content": self.logprobs} if self.logprobs else None,
            }
            obj = "chat.completion"
        else:
            choice = {
                "index": self.index,
                "text": "".join(self.text),
                "finish_reason": self.finish_reason,
                "stop_reason": self.stop_string,
                "logprobs": _text_logprobs(self.logprobs) if self.logprobs else None,
            }
            obj = "text_completion"
        return {
            "id": self.id,
            "object": obj,
            "created": self.created,
            "model": self.model,
            "choices": [choice],
            "usage": usage,
            "system_fingerprint": None,
        }

    def encode(self, event: GenerationEvent) -> bytes:
        """The server-sent events for one event, as bytes.

        Plain text, the common case, takes a fast path: the chunk's JSON around the text is
        built once per request, so each token costs one `json.dumps` of its text.
        """
        frame = self._text_frame()
        if (
            frame is not None
            and event.text
            and event.finish_reason is None
            and not event.reasoning
            and not event.tool_calls
            and not event.tool_call_deltas
            and not event.logprobs
        ):
            self.add(event)
            return frame[0] + json.dumps(event.text).encode() + frame[1]
        return b"".join(sse(chunk) for chunk in self.chunks(event))

    def _text_frame(self) -> tuple[bytes, bytes] | None:
        """The bytes before and after the text of a plain text chunk (once the role is sent)."""
        if self._frame is None and (self._started or self.kind == "text"):
            marker = "\x00TEXT\x00"
            chunk = self._chunk({"content": marker} if self.kind == "chat" else marker)
            head, _, tail = sse(chunk).partition(json.dumps(marker).encode())
            self._frame = (head, tail)
        return self._frame

    def chunks(self, event: GenerationEvent) -> list[dict[str, Any]]:
        """The stream chunks for one event (the first one opens with the assistant role)."""
        index = len(self.tool_calls)  # of this event's first new call
        self.add(event)
        out: list[dict[str, Any]] = []
        if self.kind == "chat":
            if not self._started:
                self._started = True
                out.append(self._chunk({"role": "assistant", "content": ""}))
            if event.reasoning:
                thought = event.reasoning
                logprobs = None if event.text else event.logprobs
                out.append(
                    self._chunk({"reasoning_content": thought, "reasoning": thought}, logprobs)
                )
            if event.text:
                out.append(self._chunk({"content": event.text}, event.logprobs))
            if event.tool_calls:
                calls = [_tool_call_json(c, index + i) for i, c in enumerate(event.tool_calls)]
                out.append(self._chunk({"tool_calls": calls}))
                index += len(event.tool_calls)
            if event.tool_call_deltas:
                out.append(self._chunk({"tool_calls": _delta_json(event.tool_call_deltas, index)}))
            if event.finish_reason is not None:
                out.append(self._chunk({}, finish_reason=event.finish_reason))
        else:
            if event.text or event.finish_reason is not None:
                out.append(self._chunk(event.text, event.logprobs, event.finish_reason))
        return out

    def final_chunks(self) -> list[dict[str, Any]]:
        """After the last event: the usage chunk, when asked for."""
        if not self.include_usage or self.usage is None:
            return []
        return [{**self._envelope(), "choices": [], "usage": usage_json(self.usage)}]

    def _envelope(self) -> dict[str, Any]:
        obj = "chat.completion.chunk" if self.kind == "chat" else "text_completion"
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model}

    def _chunk(
        self,
        delta: dict[str, Any] | str,
        logprobs: list[dict[str, Any]] | None = None,
        finish_reason: str | None = None,
    ) -> dict[str, Any]:
        if self.kind == "chat":
            assert isinstance(delta, dict)
            choice: dict[str, Any] = {
                "index": self.index,
                "delta": delta,
                "finish_reason": finish_reason,
                "logprobs": {"content": logprobs} if logprobs else None,
            }
        else:
            choice = {
                "index": self.index,
                "text": delta,
                "finish_reason": finish_reason,
                "logprobs": _text_logprobs(logprobs) if logprobs else None,
            }
        if finish_reason is not None:  # vLLM's extra: the stop string that ended the reply
            choice["stop_reason"] = self.stop_string
        chunk = {**self._envelope(), "choices": [choice]}
        if self.include_usage:
            chunk["usage"] = None
        return chunk


def _text_logprobs(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Chat-style logprob entries in the legacy completions shape."""
    offsets, position = [], 0
    for entry in entries:
        offsets.append(position)
        position += len(entry.get("token", ""))
    return {
        "tokens": [e.get("token", "") for e in entries],
        "token_logprobs": [e.get("logprob") for e in entries],
        "top_logprobs": [
            {t["token"]: t["logprob"] for t in e.get("top_logprobs") or []} for e in entries
        ],
        "text_offset": offsets,
    }

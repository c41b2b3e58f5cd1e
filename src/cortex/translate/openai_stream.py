"""Anthropic Messages stream events in, OpenAI chat chunks out: a feed/finish state machine."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cortex.errors import CortexError, UpstreamError
from cortex.protocol import openai as O
from cortex.translate.errors import error_from_anthropic
from cortex.translate.ids import IdFactory
from cortex.translate.mapping import dump_tool_input, finish_reason_for, openai_usage
from cortex.translate.replies import requested_model
from cortex.translate.sse import DONE
from cortex.translate.stream_items import StreamEvent, StreamItem, item_payload

__all__ = ["OpenAIStreamTranslator"]


class OpenAIStreamTranslator:
    """Turns an Anthropic event stream into the OpenAI chunk stream a client expects.

    Feed it every upstream event (dicts, `SSEEvent`s from `SSEDecoder`, envelope models);
    each call returns the chunks to send now: JSON-ready dicts, and finally `DONE`, all for
    `encode_sse`.

    The first chunk carries `role: "assistant"` (once); text deltas become `content`,
    thinking becomes `reasoning_content`, each `tool_use` block becomes tool call `index`
    0, 1, 2... (counting tool calls, not blocks) with `id` and `name` sent once and the
    arguments as `input_json_delta` fragments arrive. `message_delta` gives the chunk with
    `finish_reason`; `message_stop` the usage chunk (`choices: []`, only when the request
    asked for `stream_options.include_usage`) and `DONE`. An `error` event becomes the
    OpenAI mid-stream error `{"error": {...}}` and ends the stream.

    Args:
        request: the client's OpenAI request (model or dict): its `model` is echoed and its
            `stream_options.include_usage` honoured.
        ids: makes the completion id and `created`.
    """

    def __init__(
        self,
        request: O.ChatCompletionRequest | Mapping[str, Any],
        *,
        ids: IdFactory | None = None,
    ) -> None:
        ids = ids or IdFactory()
        self.completion_id = ids.chat_completion_id()
        self._created = ids.created()
        self._model = requested_model(request, "")
        options = _field(request, "stream_options") or {}
        self._include_usage = bool(_field(options, "include_usage"))
        self._started = False
        self._ended = False
        self._finished = False
        self._tool_count = 0
        # Anthropic block index -> (OpenAI tool index, whether arguments streamed, start input)
        self._tools: dict[int, tuple[int, bool, Mapping[str, Any]]] = {}
        self._usage: dict[str, Any] = {"input_tokens": 0, "output_tokens": 0}
        self._stop_reason: str | None = None
        self.finish_reason: str | None = None
        """The finish reason sent, once known."""

    @property
    def done(self) -> bool:
        """Whether the stream has ended (`DONE` or an error emitted)."""
        return self._ended

    @property
    def usage(self) -> dict[str, Any]:
        """The usage so far, in OpenAI's shape."""
        return openai_usage(self._usage)

    def feed(self, item: StreamItem) -> list[StreamEvent | str]:
        """Translate one upstream event (or `DONE`) into the chunks to send now."""
        if self._ended:
            return []
        event = item_payload(item)
        out: list[StreamEvent | str] = []
        if event is None:
            self._end(out)
            return out
        kind = event.get("type")
        if kind == "error":
            self._ended = True
            return [error_from_anthropic(None, event).to_openai()]
        if not self._started:
            self._start(out, event.get("message") if kind == "message_start" else None)
            if kind == "message_start":
                return out
        if kind == "content_block_delta":
            self._block_delta(event, out)
        elif kind == "content_block_start":
            self._block_start(event, out)
        elif kind == "content_block_stop":
            self._block_stop(event, out)
        elif kind == "message_delta":
            self._message_delta(event, out)
        elif kind == "message_stop":
            self._end(out)
        return out

    def finish(self) -> list[StreamEvent | str]:
        """The upstream ended: finish reason, usage chunk and `DONE` if not sent yet."""
        if self._ended:
            return []
        out: list[StreamEvent | str] = []
        self._end(out)
        return out

    def fail(self, error: BaseException) -> list[StreamEvent | str]:
        """The OpenAI mid-stream error chunk for a failure (it ends the stream)."""
        if self._ended:
            return []
        self._ended = True
        if not isinstance(error, CortexError):
            error = UpstreamError(str(error) or type(error).__name__)
        return [error.to_openai()]

    # -- events --------------------------------------------------------------------------------

    def _start(self, out: list[StreamEvent | str], message: Any) -> None:
        self._started = True
        if isinstance(message, Mapping):
            self._merge_usage(message.get("usage"))
        out.append(self._chunk({"role": "assistant", "content": ""}))

    def _block_start(self, event: Mapping[str, Any], out: list[StreamEvent | str]) -> None:
        block = event.get("content_block") or {}
        kind = block.get("type")
        if kind == "tool_use":
            index = self._tool_count
            self._tool_count += 1
            self._tools[event.get("index", -1)] = (index, False, block.get("input") or {})
            call = {
                "index": index,
                "id": block.get("id") or "",
                "type": "function",
                "function": {"name": block.get("name") or "", "arguments": ""},
            }
            out.append(self._chunk({"tool_calls": [call]}))
        elif kind == "text" and block.get("text"):
            out.append(self._chunk({"content": block["text"]}))
        elif kind == "thinking" and block.get("thinking"):
            out.append(self._chunk({"reasoning_content": block["thinking"]}))

    def _block_delta(self, event: Mapping[str, Any], out: list[StreamEvent | str]) -> None:
        delta = event.get("delta") or {}
        kind = delta.get("type")
        if kind == "text_delta":
            if delta.get("text"):
                out.append(self._chunk({"content": delta["text"]}))
        elif kind == "input_json_delta":
            fragment = delta.get("partial_json")
            tool = self._tools.get(event.get("index", -1))
            if fragment and tool is not None:
                self._tools[event.get("index", -1)] = (tool[0], True, tool[2])
                call = {"index": tool[0], "function": {"arguments": fragment}}
                out.append(self._chunk({"tool_calls": [call]}))
        elif kind == "thinking_delta" and delta.get("thinking"):
            out.append(self._chunk({"reasoning_content": delta["thinking"]}))

    def _block_stop(self, event: Mapping[str, Any], out: list[StreamEvent | str]) -> None:
        tool = self._tools.get(event.get("index", -1))
        if tool is not None and not tool[1] and tool[2]:
            # The whole input came in content_block_start: send it as one fragment.
            call = {"index": tool[0], "function": {"arguments": dump_tool_input(tool[2])}}
            out.append(self._chunk({"tool_calls": [call]}))

    def _message_delta(self, event: Mapping[str, Any], out: list[StreamEvent | str]) -> None:
        delta = event.get("delta") or {}
        self._stop_reason = delta.get("stop_reason")
        self._merge_usage(event.get("usage"))
        self._write_finish(out, delta.get("stop_sequence"))

    def _merge_usage(self, usage: Any) -> None:
        if isinstance(usage, Mapping):
            # Anthropic usage is cumulative: present values overwrite.
            self._usage.update({k: v for k, v in usage.items() if v is not None})

    def _write_finish(self, out: list[StreamEvent | str], stop_sequence: Any = None) -> None:
        if self._finished:
            return
        self._finished = True
        self.finish_reason = finish_reason_for(
            self._stop_reason, has_tool_calls=self._tool_count > 0
        )
        chunk = self._chunk({}, self.finish_reason)
        if isinstance(stop_sequence, str) and stop_sequence:
            chunk["choices"][0]["stop_reason"] = stop_sequence
        out.append(chunk)

    def _end(self, out: list[StreamEvent | str]) -> None:
        if not self._started:
            self._start(out, None)
        self._write_finish(out)
        if self._include_usage:
            out.append(
                {
                    "id": self.completion_id,
                    "object": "chat.completion.chunk",
                    "created": self._created,
                    "model": self._model,
                    "choices": [],
                    "usage": openai_usage(self._usage),
                }
            )
        out.append(DONE)
        self._ended = True

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> StreamEvent:
        return {
            "id": self.completion_id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": [
                {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            ],
        }


def _field(value: Any, name: str) -> Any:
    if isinstance(value, Mapping):
        return value.get(name)
    return getattr(value, name, None)

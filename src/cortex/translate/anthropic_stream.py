"""OpenAI chat chunks in, Anthropic Messages stream events out: a feed/finish state machine."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from cortex.errors import CortexError, UpstreamError
from cortex.protocol import anthropic as A
from cortex.translate.deltas import tool_call_index
from cortex.translate.errors import error_from_openai
from cortex.translate.ids import IdFactory
from cortex.translate.mapping import anthropic_usage, stop_reason_for
from cortex.translate.replies import requested_model
from cortex.translate.stream_items import StreamEvent, StreamItem, item_payload
from cortex.translate.tool_input import ToolInputStream

__all__ = ["AnthropicStreamTranslator"]


class _Tool:
    """One upstream tool call (by OpenAI `index`) until it is written as a block."""

    __slots__ = ("args", "id", "name", "stream")

    def __init__(self) -> None:
        self.id = ""
        self.name = ""
        self.args: list[str] = []  # fragments not yet written
        self.stream = ToolInputStream()


class AnthropicStreamTranslator:
    """Turns an OpenAI chat stream into the Anthropic event stream a client expects.

    Feed it every upstream item (chunk dicts, `SSEEvent`s from `SSEDecoder`, or `DONE`);
    each call returns the Anthropic events to send now, JSON-ready dicts for `encode_sse`.

    What it guarantees, whatever the upstream does: `message_start` first (with the prompt
    count you pass as `input_tokens`), then blocks with indices 0, 1, 2... one open at a
    time; one block per run of thinking, per run of text and per tool call; no block for
    empty or whitespace-only text; tool arguments as `input_json_delta`, never lost (a chunk
    carrying text and tool calls together is handled whole); a thinking block closes with a
    synthetic `signature_delta`; then one `message_delta` (stop reason, cumulative usage)
    and `message_stop`. The final usage waits for the upstream usage chunk and falls back to
    an estimate when none comes. `stop_reason` is `tool_use` whenever a tool was called.

    Text and thinking stream live until the first tool call. The first tool call then
    streams live too; whatever comes after it (more tool calls, possibly interleaved, or
    text) is held, because Anthropic allows one open block at a time and an OpenAI tool call
    may receive arguments again later. When the next call's arguments begin while the live
    call's arguments are already one whole JSON object and no other call is pending (calls
    one after another, as every model writes them), the live block closes, what was held
    before the next call is written, and that call streams live in turn. Whatever is still
    held is written when the upstream finishes.

    Args:
        request: the client's Anthropic request (model or dict); its `model` is echoed.
        ids: makes the message id, missing tool ids and thinking signatures.
        input_tokens: the prompt's token count for `message_start` (Claude Code's context
            meter reads it); the upstream's usage replaces it in `message_delta`.

    Example:
        >>> t = AnthropicStreamTranslator({"model": "m"}, ids=IdFactory(seed=0))
        >>> [e["type"] for e in t.feed({"choices": [{"delta": {"content": "Hi"}}]})]
        ['message_start', 'ping', 'content_block_start', 'content_block_delta']
        >>> [e["type"] for e in t.feed("[DONE]")]
        ['content_block_stop', 'message_delta', 'message_stop']
    """

    def __init__(
        self,
        request: A.MessagesRequest | Mapping[str, Any],
        *,
        ids: IdFactory | None = None,
        input_tokens: int | None = None,
    ) -> None:
        self._ids = ids or IdFactory()
        self._model = requested_model(request, "")
        self.message_id = self._ids.message_id()
        self._input_tokens = input_tokens or 0
        self._started = False
        self._ended = False
        self._open = ""  # kind of the open block: "", "text", "thinking" or "tool_use"
        self._index = -1  # index of the last block started
        self._signature = ""
        self._open_tool: _Tool | None = None
        self._space = ""  # whitespace-only text waiting to learn whether real text follows
        self._tools: dict[int, _Tool] = {}
        self._live: _Tool | None = None  # the tool call whose block is open
        # Once a tool call has begun, later content waits here in arrival order:
        # ("text" | "thinking", [pieces]) or ("tool_use", _Tool).
        self._held: list[tuple[str, Any]] = []
        self._finish_reason: str | None = None
        self._matched_stop: Any = None
        self._usage: Mapping[str, Any] | None = None
        self._deltas = 0
        self.stop_reason: str | None = None
        """The stop reason sent, once the message has ended."""
        self.usage: dict[str, int] = {}
        """The usage sent in `message_delta`, once the message has ended."""

    @property
    def done(self) -> bool:
        """Whether the stream has ended (`message_stop` or `error` emitted)."""
        return self._ended

    def start(self) -> list[StreamEvent]:
        """`message_start` and a `ping`, once; call it early to send bytes before the upstream.

        `feed` calls it by itself when you have not.
        """
        if self._started:
            return []
        self._started = True
        usage = anthropic_usage(None, input_tokens=self._input_tokens)
        message: dict[str, Any] = {
            "id": self.message_id,
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage,
        }
        return [{"type": "message_start", "message": message}, {"type": "ping"}]

    @staticmethod
    def ping() -> list[StreamEvent]:
        """A keep-alive `ping` event (send one every few seconds of upstream silence)."""
        return [{"type": "ping"}]

    def feed(self, item: StreamItem) -> list[StreamEvent]:
        """Translate one upstream item (chunk, `SSEEvent` or `DONE`) into events to send."""
        if self._ended:
            return []
        chunk = item_payload(item)
        out = self.start() if not self._started else []
        if chunk is None:
            self._end(out)
            return out
        if chunk.get("error"):
            out.append(error_from_openai(None, chunk).to_anthropic())
            self._ended = True
            return out
        usage = chunk.get("usage")
        if usage:
            self._usage = usage
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta")
            if delta:
                self._delta(delta, out)
            finish = choice.get("finish_reason")
            if finish:
                self._finish_reason = finish
                self._matched_stop = choice.get("stop_reason")
                self._flush(out)
        if self._finish_reason and usage:
            self._end(out)
        return out

    def finish(self) -> list[StreamEvent]:
        """The upstream ended: close what is open and end the message (idempotent)."""
        if self._ended:
            return []
        out = self.start() if not self._started else []
        self._end(out)
        return out

    def fail(self, error: BaseException) -> list[StreamEvent]:
        """An `error` event for a failure mid-stream (it ends the stream).

        A `CortexError` keeps its type and message; anything else becomes `api_error`.
        """
        if self._ended:
            return []
        self._ended = True
        if not isinstance(error, CortexError):
            error = UpstreamError(str(error) or type(error).__name__)
        return [error.to_anthropic()]

    # -- payloads ------------------------------------------------------------------------------

    def _delta(self, delta: Mapping[str, Any], out: list[StreamEvent]) -> None:
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if reasoning:
            self._run("thinking", reasoning, out)
        content = delta.get("content") or delta.get("refusal")
        if content:
            self._run("text", content, out)
        calls = delta.get("tool_calls")
        if calls:
            for call in calls:
                self._tool_fragment(call, out)
        elif delta.get("function_call"):
            self._tool_fragment({"index": 0, "function": delta["function_call"]}, out)

    def _run(self, kind: str, text: str, out: list[StreamEvent]) -> None:
        """A piece of thinking or text: live before any tool call, held after."""
        self._deltas += 1
        if self._held or self._live is not None:
            last = self._held[-1] if self._held else None
            if last is not None and last[0] == kind:
                last[1].append(text)
            else:
                self._held.append((kind, [text]))
            return
        if kind == "text" and self._open != "text":
            # Models often emit "\n\n" before a tool call: no block for whitespace alone.
            if not (self._space + text).strip():
                self._space += text
                return
            text, self._space = self._space + text, ""
        if self._open != kind:
            self._close(out)
            self._begin(kind, out)
        out.append(_delta(self._index, kind, text))

    def _tool_fragment(self, call: Mapping[str, Any], out: list[StreamEvent]) -> None:
        index = tool_call_index(call, {i: tool.id for i, tool in self._tools.items()})
        tool = self._tools.get(index)
        if tool is None:
            tool = self._tools[index] = _Tool()
            self._held.append(("tool_use", tool))
        call_id = call.get("id")
        if call_id and not tool.id:
            tool.id = call_id
        function = call.get("function") or {}
        name = function.get("name")
        if name and name != tool.name:
            tool.name += name
        args = function.get("arguments")
        if args and not isinstance(args, str):
            args = json.dumps(args, ensure_ascii=False)
        if not args:
            return
        self._deltas += 1
        if tool is self._live:
            safe = tool.stream.feed(args)
            if safe:
                out.append(_delta(self._index, "tool_use", safe))
            return
        tool.args.append(args)
        live = self._live
        if live is not None and live.stream.complete and tool.name and self._pending() == [tool]:
            self._hand_over(tool, out)  # the live call is whole: the next one streams live
            return
        if self._live is None and tool.name and self._held[0][1] is tool:
            self._held.pop(0)
            self._close(out)
            self._write_tool(tool, out, keep_open=True)
            self._live = tool

    def _pending(self) -> list[_Tool]:
        return [value for kind, value in self._held if kind == "tool_use"]

    def _hand_over(self, tool: _Tool, out: list[StreamEvent]) -> None:
        """Close the live call, write what was held before `tool`, and stream `tool` live."""
        self._close(out)
        at = next(i for i, (_, value) in enumerate(self._held) if value is tool)
        before, self._held = self._held[:at], self._held[at + 1 :]
        for kind, value in before:
            if "".join(value).strip():  # text or thinking between the calls
                self._begin(kind, out)
                out.append(_delta(self._index, kind, "".join(value)))
                self._close(out)
        self._write_tool(tool, out, keep_open=True)
        self._live = tool

    # -- blocks --------------------------------------------------------------------------------

    def _begin(self, kind: str, out: list[StreamEvent], tool: _Tool | None = None) -> None:
        self._space = ""
        self._index += 1
        self._open = kind
        block: dict[str, Any]
        if kind == "text":
            block = {"type": "text", "text": ""}
        elif kind == "thinking":
            block = {"type": "thinking", "thinking": "", "signature": ""}
            self._signature = self._ids.signature()
        else:
            assert tool is not None
            tool.id = tool.id or self._ids.tool_use_id()
            block = {"type": "tool_use", "id": tool.id, "name": tool.name, "input": {}}
        out.append({"type": "content_block_start", "index": self._index, "content_block": block})

    def _close(self, out: list[StreamEvent]) -> None:
        if not self._open:
            return
        if self._open == "thinking":
            delta = {"type": "signature_delta", "signature": self._signature}
            out.append({"type": "content_block_delta", "index": self._index, "delta": delta})
        elif self._open == "tool_use" and self._open_tool is not None:
            # Complete the arguments into one JSON object (a `}`, or a repair plus raw text).
            rest = self._open_tool.stream.close()
            if rest:
                out.append(_delta(self._index, "tool_use", rest))
            self._open_tool = None
        out.append({"type": "content_block_stop", "index": self._index})
        self._open = ""

    def _write_tool(self, tool: _Tool, out: list[StreamEvent], *, keep_open: bool) -> None:
        self._begin("tool_use", out, tool)
        self._open_tool = tool
        safe = tool.stream.feed("".join(tool.args))
        tool.args = []
        if safe:
            out.append(_delta(self._index, "tool_use", safe))
        if not keep_open:
            self._close(out)

    def _flush(self, out: list[StreamEvent]) -> None:
        """Close the open block and write everything held, in arrival order."""
        self._close(out)
        self._live = None
        held, self._held = self._held, []
        for kind, value in held:
            if kind == "tool_use":
                self._write_tool(value, out, keep_open=False)
            elif kind == "text" and not "".join(value).strip():
                continue
            else:
                self._begin(kind, out)
                out.append(_delta(self._index, kind, "".join(value)))
                self._close(out)

    def _end(self, out: list[StreamEvent]) -> None:
        self._flush(out)
        stop_reason, stop_sequence = stop_reason_for(
            self._finish_reason, matched_stop=self._matched_stop, has_tool_use=bool(self._tools)
        )
        if self._usage:
            usage = anthropic_usage(self._usage)
        else:
            usage = anthropic_usage(None, input_tokens=self._input_tokens)
            usage["output_tokens"] = self._deltas
        self.stop_reason, self.usage = stop_reason, usage
        out.append(
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
                "usage": usage,
            }
        )
        out.append({"type": "message_stop"})
        self._ended = True


_DELTA_KEYS = {
    "text": ("text_delta", "text"),
    "thinking": ("thinking_delta", "thinking"),
    "tool_use": ("input_json_delta", "partial_json"),
}


def _delta(index: int, kind: str, text: str) -> StreamEvent:
    delta_type, key = _DELTA_KEYS[kind]
    return {"type": "content_block_delta", "index": index, "delta": {"type": delta_type, key: text}}

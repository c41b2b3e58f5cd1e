"""OpenAI chat chunks in, Responses API stream events out: a feed/finish/fail state machine.

One output item is open at a time, as OpenAI streams them. Reasoning and text stream live
until the first tool call; that call streams live too, and whatever comes after it (more tool
calls, possibly interleaved, or more text) is held, so an item is never closed while the
upstream may still add to it. When the next call's arguments begin while the live call's
arguments are one whole JSON object and no other call is pending, the live item closes, what
was held before the next call is written, and that call streams live in turn; whatever is
still held is written when the upstream finishes. Each chunk is read whole, in the order
reasoning, text, refusal, tool calls, finish reason, usage.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from cortex.protocol.openai import Usage
from cortex.protocol.responses import (
    FunctionCallItem,
    ItemStatus,
    OutputContent,
    OutputItem,
    OutputMessage,
    OutputText,
    ReasoningItem,
    ReasoningText,
    Refusal,
    Response,
    ResponsesRequest,
    SummaryText,
)
from cortex.protocol.responses_events import (
    ContentPartAddedEvent,
    ContentPartDoneEvent,
    FunctionCallArgumentsDoneEvent,
    OutputItemAddedEvent,
    OutputItemDoneEvent,
    OutputTextDoneEvent,
    ReasoningSummaryPartAddedEvent,
    ReasoningSummaryPartDoneEvent,
    ReasoningSummaryTextDoneEvent,
    ReasoningTextDoneEvent,
    RefusalDoneEvent,
    ResponseCompletedEvent,
    ResponseCreatedEvent,
    ResponseFailedEvent,
    ResponseIncompleteEvent,
    ResponseInProgressEvent,
)
from cortex.translate.deltas import tool_call_index
from cortex.translate.errors import error_from_openai
from cortex.translate.ids import IdFactory
from cortex.translate.responses_api import (
    parse_responses_request,
    response_error,
    response_shell,
    response_status,
    response_usage,
    tool_arguments,
    wants_summary,
)
from cortex.translate.stream_items import StreamEvent, StreamItem, item_payload

__all__ = ["ResponsesStreamTranslator"]

_Kind = Literal["reasoning", "output_text", "refusal", "function_call"]
_Out = list[BaseModel | StreamEvent]  # events as models; the per-token deltas as dicts already
_DELTA_TYPES: dict[_Kind, str] = {
    "output_text": "response.output_text.delta",
    "refusal": "response.refusal.delta",
    "reasoning": "response.reasoning_text.delta",
    "function_call": "response.function_call_arguments.delta",
}


@dataclass
class _Call:
    """A tool call as its fragments arrive: id and name once, arguments in pieces."""

    id: str = ""
    name: str = ""
    arguments: str = ""


@dataclass
class _Open:
    """The output item being streamed, with what it has gathered so far."""

    kind: Literal["reasoning", "message", "function_call"]
    id: str
    output_index: int
    pieces: list[str] = field(default_factory=list)  # of the open part, reasoning or arguments
    part: _Kind | None = None  # the open content part of a message
    parts: list[OutputContent] = field(default_factory=list)  # closed message parts
    call: _Call | None = None

    @property
    def text(self) -> str:
        return "".join(self.pieces)


class ResponsesStreamTranslator:
    """Turns an OpenAI chat stream into the Responses API event stream a client expects.

    Feed it every upstream item (chunk dicts, envelope models, `SSEEvent`s from
    `SSEDecoder`, or `DONE`); each call returns the events to send now, JSON-ready dicts for
    `encode_sse` (which writes the `event:` line from their `type`).

    What it guarantees, whatever the upstream does: `response.created` and
    `response.in_progress` first; `sequence_number` 0, 1, 2, ...; output items at
    `output_index` 0, 1, 2, ... one open at a time, each `added` then `done`, its content
    parts `added` then `done`; no item for empty text; every tool-call argument fragment
    sent as `function_call_arguments.delta`, and the whole as `.done` (`{}` when there were
    none); exactly one terminal event carrying the whole response with usage:
    `response.completed`, `response.incomplete` (`finish_reason` length or content_filter)
    or `response.failed` (`fail`, or an error object in the upstream stream).

    Args:
        request: the client's Responses request (model or dict), echoed in the response.
        ids: makes the response id, item ids and call ids the upstream lacked, and
            `created_at`; drawn in output order, as `openai_response_to_responses` does.

    Example:
        >>> from cortex.translate.sse import DONE
        >>> t = ResponsesStreamTranslator({"model": "m", "input": "hi"}, ids=IdFactory(seed=0))
        >>> events = t.feed({"choices": [{"delta": {"content": "Hi"}}]})
        >>> [e["type"] for e in events[:2]], events[-1]["type"], events[-1]["delta"]
        (['response.created', 'response.in_progress'], 'response.output_text.delta', 'Hi')
        >>> final = t.feed(DONE)[-1]
        >>> final["type"], final["response"]["output"][0]["content"][0]["text"]
        ('response.completed', 'Hi')
    """

    def __init__(
        self, request: ResponsesRequest | Mapping[str, Any], *, ids: IdFactory | None = None
    ) -> None:
        self._ids = ids or IdFactory()
        parsed = parse_responses_request(request)
        self.response = response_shell(parsed, self._ids.new("resp_"), self._ids.created())
        """The response as it stands; final once the stream has ended."""
        self._summary = wants_summary(parsed)  # the thought goes out as the item's summary
        self._sequence = 0
        self._started = False
        self._ended = False
        self._open: _Open | None = None
        self._calls: dict[int, _Call] = {}
        self._live: _Call | None = None  # the first tool call, streamed as it comes
        # After the first tool call began, the rest waits here in arrival order.
        self._held: list[tuple[_Kind, Any]] = []
        self._finish_reason: str | None = None
        self._usage: Usage | None = None

    @property
    def started(self) -> bool:
        """Whether `response.created` has been emitted."""
        return self._started

    @property
    def done(self) -> bool:
        """Whether the terminal event has been emitted."""
        return self._ended

    def start(self) -> list[StreamEvent]:
        """`response.created` and `response.in_progress`, once; call it early to send bytes
        before the upstream answers. `feed` calls it by itself when you have not."""
        if self._started:
            return []
        self._started = True
        return _dump(
            ResponseCreatedEvent(sequence_number=self._next(), response=self._snapshot()),
            ResponseInProgressEvent(sequence_number=self._next(), response=self._snapshot()),
        )

    def feed(self, item: StreamItem) -> list[StreamEvent]:
        """Translate one upstream item (chunk, `SSEEvent` or `DONE`) into events to send."""
        if self._ended:
            return []
        chunk = item_payload(item)
        out = self.start()
        if chunk is None:
            return out + self.finish()
        if chunk.get("error"):
            return out + self.fail(error_from_openai(None, chunk))
        events: _Out = []
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if reasoning:
                self._piece("reasoning", reasoning, events)
            if delta.get("content"):
                self._piece("output_text", delta["content"], events)
            if delta.get("refusal"):
                self._piece("refusal", delta["refusal"], events)
            for call in delta.get("tool_calls") or ():
                self._tool_fragment(call, events)
            if delta.get("function_call"):  # the deprecated single-function form
                self._tool_fragment({"index": 0, "function": delta["function_call"]}, events)
            if choice.get("finish_reason"):
                self._finish_reason = choice["finish_reason"]
        if chunk.get("usage"):
            with contextlib.suppress(ValidationError):  # a malformed usage is not worth failing
                self._usage = Usage.model_validate(chunk["usage"])
        out += _dump(*events)
        if self._finish_reason and self._usage:
            out += self.finish()
        return out

    def finish(self) -> list[StreamEvent]:
        """The upstream ended: write what is open or held, then `response.completed` (or
        `response.incomplete`). Idempotent."""
        if self._ended:
            return []
        out = self.start()
        status, incomplete = response_status(self._finish_reason)
        events = self._flush("incomplete" if status == "incomplete" else "completed")
        self.response.status = status
        self.response.incomplete_details = incomplete
        self.response.usage = response_usage(self._usage)
        self._ended = True
        final = self._snapshot()
        if status == "incomplete":
            events.append(ResponseIncompleteEvent(sequence_number=self._next(), response=final))
        else:
            events.append(ResponseCompletedEvent(sequence_number=self._next(), response=final))
        return out + _dump(*events)

    def fail(self, error: BaseException) -> list[StreamEvent]:
        """A failure mid-stream: write what is open or held (the last item `incomplete`),
        then `response.failed` carrying `error`. Idempotent."""
        if self._ended:
            return []
        out = self.start()
        events = self._flush("incomplete")
        self.response.status = "failed"
        self.response.error = response_error(error)
        self.response.usage = response_usage(self._usage)
        self._ended = True
        events.append(ResponseFailedEvent(sequence_number=self._next(), response=self._snapshot()))
        return out + _dump(*events)

    # -- payloads ------------------------------------------------------------------------------

    def _piece(self, kind: _Kind, text: str, events: _Out) -> None:
        """Reasoning, text or refusal: live before any tool call, held after."""
        if self._calls:
            last = self._held[-1] if self._held else None
            if last is not None and last[0] == kind:
                self._held[-1] = (kind, last[1] + text)
            else:
                self._held.append((kind, text))
            return
        self._write(kind, text, events)

    def _tool_fragment(self, fragment: Mapping[str, Any], events: _Out) -> None:
        index = tool_call_index(fragment, {i: call.id for i, call in self._calls.items()})
        call = self._calls.get(index)
        if call is None:
            call = self._calls[index] = _Call()
            self._held.append(("function_call", call))
        call.id = call.id or fragment.get("id") or ""
        function = fragment.get("function") or {}
        name = function.get("name")
        if isinstance(name, str) and name != call.name:  # lax servers repeat the name whole
            call.name += name
        arguments = function.get("arguments")
        if arguments is not None and not isinstance(arguments, str):
            arguments = json.dumps(arguments, ensure_ascii=False)
        if not arguments:
            return
        if call is self._live:
            self._write("function_call", arguments, events)
            return
        call.arguments += arguments
        if self._live is not None and call.name and self._live_call_whole():
            waiting = [value for kind, value in self._held if kind == "function_call"]
            if waiting == [call]:  # calls one after another: the next one streams live
                self._hand_over(call, events)
                return
        # The first call goes live once its arguments start (its name is whole by then).
        if self._live is None and call.name and self._held[0][1] is call:
            self._held.pop(0)
            self._live = call
            self._open_call(call, events)
            pending, call.arguments = call.arguments, ""
            self._write("function_call", pending, events)

    def _live_call_whole(self) -> bool:
        """Whether the live call's arguments so far are one whole JSON object."""
        item = self._open
        if item is None or item.kind != "function_call" or not item.text.rstrip().endswith("}"):
            return False
        try:
            return isinstance(json.loads(item.text), dict)
        except ValueError:
            return False

    def _hand_over(self, call: _Call, events: _Out) -> None:
        """Close the live call, write what was held before `call`, and stream `call` live."""
        self._close("completed", events)
        at = next(i for i, (_, value) in enumerate(self._held) if value is call)
        before, self._held = self._held[:at], self._held[at + 1 :]
        for kind, text in before:  # reasoning, text or refusal between the calls
            self._write(kind, text, events)
            self._close("completed", events)
        self._live = call
        self._open_call(call, events)
        pending, call.arguments = call.arguments, ""
        self._write("function_call", pending, events)

    # -- items ---------------------------------------------------------------------------------

    def _write(self, kind: _Kind, text: str, events: _Out) -> None:
        """Append `text` to the open item, opening the right item and part first."""
        item = self._open
        wanted = "message" if kind in ("output_text", "refusal") else kind
        if item is None or item.kind != wanted:
            assert kind != "function_call", "function calls are opened by _open_call"
            self._close("completed", events)
            item = self._begin("reasoning" if kind == "reasoning" else "message", events)
        if item.kind == "message" and item.part != kind:
            self._close_part(item, events)
            item.part = kind
            empty = OutputText(text="") if kind == "output_text" else Refusal(refusal="")
            events.append(self._part_added(item, len(item.parts), empty))
        item.pieces.append(text)
        # The hot path (one event per token): built as the dict its model would dump.
        delta: StreamEvent = {
            "sequence_number": self._next(),
            "type": _DELTA_TYPES[kind],
            "item_id": item.id,
            "output_index": item.output_index,
        }
        if kind == "reasoning" and self._summary:
            delta["type"] = "response.reasoning_summary_text.delta"
            delta["summary_index"] = 0
        elif kind != "function_call":
            delta["content_index"] = len(item.parts) if kind != "reasoning" else 0
        delta["delta"] = text
        if kind == "output_text":
            delta["logprobs"] = []
        events.append(delta)

    def _begin(self, kind: Literal["reasoning", "message"], events: _Out) -> _Open:
        prefix = "rs_" if kind == "reasoning" else "msg_"
        item = self._open = _Open(kind, self._ids.new(prefix), len(self.response.output))
        if kind == "reasoning" and self._summary:
            events.append(self._added(ReasoningItem(id=item.id, status="in_progress")))
            events.append(
                ReasoningSummaryPartAddedEvent(
                    sequence_number=self._next(),
                    item_id=item.id,
                    output_index=item.output_index,
                    summary_index=0,
                    part=SummaryText(text=""),
                )
            )
        elif kind == "reasoning":
            events.append(self._added(ReasoningItem(id=item.id, content=[], status="in_progress")))
            events.append(self._part_added(item, 0, ReasoningText(text="")))
        else:
            events.append(self._added(OutputMessage(id=item.id, status="in_progress")))
        return item

    def _open_call(self, call: _Call, events: _Out) -> None:
        self._close("completed", events)
        item_id = self._ids.new("fc_")
        call.id = call.id or self._ids.call_id()
        self._open = _Open("function_call", item_id, len(self.response.output), call=call)
        added = FunctionCallItem(
            id=item_id, call_id=call.id, name=call.name, arguments="", status="in_progress"
        )
        events.append(self._added(added))

    def _flush(self, last_status: ItemStatus) -> _Out:
        """Close the open item and write everything held; the last item gets `last_status`."""
        events: _Out = []
        held, self._held = self._held, []
        self._live = None
        if held:
            self._close("completed", events)
        for position, (kind, value) in enumerate(held):
            if kind == "function_call":
                self._open_call(value, events)
                pending, value.arguments = value.arguments, ""
                if pending:
                    self._write("function_call", pending, events)
            else:
                self._write(kind, value, events)
            if position < len(held) - 1:
                self._close("completed", events)
        self._close(last_status, events)
        return events

    def _close(self, status: ItemStatus, events: _Out) -> None:
        item, self._open = self._open, None
        if item is None:
            return
        at = {"item_id": item.id, "output_index": item.output_index}
        final: OutputItem
        if item.kind == "reasoning" and self._summary:
            summary = SummaryText(text=item.text)
            events.append(
                ReasoningSummaryTextDoneEvent(
                    sequence_number=self._next(), summary_index=0, text=item.text, **at
                )
            )
            events.append(
                ReasoningSummaryPartDoneEvent(
                    sequence_number=self._next(), summary_index=0, part=summary, **at
                )
            )
            final = ReasoningItem(id=item.id, summary=[summary], status=status)
        elif item.kind == "reasoning":
            part = ReasoningText(text=item.text)
            events.append(
                ReasoningTextDoneEvent(
                    sequence_number=self._next(), content_index=0, text=item.text, **at
                )
            )
            events.append(
                ContentPartDoneEvent(sequence_number=self._next(), content_index=0, part=part, **at)
            )
            final = ReasoningItem(id=item.id, content=[part], status=status)
        elif item.kind == "message":
            self._close_part(item, events)
            final = OutputMessage(id=item.id, status=status, content=item.parts)
        else:
            assert item.call is not None
            arguments = tool_arguments(item.text)
            events.append(
                FunctionCallArgumentsDoneEvent(
                    sequence_number=self._next(), name=item.call.name, arguments=arguments, **at
                )
            )
            final = FunctionCallItem(
                id=item.id,
                call_id=item.call.id,
                name=item.call.name,
                arguments=arguments,
                status=status,
            )
        self.response.output.append(final)
        events.append(
            OutputItemDoneEvent(
                sequence_number=self._next(), output_index=item.output_index, item=final
            )
        )

    def _close_part(self, item: _Open, events: _Out) -> None:
        if item.part is None:
            return
        at = {
            "item_id": item.id,
            "output_index": item.output_index,
            "content_index": len(item.parts),
        }
        part: OutputContent
        if item.part == "output_text":
            part = OutputText(text=item.text)
            events.append(OutputTextDoneEvent(sequence_number=self._next(), text=item.text, **at))
        else:
            part = Refusal(refusal=item.text)
            events.append(RefusalDoneEvent(sequence_number=self._next(), refusal=item.text, **at))
        events.append(ContentPartDoneEvent(sequence_number=self._next(), part=part, **at))
        item.parts.append(part)
        item.part, item.pieces = None, []

    # -- event helpers -------------------------------------------------------------------------

    def _next(self) -> int:
        number = self._sequence
        self._sequence += 1
        return number

    def _snapshot(self) -> Response:
        return self.response.model_copy(deep=True)

    def _added(self, item: OutputItem) -> OutputItemAddedEvent:
        assert self._open is not None
        return OutputItemAddedEvent(
            sequence_number=self._next(), output_index=self._open.output_index, item=item
        )

    def _part_added(
        self, item: _Open, index: int, part: OutputContent | ReasoningText
    ) -> ContentPartAddedEvent:
        return ContentPartAddedEvent(
            sequence_number=self._next(),
            item_id=item.id,
            output_index=item.output_index,
            content_index=index,
            part=part,
        )


def _dump(*events: BaseModel | StreamEvent) -> list[StreamEvent]:
    return [e if isinstance(e, dict) else e.model_dump(mode="json") for e in events]

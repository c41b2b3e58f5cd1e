"""OpenAI Chat stream chunks -> Responses API stream events: a `feed`/`finish`/`fail` machine.

One output item is open at a time, as OpenAI streams them: reasoning, then the message, then
one `function_call` per tool index. Each chunk is read whole, in the order reasoning, content,
refusal, tool calls, finish reason, usage (a chunk may carry several). The stream always
starts with `response.created` and `response.in_progress` and always ends with exactly one
terminal event: `response.completed`, `response.incomplete` (token limit, content filter) or
`response.failed` (`fail`), each carrying the whole response with its usage.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from cortex.errors import UpstreamError
from cortex.protocol.openai import ChatCompletionChunk, ToolCallDelta, Usage
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
)
from cortex.protocol.responses_events import (
    ContentPartAddedEvent,
    ContentPartDoneEvent,
    FunctionCallArgumentsDeltaEvent,
    FunctionCallArgumentsDoneEvent,
    OutputItemAddedEvent,
    OutputItemDoneEvent,
    OutputTextDeltaEvent,
    OutputTextDoneEvent,
    ReasoningTextDeltaEvent,
    ReasoningTextDoneEvent,
    RefusalDeltaEvent,
    RefusalDoneEvent,
    ResponseCompletedEvent,
    ResponseCreatedEvent,
    ResponseFailedEvent,
    ResponseIncompleteEvent,
    ResponseInProgressEvent,
    ResponseStreamEvent,
)
from cortex.translate.ids import IdFactory
from cortex.translate.responses_api import (
    response_error,
    response_shell,
    response_status,
    response_usage,
    tool_arguments,
)

__all__ = ["ResponsesStreamTranslator"]

_PartKind = Literal["output_text", "refusal"]


@dataclass
class _OpenItem:
    """The output item being streamed, with what it has gathered so far."""

    kind: Literal["reasoning", "message", "function_call"]
    id: str
    output_index: int
    text: str = ""  # reasoning text, or the open part's text
    parts: list[OutputContent] = field(default_factory=list)  # closed message parts
    part: _PartKind | None = None  # the open message part
    tool_index: int = -1
    call_id: str = ""
    name: str = ""


@dataclass
class _PendingCall:
    """A tool call seen but not yet opened: its name may still be arriving."""

    index: int
    id: str = ""
    name: str = ""
    arguments: str = ""


class ResponsesStreamTranslator:
    """Turns the chunks of one streamed Chat reply into Responses API events.

    Args:
        request: the Responses request being served (echoed in the response object).
        ids: where the response id, item ids and `created_at` come from; drawn in output
            order, as `chat_to_response` draws them.

    Example:
        >>> t = ResponsesStreamTranslator(request, IdFactory(seed=0, created=0))
        >>> events = t.start()  # response.created, response.in_progress: send them at once
        >>> for chunk in chunks:
        ...     events += t.feed(chunk)
        >>> events += t.finish()  # or t.fail(error) when the upstream broke
    """

    def __init__(self, request: ResponsesRequest, ids: IdFactory) -> None:
        self._ids = ids
        self._response = response_shell(request, ids.new("resp_"), ids.created())
        self._sequence = 0
        self._started = False
        self._ended = False
        self._open: _OpenItem | None = None
        self._pending: _PendingCall | None = None
        self._closed_tools: set[int] = set()
        self._finish_reason: str | None = None
        self._usage: Usage | None = None

    @property
    def response(self) -> Response:
        """The response as it stands (final once `finish` or `fail` returned)."""
        return self._response

    @property
    def ended(self) -> bool:
        """Whether the terminal event has been emitted."""
        return self._ended

    def start(self) -> list[ResponseStreamEvent]:
        """`response.created` and `response.in_progress` (once; later calls return nothing)."""
        if self._started:
            return []
        self._started = True
        return [
            ResponseCreatedEvent(sequence_number=self._next(), response=self._snapshot()),
            ResponseInProgressEvent(sequence_number=self._next(), response=self._snapshot()),
        ]

    def feed(self, chunk: ChatCompletionChunk | Mapping[str, Any]) -> list[ResponseStreamEvent]:
        """The events for one Chat chunk (a model or its parsed JSON).

        Raises:
            UpstreamError: arguments for a tool call that was already closed (the upstream
                interleaved tool calls); call `fail` with it.
        """
        if isinstance(chunk, Mapping):
            chunk = ChatCompletionChunk.model_validate(chunk)
        events = self.start()
        if self._ended:
            return events
        for choice in chunk.choices[:1]:
            delta = choice.delta
            reasoning = delta.reasoning_content or delta.reasoning
            if reasoning:
                events += self._reasoning(reasoning)
            if delta.content:
                events += self._message_text("output_text", delta.content)
            if delta.refusal:
                events += self._message_text("refusal", delta.refusal)
            for call in _coalesce(delta.tool_calls or []):
                events += self._tool_call(call)
            if choice.finish_reason is not None:
                self._finish_reason = choice.finish_reason
        if chunk.usage is not None:
            self._usage = chunk.usage
        return events

    def finish(self) -> list[ResponseStreamEvent]:
        """Close the open item and emit `response.completed` or `response.incomplete`."""
        events = self.start()
        if self._ended:
            return events
        status, incomplete = response_status(self._finish_reason)
        item_status: ItemStatus = "incomplete" if status == "incomplete" else "completed"
        events += self._close(item_status)
        self._ended = True
        self._response.status = status
        self._response.incomplete_details = incomplete
        self._response.usage = response_usage(self._usage)
        final = self._snapshot()
        if status == "incomplete":
            return [*events, ResponseIncompleteEvent(sequence_number=self._next(), response=final)]
        return [*events, ResponseCompletedEvent(sequence_number=self._next(), response=final)]

    def fail(self, error: BaseException) -> list[ResponseStreamEvent]:
        """Close the open item as incomplete and emit `response.failed` carrying `error`."""
        events = self.start()
        if self._ended:
            return events
        events += self._close("incomplete")
        self._ended = True
        self._response.status = "failed"
        self._response.error = response_error(error)
        self._response.usage = response_usage(self._usage)
        failed = ResponseFailedEvent(sequence_number=self._next(), response=self._snapshot())
        return [*events, failed]

    # -- items ---------------------------------------------------------------------------

    def _reasoning(self, text: str) -> list[ResponseStreamEvent]:
        events: list[ResponseStreamEvent] = []
        item = self._open
        if item is None or item.kind != "reasoning":
            events += self._close("completed")
            item = self._begin("reasoning", "rs_")
            events.append(self._added(ReasoningItem(id=item.id, content=[], status="in_progress")))
            events.append(self._part_added(item, 0, ReasoningText(text="")))
        item.text += text
        events.append(
            ReasoningTextDeltaEvent(
                sequence_number=self._next(),
                item_id=item.id,
                output_index=item.output_index,
                content_index=0,
                delta=text,
            )
        )
        return events

    def _message_text(self, kind: _PartKind, text: str) -> list[ResponseStreamEvent]:
        events: list[ResponseStreamEvent] = []
        item = self._open
        if item is None or item.kind != "message":
            events += self._close("completed")
            item = self._begin("message", "msg_")
            events.append(self._added(OutputMessage(id=item.id, status="in_progress")))
        if item.part != kind:
            events += self._close_part(item)
            item.part = kind
            empty: OutputContent = (
                OutputText(text="") if kind == "output_text" else Refusal(refusal="")
            )
            events.append(self._part_added(item, len(item.parts), empty))
        item.text += text
        where: dict[str, Any] = {"item_id": item.id, "output_index": item.output_index}
        if kind == "output_text":
            events.append(
                OutputTextDeltaEvent(
                    sequence_number=self._next(), content_index=len(item.parts), delta=text, **where
                )
            )
        else:
            events.append(
                RefusalDeltaEvent(
                    sequence_number=self._next(), content_index=len(item.parts), delta=text, **where
                )
            )
        return events

    def _tool_call(self, call: _PendingCall) -> list[ResponseStreamEvent]:
        events: list[ResponseStreamEvent] = []
        item = self._open
        if item is not None and item.kind == "function_call" and item.tool_index == call.index:
            item.name += call.name
            return events + self._arguments(item, call.arguments)
        pending = self._pending
        if pending is not None and pending.index == call.index:
            pending.id = pending.id or call.id
            pending.name += call.name
            pending.arguments += call.arguments
        else:
            if call.index in self._closed_tools:
                raise UpstreamError(
                    f"tool call {call.index} got more arguments after tool call "
                    f"{(item.tool_index if item else call.index)} started"
                )
            events += self._close("completed")
            self._pending = pending = call
        # Open the call once its arguments start: its name (maybe sent in pieces) is whole.
        if pending.arguments and pending.name:
            events += self._open_pending()
        return events

    def _open_pending(self) -> list[ResponseStreamEvent]:
        pending = self._pending
        assert pending is not None
        self._pending = None
        self._closed_tools.add(pending.index)
        item = self._begin("function_call", "fc_")
        item.tool_index = pending.index
        item.call_id = pending.id or self._ids.call_id()
        item.name = pending.name
        added = FunctionCallItem(
            id=item.id, call_id=item.call_id, name=item.name, arguments="", status="in_progress"
        )
        return [self._added(added), *self._arguments(item, pending.arguments)]

    def _arguments(self, item: _OpenItem, fragment: str) -> list[ResponseStreamEvent]:
        if not fragment:
            return []
        item.text += fragment
        return [
            FunctionCallArgumentsDeltaEvent(
                sequence_number=self._next(),
                item_id=item.id,
                output_index=item.output_index,
                delta=fragment,
            )
        ]

    # -- opening and closing -------------------------------------------------------------

    def _begin(
        self, kind: Literal["reasoning", "message", "function_call"], prefix: str
    ) -> _OpenItem:
        item = _OpenItem(
            kind=kind, id=self._ids.new(prefix), output_index=len(self._response.output)
        )
        self._open = item
        return item

    def _close(self, status: ItemStatus) -> list[ResponseStreamEvent]:
        """Close the open item (and open, then close, a call still pending)."""
        events: list[ResponseStreamEvent] = []
        if self._pending is not None:
            if self._open is not None:
                events += self._close_open("completed")
            events += self._open_pending()
        if self._open is not None:
            events += self._close_open(status)
        return events

    def _close_open(self, status: ItemStatus) -> list[ResponseStreamEvent]:
        item = self._open
        assert item is not None
        self._open = None
        where: dict[str, Any] = {"item_id": item.id, "output_index": item.output_index}
        events: list[ResponseStreamEvent] = []
        final: OutputItem
        if item.kind == "reasoning":
            part = ReasoningText(text=item.text)
            events.append(
                ReasoningTextDoneEvent(
                    sequence_number=self._next(), content_index=0, text=item.text, **where
                )
            )
            events.append(
                ContentPartDoneEvent(
                    sequence_number=self._next(), content_index=0, part=part, **where
                )
            )
            final = ReasoningItem(id=item.id, content=[part], status=status)
        elif item.kind == "message":
            events += self._close_part(item)
            final = OutputMessage(id=item.id, status=status, content=item.parts)
        else:
            arguments = tool_arguments(item.text)
            events.append(
                FunctionCallArgumentsDoneEvent(
                    sequence_number=self._next(), name=item.name, arguments=arguments, **where
                )
            )
            final = FunctionCallItem(
                id=item.id,
                call_id=item.call_id,
                name=item.name,
                arguments=arguments,
                status=status,
            )
        self._response.output.append(final)
        done = OutputItemDoneEvent(
            sequence_number=self._next(), output_index=item.output_index, item=final
        )
        return [*events, done]

    def _close_part(self, item: _OpenItem) -> list[ResponseStreamEvent]:
        if item.part is None:
            return []
        index = len(item.parts)
        where: dict[str, Any] = {
            "item_id": item.id,
            "output_index": item.output_index,
            "content_index": index,
        }
        part: OutputContent
        done: ResponseStreamEvent
        if item.part == "output_text":
            part = OutputText(text=item.text)
            done = OutputTextDoneEvent(sequence_number=self._next(), text=item.text, **where)
        else:
            part = Refusal(refusal=item.text)
            done = RefusalDoneEvent(sequence_number=self._next(), refusal=item.text, **where)
        item.parts.append(part)
        item.part, item.text = None, ""
        return [done, ContentPartDoneEvent(sequence_number=self._next(), part=part, **where)]

    # -- event helpers -------------------------------------------------------------------

    def _next(self) -> int:
        number = self._sequence
        self._sequence += 1
        return number

    def _snapshot(self) -> Response:
        return self._response.model_copy(deep=True)

    def _added(self, item: OutputItem) -> OutputItemAddedEvent:
        assert self._open is not None
        return OutputItemAddedEvent(
            sequence_number=self._next(), output_index=self._open.output_index, item=item
        )

    def _part_added(
        self, item: _OpenItem, index: int, part: OutputContent | ReasoningText
    ) -> ContentPartAddedEvent:
        return ContentPartAddedEvent(
            sequence_number=self._next(),
            item_id=item.id,
            output_index=item.output_index,
            content_index=index,
            part=part,
        )


def _coalesce(deltas: list[ToolCallDelta]) -> list[_PendingCall]:
    """One fragment per tool index, in index order (openai/openai-python#3201)."""
    calls: dict[int, _PendingCall] = {}
    for delta in deltas:
        call = calls.setdefault(delta.index, _PendingCall(index=delta.index))
        function = delta.function or {}
        call.id = call.id or delta.id or ""
        name = function.get("name")
        call.name += name if isinstance(name, str) else ""
        arguments = function.get("arguments")
        if arguments is not None:
            call.arguments += arguments if isinstance(arguments, str) else json.dumps(arguments)
    return [calls[index] for index in sorted(calls)]

"""`ToolCallReader`: a reply's tool calls, read out of the text the model writes them in."""

from __future__ import annotations

import logging
from dataclasses import replace

from cortex.engine.tool_calls import ToolCall as ParsedCall
from cortex.engine.tool_calls import ToolCallArguments, ToolCallParser, ToolCallStart
from cortex.neuron.types import FinishReason, GenerationEvent, ToolCall, ToolCallDelta

__all__ = ["ToolCallReader"]

logger = logging.getLogger(__name__)


class ToolCallReader:
    """Turns the generation events of one reply into events with `tool_calls`.

    Text goes through the format's parser (see `cortex.engine.tool_calls`): what may become a
    call is held back, complete calls come out as `ToolCall`s, calls a format streams as
    `ToolCallDelta`s, in the order written (an event whose text follows a call is split in
    two). A reply that called a tool and ended by a stop token or `max_tokens` ends with
    `finish_reason` `tool_calls`, unless `max_tokens` cut a call short while its arguments
    streamed: that reply keeps `length`, so a client can tell the call is incomplete (its
    arguments are closed where they broke off; see `ToolCallParser.cut_calls`). Every call
    cut short is logged.

    Args:
        parser: a fresh parser for the reply (primed with any prefill).
    """

    def __init__(self, parser: ToolCallParser) -> None:
        self.parser = parser
        self.called = False

    def read(self, event: GenerationEvent) -> list[GenerationEvent]:
        """The events that stand for `event` (one, unless text follows a call in it)."""
        parser = self.parser
        cut_before = parser.cut_calls
        items = parser.feed(event.text)
        ended_in_call = False
        if event.finish_reason is not None:
            cut_fed = parser.cut_calls
            items += parser.finish()
            ended_in_call = parser.cut_calls > cut_fed
        if parser.cut_calls > cut_before:
            logger.warning(
                "a tool call's arguments broke off after they began to stream; "
                "closed where they stood (reply ended: %s)",
                ended_in_call,
            )
        groups: list[tuple[str, list[ToolCall | ToolCallDelta]]] = [("", [])]
        for item in items:
            if isinstance(item, str):
                if groups[-1][1]:  # text after a call: a new event keeps the order
                    groups.append((item, []))
                else:
                    groups[-1] = (groups[-1][0] + item, groups[-1][1])
                continue
            self.called = True
            calls = groups[-1][1]
            if isinstance(item, ParsedCall):
                if any(isinstance(call, ToolCallDelta) for call in calls):
                    groups.append(("", []))  # whole calls go first in an event: a new one
                    calls = groups[-1][1]
                calls.append(ToolCall(item.id, item.name, item.arguments))
            elif isinstance(item, ToolCallStart):
                calls.append(ToolCallDelta("", item.id, item.name))
            elif isinstance(item, ToolCallArguments):
                previous = calls[-1] if calls else None
                if isinstance(previous, ToolCallDelta):  # one piece per call and event
                    calls[-1] = replace(previous, arguments=previous.arguments + item.text)
                else:
                    calls.append(ToolCallDelta(item.text))
        finish: FinishReason | None = event.finish_reason
        if (
            self.called
            and finish in ("stop", "length")
            and not (finish == "length" and ended_in_call)
        ):
            finish = "tool_calls"
        last = len(groups) - 1
        return [
            GenerationEvent(
                text=text,
                token_count=event.token_count if i == 0 else 0,
                tool_calls=_whole(calls),
                logprobs=event.logprobs if i == 0 else None,
                reasoning=event.reasoning if i == 0 else "",
                tool_call_deltas=_pieces(calls),
            )
            if i < last
            else replace(
                event,
                text=text,
                token_count=event.token_count if i == 0 else 0,
                tool_calls=_whole(calls),
                logprobs=event.logprobs if i == 0 else None,
                reasoning=event.reasoning if i == 0 else "",
                tool_call_deltas=_pieces(calls),
                finish_reason=finish,
            )
            for i, (text, calls) in enumerate(groups)
        ]


def _whole(calls: list[ToolCall | ToolCallDelta]) -> tuple[ToolCall, ...]:
    return tuple(call for call in calls if isinstance(call, ToolCall))


def _pieces(calls: list[ToolCall | ToolCallDelta]) -> tuple[ToolCallDelta, ...]:
    # Whole calls go first in an event's chunks, then the pieces (`CompletionBuilder`).
    return tuple(call for call in calls if isinstance(call, ToolCallDelta))

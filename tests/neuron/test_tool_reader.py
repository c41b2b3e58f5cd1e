"""ToolCallReader: generation events in, events with tool calls out, in the order written."""

from __future__ import annotations

import itertools

from cortex.engine.tool_calls import HERMES
from cortex.neuron.tool_reader import ToolCallReader
from cortex.neuron.types import GenerationEvent, TokenUsage, ToolCall

CALL = '<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>'


def reader() -> ToolCallReader:
    counter = itertools.count()
    return ToolCallReader(HERMES.parser(new_id=lambda: f"call_{next(counter)}"))


def test_text_after_a_call_becomes_its_own_event() -> None:
    events = reader().read(
        GenerationEvent(text="Hi " + CALL + " bye", token_count=1, logprobs=[{"token": "x"}])
    )
    assert events == [
        GenerationEvent(
            text="Hi",
            token_count=1,
            tool_calls=(ToolCall("call_0", "get_time", "{}"),),
            logprobs=[{"token": "x"}],
        ),
        GenerationEvent(text="bye"),
    ]


def test_a_reply_that_called_ends_with_tool_calls() -> None:
    read = reader()
    assert read.read(GenerationEvent(text=CALL[:5], token_count=1)) == [
        GenerationEvent(token_count=1)
    ]
    assert read.read(GenerationEvent(text=CALL[5:], token_count=1)) == [
        GenerationEvent(token_count=1, tool_calls=(ToolCall("call_0", "get_time", "{}"),))
    ]
    usage = TokenUsage(10, 2)
    last = GenerationEvent(finish_reason="length", usage=usage, stop_string=None)
    assert read.read(last) == [GenerationEvent(finish_reason="tool_calls", usage=usage)]


def test_without_a_call_the_finish_reason_and_stop_string_stay() -> None:
    read = reader()
    assert read.read(GenerationEvent(text="a <tool", token_count=1)) == [
        GenerationEvent(text="a", token_count=1)
    ]
    end = GenerationEvent(finish_reason="stop", stop_string="END")
    assert read.read(end) == [
        GenerationEvent(text=" <tool", finish_reason="stop", stop_string="END")
    ]

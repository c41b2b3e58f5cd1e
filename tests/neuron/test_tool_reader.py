"""ToolCallReader: generation events in, events with tool calls out, in the order written."""

from __future__ import annotations

import itertools

from cortex.engine.tool_calls import HERMES
from cortex.neuron.tool_reader import ToolCallReader
from cortex.neuron.types import GenerationEvent, TokenUsage, ToolCall, ToolCallDelta

CALL = '<tool_call>\n{"name": "get_time"}\n</tool_call>'  # no arguments: read whole
STREAMED = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'


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


def test_a_streamed_call_comes_as_deltas_in_the_events_that_write_it() -> None:
    read = reader()
    cut = STREAMED.index("Par")
    first = read.read(GenerationEvent(text=STREAMED[:cut], token_count=1))
    assert first == [
        GenerationEvent(
            token_count=1, tool_call_deltas=(ToolCallDelta('{"city": "', "call_0", "get_weather"),)
        )
    ]
    assert read.read(GenerationEvent(text="Par", token_count=1)) == [
        GenerationEvent(token_count=1, tool_call_deltas=(ToolCallDelta("Par"),))
    ]
    rest = read.read(GenerationEvent(text=STREAMED[cut + 3 :] + CALL, token_count=1))
    # The streamed call's last piece, then the whole call in an event of its own.
    assert rest == [
        GenerationEvent(token_count=1, tool_call_deltas=(ToolCallDelta('is"}'),)),
        GenerationEvent(tool_calls=(ToolCall("call_1", "get_time", "{}"),)),
    ]


def test_a_call_cut_by_max_tokens_keeps_the_finish_reason_length() -> None:
    read = reader()
    usage = TokenUsage(10, 2)
    read.read(GenerationEvent(text=STREAMED[: STREAMED.index("ris")], token_count=1))
    last = read.read(GenerationEvent(text="r", token_count=1, finish_reason="length", usage=usage))
    assert last == [
        GenerationEvent(
            token_count=1,
            tool_call_deltas=(ToolCallDelta('r"}'),),
            finish_reason="length",
            usage=usage,
        )
    ]
    assert read.parser.cut_calls == 1
    # A call the model closed before max_tokens ran out ends the reply as a tool call.
    whole = reader()
    whole.read(GenerationEvent(text=STREAMED, token_count=1))
    end = whole.read(GenerationEvent(text=" x", finish_reason="length", usage=usage))
    assert end[-1].finish_reason == "tool_calls" and whole.parser.cut_calls == 0

"""Qwen3-Coder's XML tool calls: typed by the schema, streamed piece by piece, the same
whatever the split of the text into deltas."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cortex.engine.tool_calls import (
    HERMES,
    QWEN3_XML,
    Item,
    ToolCall,
    ToolCallArguments,
    ToolCallStart,
    detect_format,
)

SCHEMAS: Any = {
    "get_weather": {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "days": {"type": "integer"},
            "hourly": {"type": "boolean"},
            "units": {"type": "object"},
        },
    }
}
CALL = (
    '<tool_call>\n<function=get_weather>\n<parameter=city>\nSão "Paulo"\n\n</parameter>\n'
    "<parameter=days>\n3\n</parameter>\n<parameter=hourly>\nTrue\n</parameter>\n"
    '<parameter=units>\n{"t": "C"}\n</parameter>\n<parameter=note>\n7\n</parameter>\n'
    "</function>\n</tool_call>"
)
ARGUMENTS = {"city": 'São "Paulo"\n', "days": 3, "hourly": True, "units": {"t": "C"}, "note": 7}


def run(text: str, cuts: list[int] = (), prefill: str = "") -> list[Item]:  # type: ignore[assignment]
    parser = QWEN3_XML.parser(prefill=prefill, tool_names=set(SCHEMAS), tool_schemas=SCHEMAS)
    edges = [0, *sorted(c % (len(text) + 1) for c in cuts), len(text)]
    items: list[Item] = []
    for start, end in itertools.pairwise(edges):
        items += parser.feed(text[start:end])
    return items + parser.finish()


def summary(items: list[Item]) -> tuple[str, list[tuple[str, Any]]]:
    """The text, and each call's name and parsed arguments."""
    text = "".join(i for i in items if isinstance(i, str))
    calls: list[list[Any]] = []
    for item in items:
        if isinstance(item, ToolCallStart):
            calls.append([item.name, ""])
        elif isinstance(item, ToolCallArguments):
            calls[-1][1] += item.text
        elif isinstance(item, ToolCall):
            calls.append([item.name, item.arguments])
    return text, [(name, json.loads(arguments)) for name, arguments in calls]


def test_a_call_is_typed_by_its_schema() -> None:
    items = run(f"Let me check.\n{CALL}\n")
    assert summary(items) == ("Let me check.", [("get_weather", ARGUMENTS)])
    assert isinstance(items[1], ToolCallStart) and items[1].id.startswith("call_")


@given(st.lists(st.integers(0, 400), max_size=8))
def test_every_split_gives_the_same_call(cuts: list[int]) -> None:
    text = f"Hi.\n{CALL}\n{CALL}\nDone."
    assert summary(run(text, cuts)) == summary(run(text))


def test_a_string_value_streams_as_it_is_written() -> None:
    parser = QWEN3_XML.parser(tool_schemas=SCHEMAS)
    head = parser.feed("<tool_call>\n<function=get_weather>\n<parameter=city>\nPa")
    assert [type(i).__name__ for i in head] == [
        "ToolCallStart",
        "ToolCallArguments",
        "ToolCallArguments",
    ]
    assert "".join(i.text for i in head if isinstance(i, ToolCallArguments)) == '{"city": "Pa'
    assert parser.feed("ris") == [ToolCallArguments("ris")]
    rest = parser.feed("\n</parameter>\n</function>") + parser.finish()
    assert "".join(i.text for i in rest if isinstance(i, ToolCallArguments)) == '"}'


def test_a_call_cut_by_the_end_of_the_reply_is_closed() -> None:
    text = "<tool_call>\n<function=get_weather>\n<parameter=city>\nPar"
    assert summary(run(text)) == ("", [("get_weather", {"city": "Par"})])
    assert summary(run("<tool_call>\n<function=get_weather>\n")) == ("", [("get_weather", {})])


@pytest.mark.parametrize(
    "text", ["a <tool_call> b", "<tool_call>\n<function=", "x <function=>y", "<tool_call>{bad"]
)
def test_what_opens_no_function_is_text(text: str) -> None:
    assert summary(run(text)) == (text, [])


def test_a_json_body_is_read_as_hermes_writes_it() -> None:
    text = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'
    assert summary(run(text)) == ("", [("get_weather", {"city": "Oslo"})])


def test_a_prefill_that_opens_the_call_is_continued() -> None:
    prefill = QWEN3_XML.forced_prefix("get_weather")
    items = run("<parameter=days>\n2\n</parameter>\n</function>", prefill=prefill)
    assert summary(items) == ("", [("get_weather", {"days": 2})])
    assert isinstance(items[0], ToolCallStart)
    named = run("get_weather>\n</function>", prefill=QWEN3_XML.forced_prefix(None))
    assert summary(named) == ("", [("get_weather", {})])


def test_the_template_names_the_format() -> None:
    coder = "{% for t in tools %}<function={{ t.name }}>{% endfor %}<tool_call>"
    assert detect_format(coder) is QWEN3_XML
    assert detect_format("<tool_call>{{ x }}</tool_call>") is HERMES

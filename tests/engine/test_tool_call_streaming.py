"""Tool calls streamed piece by piece: `JsonPrefix` (every piece keeps the arguments a JSON
prefix that closes), `CallStream`'s head, and each JSON format's calls as argument deltas,
including calls that break after they started."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cortex.engine.tool_calls import (
    HERMES,
    LLAMA3_JSON,
    MISTRAL,
    QWEN3_XML,
    Item,
    ToolCall,
    ToolCallFormat,
    ToolCallStart,
)
from cortex.engine.tool_calls.call_stream import CallHead, read_head
from cortex.engine.tool_calls.json_stream import JsonPrefix

from .tool_items import calls

NAMES = {"get_weather", "write_file"}


def run(fmt: ToolCallFormat, deltas: list[str], prefill: str = "") -> tuple[list[Item], int]:
    counter = itertools.count()
    parser = fmt.parser(prefill=prefill, tool_names=NAMES, new_id=lambda: f"call_{next(counter)}")
    items: list[Item] = []
    for delta in deltas:
        items += parser.feed(delta)
    return items + parser.finish(), parser.cut_calls


def text(items: list[Item]) -> str:
    return "".join(item for item in items if isinstance(item, str))


# -- JsonPrefix -----------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=8,
)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(st.text(max_size=4), json_values, max_size=4),
    st.sampled_from([None, 1]),
    st.lists(st.integers(0, 10_000), max_size=10),
)
def test_every_piece_keeps_the_object_a_closable_prefix(
    value: dict[str, Any], indent: int | None, cuts: list[int]
) -> None:
    written = json.dumps(value, indent=indent, ensure_ascii=False)
    prefix = JsonPrefix()
    taken = ""
    edges = [0, *sorted(c % (len(written) + 1) for c in cuts), len(written)]
    for start, end in itertools.pairwise(edges):
        assert prefix.feed(written[start:end]) == end - start
        taken += prefix.take()
        if taken:  # from its `{` on, what was taken closes at every step
            assert isinstance(json.loads(taken + prefix.closing()), dict)
        assert written.startswith(taken)
    assert prefix.done and not prefix.broken
    assert taken == written and prefix.closing() == ""


@pytest.mark.parametrize(
    ("written", "taken", "closed"),
    [
        ('{"city": "Pa', '{"city": "Pa', '{"city": "Pa"}'),
        ('{"a": [1, {"b": tr', '{"a": [1, {', '{"a": [1, {}]}'),
        ('{"a": 1, "b', '{"a": 1', '{"a": 1}'),  # a key waits for its value
        ('{"a": -', "{", "{}"),
        ('{"a": 2.', '{"a": 2', '{"a": 2}'),
        ('{"a": 2.5e', '{"a": 2.5', '{"a": 2.5}'),
        ('{"a": "x\\u00', '{"a": "x', '{"a": "x"}'),  # half an escape waits
    ],
)
def test_what_cannot_close_yet_is_held(written: str, taken: str, closed: str) -> None:
    prefix = JsonPrefix()
    prefix.feed(written)
    assert prefix.take() == taken
    assert taken + prefix.closing() == closed
    json.loads(closed)


def test_a_character_that_breaks_the_json_stops_it() -> None:
    prefix = JsonPrefix()
    written = '{"city": Paris}'
    assert prefix.feed(written) == written.index("P")
    assert prefix.broken and prefix.take() + prefix.closing() == "{}"
    assert JsonPrefix().feed('["not", "an object"]') == 0


def test_raw_control_characters_in_strings_are_escaped() -> None:
    prefix = JsonPrefix()
    prefix.feed('{"code": "a\n\tb"}')
    assert json.loads(prefix.take()) == {"code": "a\n\tb"}


# -- the call's head ------------------------------------------------------------------------


def test_a_head_is_read_only_as_models_lay_it_out() -> None:
    head = ' {"name": "get_weather", "arguments": {"city"'
    assert read_head(head) == CallHead("get_weather", head.index('{"city'))
    for cut in range(head.index('{"city')):
        assert read_head(head[:cut]) == "more"
    assert read_head('{"name": "f", "parameters": {') == CallHead("f", 28)
    assert read_head('{"arguments": {}, "name": "f"}') is None  # read whole instead
    assert read_head('{"name": "f", "arguments": "{}"}') is None
    assert read_head('{"name": "f"}') is None
    assert read_head('{"name": "", "arguments": {') is None
    assert read_head('{"name": "' + "x" * 300) is None


# -- Hermes ---------------------------------------------------------------------------------

CODE = 'def f():\n    return "</b>"\n'
HERMES_CALL = (
    '<tool_call>\n{"name": "write_file", "arguments": '
    + json.dumps({"path": "a.py", "text": CODE, "mode": 420})
    + "}\n</tool_call>"
)


def test_hermes_arguments_stream_as_they_are_written() -> None:
    tokens = [HERMES_CALL[i : i + 3] for i in range(0, len(HERMES_CALL), 3)]
    items, cut = run(HERMES, ["Writing it.\n", *tokens, "\nDone."])
    [(name, arguments, pieces)] = calls(items)
    assert name == "write_file" and pieces > 10
    assert json.loads(arguments) == {"path": "a.py", "text": CODE, "mode": 420}
    assert text(items) == "Writing it.Done." and cut == 0
    whole, _ = run(HERMES, ["Writing it.\n" + HERMES_CALL + "\nDone."])
    assert calls(whole) == [(name, arguments, 1)]  # the same arguments, in one piece


def test_hermes_a_call_that_breaks_after_it_started_is_closed_and_the_next_one_read() -> None:
    broken = '<tool_call>\n{"name": "get_weather", "arguments": {"city": Paris}}\n</tool_call>\n'
    later = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Rome"}}\n</tool_call>'
    for deltas in ([broken + later + " ok"], list(broken + later + " ok")):
        items, cut = run(HERMES, deltas)
        named = [(name, json.loads(arguments)) for name, arguments, _ in calls(items)]
        assert named == [("get_weather", {}), ("get_weather", {"city": "Rome"})]
        assert text(items) == "ok" and cut == 1


def test_hermes_the_closing_marker_inside_open_arguments_ends_the_call() -> None:
    items, cut = run(HERMES, ['<tool_call>{"name": "get_weather", "arguments": {"city": "Ro', "m"])
    assert [json.loads(a) for _, a, _ in calls(items)] == [{"city": "Rom"}] and cut == 1
    cut_by_marker = '<tool_call>{"name": "get_weather", "arguments": {"city": "Ro</tool_call>x'
    items, cut = run(HERMES, list(cut_by_marker))
    assert [json.loads(a) for _, a, _ in calls(items)] == [{"city": "Ro"}]
    assert text(items) == "x" and cut == 1


def test_hermes_layouts_that_cannot_stream_are_read_whole() -> None:
    written = (
        '<tool_call>{"arguments": {"city": "Oslo"}, "name": "get_weather"}</tool_call>'
        '<tool_call>{"name": "get_weather", "arguments": "{\\"city\\": \\"Rome\\"}"}</tool_call>'
    )
    items, _ = run(HERMES, list(written))
    assert [type(item) for item in items] == [ToolCall, ToolCall]
    assert [json.loads(call.arguments) for call in items if isinstance(call, ToolCall)] == [
        {"city": "Oslo"},
        {"city": "Rome"},
    ]


def test_a_prefill_that_opened_the_arguments_is_part_of_the_call() -> None:
    prefill = HERMES.forced_prefix("get_weather") + '{"city": "'
    items, cut = run(HERMES, ["Pa", "ris", '"}}\n</tool_call>'], prefill=prefill)
    assert isinstance(items[0], ToolCallStart)
    [(_, arguments, _)] = calls(items)
    assert json.loads(arguments) == {"city": "Paris"} and cut == 0


# -- Llama 3, Mistral, Qwen3's JSON body ----------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "written"),
    [
        (LLAMA3_JSON, '{"name": "get_weather", "parameters": {"city": "Paris"}}'),
        (LLAMA3_JSON, '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"}}'),
        (MISTRAL, '[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris"}}]'),
        (MISTRAL, '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}'),
        (QWEN3_XML, '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}'),
    ],
    ids=["llama", "llama-tag", "mistral", "mistral-v11", "qwen3-json"],
)
def test_each_json_format_streams_its_arguments(fmt: ToolCallFormat, written: str) -> None:
    items, cut = run(fmt, list(written))
    [(name, arguments, pieces)] = calls(items)
    assert name == "get_weather" and json.loads(arguments) == {"city": "Paris"}
    assert pieces > 5 and cut == 0 and text(items) == ""


def test_a_mistral_array_streams_each_call_in_turn() -> None:
    written = (
        '[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris"}}, '
        '{"name": "write_file", "arguments": {"path": "x"}}] and text'
    )
    items, _ = run(MISTRAL, list(written))
    assert [(n, json.loads(a)) for n, a, _ in calls(items)] == [
        ("get_weather", {"city": "Paris"}),
        ("write_file", {"path": "x"}),
    ]
    assert text(items) == "and text"


def test_llama_bare_json_naming_no_offered_tool_stays_text() -> None:
    written = '{"name": "Bob", "parameters": {"age": 3}}'
    items, _ = run(LLAMA3_JSON, list(written))
    assert items and text(items) == written


@pytest.mark.parametrize("fmt", [HERMES, QWEN3_XML], ids=lambda f: f.name)
def test_the_rest_of_a_block_whose_call_broke_is_dropped(fmt: ToolCallFormat) -> None:
    written = '<tool_call>\n{"name": "get_weather", "arguments": {"city": Paris}}\n</tool_call> ok'
    for deltas in ([written], list(written)):
        items, cut = run(fmt, deltas)
        assert [(n, json.loads(a)) for n, a, _ in calls(items)] == [("get_weather", {})]
        assert text(items) == "ok" and cut == 1

"""ToolInputStream: whatever a model emits as arguments, the client gets a valid JSON object."""

from __future__ import annotations

import json
import os
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jiter import from_json

from cortex.translate import RAW_ARGUMENTS_KEY, ToolInputStream
from cortex.translate.mapping import dump_tool_input, parse_tool_arguments

# More examples for a deeper search: CORTEX_HYPOTHESIS_EXAMPLES=2000 pytest ...
EXAMPLES = int(os.environ.get("CORTEX_HYPOTHESIS_EXAMPLES", "150"))


def run(fragments: list[str]) -> tuple[list[str], str]:
    stream = ToolInputStream()
    sent = [stream.feed(f) for f in fragments]
    return sent, stream.close()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"a": [1, true, null, -2.5e3]}', {"a": [1, True, None, -2500.0]}),
        ('{"s": "line\nbreak\ttab"}', {"s": "line\nbreak\ttab"}),
        ('{"u": "\\u00e9\\n"}', {"u": "é\n"}),
        ("", {}),
        ("  \n", {}),
        ('{"a": "x', {"a": "x", RAW_ARGUMENTS_KEY: '{"a": "x'}),
        ('{"a": {"b": [1,', {"a": {"b": [1, None]}, RAW_ARGUMENTS_KEY: '{"a": {"b": [1,'}),
        ('{"a":1}{"b":2}', {"a": 1, RAW_ARGUMENTS_KEY: '{"a":1}{"b":2}'}),
        ('{"a": 01}', {"a": 0, RAW_ARGUMENTS_KEY: '{"a": 01}'}),
        ("{'a': 1}", {RAW_ARGUMENTS_KEY: "{'a': 1}"}),
        ("[1, 2]", {RAW_ARGUMENTS_KEY: "[1, 2]"}),
        ('{"a": 1,}', {"a": 1, RAW_ARGUMENTS_KEY: '{"a": 1,}'}),
        ('{"a": True}', {"a": None, RAW_ARGUMENTS_KEY: '{"a": True}'}),
    ],
)
def test_examples(text: str, expected: dict[str, object]) -> None:
    assert parse_tool_arguments(text) == expected
    sent, rest = run(list(text))
    body = "".join(sent) + rest
    assert (json.loads(body) if body else {}) == expected


def test_raw_text_goes_back_verbatim() -> None:
    assert dump_tool_input(parse_tool_arguments('{"a": "x')) == '{"a": "x'
    assert dump_tool_input({"a": 1}) == '{"a": 1}'
    assert dump_tool_input({}) == "{}"


def test_the_final_brace_waits_for_the_end() -> None:
    stream = ToolInputStream()
    assert stream.feed('{"a": 1}') == '{"a": 1'
    assert stream.feed("  ") == ""
    assert stream.close() == "}"


_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=10,
)


@settings(max_examples=EXAMPLES, deadline=None)
@given(
    text=st.one_of(
        st.dictionaries(st.text(max_size=4), _values, max_size=4).map(json.dumps),
        st.dictionaries(st.text(max_size=4), _values, max_size=4).map(
            lambda d: json.dumps(d, ensure_ascii=False, indent=1)
        ),
        st.text(alphabet='{}[]",:0123456789.-eEtrufalsn \n\\', max_size=30),
    ),
    cut=st.integers(0, 200),
    cuts=st.lists(st.integers(1, 40), max_size=6),
)
def test_every_prefix_parses_and_the_end_is_an_object(text: str, cut: int, cuts: list[int]) -> None:
    text = text[: cut + len(text) // 2] if cut % 3 == 0 else text  # sometimes truncated
    bounds = sorted({0, len(text), *(c for c in cuts if c < len(text))})
    fragments = [text[a:b] for a, b in pairwise(bounds)]
    sent, rest = run(fragments)
    so_far = ""
    for piece in sent:
        so_far += piece
        if so_far:
            from_json(so_far.encode(), partial_mode=True)  # what the anthropic SDK does
    body = so_far + rest
    value = json.loads(body) if body else {}
    assert isinstance(value, dict)
    try:
        whole = json.loads(text, strict=False)
    except ValueError:
        whole = None
    if isinstance(whole, dict):
        assert value == whole
    elif text.strip():
        assert value[RAW_ARGUMENTS_KEY] == text
    assert parse_tool_arguments(text) == value

"""Tool-call parsers: each format whole and split at every position, markers across deltas,
text around calls, several calls, broken JSON as text, prefills, and properties (how calls
stream piece by piece: `test_tool_call_streaming.py`)."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cortex.engine.tool_calls import (
    FORMATS,
    HERMES,
    LLAMA3_JSON,
    MISTRAL,
    Item,
    ToolCall,
    ToolCallArguments,
    ToolCallFormat,
    ToolCallStart,
    detect_format,
    new_call_id,
)

WEATHER = {"city": "Paris"}
NAMES = {"get_weather", "get_time"}


def ids() -> Callable[[], str]:
    counter = itertools.count()
    return lambda: f"call_{next(counter)}"


def merged(items: Sequence[Item]) -> list[Item]:
    """How a client sees the deltas: adjacent text joined, and each streamed call (a start and
    its argument pieces) one `ToolCall`; every call's arguments parsed and re-serialised."""
    out: list[Item] = []
    for item in items:
        if isinstance(item, str) and out and isinstance(out[-1], str):
            out[-1] += item
        elif isinstance(item, ToolCallStart):
            out.append(ToolCall(item.name, "", item.id))
        elif isinstance(item, ToolCallArguments):
            last = out[-1]
            assert isinstance(last, ToolCall)
            out[-1] = replace(last, arguments=last.arguments + item.text)
        else:
            out.append(item)
    return [
        replace(i, arguments=json.dumps(json.loads(i.arguments), ensure_ascii=False))
        if isinstance(i, ToolCall)
        else i
        for i in out
    ]


def parse(
    fmt: ToolCallFormat, deltas: Sequence[str], *, prefill: str = "", names: set[str] = NAMES
) -> list[Item]:
    parser = fmt.parser(prefill=prefill, tool_names=names, new_id=ids())
    items: list[Item] = []
    for delta in deltas:
        items += parser.feed(delta)
    items += parser.finish()
    assert all(item != "" for item in items)
    return merged(items)


def call(name: str, arguments: Mapping[str, object], n: int = 0) -> ToolCall:
    return ToolCall(name, json.dumps(arguments, ensure_ascii=False), f"call_{n}")


def assert_every_split_agrees(fmt: ToolCallFormat, text: str) -> list[Item]:
    """Whole, at every single split point, and one character at a time: the same items."""
    whole = parse(fmt, [text])
    for cut in range(len(text) + 1):
        assert parse(fmt, [text[:cut], text[cut:]]) == whole, cut
    assert parse(fmt, list(text)) == whole
    return whole


# -- Hermes ---------------------------------------------------------------------------------

HERMES_CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (HERMES_CALL, [call("get_weather", WEATHER)]),
        ("Let me look.\n" + HERMES_CALL, ["Let me look.", call("get_weather", WEATHER)]),
        (HERMES_CALL + "\n\nIt is sunny.", [call("get_weather", WEATHER), "It is sunny."]),
        (
            HERMES_CALL + "\n" + HERMES_CALL.replace("Paris", "Rome"),
            [call("get_weather", WEATHER), call("get_weather", {"city": "Rome"}, 1)],
        ),
        (  # arguments as a JSON string, `parameters` instead of `arguments`, no arguments
            '<tool_call>{"name": "a", "arguments": "{\\"x\\": 1}"}</tool_call>'
            '<tool_call>{"name": "b", "parameters": {"y": [1, 2]}}</tool_call>'
            '<tool_call>{"name": "get_time"}</tool_call>',
            [call("a", {"x": 1}), call("b", {"y": [1, 2]}, 1), call("get_time", {}, 2)],
        ),
        (  # a list of calls in one block
            '<tool_call>[{"name": "a", "arguments": {}}, {"name": "b", "arguments": {}}]'
            "</tool_call>",
            [call("a", {}), call("b", {}, 1)],
        ),
        (
            "no calls here, just <b>html</b> and a < sign",
            ["no calls here, just <b>html</b> and a < sign"],
        ),
        ("ends with a marker's start <tool_ca", ["ends with a marker's start <tool_ca"]),
        ("trailing space kept without calls  \n", ["trailing space kept without calls  \n"]),
        ('{"name": "get_weather", "arguments": {}}', ['{"name": "get_weather", "arguments": {}}']),
        ("", []),
    ],
)
def test_hermes(text: str, expected: list[Item]) -> None:
    assert assert_every_split_agrees(HERMES, text) == expected


@pytest.mark.parametrize(
    "broken",
    [
        "<tool_call>\n{not json}\n</tool_call>",
        '<tool_call>\n{"arguments": {}}\n</tool_call>',  # no name
        '<tool_call>\n{"name": "a", "arguments": [1]}\n</tool_call>',  # arguments not an object
        '<tool_call>\n{"name": "a", "arguments": "nope"}\n</tool_call>',
        '<tool_call>\n["a"]\n</tool_call>',
        "<tool_call></tool_call>",
    ],
)
def test_hermes_broken_json_comes_back_as_the_text_it_was(broken: str) -> None:
    text = "Before. " + broken + " after"
    assert assert_every_split_agrees(HERMES, text) == [text]


def test_hermes_a_broken_call_does_not_stop_the_next_one() -> None:
    text = "<tool_call>{oops}</tool_call>\n" + HERMES_CALL
    assert assert_every_split_agrees(HERMES, text) == [
        "<tool_call>{oops}</tool_call>",
        call("get_weather", WEATHER),
    ]


def test_hermes_an_unclosed_call_counts_if_its_json_is_complete_else_is_text() -> None:
    complete = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n'
    assert assert_every_split_agrees(HERMES, complete) == [call("get_weather", WEATHER)]
    unstarted = 'Sure <tool_call>\n{"name": "get_weather", "argu'
    assert assert_every_split_agrees(HERMES, unstarted) == [unstarted]
    # Once its arguments opened the call streamed: it is closed where the reply stopped.
    cut = 'Sure <tool_call>\n{"name": "get_weather", "arguments": {"city": "Pa'
    assert assert_every_split_agrees(HERMES, cut) == ["Sure", call("get_weather", {"city": "Pa"})]


def test_hermes_holds_back_only_what_could_start_a_marker() -> None:
    parser = HERMES.parser(new_id=ids())
    assert parser.feed("Hello") == ["Hello"]
    assert parser.feed(" world <tool") == [" world"]  # `<tool` might open a call
    assert parser.feed("s are fun") == [" <tools are fun"]
    assert parser.feed(" <tool_call>") == []
    assert parser.feed('{"name": "get_time", "argu') == []  # the call's head is not whole
    assert parser.feed('ments": {}}') == [
        ToolCallStart("get_time", "call_0"),
        ToolCallArguments("{}"),
    ]
    assert parser.feed("</tool_") == []
    assert parser.feed("call>") == []
    assert parser.feed("\n\n") == []  # whitespace after a call is dropped
    assert parser.feed("Done.") == ["Done."]
    assert parser.finish() == []


def test_hermes_prefill_opens_a_call_that_the_reply_completes() -> None:
    prefill = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "'
    reply = 'Paris"}}\n</tool_call>\n\nThe weather'
    for cut in range(len(reply) + 1):
        items = parse(HERMES, [reply[:cut], reply[cut:]], prefill=prefill)
        assert items == [call("get_weather", WEATHER), "The weather"]
    # Cut short, the call the prefill started is closed where the reply stopped.
    assert parse(HERMES, ['Paris", "da'], prefill=prefill) == [call("get_weather", WEATHER)]
    # A prefill whose call has not started comes back as the text the model wrote: never the
    # prefill again.
    assert parse(HERMES, ['wea", "x'], prefill='<tool_call>\n{"name": "get_') == ['wea", "x']
    assert parse(HERMES, ["more text"], prefill="Some prefill \n<tool") == ["more text"]
    assert parse(HERMES, ["_call>{}"], prefill="x <tool") == ["_call>{}"]


# -- Llama 3 JSON ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '{"name": "get_weather", "parameters": {"city": "Paris"}}',
            [call("get_weather", WEATHER)],
        ),
        (
            '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"}}',
            [call("get_weather", WEATHER)],
        ),
        (
            ' {"name": "get_weather", "parameters": {"city": "Paris"}}; '
            '{"name": "get_time", "parameters": {"tz": "UTC"}}',
            [call("get_weather", WEATHER), call("get_time", {"tz": "UTC"}, 1)],
        ),
        (
            'Checking.<|python_tag|>{"name": "anything", "arguments": {"a": "}{\\""}}',
            ["Checking.", call("anything", {"a": '}{"'})],
        ),
        # Bare JSON that is not a call of an offered tool is the reply's text.
        ('{"name": "Bob", "parameters": {}}', ['{"name": "Bob", "parameters": {}}']),
        ('{"name": "get_weather"} is a call?', ['{"name": "get_weather"} is a call?']),
        ('{"answer": 42}', ['{"answer": 42}']),
        ("The JSON {x} mid-text is text.", ["The JSON {x} mid-text is text."]),
        ('{"name": "get_weather", "param', ['{"name": "get_weather", "param']),
        ('{"name": "get_weather", "parameters": {"ci', [call("get_weather", {})]),  # cut
        ("<|python_tag|>not json", ["<|python_tag|>not json"]),
        ("<|python", ["<|python"]),
    ],
)
def test_llama3_json(text: str, expected: list[Item]) -> None:
    assert assert_every_split_agrees(LLAMA3_JSON, text) == expected


def test_llama3_json_text_after_a_call() -> None:
    text = '{"name": "get_time", "parameters": {}}\n\nLet me know.'
    assert assert_every_split_agrees(LLAMA3_JSON, text) == [call("get_time", {}), "Let me know."]


# -- Mistral --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris"}}]',
            [call("get_weather", WEATHER)],
        ),
        (  # the marker dropped by the detokenizer (a special token): the array alone
            '[{"name": "get_weather", "arguments": {"city": "Paris"}}, '
            '{"name": "get_time", "arguments": {}}]',
            [call("get_weather", WEATHER), call("get_time", {}, 1)],
        ),
        (
            'Sure. [TOOL_CALLS][{"name": "x", "arguments": {"a": 1}}] and after',
            ["Sure.", call("x", {"a": 1}), "and after"],
        ),
        (  # v11 tokenizers: name, [ARGS], arguments; several markers
            '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}[TOOL_CALLS]get_time{"tz": "UTC"}',
            [call("get_weather", WEATHER), call("get_time", {"tz": "UTC"}, 1)],
        ),
        ("[link](https://example.com) is text", ["[link](https://example.com) is text"]),
        ("[ ] a task list", ["[ ] a task list"]),
        ('[{"name": "Bob", "arguments": {}}]', ['[{"name": "Bob", "arguments": {}}]']),
        ("[TOOL_CALLS] what?", ["[TOOL_CALLS] what?"]),
        ("[TOOL_CALLS]bad name{}", ["[TOOL_CALLS]bad name{}"]),
        ('[TOOL_CALLS] [{"name": "x", "arg', ['[TOOL_CALLS] [{"name": "x", "arg']),
    ],
)
def test_mistral(text: str, expected: list[Item]) -> None:
    assert assert_every_split_agrees(MISTRAL, text) == expected


# -- formats --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{ '<tool_call>\\n' }}{{ tool_call | tojson }}", HERMES),
        ("{%- if tools %}[AVAILABLE_TOOLS]{{ tools }}{% endif %}[TOOL_CALLS]", MISTRAL),
        ('{{- "<|python_tag|>" + tool_call.name }}', LLAMA3_JSON),
        (
            'Respond in the format {"name": function name, "parameters": dictionary of argument '
            "name and its value}",
            LLAMA3_JSON,
        ),
        ("{% for m in messages %}{{ m.content }}{% endfor %}", HERMES),
        (None, HERMES),
    ],
)
def test_detect_format_reads_the_template(template: str | None, expected: ToolCallFormat) -> None:
    assert detect_format(template) is expected


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.name)
def test_forced_prefix_is_completed_by_the_reply(fmt: ToolCallFormat) -> None:
    named = fmt.forced_prefix("get_weather")
    closer = {"hermes": "}\n</tool_call>", "llama3_json": "}", "mistral": "}]"}[fmt.name]
    assert parse(fmt, ['{"city": "Paris"}' + closer], prefill=named) == [
        call("get_weather", WEATHER)
    ]
    anyone = fmt.forced_prefix(None)
    key = "parameters" if fmt is LLAMA3_JSON else "arguments"
    reply = f'get_time", "{key}": {{}}' + closer
    assert parse(fmt, [reply], prefill=anyone) == [call("get_time", {})]


def test_call_ids_are_fresh() -> None:
    first, second = new_call_id(), new_call_id()
    assert first != second and first.startswith("call_") and len(first) == 29
    parser = HERMES.parser()
    calls = parser.feed(HERMES_CALL + HERMES_CALL) + parser.finish()
    assert len({c.id for c in calls if isinstance(c, ToolCall | ToolCallStart)}) == 2


# -- properties -----------------------------------------------------------------------------

# Text that may hold pieces of every format's markers, but no whole call.
_PIECES = [
    "<tool_call>",
    "</tool_call>",
    "<tool",
    "[TOOL_CALLS]",
    "[",
    "{",
    "}",
    '"',
    "\\",
    " ",
    "\n",
    ";",
    "<|python_tag|>",
    "name",
    ":",
    "x",
    "é",
    "[ARGS]",
]
noise = st.lists(st.sampled_from(_PIECES), max_size=24).map("".join)


def cuts(text: str) -> st.SearchStrategy[list[str]]:
    return st.lists(st.integers(0, len(text)), max_size=6).map(
        lambda points: [text[a:b] for a, b in itertools.pairwise([0, *sorted(points), len(text)])]
    )


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(FORMATS), noise.flatmap(lambda t: st.tuples(st.just(t), cuts(t))))
def test_any_split_of_any_text_gives_the_same_items(
    fmt: ToolCallFormat, case: tuple[str, list[str]]
) -> None:
    text, deltas = case
    whole = parse(fmt, [text])
    assert parse(fmt, deltas) == whole
    if not any(isinstance(item, ToolCall) for item in whole):
        assert "".join(str(item) for item in whole) == text  # nothing lost, nothing added


words = st.text(st.characters(codec="utf-8", exclude_characters="<>[]{}"), max_size=12)
arguments = st.dictionaries(st.sampled_from(["city", "n", "q"]), st.integers() | words, max_size=3)
segments = st.lists(
    st.tuples(words.filter(lambda w: w.strip() == w), st.sampled_from(sorted(NAMES)), arguments),
    min_size=1,
    max_size=4,
)


@settings(max_examples=150, deadline=None)
@given(segments.flatmap(lambda s: st.tuples(st.just(s), st.integers(0, 10_000))))
def test_hermes_recovers_every_call_and_the_text_between(
    case: tuple[list[tuple[str, str, dict[str, object]]], int],
) -> None:
    segs, seed = case
    text = "".join(
        f"{words}\n<tool_call>\n"
        + json.dumps({"name": name, "arguments": args})
        + "\n</tool_call>\n"
        for words, name, args in segs
    )
    cut_points = sorted({seed % (len(text) + 1), (seed * 7) % (len(text) + 1)})
    deltas = [text[: cut_points[0]], text[cut_points[0] : cut_points[-1]], text[cut_points[-1] :]]
    expected: list[Item] = []
    for n, (words, name, args) in enumerate(segs):
        if words:
            expected.append(words)
        expected.append(call(name, args, n))
    assert parse(HERMES, deltas) == expected


def test_the_package_is_pure_python() -> None:
    code = (
        "import sys, cortex.engine.tool_calls; "
        "print(sorted({'torch', 'jinja2'} & set(sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"

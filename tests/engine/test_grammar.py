"""Structured output in the engine: grammars, their errors, compiled-grammar caching, token
masks, strict tools' arguments in every tool-call format, and the real default model writing
schema-valid JSON under a grammar."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from cortex.engine.grammar import GrammarCompiler, json_object_grammar, json_schema_grammar
from cortex.engine.sampling import SamplingParams, apply_token_masks, sample_tokens
from cortex.engine.tool_call_grammar import hermes_tool_call_grammar, tool_call_grammar
from cortex.engine.tool_calls import (
    HERMES,
    LLAMA3_JSON,
    MISTRAL,
    QWEN3_XML,
    ToolCall,
    ToolCallArguments,
    ToolCallStart,
)
from cortex.errors import InvalidRequestError

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "colour": {"enum": ["red", "green", "blue"]},
        "sizes": {"type": "array", "items": {"type": "integer"}, "maxItems": 3},
    },
    "required": ["colour", "sizes"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def compiler(default_model_dir: Path) -> GrammarCompiler:
    text = (default_model_dir / "tokenizer.json").read_text()
    return GrammarCompiler(text, 49152, {2}, cache_size=2)


@pytest.fixture(scope="module")
def tokenizer(default_model_dir: Path) -> Any:
    from cortex.engine.tokenizer import Tokenizer

    return Tokenizer.from_dir(default_model_dir)


@pytest.mark.parametrize(
    ("schema", "keyword"),
    [
        ({"type": "object", "if": {"required": ["a"]}, "then": {}}, '"if"'),
        ({"type": "object", "properties": {"a": {"$dynamicRef": "#x"}}}, "$dynamicRef"),
        ({"type": "string", "format": "made-up"}, "made-up"),
        ({"type": "string", "pattern": "(?<=a)b"}, "look-around"),
    ],
)
def test_an_unenforceable_strict_schema_is_a_400_naming_the_keyword(
    schema: dict[str, Any], keyword: str
) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        json_schema_grammar(schema, strict=True)
    assert caught.value.status == 400
    assert keyword in str(caught.value) and caught.value.param == "response_format"


def test_a_non_strict_schema_leaves_unknown_keywords_out() -> None:
    grammar = json_schema_grammar({"type": "object", "if": {}, "then": {}}, strict=False)
    assert grammar.kind == "json_schema"
    with pytest.raises(InvalidRequestError, match="Invalid type"):
        json_schema_grammar({"type": "bogus"}, strict=False)  # not a schema at all


def test_matchers_follow_the_schema_and_compile_once_per_grammar(
    compiler: GrammarCompiler, tokenizer: Any
) -> None:
    grammar = json_schema_grammar(SCHEMA, strict=True)
    before = compiler.compiled
    good = tokenizer.encode('{"colour": "green", "sizes": [1, 22]}')
    matcher = compiler.matcher(grammar)
    assert all(matcher.accept(t) for t in good)
    assert matcher.is_stopped
    again = compiler.matcher(json_schema_grammar(dict(SCHEMA), strict=True))
    assert compiler.compiled == before + 1  # the second request reused the compiled grammar
    bad = tokenizer.encode('{"colour": "pink"')
    assert not all(again.accept(t) for t in bad)


def test_masks_allow_exactly_what_the_grammar_allows(
    compiler: GrammarCompiler, tokenizer: Any
) -> None:
    matcher = compiler.matcher(json_object_grammar())
    masks = torch.empty((1, compiler.mask_words), dtype=torch.int32)
    matcher.fill_mask(masks[0])
    logits = torch.zeros((2, 49152))
    masked = apply_token_masks(logits, [1], masks)
    allowed = torch.isfinite(masked[1]).nonzero().view(-1).tolist()
    assert torch.isfinite(masked[0]).all()  # the unconstrained row is untouched
    assert allowed and all(tokenizer.decode([t]).lstrip().startswith("{") for t in allowed)
    # Even where the model prefers another token, the draw keeps to the mask.
    logits[1, tokenizer.encode("Hello")[0]] = 100.0
    params = [SamplingParams(temperature=0.0), SamplingParams(temperature=0.0)]
    result = sample_tokens(logits, params, [0, 0], [0, 0], [[], []], [[], []], ([1], masks))
    assert result.token_ids[1] in allowed


def test_tool_call_grammar_constrains_strict_arguments(
    compiler: GrammarCompiler, tokenizer: Any
) -> None:
    tools = [
        {"type": "function", "function": {"name": "paint", "parameters": SCHEMA, "strict": True}},
        {"type": "function", "function": {"name": "free", "parameters": {"type": "object"}}},
    ]
    grammar = hermes_tool_call_grammar(tools)
    arguments = '{"colour": "red", "sizes": []}'
    call = '<tool_call>\n{"name": "paint", "arguments": ' + arguments + "}\n</tool_call>"

    def accepts(text: str, which: Any = grammar) -> bool:
        matcher = compiler.matcher(which)
        return all(matcher.accept(t) for t in tokenizer.encode(text))

    assert accepts(call)
    assert accepts("No call needed, it is sunny.")
    assert not accepts(call.replace('"red"', '"pink"'))
    assert accepts('<tool_call>\n{"name": "free", "arguments": {"anything": 1}}\n</tool_call>')
    # Named: the prompt already ends with the start of the call; one call, arguments first.
    named = hermes_tool_call_grammar(
        tools[:1], prefill='<tool_call>\n{"name": "paint", "arguments": ', parallel=False
    )
    assert accepts('{"colour": "blue", "sizes": [3]}}\n</tool_call>', named)
    assert not accepts("Sure!", named)


def test_the_real_model_writes_valid_json_under_a_grammar(default_model_dir: Path) -> None:
    from cortex.engine.engine import Engine

    jsonschema_rs = pytest.importorskip("jsonschema_rs")
    engine = Engine.from_pretrained(default_model_dir, dtype="float32", kv_cache_mb=16)
    grammar = json_schema_grammar(SCHEMA, strict=True)
    params = SamplingParams(temperature=0.0, max_tokens=40, grammar=grammar)
    chat = [{"role": "user", "content": "Pick a colour and some sizes."}]

    async def reply() -> str:
        return "".join([event.text async for event in engine.generate(chat, params)])

    try:
        text = asyncio.run(reply())
    finally:
        engine.close()
    jsonschema_rs.validate(SCHEMA, json.loads(text))


# -- strict tools in every tool-call format ----------------------------------------------------

WEATHER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 12},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "array", "items": {"type": "integer", "minimum": 1}, "maxItems": 3},
        "when": {"type": "object", "properties": {"hour": {"type": "integer"}}},
    },
    "required": ["city", "unit", "days"],
    "additionalProperties": False,
}
STRICT_TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {"name": "weather", "parameters": WEATHER_SCHEMA, "strict": True},
    },
    {"type": "function", "function": {"name": "free", "parameters": {"type": "object"}}},
]
GOOD_ARGUMENTS: dict[str, Any] = {"city": "Paris", "unit": "celsius", "days": [1, 2]}


def _xml_call(name: str, arguments: dict[str, Any]) -> str:
    def value(v: Any) -> str:
        return v if isinstance(v, str) else json.dumps(v)

    params = "".join(f"<parameter={k}>\n{value(v)}\n</parameter>\n" for k, v in arguments.items())
    return f"<tool_call>\n<function={name}>\n{params}</function>\n</tool_call>"


def _written(fmt: Any, calls: list[tuple[str, dict[str, Any]]]) -> str:
    """The calls as each format writes them (the layout the grammars fix)."""
    if fmt is QWEN3_XML:
        return "\n".join(_xml_call(name, args) for name, args in calls)
    key = "parameters" if fmt is LLAMA3_JSON else "arguments"
    bodies = ["{" + f'"name": {json.dumps(n)}, "{key}": {json.dumps(a)}' + "}" for n, a in calls]
    if fmt is HERMES:
        return "\n".join(f"<tool_call>\n{body}\n</tool_call>" for body in bodies)
    if fmt is LLAMA3_JSON:
        return "; ".join(bodies)
    return "[" + ", ".join(bodies) + "]"


def _parsed(fmt: Any, text: str, prefill: str = "") -> list[tuple[str, Any]]:
    parser = fmt.parser(
        prefill=prefill,
        tool_names={"weather", "free"},
        tool_schemas={"weather": WEATHER_SCHEMA, "free": {"type": "object"}},
    )
    items = [*parser.feed(text), *parser.finish()]
    calls: list[tuple[str, str]] = []
    for item in items:
        if isinstance(item, ToolCall):
            calls.append((item.name, item.arguments))
        elif isinstance(item, ToolCallStart):
            calls.append((item.name, ""))
        elif isinstance(item, ToolCallArguments):
            calls[-1] = (calls[-1][0], calls[-1][1] + item.text)
        else:
            assert not item.strip(), item
    return [(name, json.loads(arguments)) for name, arguments in calls]


@pytest.mark.parametrize("fmt", [HERMES, QWEN3_XML, LLAMA3_JSON, MISTRAL], ids=lambda f: f.name)
def test_strict_tool_arguments_are_constrained_in_every_format(
    fmt: Any, compiler: GrammarCompiler, tokenizer: Any
) -> None:
    jsonschema_rs = pytest.importorskip("jsonschema_rs")

    def accepts(text: str, grammar: Any) -> bool:
        matcher = compiler.matcher(grammar)
        return all(matcher.accept(t) for t in tokenizer.encode(text))

    grammar = tool_call_grammar(fmt, STRICT_TOOLS)
    good = [("weather", GOOD_ARGUMENTS), ("free", {"note": "sunny"})]
    text = _written(fmt, good)
    assert accepts(text, grammar)
    calls = _parsed(fmt, text)
    assert calls == good  # what the grammar lets through is what the parser reads back
    jsonschema_rs.validate(WEATHER_SCHEMA, calls[0][1])
    assert accepts("It is sunny in Paris today.", grammar)
    for bad in (
        {**GOOD_ARGUMENTS, "unit": "kelvin"},  # not in the enum
        {**GOOD_ARGUMENTS, "city": "Llanfairpwllgwyngyll"},  # over maxLength
        {"city": "Paris", "unit": "celsius"},  # a required argument left out
        {**GOOD_ARGUMENTS, "days": [0]},  # under the minimum
    ):
        assert not accepts(_written(fmt, [("weather", bad)]), grammar), bad
    # Required and named: the prompt ends with the forced start of the call, one call only.
    prefill = fmt.forced_prefix("weather")
    named = tool_call_grammar(fmt, STRICT_TOOLS[:1], prefill=prefill, required=True, parallel=False)
    whole = _written(fmt, [("weather", GOOD_ARGUMENTS)])
    if fmt is MISTRAL:  # a forced call is written after the marker
        whole = "[TOOL_CALLS]" + whole
    assert whole.startswith(prefill)
    rest = whole[len(prefill) :]
    assert accepts(rest, named)
    assert _parsed(fmt, rest, prefill=prefill) == [("weather", GOOD_ARGUMENTS)]
    assert not accepts("Sure!", named)


def test_a_strict_tool_the_xml_format_cannot_hold_is_a_400_naming_the_keyword() -> None:
    schema = {
        "type": "object",
        "properties": {"code": {"type": "string", "pattern": "^[A-Z]{3}$"}},
        "required": ["code"],
    }
    tools = [{"type": "function", "function": {"name": "f", "parameters": schema, "strict": True}}]
    with pytest.raises(InvalidRequestError) as caught:
        tool_call_grammar(QWEN3_XML, tools)
    assert caught.value.status == 400 and "`pattern`" in str(caught.value)
    assert "tools[0].function.parameters.properties.code" in str(caught.value)
    # The JSON formats hold it.
    assert tool_call_grammar(HERMES, tools).kind == "tool_calls"

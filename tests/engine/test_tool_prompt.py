"""ChatPrompter: tools through a template that renders them, or Hermes-style in the system prompt
(SmolLM2's template ignores tools); tool_choice, prefills and template variables."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cortex.engine.tokenizer import Tokenizer
from cortex.engine.tool_calls import HERMES, LLAMA3_JSON, ChatPrompter, parse_tool_choice
from cortex.engine.tool_calls.prompt import ToolChoice
from cortex.errors import InvalidRequestError

from .tool_items import calls

WEATHER: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
TIME: dict[str, Any] = {"type": "function", "function": {"name": "get_time", "parameters": {}}}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]

# The tools block Qwen2.5's template writes, which cortex writes for templates without tools.
TOOLS_BLOCK = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
    + json.dumps(WEATHER)
    + "\n</tools>\n\nFor each function call, return a json object with function name and "
    "arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
)

# A template that renders tools itself (the shape of Qwen2.5's) and reads a template variable.
NATIVE = """\
{%- if tools %}<|im_start|>system
TOOLS:{% for tool in tools %} {{ tool.function.name }}{% endfor %}
<|im_end|>
{% endif %}
{%- for m in messages %}<|im_start|>{{ m.role }}
{{ m.content }}
{%- for call in m.tool_calls or [] %}
<tool_call>{{ call.function | tojson }}</tool_call>{% endfor %}<|im_end|>
{% endfor %}
{%- if add_generation_prompt %}<|im_start|>assistant
{% if enable_thinking is defined and not enable_thinking %}<think></think>{% endif %}{% endif %}"""


@pytest.fixture(scope="module")
def smollm2(default_model_dir: Path) -> ChatPrompter:
    return ChatPrompter(Tokenizer.from_dir(default_model_dir))


def with_template(prompter: ChatPrompter, template: str) -> ChatPrompter:
    base = prompter.tokenizer
    return ChatPrompter(
        Tokenizer(
            base.backend,
            special_tokens=base.special_tokens,
            chat_templates={"default": template},
            eos_token_ids=base.eos_token_ids,
        )
    )


def test_smollm2_gets_the_tools_in_its_system_prompt(smollm2: ChatPrompter) -> None:
    assert not smollm2.native_tools and smollm2.tool_format is HERMES
    chat = smollm2.render(ASK, tools=[WEATHER])
    assert chat.text == (
        f"<|im_start|>system\n{TOOLS_BLOCK}<|im_end|>\n"
        "<|im_start|>user\nWhat is the weather in Paris?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert chat.tool_format is HERMES and chat.tool_names == {"get_weather"}
    assert chat.prefill == "" and chat.parser() is not None
    # An own system prompt comes first, the tools after it.
    system = [{"role": "system", "content": "Be brief."}, *ASK]
    text = smollm2.render(system, tools=[WEATHER]).text
    assert text.startswith(f"<|im_start|>system\nBe brief.\n\n{TOOLS_BLOCK}<|im_end|>\n")


def test_tool_choice_none_renders_no_tools_and_parses_nothing(smollm2: ChatPrompter) -> None:
    chat = smollm2.render(ASK, tools=[WEATHER], tool_choice="none")
    assert chat.text == smollm2.render(ASK).text
    assert "<tools>" not in chat.text and chat.tool_format is None and chat.parser() is None


def test_required_and_named_tool_choice_are_said_and_start_the_call(smollm2: ChatPrompter) -> None:
    required = smollm2.render(ASK, tools=[WEATHER, TIME], tool_choice="required")
    assert "\n\nIn this reply you must call at least one of these functions.<|im_end|>" in (
        required.text
    )
    assert required.text.endswith('<|im_start|>assistant\n<tool_call>\n{"name": "')
    assert required.prefill == '<tool_call>\n{"name": "'
    named = smollm2.render(
        ASK,
        tools=[WEATHER, TIME],
        tool_choice={"type": "function", "function": {"name": "get_time"}},
    )
    assert 'In this reply you must call the function "get_time".' in named.text
    assert named.prefill == '<tool_call>\n{"name": "get_time", "arguments": '
    assert named.text.endswith(named.prefill)
    parser = named.parser()
    assert parser is not None
    items = parser.feed("{}}\n</tool_call>") + parser.finish()
    assert [(name, arguments) for name, arguments, _ in calls(items)] == [("get_time", "{}")]


def test_allowed_tools_narrow_the_offer(smollm2: ChatPrompter) -> None:
    choice = {
        "type": "allowed_tools",
        "allowed_tools": {"mode": "auto", "tools": [{"type": "function", "name": "get_time"}]},
    }
    chat = smollm2.render(ASK, tools=[WEATHER, TIME], tool_choice=choice)
    assert chat.tool_names == {"get_time"} and "get_weather" not in chat.text


@pytest.mark.parametrize(
    ("choice", "message"),
    [
        ({"type": "function", "function": {"name": "nope"}}, "not among the tools"),
        ("sometimes", "tool_choice must be"),
        ({"type": "function"}, "tool_choice must be"),
    ],
)
def test_bad_tool_choice_is_a_400(smollm2: ChatPrompter, choice: Any, message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message) as error:
        smollm2.render(ASK, tools=[WEATHER], tool_choice=choice)
    assert error.value.param == "tool_choice"
    with pytest.raises(InvalidRequestError, match="no tools are offered"):
        smollm2.render(ASK, tool_choice="required")


def test_parse_tool_choice() -> None:
    assert parse_tool_choice(None) == ToolChoice() == parse_tool_choice("auto")
    assert parse_tool_choice({"type": "function", "name": "f"}) == ToolChoice("required", "f")


def test_tool_history_becomes_hermes_text_for_smollm2(smollm2: ChatPrompter) -> None:
    history: list[dict[str, Any]] = [
        *ASK,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": {"city": "Paris"}},
                },
                {
                    "id": "c2",
                    "type": "function",
                    "function": {"name": "get_time", "arguments": '{"tz": "CET"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "Sunny, 21 C"},
        {"role": "tool", "tool_call_id": "c2", "content": "12:00"},
    ]
    text = smollm2.render(history, tools=[WEATHER]).text
    assert text.endswith(
        "<|im_start|>assistant\n"
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "get_time", "arguments": {"tz": "CET"}}\n</tool_call><|im_end|>\n'
        "<|im_start|>user\n<tool_response>\nSunny, 21 C\n</tool_response>\n"
        "<tool_response>\n12:00\n</tool_response><|im_end|>\n<|im_start|>assistant\n"
    )


def test_a_final_assistant_message_is_continued_and_primes_the_parser(
    smollm2: ChatPrompter,
) -> None:
    prefill = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "'
    chat = smollm2.render(
        [*ASK, {"role": "assistant", "content": prefill}],
        tools=[WEATHER],
        tool_choice="required",  # a client's prefill wins over the forced start
        add_generation_prompt=False,
        continue_final_message=True,
    )
    assert chat.text.endswith("<|im_start|>assistant\n" + prefill)
    assert chat.prefill == prefill
    parser = chat.parser()
    assert parser is not None
    items = parser.feed('Paris"}}\n</tool_call>') + parser.finish()
    assert [(name, arguments) for name, arguments, _ in calls(items)] == [
        ("get_weather", '{"city": "Paris"}')
    ]


def test_a_template_with_tools_renders_them_itself(smollm2: ChatPrompter) -> None:
    native = with_template(smollm2, NATIVE)
    assert native.native_tools and native.tool_format is HERMES  # `<tool_call>` in its source
    chat = native.render(ASK, tools=[WEATHER, TIME])
    assert chat.text.startswith("<|im_start|>system\nTOOLS: get_weather get_time<|im_end|>")
    assert "<tools>" not in chat.text and chat.tool_format is HERMES
    llama = with_template(smollm2, NATIVE + "{# <|python_tag|> #}")
    assert llama.tool_format is HERMES  # `<tool_call>` wins: it is checked first
    plain_llama = with_template(smollm2, NATIVE.replace("tool_call", "call") + "<|python_tag|>")
    assert plain_llama.tool_format is LLAMA3_JSON


def test_chat_template_kwargs_reach_the_template(smollm2: ChatPrompter) -> None:
    native = with_template(smollm2, NATIVE)
    off = native.render(ASK, template_kwargs={"enable_thinking": False})
    assert off.text.endswith("<|im_start|>assistant\n<think></think>")
    assert not native.render(ASK, template_kwargs={"enable_thinking": True}).text.endswith(
        "</think>"
    )
    # Names cortex passes itself cannot be overridden.
    same = native.render(ASK, template_kwargs={"messages": [], "add_generation_prompt": False})
    assert same.text == native.render(ASK).text

"""Golden requests both ways, one per point of the mapping (docs/translation.md, "Requests")."""

from __future__ import annotations

from typing import Any

import pytest

from cortex.errors import InvalidRequestError
from cortex.translate import (
    RAW_ARGUMENTS_KEY,
    anthropic_request_to_openai,
    openai_request_to_anthropic,
)

from .helpers import ids


def to_openai(body: dict[str, Any]) -> dict[str, Any]:
    return anthropic_request_to_openai(
        {"model": "claude-sonnet-4-5", "max_tokens": 1024, **body}
    ).model_dump(mode="json")


def to_anthropic(body: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    return openai_request_to_anthropic(
        {"model": "gpt-local", **body}, ids=ids(), **kwargs
    ).model_dump(mode="json")


# -- Anthropic -> OpenAI -----------------------------------------------------------------------


def test_minimal_request() -> None:
    assert to_openai({"messages": [{"role": "user", "content": "Hello, Claude"}]}) == {
        "model": "claude-sonnet-4-5",
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": "Hello, Claude"}],
    }


def test_system_blocks_join_and_billing_header_is_stripped() -> None:
    system = [
        {
            "type": "text",
            "text": "x-anthropic-billing-header: cc_version=2.1.181; cc_entrypoint=cli; cch=abc;",
        },
        {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}},
        {
            "type": "text",
            "text": "Be concise.",
            "cache_control": {"type": "ephemeral", "ttl": "1h"},
        },
    ]
    out = to_openai({"system": system, "messages": [{"role": "user", "content": "hi"}]})
    assert out["messages"][0] == {
        "role": "system",
        "content": "You are Claude Code.\n\nBe concise.",
    }
    assert to_openai({"system": "Be brief.", "messages": [{"role": "user", "content": "hi"}]})[
        "messages"
    ][0] == {"role": "system", "content": "Be brief."}


def test_mid_conversation_system_message_stays_in_place() -> None:
    out = to_openai(
        {
            "system": "Top.",
            "messages": [
                {"role": "user", "content": "a"},
                {"role": "assistant", "content": "b"},
                {"role": "system", "content": "Reminder: be brief."},
                {"role": "user", "content": "c"},
            ],
        }
    )
    assert [m["role"] for m in out["messages"]] == ["system", "user", "assistant", "system", "user"]
    assert out["messages"][3]["content"] == "Reminder: be brief."


def test_consecutive_same_role_turns_merge() -> None:
    out = to_openai(
        {
            "messages": [
                {"role": "user", "content": "first"},
                {"role": "user", "content": [{"type": "text", "text": "second"}]},
                {"role": "assistant", "content": "one"},
                {"role": "assistant", "content": "two"},
            ]
        }
    )
    assert out["messages"] == [
        {"role": "user", "content": "first\n\nsecond"},
        {"role": "assistant", "content": "one\n\ntwo"},
    ]


def test_multi_part_content_with_images_base64_and_url() -> None:
    content = [
        {"type": "text", "text": "Compare these."},
        {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQ"},
        },
        {
            "type": "image",
            "source": {"type": "url", "url": "https://example.com/cat.png"},
            "cache_control": {"type": "ephemeral"},
        },
        {"type": "text", "text": ""},
    ]
    out = to_openai({"messages": [{"role": "user", "content": content}]})
    assert out["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Compare these."},
                {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
            ],
        }
    ]


def test_text_document_becomes_text_and_pdf_is_refused() -> None:
    doc = {
        "type": "document",
        "source": {"type": "text", "media_type": "text/plain", "data": "The grass is green."},
        "title": "Facts",
    }
    out = to_openai(
        {"messages": [{"role": "user", "content": [doc, {"type": "text", "text": "Color?"}]}]}
    )
    assert out["messages"][0]["content"] == "Facts\n\nThe grass is green.\n\nColor?"
    pdf = {
        "type": "document",
        "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0x"},
    }
    with pytest.raises(InvalidRequestError, match="not supported"):
        to_openai({"messages": [{"role": "user", "content": [pdf]}]})


WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Get the current weather in a given location",
    "input_schema": {
        "type": "object",
        "properties": {"location": {"type": "string"}},
        "required": ["location"],
    },
    "cache_control": {"type": "ephemeral"},
    "defer_loading": False,
}


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ({"type": "auto"}, {"tool_choice": "auto"}),
        ({"type": "any"}, {"tool_choice": "required"}),
        (
            {"type": "tool", "name": "get_weather"},
            {"tool_choice": {"type": "function", "function": {"name": "get_weather"}}},
        ),
        ({"type": "none"}, {"tool_choice": "none"}),
        (
            {"type": "auto", "disable_parallel_tool_use": True},
            {"tool_choice": "auto", "parallel_tool_calls": False},
        ),
        ({"type": "none", "disable_parallel_tool_use": True}, {"tool_choice": "none"}),
    ],
)
def test_tools_and_tool_choice(choice: dict[str, Any], expected: dict[str, Any]) -> None:
    server_tool = {"type": "web_search_20250305", "name": "web_search", "max_uses": 5}
    out = to_openai(
        {
            "messages": [{"role": "user", "content": "Weather in SF?"}],
            "tools": [WEATHER_TOOL, server_tool],
            "tool_choice": choice,
        }
    )
    assert out["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Get the current weather in a given location",
                "parameters": WEATHER_TOOL["input_schema"],
            },
        }
    ]
    assert {k: out[k] for k in expected} == expected
    assert ("parallel_tool_calls" in out) == ("parallel_tool_calls" in expected)


def test_tool_round_trip_history() -> None:
    """Several tool calls in one turn; results with is_error and nested blocks; user text after."""
    out = to_openai(
        {
            "messages": [
                {"role": "user", "content": "Weather in SF and NYC?"},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "Two cities.", "signature": "EqQBCgIYAh"},
                        {"type": "text", "text": "Checking both."},
                        {
                            "type": "tool_use",
                            "id": "toolu_01",
                            "name": "get_weather",
                            "input": {"location": "San Francisco"},
                        },
                        {
                            "type": "tool_use",
                            "id": "toolu_02",
                            "name": "get_weather",
                            "input": {"location": "New York"},
                        },
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Here you go."},
                        {
                            "type": "tool_result",
                            "tool_use_id": "toolu_01",
                            "content": "15 degrees",
                            "is_error": False,
                            "cache_control": {"type": "ephemeral"},
                        },
                        {
                            "type": "tool_result",
                            "tool_use_id": "toolu_02",
                            "is_error": True,
                            "content": [
                                {"type": "text", "text": "service down"},
                                {"type": "text", "text": "retry later"},
                                {
                                    "type": "image",
                                    "source": {
                                        "type": "base64",
                                        "media_type": "image/png",
                                        "data": "iVBOR",
                                    },
                                },
                            ],
                        },
                    ],
                },
            ]
        }
    )
    assert out["messages"] == [
        {"role": "user", "content": "Weather in SF and NYC?"},
        {
            "role": "assistant",
            "content": "Checking both.",
            "reasoning_content": "Two cities.",
            "tool_calls": [
                {
                    "id": "toolu_01",
                    "type": "function",
                    "function": {
                        "name": "get_weather",
                        "arguments": '{"location": "San Francisco"}',
                    },
                },
                {
                    "id": "toolu_02",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"location": "New York"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_01", "content": "15 degrees"},
        {"role": "tool", "tool_call_id": "toolu_02", "content": "Error: service down\nretry later"},
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}},
                {"type": "text", "text": "Here you go."},
            ],
        },
    ]


def test_assistant_with_only_tool_calls_has_null_content_and_raw_arguments_return() -> None:
    out = to_openai(
        {
            "messages": [
                {"role": "user", "content": "go"},
                {
                    "role": "assistant",
                    "content": [
                        {
                            "type": "tool_use",
                            "id": "t1",
                            "name": "grep",
                            "input": {RAW_ARGUMENTS_KEY: '{"pattern": "a'},
                        }
                    ],
                },
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1"}]},
            ]
        }
    )
    assert out["messages"][1] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "t1",
                "type": "function",
                "function": {"name": "grep", "arguments": '{"pattern": "a'},
            }
        ],
    }
    assert out["messages"][2] == {"role": "tool", "tool_call_id": "t1", "content": ""}


def test_sampling_stop_user_stream_and_prefill() -> None:
    out = to_openai(
        {
            "messages": [
                {"role": "user", "content": "Pick A or B"},
                {"role": "assistant", "content": "The answer is ("},
            ],
            "stop_sequences": ["\n\nHuman:"],
            "temperature": 0.2,
            "top_p": 0.9,
            "top_k": 40,
            "stream": True,
            "metadata": {"user_id": '{"device_id":"abc","session_id":"s1"}'},
        }
    )
    assert out == {
        "model": "claude-sonnet-4-5",
        "max_tokens": 1024,
        "messages": [
            {"role": "user", "content": "Pick A or B"},
            {"role": "assistant", "content": "The answer is ("},
        ],
        "stop": ["\n\nHuman:"],
        "temperature": 0.2,
        "top_p": 0.9,
        "top_k": 40,
        "stream": True,
        "stream_options": {"include_usage": True},
        "user": '{"device_id":"abc","session_id":"s1"}',
        "continue_final_message": True,
        "add_generation_prompt": False,
    }


@pytest.mark.parametrize(
    ("thinking", "expected"),
    [
        ({"type": "enabled", "budget_tokens": 2048}, {"enable_thinking": True}),
        ({"type": "disabled"}, {"enable_thinking": False}),
        ({"type": "adaptive"}, None),
    ],
)
def test_thinking_switch(thinking: dict[str, Any], expected: dict[str, Any] | None) -> None:
    out = to_openai({"messages": [{"role": "user", "content": "hi"}], "thinking": thinking})
    assert out.get("chat_template_kwargs") == expected
    assert out.get("thinking_token_budget") == thinking.get("budget_tokens")


def test_claude_code_extras_are_tolerated_and_output_config_maps() -> None:
    out = to_openai(
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "hi"},
                        {"type": "tool_reference", "tool_name": "x"},
                    ],
                }
            ],
            "output_config": {
                "effort": "high",
                "format": {"type": "json_schema", "schema": {"type": "object"}},
            },
            "context_management": {"edits": [{"type": "clear_tool_uses_20250919"}]},
            "cache_control": {"type": "ephemeral"},
            "service_tier": "auto",
        }
    )
    assert out["messages"] == [{"role": "user", "content": "hi"}]
    assert out["reasoning_effort"] == "high"
    assert out["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": {"type": "object"}, "strict": True},
    }
    assert "context_management" not in out and "cache_control" not in out


def test_malformed_request_is_a_400() -> None:
    with pytest.raises(InvalidRequestError) as caught:
        anthropic_request_to_openai({"model": "m", "messages": []})
    assert caught.value.param == "max_tokens"


# -- OpenAI -> Anthropic -----------------------------------------------------------------------


def test_openai_minimal_gets_default_max_tokens() -> None:
    assert to_anthropic({"messages": [{"role": "user", "content": "Hello!"}]}) == {
        "model": "gpt-local",
        "max_tokens": 4096,
        "messages": [{"role": "user", "content": "Hello!"}],
    }
    assert (
        to_anthropic({"messages": [{"role": "user", "content": "x"}]}, default_max_tokens=77)[
            "max_tokens"
        ]
        == 77
    )


def test_max_completion_tokens_wins() -> None:
    out = to_anthropic(
        {
            "messages": [{"role": "user", "content": "x"}],
            "max_tokens": 10,
            "max_completion_tokens": 20,
        }
    )
    assert out["max_tokens"] == 20


def test_system_and_developer_messages() -> None:
    out = to_anthropic(
        {
            "messages": [
                {"role": "system", "content": "You are helpful."},
                {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
                {"role": "user", "content": "Hi"},
                {"role": "system", "content": "Now be brief."},
                {"role": "user", "content": "Again"},
            ]
        }
    )
    assert out["system"] == [
        {"type": "text", "text": "You are helpful."},
        {"type": "text", "text": "Answer in French."},
    ]
    assert out["messages"] == [
        {"role": "user", "content": "Hi"},
        {"role": "system", "content": "Now be brief."},
        {"role": "user", "content": "Again"},
    ]


def test_parts_and_images_both_forms() -> None:
    out = to_anthropic(
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is in these?"},
                        {
                            "type": "image_url",
                            "image_url": {
                                "url": "data:image/png;base64,iVBORw0KGgo=",
                                "detail": "low",
                            },
                        },
                        {"type": "image_url", "image_url": {"url": "https://example.com/dog.jpg"}},
                    ],
                }
            ]
        }
    )
    assert out["messages"][0]["content"] == [
        {"type": "text", "text": "What is in these?"},
        {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
        },
        {"type": "image", "source": {"type": "url", "url": "https://example.com/dog.jpg"}},
    ]


def test_audio_and_n_are_refused() -> None:
    with pytest.raises(InvalidRequestError, match="audio"):
        to_anthropic(
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "input_audio", "input_audio": {"data": "x", "format": "wav"}}
                        ],
                    }
                ]
            }
        )
    with pytest.raises(InvalidRequestError) as caught:
        to_anthropic({"messages": [{"role": "user", "content": "x"}], "n": 2})
    assert caught.value.param == "n"


def test_tool_calls_and_tool_messages() -> None:
    """Consecutive tool messages -> one user turn; a user message after them joins it."""
    out = to_anthropic(
        {
            "messages": [
                {"role": "user", "content": "Weather?"},
                {
                    "role": "assistant",
                    "content": None,
                    "reasoning_content": "Need tools.",
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                        },
                        {
                            "id": "call_2",
                            "type": "function",
                            "function": {"name": "get_time", "arguments": ""},
                        },
                        {
                            "id": "call_3",
                            "type": "function",
                            "function": {"name": "bad", "arguments": "not json"},
                        },
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "Sunny"},
                {
                    "role": "tool",
                    "tool_call_id": "call_2",
                    "content": [{"type": "text", "text": "12:00"}],
                },
                {"role": "tool", "tool_call_id": "call_3", "content": "Error: bad arguments"},
                {"role": "user", "content": "Thanks, and tomorrow?"},
            ]
        }
    )
    signature = ids().signature()
    assert out["messages"] == [
        {"role": "user", "content": "Weather?"},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "Need tools.", "signature": signature},
                {
                    "type": "tool_use",
                    "id": "call_1",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                },
                {"type": "tool_use", "id": "call_2", "name": "get_time", "input": {}},
                {
                    "type": "tool_use",
                    "id": "call_3",
                    "name": "bad",
                    "input": {RAW_ARGUMENTS_KEY: "not json"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "Sunny"},
                {
                    "type": "tool_result",
                    "tool_use_id": "call_2",
                    "content": [{"type": "text", "text": "12:00"}],
                },
                {"type": "tool_result", "tool_use_id": "call_3", "content": "Error: bad arguments"},
                {"type": "text", "text": "Thanks, and tomorrow?"},
            ],
        },
    ]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"tool_choice": "auto"}, {"type": "auto"}),
        ({"tool_choice": "required"}, {"type": "any"}),
        ({"tool_choice": "none"}, {"type": "none"}),
        (
            {"tool_choice": {"type": "function", "function": {"name": "get_weather"}}},
            {"type": "tool", "name": "get_weather"},
        ),
        ({"parallel_tool_calls": False}, {"type": "auto", "disable_parallel_tool_use": True}),
        (
            {"tool_choice": "required", "parallel_tool_calls": False},
            {"type": "any", "disable_parallel_tool_use": True},
        ),
        (
            {
                "tool_choice": {
                    "type": "allowed_tools",
                    "allowed_tools": {"mode": "required", "tools": []},
                }
            },
            {"type": "any"},
        ),
    ],
)
def test_openai_tools_and_tool_choice(body: dict[str, Any], expected: dict[str, Any]) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                "strict": True,
            },
        },
        {"type": "function", "function": {"name": "noop"}},
        {"type": "custom", "custom": {"name": "grammar_tool"}},
    ]
    out = to_anthropic({"messages": [{"role": "user", "content": "x"}], "tools": tools, **body})
    assert out["tools"] == [
        {
            "name": "get_weather",
            "description": "Weather",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
            "strict": True,
        },
        {"name": "noop", "input_schema": {"type": "object", "properties": {}}},
    ]
    assert out["tool_choice"] == expected


def test_openai_parameters() -> None:
    out = to_anthropic(
        {
            "messages": [{"role": "user", "content": "x"}],
            "stop": "END",
            "temperature": 1.5,
            "top_p": 0.5,
            "top_k": 20,
            "user": "user-42",
            "stream": True,
            "stream_options": {"include_usage": True},
            "seed": 1,
            "presence_penalty": 0.5,
            "logprobs": True,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "r", "schema": {"type": "object"}},
            },
            "reasoning_effort": "low",
        }
    )
    assert out == {
        "model": "gpt-local",
        "max_tokens": 4096,
        "messages": [{"role": "user", "content": "x"}],
        "stop_sequences": ["END"],
        "temperature": 1.5,
        "top_p": 0.5,
        "top_k": 20,
        "stream": True,
        "metadata": {"user_id": "user-42"},
        "output_config": {
            "effort": "low",
            "format": {"type": "json_schema", "schema": {"type": "object"}},
        },
    }
    assert to_anthropic({"messages": [{"role": "user", "content": "x"}], "stop": ["a", "b"]})[
        "stop_sequences"
    ] == ["a", "b"]


def test_openai_thinking_switch() -> None:
    on = to_anthropic(
        {
            "messages": [{"role": "user", "content": "x"}],
            "chat_template_kwargs": {"enable_thinking": True},
        }
    )
    assert on["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    off = to_anthropic({"messages": [{"role": "user", "content": "x"}], "reasoning_effort": "none"})
    assert off["thinking"] == {"type": "disabled"}


def test_legacy_functions() -> None:
    out = to_anthropic(
        {
            "messages": [
                {"role": "user", "content": "x"},
                {
                    "role": "assistant",
                    "content": None,
                    "function_call": {"name": "f", "arguments": '{"a": 1}'},
                },
                {"role": "function", "name": "f", "content": "done"},
            ],
            "functions": [{"name": "f", "parameters": {"type": "object"}}],
            "function_call": {"name": "f"},
        }
    )
    call_id = out["messages"][1]["content"][0]["id"]
    assert call_id.startswith("toolu_")
    assert out["messages"][1]["content"] == [
        {"type": "tool_use", "id": call_id, "name": "f", "input": {"a": 1}}
    ]
    assert out["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": call_id, "content": "done"}
    ]
    assert out["tools"] == [{"name": "f", "input_schema": {"type": "object"}}]
    assert out["tool_choice"] == {"type": "tool", "name": "f"}


def test_ids_are_deterministic_with_a_seed() -> None:
    body = {
        "messages": [
            {"role": "user", "content": "x"},
            {"role": "assistant", "content": "y", "reasoning_content": "z"},
        ]
    }
    assert to_anthropic(body) == to_anthropic(body)
    first = openai_request_to_anthropic({"model": "m", **body}).model_dump(mode="json")
    second = openai_request_to_anthropic({"model": "m", **body}).model_dump(mode="json")
    assert first != second  # unseeded: a fresh signature per request

"""Golden replies, written from each dialect's documented examples: upstream in, client out.

FORWARD: an OpenAI upstream reply and the Anthropic message the client must get.
REVERSE: an Anthropic upstream message and the OpenAI reply the client must get.
Ids the translator invents are placeholders filled from the seeded factory, in draw order.
"""

from __future__ import annotations

import copy
from typing import Any

from cortex.translate import RAW_ARGUMENTS_KEY

from .helpers import CREATED, ids

USAGE = {"prompt_tokens": 25, "completion_tokens": 12, "total_tokens": 37}
A_USAGE = {
    "input_tokens": 25,
    "output_tokens": 12,
    "cache_creation_input_tokens": 0,
    "cache_read_input_tokens": 0,
}


def completion(
    message: dict[str, Any], finish: str, usage: dict[str, Any] | None = USAGE, **choice: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "chatcmpl-upstream",
        "object": "chat.completion",
        "created": 1,
        "model": "smollm2-135m-instruct",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", **message},
                "finish_reason": finish,
                "logprobs": None,
                **choice,
            }
        ],
    }
    if usage is not None:
        body["usage"] = usage
    return body


def message(
    content: list[dict[str, Any]],
    stop_reason: str,
    stop_sequence: str | None = None,
    usage: dict[str, Any] = A_USAGE,
    model: str = "claude-sonnet-4-5",
) -> dict[str, Any]:
    return {
        "id": "<msg>",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": usage,
    }


A_REQUEST = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 1024,
    "messages": [{"role": "user", "content": "Hello, Claude"}],
}

FORWARD: list[dict[str, Any]] = [
    {
        "name": "text_end_turn",
        "request": A_REQUEST,
        "completion": completion({"content": "Hi! My name is Claude."}, "stop"),
        "expected": message([{"type": "text", "text": "Hi! My name is Claude."}], "end_turn"),
    },
    {
        "name": "length_is_max_tokens",
        "request": A_REQUEST,
        "completion": completion({"content": "Once upon a"}, "length"),
        "expected": message([{"type": "text", "text": "Once upon a"}], "max_tokens"),
    },
    {
        "name": "stop_sequence_from_vllm_stop_reason",
        "request": {**A_REQUEST, "stop_sequences": ["\n\nHuman:", "###"]},
        "completion": completion({"content": "The answer is 4."}, "stop", stop_reason="###"),
        "expected": message([{"type": "text", "text": "The answer is 4."}], "stop_sequence", "###"),
    },
    {
        "name": "cached_prompt_tokens_to_cache_read",
        "request": A_REQUEST,
        "completion": completion(
            {"content": "Sure."},
            "stop",
            {
                "prompt_tokens": 2100,
                "completion_tokens": 3,
                "total_tokens": 2103,
                "prompt_tokens_details": {"cached_tokens": 2048},
            },
        ),
        "expected": message(
            [{"type": "text", "text": "Sure."}],
            "end_turn",
            usage={
                "input_tokens": 52,
                "output_tokens": 3,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 2048,
            },
        ),
    },
    {
        "name": "two_tool_calls_after_text",
        "request": A_REQUEST,
        "completion": completion(
            {
                "content": "I'll check both cities.",
                "tool_calls": [
                    {
                        "id": "call_sf",
                        "type": "function",
                        "function": {
                            "name": "get_weather",
                            "arguments": '{"location": "San Francisco, CA", "unit": "celsius"}',
                        },
                    },
                    {
                        "id": "call_ny",
                        "type": "function",
                        "function": {
                            "name": "get_weather",
                            "arguments": '{"location": "New York, NY"}',
                        },
                    },
                ],
            },
            "tool_calls",
        ),
        "expected": message(
            [
                {"type": "text", "text": "I'll check both cities."},
                {
                    "type": "tool_use",
                    "id": "call_sf",
                    "name": "get_weather",
                    "input": {"location": "San Francisco, CA", "unit": "celsius"},
                },
                {
                    "type": "tool_use",
                    "id": "call_ny",
                    "name": "get_weather",
                    "input": {"location": "New York, NY"},
                },
            ],
            "tool_use",
        ),
    },
    {
        "name": "tool_call_with_finish_stop_is_tool_use",
        "request": A_REQUEST,
        "completion": completion(
            {
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "ls", "arguments": "{}"},
                    }
                ],
            },
            "stop",
        ),
        "expected": message(
            [{"type": "tool_use", "id": "call_1", "name": "ls", "input": {}}], "tool_use"
        ),
    },
    {
        "name": "empty_content_opens_no_text_block",
        "request": A_REQUEST,
        "completion": completion(
            {
                "content": "",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "ls", "arguments": ""},
                    }
                ],
            },
            "tool_calls",
        ),
        "expected": message(
            [{"type": "tool_use", "id": "call_1", "name": "ls", "input": {}}], "tool_use"
        ),
    },
    {
        "name": "invalid_json_arguments_are_kept",
        "request": A_REQUEST,
        "completion": completion(
            {
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "grep", "arguments": '{"pattern": "a'},
                    }
                ]
            },
            "tool_calls",
        ),
        "expected": message(
            [
                {
                    "type": "tool_use",
                    "id": "call_1",
                    "name": "grep",
                    "input": {"pattern": "a", RAW_ARGUMENTS_KEY: '{"pattern": "a'},
                }
            ],
            "tool_use",
        ),
    },
    {
        "name": "arguments_as_object_from_a_lax_server",
        "request": A_REQUEST,
        "completion": completion(
            {
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "read", "arguments": {"path": "/etc/hosts"}},
                    }
                ]
            },
            "tool_calls",
        ),
        "expected": message(
            [{"type": "tool_use", "id": "call_1", "name": "read", "input": {"path": "/etc/hosts"}}],
            "tool_use",
        ),
    },
    {
        "name": "missing_tool_id_is_generated",
        "request": A_REQUEST,
        "completion": completion(
            {
                "tool_calls": [
                    {"type": "function", "function": {"name": "ls", "arguments": '{"dir": "."}'}}
                ]
            },
            "tool_calls",
        ),
        "expected": message(
            [{"type": "tool_use", "id": "<toolu>", "name": "ls", "input": {"dir": "."}}], "tool_use"
        ),
    },
    {
        "name": "reasoning_content_to_thinking",
        "request": A_REQUEST,
        "completion": completion({"reasoning_content": "2 + 2 is 4.", "content": "4"}, "stop"),
        "expected": message(
            [
                {"type": "thinking", "thinking": "2 + 2 is 4.", "signature": "<sig>"},
                {"type": "text", "text": "4"},
            ],
            "end_turn",
        ),
    },
    {
        "name": "vllm_reasoning_field_to_thinking",
        "request": A_REQUEST,
        "completion": completion({"reasoning": "Think.", "content": "Done."}, "stop"),
        "expected": message(
            [
                {"type": "thinking", "thinking": "Think.", "signature": "<sig>"},
                {"type": "text", "text": "Done."},
            ],
            "end_turn",
        ),
    },
    {
        "name": "content_filter_is_refusal",
        "request": A_REQUEST,
        "completion": completion({"content": "I can't help with that."}, "content_filter"),
        "expected": message([{"type": "text", "text": "I can't help with that."}], "refusal"),
    },
    {
        "name": "no_usage_upstream",
        "request": A_REQUEST,
        "completion": completion({"content": "ok"}, "stop", None),
        "expected": message(
            [{"type": "text", "text": "ok"}],
            "end_turn",
            usage={
                "input_tokens": 0,
                "output_tokens": 0,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
            },
        ),
        # Streamed, the output count is estimated from the deltas ("o", "k": two).
        "stream_usage": {
            "input_tokens": 0,
            "output_tokens": 2,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    },
]

O_REQUEST = {"model": "gpt-local", "messages": [{"role": "user", "content": "Hello!"}]}


def reply(
    message_: dict[str, Any], finish: str, usage: dict[str, Any] | None = None, **choice: Any
) -> dict[str, Any]:
    return {
        "id": "<chatcmpl>",
        "object": "chat.completion",
        "created": CREATED,
        "model": "gpt-local",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "refusal": None, **message_},
                "finish_reason": finish,
                "logprobs": None,
                **choice,
            }
        ],
        "usage": usage
        or {
            "prompt_tokens": 25,
            "completion_tokens": 12,
            "total_tokens": 37,
            "prompt_tokens_details": {"cached_tokens": 0},
        },
    }


def upstream(
    content: list[dict[str, Any]],
    stop_reason: str,
    stop_sequence: str | None = None,
    usage: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "id": "msg_upstream",
        "type": "message",
        "role": "assistant",
        "model": "claude-upstream",
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": usage or {"input_tokens": 25, "output_tokens": 12},
    }


REVERSE: list[dict[str, Any]] = [
    {
        "name": "text_stop",
        "request": O_REQUEST,
        "message": upstream([{"type": "text", "text": "Hello there! How can I help?"}], "end_turn"),
        "expected": reply({"content": "Hello there! How can I help?"}, "stop"),
    },
    {
        "name": "max_tokens_is_length",
        "request": O_REQUEST,
        "message": upstream([{"type": "text", "text": "Once"}], "max_tokens"),
        "expected": reply({"content": "Once"}, "length"),
    },
    {
        "name": "context_window_exceeded_is_length",
        "request": O_REQUEST,
        "message": upstream([{"type": "text", "text": "Once"}], "model_context_window_exceeded"),
        "expected": reply({"content": "Once"}, "length"),
    },
    {
        "name": "stop_sequence_kept_as_vllm_stop_reason",
        "request": O_REQUEST,
        "message": upstream([{"type": "text", "text": "4"}], "stop_sequence", "###"),
        "expected": reply({"content": "4"}, "stop", stop_reason="###"),
    },
    {
        "name": "tool_use_to_tool_calls",
        "request": O_REQUEST,
        "message": upstream(
            [
                {"type": "text", "text": "Checking."},
                {
                    "type": "tool_use",
                    "id": "toolu_01A",
                    "name": "get_weather",
                    "input": {"location": "Paris"},
                },
                {"type": "tool_use", "id": "toolu_01B", "name": "get_time", "input": {}},
            ],
            "tool_use",
        ),
        "expected": reply(
            {
                "content": "Checking.",
                "tool_calls": [
                    {
                        "id": "toolu_01A",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"location": "Paris"}'},
                    },
                    {
                        "id": "toolu_01B",
                        "type": "function",
                        "function": {"name": "get_time", "arguments": "{}"},
                    },
                ],
            },
            "tool_calls",
        ),
    },
    {
        "name": "only_tools_content_is_null",
        "request": O_REQUEST,
        "message": upstream(
            [{"type": "tool_use", "id": "toolu_1", "name": "ls", "input": {"d": 1}}], "tool_use"
        ),
        "expected": reply(
            {
                "content": None,
                "tool_calls": [
                    {
                        "id": "toolu_1",
                        "type": "function",
                        "function": {"name": "ls", "arguments": '{"d": 1}'},
                    }
                ],
            },
            "tool_calls",
        ),
    },
    {
        "name": "raw_arguments_restored",
        "request": O_REQUEST,
        "message": upstream(
            [
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "grep",
                    "input": {RAW_ARGUMENTS_KEY: "{bad"},
                }
            ],
            "tool_use",
        ),
        "expected": reply(
            {
                "content": None,
                "tool_calls": [
                    {
                        "id": "toolu_1",
                        "type": "function",
                        "function": {"name": "grep", "arguments": "{bad"},
                    }
                ],
            },
            "tool_calls",
        ),
    },
    {
        "name": "thinking_to_reasoning_content",
        "request": O_REQUEST,
        "message": upstream(
            [
                {"type": "thinking", "thinking": "Let me add.", "signature": "sig"},
                {"type": "text", "text": "4"},
            ],
            "end_turn",
        ),
        "expected": reply({"content": "4", "reasoning_content": "Let me add."}, "stop"),
    },
    {
        "name": "refusal_is_content_filter",
        "request": O_REQUEST,
        "message": upstream([{"type": "text", "text": "No."}], "refusal"),
        "expected": reply({"content": "No."}, "content_filter"),
    },
    {
        "name": "pause_turn_is_stop",
        "request": O_REQUEST,
        "message": upstream([{"type": "text", "text": "Part one."}], "pause_turn"),
        "expected": reply({"content": "Part one."}, "stop"),
    },
    {
        "name": "cache_usage_to_prompt_tokens",
        "request": O_REQUEST,
        "message": upstream(
            [{"type": "text", "text": "Hi"}],
            "end_turn",
            usage={
                "input_tokens": 10,
                "output_tokens": 2,
                "cache_read_input_tokens": 2000,
                "cache_creation_input_tokens": 30,
            },
        ),
        "expected": reply(
            {"content": "Hi"},
            "stop",
            usage={
                "prompt_tokens": 2040,
                "completion_tokens": 2,
                "total_tokens": 2042,
                "prompt_tokens_details": {"cached_tokens": 2000},
            },
        ),
    },
]


def fill_forward(expected: dict[str, Any]) -> dict[str, Any]:
    """`expected` with placeholder ids drawn from the seeded factory in the translator's order."""
    out = copy.deepcopy(expected)
    factory = ids()
    out["id"] = factory.message_id()
    for block in out["content"]:
        if block["type"] == "thinking" and block["signature"] == "<sig>":
            block["signature"] = factory.signature()
        if block["type"] == "tool_use" and block["id"] == "<toolu>":
            block["id"] = factory.tool_use_id()
    return out


def fill_reverse(expected: dict[str, Any]) -> dict[str, Any]:
    """`expected` with the completion id drawn from the seeded factory."""
    out = copy.deepcopy(expected)
    out["id"] = ids().chat_completion_id()
    return out

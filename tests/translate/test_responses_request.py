"""Responses API requests -> OpenAI Chat requests: golden cases, dropped fields, refusals."""

# ruff: noqa: E501  (golden fixtures read best one event or message a line)
from __future__ import annotations

from typing import Any

import pytest

from cortex.errors import InvalidRequestError
from cortex.translate.responses_api import parse_responses_request, responses_request_to_openai


def chat(body: dict[str, Any]) -> dict[str, Any]:
    """The Chat request for a Responses body, as it goes on the wire."""
    return responses_request_to_openai(parse_responses_request(body)).model_dump(mode="json")


def refusal(body: dict[str, Any]) -> InvalidRequestError:
    with pytest.raises(InvalidRequestError) as caught:
        chat(body)
    assert caught.value.status == 400
    return caught.value


def test_string_input_with_instructions_and_sampling() -> None:
    body = {
        "model": "smollm2",
        "instructions": "Be brief.",
        "input": "Hello",
        "max_output_tokens": 64,
        "temperature": 0.2,
        "top_p": 0.9,
        "user": "u1",
    }
    assert chat(body) == {
        "model": "smollm2",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hello"},
        ],
        "max_tokens": 64,
        "temperature": 0.2,
        "top_p": 0.9,
        "stream": False,
        "user": "u1",
    }


def test_streaming_forces_usage_and_keeps_the_cache_key() -> None:
    body = {"model": "m", "input": "x", "stream": True, "prompt_cache_key": "thread-1"}
    out = chat(body)
    assert out["stream"] is True
    assert out["stream_options"] == {"include_usage": True}
    assert out["prompt_cache_key"] == "thread-1"


def test_codex_style_history_round_trip() -> None:
    """What the Codex CLI sends on its second turn: developer prompt, ids, reasoning, calls."""
    body = {
        "model": "m",
        "stream": True,
        "store": False,
        "include": ["reasoning.encrypted_content"],
        "reasoning": {"summary": "auto"},
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "client_metadata": {"session": "abc"},
        "input": [
            {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "You are Codex."}]},
            {"type": "message", "role": "developer", "content": "Sandbox: read-only."},
            {"type": "message", "role": "user", "id": "msg_u1", "content": [{"type": "input_text", "text": "List files"}]},
            {"type": "reasoning", "id": "rs_1", "summary": [], "content": [{"type": "reasoning_text", "text": "Use ls."}], "encrypted_content": None},
            {"type": "message", "role": "assistant", "id": "msg_a1", "status": "completed",
             "content": [{"type": "output_text", "text": "Running ls.", "annotations": []}]},
            {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "shell", "arguments": '{"cmd":"ls"}'},
            {"type": "function_call", "id": "fc_2", "call_id": "call_2", "name": "shell", "arguments": '{"cmd":"pwd"}'},
            {"type": "function_call_output", "call_id": "call_1", "output": "a.txt"},
            {"type": "function_call_output", "call_id": "call_2", "output": [{"type": "input_text", "text": "/tmp"}]},
            {"type": "web_search_call", "id": "ws_1", "status": "completed"},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Done."}]},
            {"role": "user", "content": "Thanks"},
        ],
        "tools": [
            {"type": "function", "name": "shell", "description": "Run a command", "strict": False,
             "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}}},
            {"type": "web_search"},
            {"type": "namespace", "name": "mcp", "tools": []},
            {"type": "custom", "name": "apply_patch", "format": {"type": "grammar"}},
        ],
    }  # fmt: skip
    out = chat(body)
    assert out["messages"] == [
        {"role": "system", "content": "You are Codex.\n\nSandbox: read-only."},
        {"role": "user", "content": "List files"},
        {
            "role": "assistant",
            "content": "Running ls.",
            "reasoning_content": "Use ls.",
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "shell", "arguments": '{"cmd":"ls"}'}},
                {"id": "call_2", "type": "function", "function": {"name": "shell", "arguments": '{"cmd":"pwd"}'}},
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "a.txt"},
        {"role": "tool", "tool_call_id": "call_2", "content": "/tmp"},
        {"role": "assistant", "content": "Done."},
        {"role": "user", "content": "Thanks"},
    ]  # fmt: skip
    assert out["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "shell",
                "description": "Run a command",
                "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}},
                "strict": False,
            },
        }
    ]
    assert out["tool_choice"] == "auto"
    assert out["parallel_tool_calls"] is True
    for dropped in ("store", "include", "client_metadata", "reasoning", "metadata"):
        assert dropped not in out


def test_images_files_and_tool_images() -> None:
    body = {
        "model": "m",
        "input": [
            {"role": "user", "content": [
                {"type": "input_text", "text": "What is this?"},
                {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "low"},
                {"type": "input_file", "file_data": "data:text/plain;base64,aGk=", "filename": "a.txt"},
            ]},
            {"type": "function_call", "call_id": "c1", "name": "shot", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": [
                {"type": "input_text", "text": "screenshot:"},
                {"type": "input_image", "image_url": "https://example.com/s.png"},
            ]},
        ],
    }  # fmt: skip
    assert chat(body)["messages"] == [
        {"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}},
            {"type": "file", "file": {"file_data": "data:text/plain;base64,aGk=", "filename": "a.txt"}},
        ]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "shot", "arguments": "{}"}},
        ]},
        {"role": "tool", "tool_call_id": "c1", "content": "screenshot:"},
        {"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.com/s.png", "detail": "auto"}},
        ]},
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ({"format": {"type": "text"}}, None),
        ({"format": {"type": "json_object"}}, {"type": "json_object"}),
        (
            {
                "format": {
                    "type": "json_schema",
                    "name": "point",
                    "strict": True,
                    "schema": {"type": "object", "properties": {"x": {"type": "integer"}}},
                }
            },
            {
                "type": "json_schema",
                "json_schema": {
                    "name": "point",
                    "schema": {"type": "object", "properties": {"x": {"type": "integer"}}},
                    "strict": True,
                },
            },
        ),
    ],
)
def test_text_format(text: dict[str, Any], expected: dict[str, Any] | None) -> None:
    out = chat({"model": "m", "input": "x", "text": text})
    assert out.get("response_format") == expected


def test_tool_choice_forms() -> None:
    tools = [{"type": "function", "name": "a"}, {"type": "function", "name": "b"}]
    base = {"model": "m", "input": "x", "tools": tools}
    named = chat({**base, "tool_choice": {"type": "function", "name": "b"}})
    assert named["tool_choice"] == {"type": "function", "function": {"name": "b"}}
    allowed = chat(
        {
            **base,
            "tool_choice": {
                "type": "allowed_tools",
                "mode": "required",
                "tools": [{"type": "function", "name": "a"}],
            },
        }
    )
    assert [t["function"]["name"] for t in allowed["tools"]] == ["a"]
    assert allowed["tool_choice"] == "required"
    assert chat({**base, "tool_choice": "none"})["tool_choice"] == "none"


def test_only_hosted_tools_leaves_no_tools() -> None:
    out = chat(
        {"model": "m", "input": "x", "tools": [{"type": "web_search"}], "tool_choice": "auto"}
    )
    assert "tools" not in out and "tool_choice" not in out and "parallel_tool_calls" not in out


def test_reasoning_effort_passes_on() -> None:
    out = chat({"model": "m", "input": "x", "reasoning": {"effort": "low"}})
    assert out["reasoning_effort"] == "low"


@pytest.mark.parametrize(
    ("extra", "param", "words"),
    [
        ({"previous_response_id": "resp_1"}, "previous_response_id", "does not store responses"),
        ({"conversation": "conv_1"}, "conversation", "does not store responses"),
        ({"background": True}, "background", "does not store responses"),
        (
            {"tool_choice": {"type": "web_search"}, "tools": [{"type": "web_search"}]},
            "tool_choice",
            "hosted tool",
        ),
        (
            {"tool_choice": {"type": "function", "name": "nope"}},
            "tool_choice",
            "not in tools",
        ),
        (
            {"tool_choice": "required", "tools": [{"type": "file_search"}]},
            "tool_choice",
            "required",
        ),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0]", "item_reference"),
        (
            {"input": [{"type": "function_call_output", "call_id": "c9", "output": "x"}]},
            "input[0]",
            "No tool call found for function call output with call_id c9",
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f1"}]}]},
            "input[0].content",
            "Files API",
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f1"}]}]},
            "input[0].content",
            "Files API",
        ),
        (
            {"input": [{"role": "system", "content": [{"type": "input_image", "image_url": "u"}]}]},
            "input[0].content",
            "text only",
        ),
        ({"input": []}, "input", "at least one message"),
    ],
)
def test_refusals(extra: dict[str, Any], param: str, words: str) -> None:
    error = refusal({"model": "m", "input": "x", **extra})
    assert error.param == param
    assert words in error.message


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "x"}, "model"),
        ({"model": "m", "input": [{"role": "robot", "content": "x"}]}, "input[0].role"),
        ({"model": "m", "input": "x", "max_output_tokens": 0}, "max_output_tokens"),
        ({"model": "m", "input": "x", "temperature": 3}, "temperature"),
        ({"model": "m", "input": [{"type": "function_call", "name": "f"}]}, "input[0].call_id"),
    ],
)
def test_malformed_bodies_name_the_field(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        parse_responses_request(body)
    assert caught.value.param is not None
    assert caught.value.param.startswith(param)


def test_unknown_fields_and_parts_are_tolerated() -> None:
    request = parse_responses_request(
        {
            "model": "m",
            "input": [{"role": "user", "content": "x", "phase": "final"}],
            "moderation": {"model": "x"},
            "prompt_cache_options": {"mode": "implicit"},
        }
    )
    assert responses_request_to_openai(request).messages[0].content == "x"

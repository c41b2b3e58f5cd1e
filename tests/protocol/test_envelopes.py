"""Wire envelopes: what real clients send parses (extras kept), what we send is exact."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import TypeAdapter

from cortex.protocol import anthropic as A
from cortex.protocol import openai as O

from ..captured import CLAUDE_CODE_BODY


def test_claude_code_body_parses_and_keeps_every_field() -> None:
    request = A.MessagesRequest.model_validate(CLAUDE_CODE_BODY)
    assert request.model_dump(mode="json") == CLAUDE_CODE_BODY
    blocks = request.messages[3].content
    assert isinstance(blocks, list)
    assert isinstance(blocks[0], A.ToolResultBlock) and isinstance(blocks[1], A.UnknownBlock)
    assert request.model_extra == {"context_management": CLAUDE_CODE_BODY["context_management"]}


def test_count_tokens_request_is_a_create_request_without_max_tokens() -> None:
    body = {k: v for k, v in CLAUDE_CODE_BODY.items() if k not in ("max_tokens", "stream")}
    assert A.CountTokensRequest.model_validate(body).model_dump(mode="json") == body
    assert A.CountTokensResponse(input_tokens=12).model_dump(mode="json") == {"input_tokens": 12}


OPENAI_BODY: dict[str, Any] = {
    "model": "smollm2",
    "messages": [
        {"role": "developer", "content": "Be terse."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {
                    "type": "image_url",
                    "image_url": {"url": "data:image/png;base64,AAA", "detail": "low"},
                },
                {"type": "input_audio", "input_audio": {"data": "x", "format": "wav"}},
                {"type": "file", "file": {"file_id": "f"}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "f", "arguments": '{"a":1}'},
                }
            ],
            "reasoning_content": "think",
        },
        {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": "42"}]},
        {"role": "assistant", "content": [{"type": "refusal", "refusal": "no"}]},
    ],
    "max_completion_tokens": 100,
    "stream": True,
    "stream_options": {"include_usage": True, "include_obfuscation": False},
    "tools": [
        {
            "type": "function",
            "function": {"name": "f", "parameters": {"type": "object"}, "strict": True},
        },
        {"type": "custom", "custom": {"name": "g"}},
    ],
    "tool_choice": {"type": "function", "function": {"name": "f"}},
    "parallel_tool_calls": False,
    "response_format": {
        "type": "json_schema",
        "json_schema": {"name": "out", "schema": {"type": "object"}, "strict": True},
    },
    "logprobs": True,
    "top_logprobs": 2,
    "stop": ["\n\n"],
    "seed": 3,
    "top_k": 20,
    "min_p": 0.05,
    "repetition_penalty": 1.1,
    "chat_template_kwargs": {"enable_thinking": False},
    "prompt_cache_key": "k",
    "verbosity": "low",
}


def test_openai_body_parses_and_keeps_every_field() -> None:
    request = O.ChatCompletionRequest.model_validate(OPENAI_BODY)
    assert request.model_dump(mode="json") == OPENAI_BODY
    parts = request.messages[1].content
    assert isinstance(parts, list)
    assert [type(p) for p in parts] == [O.TextPart, O.ImagePart, O.InputAudioPart, O.FilePart]
    assert request.response_format is not None and request.response_format.json_schema is not None
    assert request.response_format.json_schema.schema_ == {"type": "object"}


def test_legacy_completions_and_embeddings_requests() -> None:
    for prompt in ("text", ["a", "b"], [1, 2, 3], [[1, 2], [3]]):
        body = {"model": "m", "prompt": prompt, "max_tokens": 5, "logprobs": 2, "echo": False}
        assert O.CompletionRequest.model_validate(body).model_dump(mode="json") == body
    body = {"model": "e", "input": ["a", "b"], "encoding_format": "base64"}
    assert O.EmbeddingRequest.model_validate(body).model_dump(mode="json") == body


def test_anthropic_reply_has_its_nulls() -> None:
    message = A.Message(
        id="msg_1",
        model="m",
        content=[A.TextBlock(text="hi")],
        stop_reason="end_turn",
        usage=A.Usage(input_tokens=1, output_tokens=2),
    )
    assert message.model_dump(mode="json") == {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "m",
        "content": [{"type": "text", "text": "hi"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 1, "output_tokens": 2},
    }


def test_openai_reply_chunk_and_error_have_their_nulls() -> None:
    reply = O.ChatCompletion(
        id="chatcmpl-1",
        created=1,
        model="m",
        choices=[
            O.Choice(
                message=O.ChatCompletionMessage(
                    tool_calls=[
                        O.ToolCall(id="call_1", function=O.FunctionCall(name="f", arguments="{}"))
                    ]
                ),
                finish_reason="tool_calls",
            )
        ],
        usage=O.Usage(prompt_tokens=3, completion_tokens=1, total_tokens=4),
    )
    assert reply.model_dump(mode="json")["choices"] == [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": None,
                "refusal": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "f", "arguments": "{}"},
                    }
                ],
            },
            "finish_reason": "tool_calls",
            "logprobs": None,
        }
    ]
    chunk = O.ChatCompletionChunk(
        id="c", created=1, model="m", choices=[O.ChunkChoice(delta=O.ChunkDelta(content="x"))]
    )
    assert chunk.model_dump(mode="json")["choices"] == [
        {"index": 0, "delta": {"content": "x"}, "finish_reason": None}
    ]
    error = O.ErrorResponse(error=O.ErrorBody(message="bad", type="invalid_request_error"))
    assert error.model_dump(mode="json") == {
        "error": {"message": "bad", "type": "invalid_request_error", "param": None, "code": None}
    }
    assert O.Usage.model_validate({"prompt_tokens": 2, "completion_tokens": 3}).total_tokens == 5


EVENTS: list[dict[str, Any]] = [
    {
        "type": "message_start",
        "message": {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "m",
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 25, "output_tokens": 1},
        },
    },
    {"type": "ping"},
    {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "thinking", "thinking": "", "signature": ""},
    },
    {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "thinking_delta", "thinking": "Let me"},
    },
    {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "signature_delta", "signature": "EqQB"},
    },
    {"type": "content_block_stop", "index": 0},
    {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
    {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Hello"}},
    {
        "type": "content_block_delta",
        "index": 1,
        "delta": {
            "type": "citations_delta",
            "citation": {"type": "char_location", "cited_text": "x"},
        },
    },
    {"type": "content_block_stop", "index": 1},
    {
        "type": "content_block_start",
        "index": 2,
        "content_block": {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}},
    },
    {
        "type": "content_block_delta",
        "index": 2,
        "delta": {"type": "input_json_delta", "partial_json": '{"location": "SF"}'},
    },
    {"type": "content_block_stop", "index": 2},
    {
        "type": "message_delta",
        "delta": {"stop_reason": "tool_use", "stop_sequence": None},
        "usage": {"output_tokens": 89},
    },
    {"type": "message_stop"},
    {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
]


@pytest.mark.parametrize("event", EVENTS, ids=[e["type"] for e in EVENTS])
def test_every_stream_event_round_trips(event: dict[str, Any]) -> None:
    parsed = TypeAdapter(A.StreamEvent).validate_python(event)
    assert parsed.type == event["type"]
    assert parsed.model_dump(mode="json") == event


def test_block_deltas_parse_into_their_models() -> None:
    adapter: TypeAdapter[Any] = TypeAdapter(A.StreamEvent)
    kinds = [
        type(adapter.validate_python(e).delta) for e in EVENTS if e["type"] == "content_block_delta"
    ]
    assert kinds == [
        A.ThinkingDelta,
        A.SignatureDelta,
        A.TextDelta,
        A.UnknownDelta,
        A.InputJSONDelta,
    ]


def test_anthropic_error_and_models_envelopes() -> None:
    error = A.ErrorResponse(
        error=A.ErrorBody(type="not_found_error", message="no such model"), request_id="req_1"
    )
    assert error.model_dump(mode="json") == {
        "type": "error",
        "error": {"type": "not_found_error", "message": "no such model"},
        "request_id": "req_1",
    }
    page = A.ModelList(
        data=[A.ModelInfo(id="claude-local", display_name="Local", max_input_tokens=8192)]
    )
    assert page.model_dump(mode="json") == {
        "data": [
            {
                "type": "model",
                "id": "claude-local",
                "display_name": "Local",
                "created_at": "1970-01-01T00:00:00Z",
                "lifecycle": "active",
                "max_input_tokens": 8192,
            }
        ],
        "has_more": False,
        "first_id": None,
        "last_id": None,
    }

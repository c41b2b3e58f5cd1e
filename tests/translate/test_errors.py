"""Error translation both ways, with the statuses and types each SDK maps to its exceptions."""

# ruff: noqa: E501  (upstream error wordings are quoted whole)
from __future__ import annotations

import pytest

from cortex.errors import (
    ContextLengthExceededError,
    InsufficientMemoryError,
    ModelNotFoundError,
    OverloadedError,
)
from cortex.translate import (
    anthropic_error_to_openai,
    error_from_anthropic,
    error_from_openai,
    openai_error_to_anthropic,
)

# (Anthropic status, Anthropic type, OpenAI status, OpenAI type)
TABLE = [
    (400, "invalid_request_error", 400, "invalid_request_error"),
    (401, "authentication_error", 401, "authentication_error"),
    (403, "permission_error", 403, "permission_error"),
    (404, "not_found_error", 404, "not_found_error"),
    (413, "request_too_large", 413, "invalid_request_error"),
    (429, "rate_limit_error", 429, "rate_limit_error"),
    (500, "api_error", 500, "server_error"),
    (529, "overloaded_error", 503, "server_error"),
    (504, "timeout_error", 504, "timeout_error"),
]


@pytest.mark.parametrize(("a_status", "a_type", "o_status", "o_type"), TABLE)
def test_anthropic_to_openai(a_status: int, a_type: str, o_status: int, o_type: str) -> None:
    body = {
        "type": "error",
        "error": {"type": a_type, "message": "it broke"},
        "request_id": "req_1",
    }
    assert anthropic_error_to_openai(a_status, body) == (
        o_status,
        {"error": {"message": "it broke", "type": o_type, "param": None, "code": None}},
    )


@pytest.mark.parametrize(("a_status", "a_type", "o_status", "o_type"), TABLE)
def test_openai_to_anthropic(a_status: int, a_type: str, o_status: int, o_type: str) -> None:
    body = {"error": {"message": "it broke", "type": o_type, "param": None, "code": None}}
    assert openai_error_to_anthropic(o_status, body) == (
        a_status,
        {"type": "error", "error": {"type": a_type, "message": "it broke"}},
    )


@pytest.mark.parametrize(("a_status", "a_type", "o_status", "o_type"), TABLE)
def test_mid_stream_errors_infer_the_status_from_the_type(
    a_status: int, a_type: str, o_status: int, o_type: str
) -> None:
    body = {"type": "error", "error": {"type": a_type, "message": "m"}}
    assert error_from_anthropic(None, body).status_for("anthropic") == a_status


def test_unknown_statuses_and_raw_bodies() -> None:
    assert openai_error_to_anthropic(502, b"Bad Gateway") == (
        502,
        {"type": "error", "error": {"type": "api_error", "message": "Bad Gateway"}},
    )
    assert openai_error_to_anthropic(418, "{}")[0] == 400
    assert (
        anthropic_error_to_openai(
            402, {"type": "error", "error": {"type": "billing_error", "message": "pay"}}
        )[0]
        == 403
    )
    assert error_from_openai(500, None).message == "upstream error 500"


def test_overloaded_keeps_retry_after() -> None:
    error = error_from_openai(
        503, {"error": {"message": "busy", "type": "server_error"}}, retry_after_s=7
    )
    assert isinstance(error, OverloadedError) and error.headers() == {"retry-after": "7"}
    assert error_from_openai(503, {"error": {"message": "busy"}}).headers() == {"retry-after": "1"}


def test_model_not_found_and_insufficient_memory_keep_their_facts() -> None:
    error = error_from_openai(
        404,
        {
            "error": {
                "message": "no model x",
                "type": "not_found_error",
                "code": "model_not_found",
                "param": "model",
            }
        },
    )
    assert isinstance(error, ModelNotFoundError) and error.param == "model"
    memory = error_from_openai(
        507,
        {
            "error": {
                "message": "too big",
                "type": "insufficient_memory",
                "required_mb": 900.0,
                "free_mb": 100.0,
            }
        },
    )
    assert isinstance(memory, InsufficientMemoryError) and (memory.required_mb, memory.free_mb) == (
        900.0,
        100.0,
    )


CLAUDE_CODE_WORDING = "input length and `max_tokens` exceed context limit: 7000 + 32000 > 8192, decrease input length or `max_tokens` and try again"


@pytest.mark.parametrize(
    "body",
    [
        {
            "error": {
                "message": CLAUDE_CODE_WORDING,
                "type": "invalid_request_error",
                "code": "context_length_exceeded",
            }
        },
        {
            "error": {
                "message": "This model's maximum context length is 8192 tokens. However, you requested 39000 tokens (7000 in the messages, 32000 in the completion). Please reduce the length of the messages or completion.",
                "type": "BadRequestError",
                "code": 400,
            }
        },
        {
            "error": {
                "message": "'max_tokens' or 'max_completion_tokens' is too large: 32000. This model's maximum context length is 8192 tokens and your request has 7000 input tokens (32000 > 8192 - 7000).",
                "type": "BadRequestError",
            }
        },
        {
            "error": {
                "code": 400,
                "message": "the request exceeds the available context size, try increasing it",
                "type": "exceed_context_size_error",
                "n_prompt_tokens": 7000,
                "n_ctx": 8192,
            }
        },
    ],
    ids=["ours", "vllm-old", "vllm-new", "llama.cpp"],
)
def test_context_overflow_becomes_the_sentence_claude_code_parses(body: dict[str, object]) -> None:
    error = error_from_openai(400, body, max_tokens=32000)
    assert isinstance(error, ContextLengthExceededError)
    assert (error.input_tokens, error.max_tokens, error.context_length) == (7000, 32000, 8192)
    assert error.status_for("anthropic") == 400
    assert error.to_anthropic()["error"] == {
        "type": "invalid_request_error",
        "message": CLAUDE_CODE_WORDING,
    }
    if "n_ctx" not in str(body):  # llama.cpp's error does not say max_tokens: only the caller knows
        assert openai_error_to_anthropic(400, body)[1] == error.to_anthropic()


def test_context_overflow_mid_stream() -> None:
    body = {"error": {"message": CLAUDE_CODE_WORDING, "code": "context_length_exceeded"}}
    assert isinstance(error_from_openai(None, body), ContextLengthExceededError)

"""The error tree renders both dialects' envelopes with the right statuses."""

from __future__ import annotations

import pytest

from cortex import errors as e


@pytest.mark.parametrize(
    ("error", "openai_status", "anthropic_status", "anthropic_type", "openai_type"),
    [
        (e.InvalidRequestError("x"), 400, 400, "invalid_request_error", "invalid_request_error"),
        (e.AuthenticationError("x"), 401, 401, "authentication_error", "authentication_error"),
        (e.PermissionDeniedError("x"), 403, 403, "permission_error", "permission_error"),
        (e.NotFoundError("x"), 404, 404, "not_found_error", "not_found_error"),
        (e.RequestTooLargeError("x"), 413, 413, "request_too_large", "invalid_request_error"),
        (e.RateLimitError("x"), 429, 429, "rate_limit_error", "rate_limit_error"),
        (e.CortexError("x"), 500, 500, "api_error", "server_error"),
        (e.OverloadedError("x"), 503, 529, "overloaded_error", "server_error"),
        (e.UpstreamTimeoutError("x"), 504, 504, "timeout_error", "timeout_error"),
    ],
)
def test_statuses_and_types(
    error: e.CortexError,
    openai_status: int,
    anthropic_status: int,
    anthropic_type: str,
    openai_type: str,
) -> None:
    assert error.status_for("openai") == openai_status
    assert error.status_for("anthropic") == anthropic_status
    assert error.to_anthropic() == {
        "type": "error",
        "error": {"type": anthropic_type, "message": "x"},
    }
    assert error.to_openai()["error"]["type"] == openai_type
    assert error.to_openai()["error"]["message"] == "x"


def test_context_length_wording_is_what_claude_code_parses() -> None:
    err = e.ContextLengthExceededError(8000, 32000, 8192)
    assert err.message.startswith(
        "input length and `max_tokens` exceed context limit: 8000 + 32000 > 8192"
    )
    assert err.to_openai()["error"]["code"] == "context_length_exceeded"
    assert err.status_for("anthropic") == 400


def test_overloaded_sends_retry_after() -> None:
    assert e.OverloadedError("busy").headers() == {"retry-after": "1"}
    assert e.OverloadedError("busy", retry_after_s=7.4).headers() == {"retry-after": "7"}
    assert e.InvalidRequestError("bad").headers() == {}


def test_insufficient_memory_carries_figures() -> None:
    err = e.InsufficientMemoryError("too big", required_mb=1200.0, free_mb=300.04)
    body = err.to_openai()["error"]
    assert (body["required_mb"], body["free_mb"], body["code"]) == (
        1200.0,
        300.0,
        "insufficient_memory",
    )
    assert err.status_for("openai") == 507


def test_error_from_status() -> None:
    assert isinstance(e.error_from_status(404, "m"), e.NotFoundError)
    assert isinstance(e.error_from_status(529, "m"), e.OverloadedError)
    assert isinstance(e.error_from_status(599, "m"), e.UpstreamError)
    mem = e.error_from_status(507, "m", details={"required_mb": 5, "free_mb": 1})
    assert isinstance(mem, e.InsufficientMemoryError) and mem.required_mb == 5


def test_config_error_text() -> None:
    err = e.ConfigError("unknown key", file="c.toml", key="gateway.x", line=3)
    assert str(err) == "c.toml:3: gateway.x: unknown key"

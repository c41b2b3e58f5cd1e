"""Error translation: an upstream error body in one dialect -> a `CortexError` -> the other."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Final

from pydantic import BaseModel

from cortex.errors import (
    AuthenticationError,
    ConflictError,
    ContextLengthExceededError,
    CortexError,
    InsufficientMemoryError,
    InvalidRequestError,
    ModelNotFoundError,
    NotFoundError,
    OverloadedError,
    PermissionDeniedError,
    RateLimitError,
    RequestTooLargeError,
    UpstreamError,
    UpstreamTimeoutError,
)

__all__ = [
    "anthropic_error_to_openai",
    "error_from_anthropic",
    "error_from_openai",
    "openai_error_to_anthropic",
]

_CLASS_BY_STATUS: Final[dict[int, type[CortexError]]] = {
    400: InvalidRequestError,
    401: AuthenticationError,
    402: PermissionDeniedError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: RequestTooLargeError,
    422: InvalidRequestError,
    429: RateLimitError,
    500: CortexError,
    502: UpstreamError,
    503: OverloadedError,
    504: UpstreamTimeoutError,
    529: OverloadedError,
}

_STATUS_BY_OPENAI_TYPE: Final[dict[str, int]] = {
    "invalid_request_error": 400,
    "exceed_context_size_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "conflict_error": 409,
    "rate_limit_error": 429,
    "insufficient_quota": 429,
    "server_error": 500,
    "overloaded_error": 503,
    "timeout_error": 504,
    "insufficient_memory": 507,
}

_STATUS_BY_ANTHROPIC_TYPE: Final[dict[str, int]] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}

# Context-overflow wordings: ours/Anthropic's (which Claude Code parses), then vLLM's two.
_CONTEXT_ANTHROPIC = re.compile(r"exceed context limit: (\d+) \+ (\d+) > (\d+)")
_CONTEXT_VLLM_OLD = re.compile(
    r"maximum context length is (\d+) tokens\. However, you requested \d+ tokens "
    r"\((\d+) in the messages, (\d+) in the completion\)"
)
_CONTEXT_VLLM_NEW = re.compile(
    r"is too large: (\d+)\. This model's maximum context length is (\d+) tokens "
    r"and your request has (\d+) input tokens"
)


def _error_fields(body: Any) -> dict[str, Any]:
    """The inner error object of either envelope (or a best effort from raw text)."""
    if isinstance(body, BaseModel):
        body = body.model_dump(mode="json")
    if isinstance(body, bytes | bytearray):
        body = body.decode("utf-8", "replace")
    if isinstance(body, str):
        try:
            body = json.loads(body)
        except ValueError:
            return {"message": body.strip()[:2000]}
    if not isinstance(body, Mapping):
        return {}
    inner = body.get("error")
    if isinstance(inner, Mapping):
        return dict(inner)
    if isinstance(inner, str):
        return {"message": inner}
    return dict(body)


def _context_error(
    message: str, fields: Mapping[str, Any], max_tokens: int | None
) -> ContextLengthExceededError | None:
    if m := _CONTEXT_ANTHROPIC.search(message):
        prompt, completion, limit = (int(g) for g in m.groups())
    elif m := _CONTEXT_VLLM_OLD.search(message):
        limit, prompt, completion = (int(g) for g in m.groups())
    elif m := _CONTEXT_VLLM_NEW.search(message):
        completion, limit, prompt = (int(g) for g in m.groups())
    elif isinstance(fields.get("n_prompt_tokens"), int) and isinstance(fields.get("n_ctx"), int):
        # llama.cpp's exceed_context_size_error carries the counts as fields.
        prompt, limit, completion = fields["n_prompt_tokens"], fields["n_ctx"], max_tokens or 0
    else:
        return None
    return ContextLengthExceededError(prompt, completion, limit)


def _build(
    status: int,
    message: str,
    fields: Mapping[str, Any],
    *,
    max_tokens: int | None,
    retry_after_s: float | None,
) -> CortexError:
    code = fields.get("code")
    code = code if isinstance(code, str) else None
    param = fields.get("param") if isinstance(fields.get("param"), str) else None
    if status in (400, 413, 422) or code == "context_length_exceeded":
        context = _context_error(message, fields, max_tokens)
        if context is not None:
            return context
    if status == 507:
        return InsufficientMemoryError(
            message,
            required_mb=float(fields.get("required_mb") or 0.0),
            free_mb=float(fields.get("free_mb") or 0.0),
        )
    if status == 404 and code == "model_not_found":
        return ModelNotFoundError(message, param=param)
    cls = _CLASS_BY_STATUS.get(status)
    if cls is None:
        cls = UpstreamError if status >= 500 else InvalidRequestError
    kwargs: dict[str, Any] = {"param": param, "code": code}
    if retry_after_s is not None or cls is not OverloadedError:
        kwargs["retry_after_s"] = retry_after_s
    return cls(message, **kwargs)


def error_from_openai(
    status: int | None,
    body: Mapping[str, Any] | BaseModel | str | bytes | None,
    *,
    max_tokens: int | None = None,
    retry_after_s: float | None = None,
) -> CortexError:
    """The `CortexError` for an OpenAI-dialect error (an HTTP error or a mid-stream one).

    The message is kept verbatim, except that a context overflow in vLLM's or llama.cpp's
    words becomes a `ContextLengthExceededError`, whose message is the sentence Claude Code
    parses to retry with a smaller `max_tokens`.

    Args:
        status: the HTTP status, or `None` mid-stream (then inferred from `error.type`).
        body: the body: `{"error": {...}}` as a dict, model, JSON text or plain text.
        max_tokens: the request's `max_tokens`, for overflow errors that do not say it.
        retry_after_s: the upstream's `Retry-After`, if any.
    """
    fields = _error_fields(body)
    kind = fields.get("type")
    kind = kind if isinstance(kind, str) else ""
    if status is None:
        status = _STATUS_BY_OPENAI_TYPE.get(kind, 500)
        if fields.get("code") == "context_length_exceeded":
            status = 400
    message = fields.get("message")
    message = message if isinstance(message, str) and message else f"upstream error {status}"
    return _build(status, message, fields, max_tokens=max_tokens, retry_after_s=retry_after_s)


def error_from_anthropic(
    status: int | None,
    body: Mapping[str, Any] | BaseModel | str | bytes | None,
    *,
    retry_after_s: float | None = None,
) -> CortexError:
    """The `CortexError` for an Anthropic-dialect error (`{"type": "error", "error": ...}`).

    Args:
        status: the HTTP status, or `None` for a stream `error` event (inferred from type).
        body: the body as a dict, model, JSON text or plain text.
        retry_after_s: the upstream's `Retry-After`, if any.
    """
    fields = _error_fields(body)
    kind = fields.get("type")
    kind = kind if isinstance(kind, str) else ""
    if status is None:
        status = _STATUS_BY_ANTHROPIC_TYPE.get(kind, 500)
    message = fields.get("message")
    message = message if isinstance(message, str) and message else f"upstream error {status}"
    return _build(status, message, fields, max_tokens=None, retry_after_s=retry_after_s)


def openai_error_to_anthropic(
    status: int | None, body: Mapping[str, Any] | BaseModel | str | bytes | None
) -> tuple[int, dict[str, Any]]:
    """`(status, body)` of the Anthropic error matching an OpenAI error.

    400 -> `invalid_request_error`, 401 `authentication_error`, 403 `permission_error`,
    404 `not_found_error`, 413 `request_too_large`, 429 `rate_limit_error`, 500 `api_error`,
    503 -> 529 `overloaded_error`, 504 `timeout_error`; the message is kept.
    """
    error = error_from_openai(status, body)
    return error.status_for("anthropic"), error.to_anthropic()


def anthropic_error_to_openai(
    status: int | None, body: Mapping[str, Any] | BaseModel | str | bytes | None
) -> tuple[int, dict[str, Any]]:
    """`(status, body)` of the OpenAI error matching an Anthropic error.

    `overloaded_error` (529) -> 503 `server_error`, `api_error` -> 500 `server_error`, the
    4xx types keep their status; the body is `{"error": {message, type, param, code}}`.
    """
    error = error_from_anthropic(status, body)
    return error.status_for("openai"), error.to_openai()

"""The one exception tree of cortex; each error knows its HTTP status and both dialects' types.

```
CortexError                      500  api_error              / server_error
├── InvalidRequestError          400  invalid_request_error  / invalid_request_error
│   └── ContextLengthExceededError 400 (code context_length_exceeded)
├── AuthenticationError          401  authentication_error   / authentication_error
├── PermissionDeniedError        403  permission_error       / permission_error
├── NotFoundError                404  not_found_error        / not_found_error
│   └── ModelNotFoundError       404  (code model_not_found)
├── ConflictError                409  invalid_request_error  / conflict_error
├── RequestTooLargeError         413  request_too_large      / invalid_request_error
├── RateLimitError               429  rate_limit_error       / rate_limit_error
├── UpstreamError                502  api_error              / server_error
├── OverloadedError              503  overloaded_error (529) / server_error
├── UpstreamTimeoutError         504  timeout_error          / timeout_error
└── InsufficientMemoryError      507  api_error              / insufficient_memory

ConfigError                      operator mistakes in a config file (not an HTTP error)
```

Anthropic clients see `OverloadedError` as 529 `overloaded_error` (Claude Code retries it by
itself); OpenAI clients see 503. `status_for(dialect)` says which.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

__all__ = [
    "AuthenticationError",
    "ConfigError",
    "ConflictError",
    "ContextLengthExceededError",
    "CortexError",
    "Dialect",
    "InsufficientMemoryError",
    "InvalidRequestError",
    "ModelNotFoundError",
    "NotFoundError",
    "OverloadedError",
    "PermissionDeniedError",
    "RateLimitError",
    "RequestTooLargeError",
    "UpstreamError",
    "UpstreamTimeoutError",
    "describe_error",
    "error_from_status",
]

Dialect = Literal["openai", "anthropic"]


class CortexError(Exception):
    """Base of every error a client can see.

    Args:
        message: what went wrong, in words a person can act on.
        param: the request field at fault, when there is one (OpenAI's `param`).
        code: a machine-readable code (OpenAI's `code`), e.g. `context_length_exceeded`.
        retry_after_s: seconds a client should wait before retrying (sent as `Retry-After`).
        details: extra JSON-able facts (required and free memory, loaded models...).
    """

    status: ClassVar[int] = 500
    openai_type: ClassVar[str] = "server_error"
    anthropic_type: ClassVar[str] = "api_error"
    anthropic_status: ClassVar[int | None] = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after_s: float | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        self.retry_after_s = retry_after_s
        self.details = dict(details or {})

    def status_for(self, dialect: Dialect) -> int:
        """The HTTP status to answer with in `dialect`."""
        if dialect == "anthropic" and self.anthropic_status is not None:
            return self.anthropic_status
        return self.status

    def headers(self) -> dict[str, str]:
        """Extra response headers (Retry-After when set)."""
        if self.retry_after_s is None:
            return {}
        return {"retry-after": str(max(1, round(self.retry_after_s)))}

    def to_openai(self) -> dict[str, Any]:
        """The OpenAI error envelope `{"error": {message, type, param, code}}`."""
        error: dict[str, Any] = {
            "message": self.message,
            "type": self.openai_type,
            "param": self.param,
            "code": self.code,
        }
        error.update({k: v for k, v in self.details.items() if k not in error})
        return {"error": error}

    def to_anthropic(self, request_id: str | None = None) -> dict[str, Any]:
        """The Anthropic error envelope `{"type": "error", "error": {type, message}}`."""
        body: dict[str, Any] = {
            "type": "error",
            "error": {"type": self.anthropic_type, "message": self.message},
        }
        if request_id is not None:
            body["request_id"] = request_id
        return body

    def to_dialect(self, dialect: Dialect) -> dict[str, Any]:
        """The error envelope of `dialect`."""
        return self.to_anthropic() if dialect == "anthropic" else self.to_openai()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


class InvalidRequestError(CortexError):
    """The request is malformed or asks for something impossible (400)."""

    status = 400
    openai_type = "invalid_request_error"
    anthropic_type = "invalid_request_error"


class ContextLengthExceededError(InvalidRequestError):
    """Prompt plus max_tokens does not fit the model's context window (400).

    The message keeps Anthropic's wording, which Claude Code parses to retry with a smaller
    `max_tokens`: ``input length and `max_tokens` exceed context limit: X + Y > Z``.
    """

    def __init__(
        self,
        input_tokens: int,
        max_tokens: int,
        context_length: int,
        *,
        message: str | None = None,
    ) -> None:
        text = message or (
            "input length and `max_tokens` exceed context limit: "
            f"{input_tokens} + {max_tokens} > {context_length}, "
            "decrease input length or `max_tokens` and try again"
        )
        super().__init__(text, param="messages", code="context_length_exceeded")
        self.input_tokens = input_tokens
        self.max_tokens = max_tokens
        self.context_length = context_length


class AuthenticationError(CortexError):
    """Missing or wrong API key (401)."""

    status = 401
    openai_type = "authentication_error"
    anthropic_type = "authentication_error"


class PermissionDeniedError(CortexError):
    """The key is valid but may not do this (403)."""

    status = 403
    openai_type = "permission_error"
    anthropic_type = "permission_error"


class NotFoundError(CortexError):
    """The route or resource does not exist (404)."""

    status = 404
    openai_type = "not_found_error"
    anthropic_type = "not_found_error"


class ModelNotFoundError(NotFoundError):
    """No node can serve the requested model (404)."""

    def __init__(self, message: str, **kwargs: Any) -> None:
        kwargs.setdefault("code", "model_not_found")
        kwargs.setdefault("param", "model")
        super().__init__(message, **kwargs)


class ConflictError(CortexError):
    """The resource is in a state that forbids this now, e.g. a model unloading (409)."""

    status = 409
    openai_type = "conflict_error"
    anthropic_type = "invalid_request_error"


class RequestTooLargeError(CortexError):
    """The request body is over the configured limit (413)."""

    status = 413
    openai_type = "invalid_request_error"
    anthropic_type = "request_too_large"


class RateLimitError(CortexError):
    """Too many requests for this key (429)."""

    status = 429
    openai_type = "rate_limit_error"
    anthropic_type = "rate_limit_error"


class UpstreamError(CortexError):
    """A node answered with something unusable: broken JSON, broken SSE, a crash (502)."""

    status = 502
    openai_type = "server_error"
    anthropic_type = "api_error"


class OverloadedError(CortexError):
    """No capacity now: queue full, no node can take the model (503; Anthropic 529)."""

    status = 503
    anthropic_status = 529
    openai_type = "server_error"
    anthropic_type = "overloaded_error"

    def __init__(self, message: str, **kwargs: Any) -> None:
        kwargs.setdefault("retry_after_s", 1.0)
        super().__init__(message, **kwargs)


class UpstreamTimeoutError(CortexError):
    """A node did not answer in time (504)."""

    status = 504
    openai_type = "timeout_error"
    anthropic_type = "timeout_error"


class InsufficientMemoryError(CortexError):
    """A model does not fit the memory a node may use (507).

    Args:
        required_mb: memory the model needs.
        free_mb: memory the node has free for it.
    """

    status = 507
    openai_type = "insufficient_memory"
    anthropic_type = "api_error"

    def __init__(self, message: str, *, required_mb: float, free_mb: float) -> None:
        super().__init__(
            message,
            code="insufficient_memory",
            details={"required_mb": round(required_mb, 1), "free_mb": round(free_mb, 1)},
        )
        self.required_mb = required_mb
        self.free_mb = free_mb


class ConfigError(Exception):
    """An operator mistake in a configuration file: names the file, the key path and the fault.

    Args:
        message: what was expected.
        file: the file at fault, when there is one.
        key: the dotted key path, e.g. `neurons[1].endpoint`.
        line: the line in the file, when the TOML parser gives it.
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        key: str | None = None,
        line: int | None = None,
    ) -> None:
        self.message = message
        self.file = file
        self.key = key
        self.line = line
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.file or "<config>"
        if self.line is not None:
            where += f":{self.line}"
        if self.key:
            return f"{where}: {self.key}: {self.message}"
        return f"{where}: {self.message}"


_BY_STATUS: dict[int, type[CortexError]] = {
    400: InvalidRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: RequestTooLargeError,
    429: RateLimitError,
    502: UpstreamError,
    503: OverloadedError,
    504: UpstreamTimeoutError,
    529: OverloadedError,
}


def error_from_status(status: int, message: str, **kwargs: Any) -> CortexError:
    """Build the error class that matches an upstream HTTP status (unknown 5xx -> 502)."""
    if status == 507:
        details = kwargs.pop("details", None) or {}
        return InsufficientMemoryError(
            message,
            required_mb=float(details.get("required_mb", 0.0)),
            free_mb=float(details.get("free_mb", 0.0)),
        )
    cls = _BY_STATUS.get(status)
    if cls is None:
        cls = UpstreamError if status >= 500 else InvalidRequestError
    return cls(message, **kwargs)


def describe_error(exc: BaseException | None) -> str:
    """A failure in one line for logs and error messages: a `CortexError`'s message, "timed out",
    "cancelled", else the exception's text (its type's name when it has none)."""
    if isinstance(exc, CortexError):
        return exc.message
    if isinstance(exc, TimeoutError):  # asyncio.TimeoutError is TimeoutError since 3.11
        return "timed out"
    if exc is None:
        return "unknown error"
    if type(exc).__name__ == "CancelledError":
        return "cancelled"
    return str(exc) or type(exc).__name__

"""The access log: one line per request, plain or JSON, on the `cortex.access` logger.

Each line carries the request id (the `x-request-id` the gateway answered with), a hashed key
id (the first 12 hex digits of the key's SHA-256: which client, never the key), the dialect,
model and node, the status, TTFT, prompt and completion tokens and the duration, streams
included (the line is written when the last byte has gone). No prompt text, ever.

`AccessLogMiddleware` opens an `AccessEntry` per request; the request's `RequestRecord`
(`cortex.gateway.metrics`) fills in what only the pipeline knows (model, node, tokens, TTFT)
through `current_entry()`, a context variable: the entry is the request's own, so two apps in
one process never share one. `JSONFormatter` turns every log record into one JSON object
(`cortex-gateway --log-format json`). `/health` probes are not logged.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from contextvars import ContextVar
from dataclasses import asdict, dataclass
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cortex.gateway.auth import request_key

__all__ = ["AccessEntry", "AccessLogMiddleware", "JSONFormatter", "current_entry", "key_id"]

log = logging.getLogger("cortex.access")

_QUIET_PATHS = frozenset({"/health"})
_entry: ContextVar[AccessEntry | None] = ContextVar("cortex_access_entry", default=None)


def key_id(key: str | None) -> str | None:
    """Which key a request used, without the key: 12 hex digits of its SHA-256."""
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:12] if key else None


def current_entry() -> AccessEntry | None:
    """The access-log entry of the request being handled (None outside one)."""
    return _entry.get()


@dataclass(slots=True)
class AccessEntry:
    """One request as the access log records it."""

    method: str
    path: str
    key_id: str | None = None
    request_id: str | None = None
    dialect: str | None = None
    model: str | None = None
    node: str | None = None
    status: int | None = None
    ttft_ms: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    duration_ms: float | None = None

    def line(self) -> str:
        """The plain-text form: `key=value` pairs, then the method and path."""
        fields = asdict(self)
        method, path = fields.pop("method"), fields.pop("path")
        pairs = " ".join(f"{k}={_plain(v)}" for k, v in fields.items() if v is not None)
        return f"{method} {path} {pairs}"


def _plain(value: Any) -> str:
    return f"{value:.1f}" if isinstance(value, float) else str(value)


class AccessLogMiddleware:
    """ASGI middleware writing one access-log line per request (after its last byte)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in _QUIET_PATHS:
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        entry = AccessEntry(scope["method"], scope["path"], key_id=key_id(request_key(headers)))
        started = time.perf_counter()

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                entry.status = int(message["status"])
                for name, value in message.get("headers", []):
                    if name.lower() == b"x-request-id":
                        entry.request_id = value.decode("latin-1")
            await send(message)

        token = _entry.set(entry)
        try:
            await self.app(scope, receive, sending)
        finally:
            _entry.reset(token)
            entry.duration_ms = round((time.perf_counter() - started) * 1000.0, 1)
            if entry.status is None:
                entry.status = 499  # the client left before an answer started
            log.info(entry.line(), extra={"access": asdict(entry)})


class JSONFormatter(logging.Formatter):
    """Every log record as one JSON object: time, level, logger, message, and for access-log
    records their fields (times in UTC)."""

    converter = time.gmtime  # type: ignore[assignment]

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        access = getattr(record, "access", None)
        if isinstance(access, dict):
            data.update({k: v for k, v in access.items() if v is not None})
        else:
            data["message"] = record.getMessage()
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, separators=(",", ":"))

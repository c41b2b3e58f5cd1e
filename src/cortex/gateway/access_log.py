"""The access log: one line per request, plain or JSON, on the `cortex.access` logger.

Each line carries the request id (the `x-request-id` the gateway answered with), a hashed key
id (the first 12 hex digits of the key's SHA-256: which client, never the key), the dialect,
model and node, the status, TTFT, prompt and completion tokens and the duration, streams
included (the line is written when the last byte has gone). No prompt text, ever.

`access_logged` opens an `AccessEntry` per request (the gateway's guard, `gateway/guard.py`,
notes the status it answered with); the request's `RequestRecord`
(`cortex.gateway.metrics`) fills in what only the pipeline knows (model, node, tokens, TTFT)
through `current_entry()`, a context variable: the entry is the request's own, so two apps in
one process never share one. `JSONFormatter` turns every log record into one JSON object
(`cortex-gateway --log-format json`). `/health` probes are not logged.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, fields
from typing import Any

from cortex.gateway.auth import request_key

__all__ = [
    "QUIET_PATHS",
    "AccessEntry",
    "JSONFormatter",
    "access_logged",
    "current_entry",
    "key_id",
]

log = logging.getLogger("cortex.access")

QUIET_PATHS = frozenset({"/health"})
"""Paths not logged (load balancers' probes)."""
_entry: ContextVar[AccessEntry | None] = ContextVar("cortex_access_entry", default=None)


def key_id(key: str | None) -> str | None:
    """Which key a request used, without the key: 12 hex digits of its SHA-256."""
    return _key_id(key) if key else None


@functools.lru_cache(maxsize=1024)  # a client sends its key with every request
def _key_id(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:12]


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

    def as_dict(self) -> dict[str, Any]:
        """The entry as a dict (what `JSONFormatter` writes)."""
        return {name: getattr(self, name) for name in _FIELDS}

    def line(self) -> str:
        """The plain-text form: the method and path, then `key=value` pairs."""
        parts = [self.method, self.path]
        for name in _FIELDS[2:]:
            value = getattr(self, name)
            if value is not None:
                parts.append(f"{name}={value:.1f}" if type(value) is float else f"{name}={value}")
        return " ".join(parts)


_FIELDS = tuple(field.name for field in fields(AccessEntry))  # method and path first


@contextmanager
def access_logged(method: str, path: str, headers: Mapping[str, str]) -> Iterator[AccessEntry]:
    """Open a request's entry (`current_entry()` within), and write its line on leaving.

    The caller notes the response's `status` and `request_id` in it as they go out (the
    gateway's guard, `cortex.gateway.guard`); a request that ends with no response started is
    logged 499 (the client left).

    Args:
        method: the request's method.
        path: its path.
        headers: its headers, names lower-cased (for the key's id).
    """
    entry = AccessEntry(method, path, key_id=key_id(request_key(headers)))
    started = time.perf_counter()
    token = _entry.set(entry)
    try:
        yield entry
    finally:
        _entry.reset(token)
        entry.duration_ms = round((time.perf_counter() - started) * 1000.0, 1)
        if entry.status is None:
            entry.status = 499  # the client left before an answer started
        if log.isEnabledFor(logging.INFO):
            # Straight to the handlers: a line per request need not find its caller's frame.
            extra = {"access": entry.as_dict()}
            log.handle(
                log.makeRecord(log.name, logging.INFO, "", 0, entry.line(), (), None, extra=extra)
            )


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

"""Reading request bodies safely: a size limit, then a clear 400 for bad JSON, UTF-8 or nesting.

Both servers refuse a body over their limit with 413 before reading it whole
(`BodyLimitMiddleware`: at once when `Content-Length` says so, else as soon as the bytes received
pass the limit), and read client bodies through `parse_json_object`. Nesting is bounded
(`MAX_DEPTH` levels) at the door, so no later layer (validation, translation, chat templates,
serialisation) can be driven into a `RecursionError` by a body that parsed. Strings holding a
lone UTF-16 surrogate (`"\\ud800"` is valid JSON syntax, and Python's decoder also lets UTF-8
encoded surrogates through) are refused at the door too, naming the field: no such string can
be encoded again, so it would otherwise fail later when the body is re-encoded for a node.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cortex.errors import Dialect, InvalidRequestError, RequestTooLargeError

__all__ = [
    "MAX_DEPTH",
    "BodyLimitMiddleware",
    "json_depth",
    "lone_surrogate_path",
    "parse_json_object",
]

MAX_DEPTH = 64
"""Deepest nesting of objects and arrays accepted (real tool schemas stay well under 20)."""
_LINGER_BYTES = 16 * 1024 * 1024  # read (and drop) this much of an oversized body so that the
# client, still sending, reads the 413 rather than a reset connection
# Where a surrogate can hide in a body: a `\\uD800`-`\\uDFFF` escape, or its UTF-8 encoding
# (ED A0-BF ..), which Python's JSON decoder passes. Surrogate pairs (escaped emoji) match too
# and are then checked string by string; bodies without either (nearly all) are never walked.
_SURROGATE_HINT = re.compile(rb"\\u[dD][89a-fA-F]|\xed[\xa0-\xbf]")
_LONE = re.compile("[\ud800-\udfff]")


def json_depth(value: Any, limit: int) -> int:
    """The nesting depth of a parsed JSON value (a scalar is 0), counted up to `limit + 1`."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        depth += 1
        if depth > deepest:
            deepest = depth
            if deepest > limit:
                return deepest
        stack.extend((child, depth) for child in children if isinstance(child, dict | list))
    return deepest


def _not_json(constant: str) -> Any:
    # Python's decoder accepts NaN and Infinity, which JSON has not (RFC 8259): no encoder on the
    # way to a node or back to the client would write them again.
    raise ValueError(f"{constant} is not a JSON value")


def lone_surrogate_path(value: Any) -> str | None:
    """The path (`messages[0].content`) of the first string, key or value, in a parsed JSON value
    holding a lone UTF-16 surrogate; None when there is none. `$` is the value itself."""
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            if not item.isascii() and _LONE.search(item):
                return path or "$"
        elif isinstance(item, dict):
            for key, child in item.items():
                name = key if key.isascii() else key.encode("utf-8", "backslashreplace").decode()
                where = f"{path}.{name}" if path else name
                if name is not key and _LONE.search(key):
                    return where
                stack.append((child, where))
        elif isinstance(item, list):
            stack.extend((child, f"{path}[{i}]") for i, child in enumerate(item))
    return None


def parse_json_object(raw: bytes | str, *, max_depth: int = MAX_DEPTH) -> dict[str, Any]:
    """Parse a request body that must be a JSON object.

    Raises:
        InvalidRequestError: not JSON (or not UTF-8), not an object, nested deeper than
            `max_depth` levels, or a string holding a lone surrogate (its field in `param`).
    """
    too_deep = f"the body is nested deeper than {max_depth} levels"
    try:
        data = json.loads(raw, parse_constant=_not_json)
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise InvalidRequestError(f"the body is not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidRequestError(too_deep) from None
    if not isinstance(data, dict):
        raise InvalidRequestError("the body must be a JSON object")
    # Each level opens a bracket, so a body with few brackets (most) need not be walked.
    text = raw if isinstance(raw, bytes) else raw.encode("utf-8", "surrogatepass")
    if text.count(b"{") + text.count(b"[") > max_depth and json_depth(data, max_depth) > max_depth:
        raise InvalidRequestError(too_deep)
    if _SURROGATE_HINT.search(text):
        where = lone_surrogate_path(data)
        if where is not None:
            raise InvalidRequestError(
                f"`{where}` holds a lone UTF-16 surrogate, which is not a character", param=where
            )
    return data


class BodyLimitMiddleware:
    """ASGI middleware refusing request bodies over `max_bytes` with 413.

    Args:
        app: the app.
        max_bytes: the largest body accepted.
        dialect: the dialect of a request's refusal (default: OpenAI's envelope).
    """

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        dialect: Callable[[Scope], Dialect] = lambda scope: "openai",
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.dialect = dialect

    def _error(self) -> RequestTooLargeError:
        return RequestTooLargeError(f"the request body is over the limit of {self.max_bytes} bytes")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_bytes:
            if int(length) <= self.max_bytes + _LINGER_BYTES:  # far beyond: answer at once
                await _linger(receive, int(length))
            error, dialect = self._error(), self.dialect(scope)
            response = JSONResponse(error.to_dialect(dialect), status_code=error.status)
            await response(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    if message.get("more_body"):
                        await _linger(receive, _LINGER_BYTES)
                    raise self._error()  # the app's error handler answers 413 in the dialect
            return message

        await self.app(scope, limited, send)


async def _linger(receive: Receive, most: int) -> None:
    """Read and drop up to `most` bytes of the body (bounded), so that the client, still
    sending, reads the refusal instead of a connection reset."""
    dropped = 0
    while dropped < min(most, _LINGER_BYTES):
        message = await receive()
        if message["type"] != "http.request":
            return
        dropped += len(message.get("body", b""))
        if not message.get("more_body"):
            return

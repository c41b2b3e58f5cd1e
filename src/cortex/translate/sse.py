"""Server-sent events: the exact bytes of an event, and an incremental decoder."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from pydantic import BaseModel
from pydantic_core import to_json

__all__ = ["DONE", "SSEDecoder", "SSEEvent", "encode_sse", "encode_sse_comment"]

DONE: Final = "[DONE]"
"""The OpenAI stream terminator; `encode_sse(DONE)` is `b"data: [DONE]\\n\\n"`."""

_DONE_BYTES = b"data: [DONE]\n\n"


def encode_sse(event: Mapping[str, Any] | BaseModel | str) -> bytes:
    """The bytes to send for one stream event.

    A payload with a top-level string `type` (every Anthropic event, every Responses API
    event) gets an `event: <type>` line before its `data:` line, which the anthropic SDK
    needs to dispatch it. Payloads without one (OpenAI chunks, the OpenAI mid-stream error
    `{"error": ...}`) are data-only. `DONE` gives `data: [DONE]`.

    Args:
        event: a dict or envelope model as emitted by a stream translator, or `DONE`.

    Returns:
        `event: <type>\\ndata: <compact JSON>\\n\\n` or `data: <compact JSON>\\n\\n`.
    """
    if isinstance(event, str):
        if event == DONE:
            return _DONE_BYTES
        raise ValueError(f"not an SSE event: {event!r}")
    if isinstance(event, BaseModel):
        event = event.model_dump(mode="json")
    data = to_json(event)
    kind = event.get("type")
    if isinstance(kind, str):
        return b"event: " + kind.encode() + b"\ndata: " + data + b"\n\n"
    return b"data: " + data + b"\n\n"


def encode_sse_comment(text: str = "") -> bytes:
    """A comment line (`: text`), which clients ignore but count as traffic (keep-alive)."""
    return b": " + text.replace("\n", " ").encode() + b"\n\n"


@dataclass(frozen=True, slots=True)
class SSEEvent:
    """One decoded event.

    Attributes:
        data: the `data:` lines joined with `\\n` (`"[DONE]"` for the OpenAI terminator).
        event: the `event:` name, or `None` when the event had no such line.
        id: the `id:` field, if any.
        retry: the `retry:` field in milliseconds, if any.
    """

    data: str
    event: str | None = None
    id: str | None = None
    retry: int | None = None

    @property
    def is_done(self) -> bool:
        """Whether this is OpenAI's `data: [DONE]` terminator."""
        return self.data == DONE

    def json(self) -> Any:
        """The data parsed as JSON."""
        return json.loads(self.data)


class SSEDecoder:
    """Incremental SSE parser: feed bytes split anywhere, get whole events.

    Follows the WHATWG event-stream rules: lines end in CRLF, LF or CR (a CR at the end of
    one chunk and the LF at the start of the next are one line end), lines starting with `:`
    are comments, several `data:` lines join with newlines, one space after the colon is
    dropped, a blank line dispatches, an event without data is not dispatched. A leading
    UTF-8 BOM is skipped.

    Example:
        >>> d = SSEDecoder()
        >>> d.feed(b"event: ping\\r\\ndata: {}\\r") + d.feed(b"\\n\\r\\n")
        [SSEEvent(data='{}', event='ping', id=None, retry=None)]
    """

    __slots__ = ("_buffer", "_data", "_event", "_id", "_retry", "_skip_lf", "_started")

    def __init__(self) -> None:
        self._buffer = b""
        self._skip_lf = False
        self._started = False
        self._data: list[str] = []
        self._event: str | None = None
        self._id: str | None = None
        self._retry: int | None = None

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Parse `chunk` (any slice of the stream) and return the events it completed."""
        if self._skip_lf:
            self._skip_lf = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        buffer = self._buffer + chunk if self._buffer else chunk
        if not self._started:
            if len(buffer) < 3 and b"\xef\xbb\xbf".startswith(buffer):
                self._buffer = buffer
                return []
            self._started = True
            if buffer.startswith(b"\xef\xbb\xbf"):
                buffer = buffer[3:]
        if not buffer:
            self._buffer = b""
            return []
        lines = buffer.splitlines(keepends=True)
        last = lines[-1]
        if last[-1:] == b"\n":
            self._buffer = b""
        elif last[-1:] == b"\r":
            self._buffer = b""
            self._skip_lf = True
        else:
            self._buffer = lines.pop()
        events: list[SSEEvent] = []
        for raw in lines:
            event = self._line(raw.rstrip(b"\r\n").decode("utf-8", "replace"))
            if event is not None:
                events.append(event)
        return events

    def finish(self) -> list[SSEEvent]:
        """End of stream: dispatch a last event whose final line ended but no blank line came.

        A line cut off without its line end is incomplete and dropped.
        """
        self._buffer = b""
        event = self._line("")
        return [event] if event is not None else []

    def _line(self, line: str) -> SSEEvent | None:
        if not line:
            return self._dispatch()
        if line[0] == ":":
            return None
        field, sep, value = line.partition(":")
        if sep and value[:1] == " ":
            value = value[1:]
        if field == "data":
            self._data.append(value)
        elif field == "event":
            self._event = value
        elif field == "id":
            if "\0" not in value:
                self._id = value
        elif field == "retry" and value.isdigit():
            self._retry = int(value)
        return None

    def _dispatch(self) -> SSEEvent | None:
        if not self._data:
            self._event = None
            return None
        event = SSEEvent("\n".join(self._data), self._event or None, self._id, self._retry)
        self._data = []
        self._event = None
        return event

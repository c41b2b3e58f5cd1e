"""Streaming relay: node chunks out to the client as they come, in the client's dialect.

`stream_response` runs a producer of SSE bytes and commits the HTTP response only when the
first bytes are ready, or after `commit_after_s` of waiting (a cold load, a long prefill): then
it starts a 200 stream of keep-alives (SSE comments for OpenAI, `ping` events for Anthropic)
so clients don't time out, and a later failure is sent as an error event. Until then a failure
is a plain HTTP error in the client's dialect. A client that disconnects cancels the producer,
which closes the node's connection, which cancels the generation there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol

import anyio
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from cortex.errors import CortexError, Dialect, UpstreamError
from cortex.fleet.dispatch import Chunk
from cortex.gateway.metrics import RequestRecord
from cortex.translate.deltas import TOKEN_MARKS, chunk_carries_token
from cortex.translate.sse import DONE, encode_sse, encode_sse_comment

__all__ = [
    "KEEPALIVE",
    "SSEResponse",
    "StreamTranslator",
    "error_response",
    "openai_bytes",
    "stream_response",
    "translated_bytes",
]

log = logging.getLogger("cortex.gateway")

KEEPALIVE: Mapping[Dialect, bytes] = {
    "openai": encode_sse_comment("keep-alive"),
    "anthropic": encode_sse({"type": "ping"}),
}
_DONE = encode_sse(DONE)
_SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


def error_response(
    error: CortexError, dialect: Dialect, headers: Mapping[str, str] = {}
) -> Response:
    """A JSON error response in `dialect`, with its status and Retry-After."""
    return JSONResponse(
        error.to_dialect(dialect),
        status_code=error.status_for(dialect),
        headers={**error.headers(), **headers},
    )


def error_event(error: BaseException, dialect: Dialect) -> bytes:
    """A mid-stream error event in `dialect` (then the stream ends)."""
    if not isinstance(error, CortexError):
        log.error("stream failed: %r", error)
        error = UpstreamError(f"the stream failed: {type(error).__name__}")
    if dialect == "anthropic":
        return encode_sse(error.to_anthropic())
    return encode_sse(error.to_openai()) + _DONE


class SSEResponse:
    """An ASGI response streaming SSE bytes, with keep-alives whenever it goes quiet.

    Args:
        body: the producer of SSE bytes.
        dialect: picks the keep-alive and the error event.
        interval_s: silence after which a keep-alive is sent.
        first: a pending first item of `body` (the stream was committed while waiting for it).
        head: bytes to send first.
        headers: extra response headers.
    """

    def __init__(
        self,
        body: AsyncIterator[bytes],
        dialect: Dialect,
        *,
        interval_s: float,
        first: asyncio.Future[bytes] | None = None,
        head: bytes = b"",
        headers: Mapping[str, str] = {},
    ) -> None:
        self.body = body
        self.dialect = dialect
        self.interval_s = interval_s
        self.first = first
        self.head = head
        self.headers = {**_SSE_HEADERS, **headers}
        self._last = time.monotonic()
        self._gone = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = [(k.encode(), v.encode()) for k, v in self.headers.items()]
        raw.append((b"content-type", b"text/event-stream; charset=utf-8"))
        await send({"type": "http.response.start", "status": 200, "headers": raw})

        # No lock between the pump and the heartbeat: a server's `send` hands each message to
        # the transport whole before it awaits, so two writers never split an event.
        async def write(data: bytes) -> None:
            self._last = time.monotonic()
            if not self._gone:
                await send({"type": "http.response.body", "body": data, "more_body": True})

        try:
            async with anyio.create_task_group() as group:

                async def pump() -> None:
                    try:
                        if self.head:
                            await write(self.head)
                        if self.first is not None:
                            with contextlib.suppress(StopAsyncIteration):
                                await write(await self.first)
                        async for data in self.body:
                            await write(data)
                    except Exception as exc:
                        await write(error_event(exc, self.dialect))
                    group.cancel_scope.cancel()

                async def heartbeat() -> None:
                    keepalive = KEEPALIVE[self.dialect]
                    while True:
                        wait = self.interval_s - (time.monotonic() - self._last)
                        if wait > 0:
                            await anyio.sleep(wait)
                        else:
                            await write(keepalive)

                async def watch() -> None:
                    while (await receive())["type"] != "http.disconnect":
                        pass
                    self._gone = True
                    group.cancel_scope.cancel()

                group.start_soon(pump)
                group.start_soon(heartbeat)
                group.start_soon(watch)
        finally:
            if self.first is not None and not self.first.done():
                self.first.cancel()
            with anyio.CancelScope(shield=True):
                aclose = getattr(self.body, "aclose", None)
                if aclose is not None:
                    with contextlib.suppress(Exception):
                        await aclose()
        if not self._gone:
            await send({"type": "http.response.body", "body": b"", "more_body": False})


async def stream_response(
    body: AsyncIterator[bytes],
    dialect: Dialect,
    *,
    commit_after_s: float,
    interval_s: float,
    headers: Mapping[str, str] = {},
) -> Response | SSEResponse:
    """Start streaming `body`: an HTTP error if it fails before its first bytes (within
    `commit_after_s`), else a 200 SSE stream with keep-alives every `interval_s` of silence."""
    first: asyncio.Future[bytes] = asyncio.ensure_future(body.__anext__())
    done, _ = await asyncio.wait({first}, timeout=commit_after_s)
    if not done:
        return SSEResponse(body, dialect, interval_s=interval_s, first=first, headers=headers)
    try:
        head = first.result()
    except StopAsyncIteration:
        head = b""
    except CortexError as exc:
        return error_response(exc, dialect, headers)
    return SSEResponse(body, dialect, interval_s=interval_s, head=head, headers=headers)


async def openai_bytes(
    batches: AsyncIterator[list[Chunk]],
    record: RequestRecord,
    *,
    include_usage: bool,
) -> AsyncIterator[bytes]:
    """The node's OpenAI stream passed through (not re-encoded), metrics taken on the way; the
    events that arrived together leave together.

    The usage-only chunk is dropped unless the client asked for it (`include_usage`); the
    gateway always asks the node for it, to count tokens.
    """
    sent = False
    try:
        async for batch in batches:
            out = []
            for chunk in batch:
                data = chunk.data
                if data == "[DONE]":
                    out.append(_DONE)
                    continue
                if data[:1] != "{" or data[-1:] != "}":
                    _ = chunk.payload  # not framed like a JSON object: parsing raises the fault
                # Parse only what must be read: chunks up to the first token (TTFT), and the
                # one that carries usage. Later tokens are counted from the raw text.
                if record.first_token_at is None:
                    if chunk_carries_token(chunk.payload):
                        record.token()
                elif TOKEN_MARKS.search(data):
                    record.token()
                if '"usage":' in data and '"usage":null' not in data:
                    payload = chunk.payload
                    usage = payload.get("usage") if isinstance(payload, dict) else None
                    if usage:
                        record.usage(usage)
                        if not include_usage:
                            if payload.get("choices"):
                                trimmed = {k: v for k, v in payload.items() if k != "usage"}
                                out.append(encode_sse(trimmed))
                            continue
                out.append(b"data: " + data.encode() + b"\n\n")
            if out:
                sent = True
                yield b"".join(out)
        record.status = 200
    except CortexError as exc:
        record.status = exc.status_for("openai")
        if not sent:
            raise
        yield error_event(exc, "openai")


class StreamTranslator(Protocol):
    """A feed/finish state machine from OpenAI chunks to another dialect's stream events."""

    def feed(self, item: Any) -> list[dict[str, Any]]: ...

    def finish(self) -> list[dict[str, Any]]: ...

    def fail(self, error: BaseException) -> list[dict[str, Any]]: ...


async def translated_bytes(
    batches: AsyncIterator[list[Chunk]],
    record: RequestRecord,
    translator: StreamTranslator,
    dialect: Dialect,
) -> AsyncIterator[bytes]:
    """The node's OpenAI stream through a stream translator (`AnthropicStreamTranslator`, the
    Responses one...). The first event waits for the first token, so that a failure before it
    is still a plain HTTP error (Claude Code retries a 529)."""
    sent = False
    try:
        async for batch in batches:
            events = []
            for chunk in batch:
                payload = chunk.payload
                if not chunk.done:
                    if chunk_carries_token(payload):
                        record.token()
                    usage = payload.get("usage") if isinstance(payload, dict) else None
                    if usage:
                        record.usage(usage)
                events += translator.feed(DONE if chunk.done else payload)
            if events:
                sent = True
                yield b"".join(encode_sse(e) for e in events)
        tail = translator.finish()
        if tail:
            yield b"".join(encode_sse(e) for e in tail)
        record.status = 200
    except CortexError as exc:
        record.status = exc.status_for(dialect)
        if not sent:
            raise
        yield b"".join(encode_sse(e) for e in translator.fail(exc))

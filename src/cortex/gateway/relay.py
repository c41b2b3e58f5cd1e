"""Streaming relay: node chunks out to the client as they come, in the client's dialect.

`stream_response` runs a producer of SSE bytes and commits the HTTP response only when the
first bytes are ready, or after `commit_after_s` of waiting (a cold load, a long prefill): then
it starts a 200 stream of keep-alives (SSE comments for OpenAI, `ping` events for Anthropic)
so clients don't time out, and a later failure is sent as an error event. Until then a failure
is a plain HTTP error in the client's dialect. A client that disconnects cancels the producer,
which closes the node's connection, which cancels the generation there.

What turns the node's events into the client's bytes is a `Relay`, a feed/finish/fail state
machine: `OpenAIRelay` passes OpenAI chunks through as they came, `TranslatedRelay` runs a
dialect's stream translator. The pipeline runs the one loop that feeds them, so a relayed token
costs one generator step there, not one per layer; the response sends it with one `send`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
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
    "OpenAIRelay",
    "Relay",
    "SSEResponse",
    "StreamTranslator",
    "TranslatedRelay",
    "error_event",
    "error_response",
    "stream_response",
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
        self._ended = False  # the body ran to its end

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = [(k.encode(), v.encode()) for k, v in self.headers.items()]
        raw.append((b"content-type", b"text/event-stream; charset=utf-8"))
        await send({"type": "http.response.start", "status": 200, "headers": raw})

        # No lock between the pump and a keep-alive: a server's `send` hands each message to
        # the transport whole before it awaits, so two writers never split an event.
        async def write(data: bytes) -> None:
            self._last = time.monotonic()
            if not self._gone:
                await send({"type": "http.response.body", "body": data, "more_body": True})

        # The body is pumped in this task; a keep-alive timer and a task watching for the
        # client to leave run beside it (plain asyncio: no task group, nothing per token).
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        pumping = True
        keepalives: set[asyncio.Task[None]] = set()

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            self._gone = True
            if pumping:
                task.cancel()  # stops the pump where it waits; taken back below

        async def keepalive() -> None:
            with contextlib.suppress(Exception):
                await write(KEEPALIVE[self.dialect])

        timer: asyncio.TimerHandle

        def beat() -> None:
            nonlocal timer
            wait = self.interval_s - (time.monotonic() - self._last)
            if wait <= 0:
                beating = loop.create_task(keepalive())
                keepalives.add(beating)
                beating.add_done_callback(keepalives.discard)
                wait = self.interval_s
            timer = loop.call_later(wait, beat)

        watcher = loop.create_task(watch())
        timer = loop.call_later(self.interval_s, beat)
        try:
            await self._pump(write)
        except asyncio.CancelledError:
            # Ours (the client left) is taken back; anyone else's (a drain's cut) goes on.
            if not self._gone or task.uncancel() > 0:
                raise
        finally:
            pumping = False
            timer.cancel()
            watcher.cancel()
            for beating in keepalives:
                beating.cancel()
            if self.first is not None and not self.first.done():
                self.first.cancel()
            if not self._ended:  # left before its end: closed here, shielded from a drain's cut
                with anyio.CancelScope(shield=True):
                    aclose = getattr(self.body, "aclose", None)
                    if aclose is not None:
                        with contextlib.suppress(Exception):
                            await aclose()
        if not self._gone:
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _pump(self, write: Callable[[bytes], Awaitable[None]]) -> None:
        """Send the head, the pending first item, then the body; a failure ends the stream
        with an error event in the dialect."""
        try:
            if self.head:
                await write(self.head)
            if self.first is not None:
                with contextlib.suppress(StopAsyncIteration):
                    await write(await self.first)
            async for data in self.body:
                await write(data)
            self._ended = True
        except Exception as exc:
            await write(error_event(exc, self.dialect))


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


class Relay(Protocol):
    """One streamed reply on its way out: a batch of node events in, the client's bytes out.

    The pipeline runs the one loop over the node's batches (`Pipeline`), so that a relayed
    token passes through one generator, not one per layer.
    """

    def feed(self, batch: list[Chunk]) -> bytes:
        """The bytes for a batch of node events (empty when nothing is to be sent yet)."""
        ...

    def finish(self) -> bytes:
        """The bytes that end the stream after the node's last event."""
        ...

    def fail(self, error: CortexError) -> bytes:
        """The bytes that end a stream broken after its first bytes went out."""
        ...


class OpenAIRelay:
    """The node's OpenAI stream passed through (not re-encoded), metrics taken on the way.

    The usage-only chunk is dropped unless the client asked for it (`include_usage`); the
    gateway always asks the node for it, to count tokens.

    Args:
        record: the request's measurements.
        include_usage: whether the client asked for the usage chunk.
    """

    def __init__(self, record: RequestRecord, *, include_usage: bool) -> None:
        self.record = record
        self.include_usage = include_usage

    def feed(self, batch: list[Chunk]) -> bytes:
        record = self.record
        out = []
        for chunk in batch:
            data = chunk.data
            if data == "[DONE]":
                out.append(_DONE)
                continue
            if data[:1] != "{" or data[-1:] != "}":
                _ = chunk.payload  # not framed like a JSON object: parsing raises the fault
            # Parse only what must be read: chunks up to the first token (TTFT), and the one
            # that carries usage. Later tokens are counted from the raw text.
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
                    if not self.include_usage:
                        if payload.get("choices"):
                            trimmed = {k: v for k, v in payload.items() if k != "usage"}
                            out.append(encode_sse(trimmed))
                        continue
            out.append(b"data: " + data.encode() + b"\n\n")
        return b"".join(out)

    def finish(self) -> bytes:
        return b""

    def fail(self, error: CortexError) -> bytes:
        return error_event(error, "openai")


class StreamTranslator(Protocol):
    """A feed/finish state machine from OpenAI chunks to another dialect's stream events."""

    def feed(self, item: Any) -> list[dict[str, Any]]: ...

    def finish(self) -> list[dict[str, Any]]: ...

    def fail(self, error: BaseException) -> list[dict[str, Any]]: ...


class TranslatedRelay:
    """The node's OpenAI stream through a stream translator (`AnthropicStreamTranslator`, the
    Responses one...). The first event waits for the first token, so that a failure before it
    is still a plain HTTP error (Claude Code retries a 529).

    Args:
        record: the request's measurements.
        translator: the dialect's stream translator.
    """

    def __init__(self, record: RequestRecord, translator: StreamTranslator) -> None:
        self.record = record
        self.translator = translator

    def feed(self, batch: list[Chunk]) -> bytes:
        record, translator = self.record, self.translator
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
        return b"".join([encode_sse(e) for e in events])

    def finish(self) -> bytes:
        return b"".join([encode_sse(e) for e in self.translator.finish()])

    def fail(self, error: CortexError) -> bytes:
        return b"".join([encode_sse(e) for e in self.translator.fail(error)])

"""Streaming relay: node chunks out to the client as they come, in the client's dialect.

`SSEResponse` runs a producer of SSE bytes and commits the HTTP response only when the first
bytes are ready, or after `commit_after_s` of waiting (a cold load, a long prefill): then it
starts a 200 stream of keep-alives (SSE comments for OpenAI, `ping` events for Anthropic) so
clients don't time out, and a later failure is sent as an error event. Until then a failure is
a plain HTTP error in the client's dialect. A client that disconnects cancels the producer,
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
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Protocol

import anyio
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from cortex.errors import CortexError, Dialect, UpstreamError
from cortex.fleet.dispatch import Batch, Chunk
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
]

log = logging.getLogger("cortex.gateway")

KEEPALIVE: Mapping[Dialect, bytes] = {
    "openai": encode_sse_comment("keep-alive"),
    "anthropic": encode_sse({"type": "ping"}),
}
_DONE = encode_sse(DONE)


def _plain_prefix(raw: bytes, count: int) -> int:
    """How many leading bytes of `raw` (`count` whole `data:` events) may leave as they came:
    events framed as JSON objects (or `[DONE]`) before any usage that is not null. A line end
    cannot hide in compact JSON (strings escape it), nor can `"usage":` (strings escape its
    quotes), so these counts see only the framing."""
    done = raw.endswith(b"data: [DONE]\n\n")  # anywhere else, the counts below disagree
    objects = raw.startswith(b"data: {") + raw.count(b"\n\ndata: {")
    if objects + done != count or raw.count(b"}\n\n") + done != count:
        return 0
    if raw.count(b'"usage":') == raw.count(b'"usage":null'):
        return len(raw)
    # A usage (at the end of a reply): the events before the one that holds the last one.
    cut = raw.rfind(b"\n\ndata: ", 0, raw.rfind(b'"usage":')) + 2
    if cut < 2 or raw.count(b'"usage":', 0, cut) != raw.count(b'"usage":null', 0, cut):
        return 0
    return cut


_TOKEN_EVENTS = re.compile(b"(?:" + TOKEN_MARKS.pattern.encode() + rb")[^\n]*")
"""`TOKEN_MARKS` in an event of raw SSE bytes, at most once per event (the rest of its line
is taken with the match)."""
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
    """An ASGI response streaming SSE bytes, committed at its first bytes, with keep-alives
    whenever it goes quiet.

    The 200 and its headers go out with the first bytes of `body`, or after `commit_after_s`
    of waiting (a cold load, a long prefill) with a keep-alive; until then a failure is a plain
    HTTP error in the dialect (Claude Code retries a 529), after it an error event. The body is
    pumped in the request's own task: no task waits for the first bytes, and a relayed token
    costs one `send`.

    Args:
        body: the producer of SSE bytes.
        dialect: picks the keep-alive, the error event and the error envelope.
        interval_s: silence after which a keep-alive is sent.
        commit_after_s: wait for the first bytes before the stream starts anyway (default:
            `interval_s`).
        headers: extra response headers (on the error response too).
    """

    def __init__(
        self,
        body: AsyncIterator[bytes],
        dialect: Dialect,
        *,
        interval_s: float,
        commit_after_s: float | None = None,
        headers: Mapping[str, str] = {},
    ) -> None:
        self.body = body
        self.dialect = dialect
        self.interval_s = interval_s
        self.commit_after_s = commit_after_s if commit_after_s is not None else interval_s
        self.extra_headers = headers
        self.headers = {**_SSE_HEADERS, **headers}
        self._last = time.monotonic()
        self._started = False  # the 200 went out
        self._refused = False  # an error response went out instead
        self._gone = False
        self._ended = False  # the body ran to its end

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = [(k.encode(), v.encode()) for k, v in self.headers.items()]
        raw.append((b"content-type", b"text/event-stream; charset=utf-8"))
        start = {"type": "http.response.start", "status": 200, "headers": raw}

        # No lock between the pump and a keep-alive: a server's `send` hands each message to
        # the transport whole before it awaits, so two writers never split an event; the flag
        # is set before the 200 is sent, so only one of them sends it.
        async def write(data: bytes) -> None:
            self._last = time.monotonic()
            if self._gone or self._refused:
                return
            if not self._started:
                self._started = True
                await send(start)
            await send({"type": "http.response.body", "body": data, "more_body": True})

        # A keep-alive timer (whose first beat is the commit) and a task watching for the
        # client to leave run beside the pump (plain asyncio: no task group, nothing per token).
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
            if wait <= 0 or not self._started:  # quiet, or the commit time has come
                beating = loop.create_task(keepalive())
                keepalives.add(beating)
                beating.add_done_callback(keepalives.discard)
                wait = self.interval_s
            timer = loop.call_later(wait, beat)

        watcher = loop.create_task(watch())
        timer = loop.call_later(self.commit_after_s, beat)
        try:
            await self._pump(write, scope, receive, send)
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
            if not self._ended:  # left before its end: closed here, shielded from a drain's cut
                with anyio.CancelScope(shield=True):
                    aclose = getattr(self.body, "aclose", None)
                    if aclose is not None:
                        with contextlib.suppress(Exception):
                            await aclose()
        if not self._gone and not self._refused:
            if not self._started:  # an empty stream
                self._started = True
                await send(start)
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _pump(
        self, write: Callable[[bytes], Awaitable[None]], scope: Scope, receive: Receive, send: Send
    ) -> None:
        """Send the body; a failure is an HTTP error before the stream started, an error event
        in the dialect after."""
        try:
            async for data in self.body:
                await write(data)
            self._ended = True
        except Exception as exc:
            if self._started:
                await write(error_event(exc, self.dialect))
                return
            if not isinstance(exc, CortexError):
                log.error("stream failed before its first bytes", exc_info=exc)
                exc = CortexError(f"internal error: {type(exc).__name__}")
            self._refused = True
            await error_response(exc, self.dialect, self.extra_headers)(scope, receive, send)


class Relay(Protocol):
    """One streamed reply on its way out: a batch of node events in, the client's bytes out.

    The pipeline runs the one loop over the node's batches (`Pipeline`), so that a relayed
    token passes through one generator, not one per layer.
    """

    def feed(self, batch: Batch) -> bytes:
        """The bytes for a batch of node events (empty when nothing is to be sent yet)."""
        ...

    def finish(self) -> bytes:
        """The bytes that end the stream after the node's last event."""
        ...

    def fail(self, error: CortexError) -> bytes:
        """The bytes that end a stream broken after its first bytes went out."""
        ...


class OpenAIRelay:
    """The node's OpenAI stream passed through (not re-encoded), metrics taken on the way:
    the events of a node's read leave in one write, after the first token as the bytes that
    came (`Batch.raw`), with tokens counted in them rather than parsed.

    The usage-only chunk is dropped unless the client asked for it (`include_usage`); the
    gateway always asks the node for it, to count tokens.

    Args:
        record: the request's measurements.
        include_usage: whether the client asked for the usage chunk.
    """

    def __init__(self, record: RequestRecord, *, include_usage: bool) -> None:
        self.record = record
        self.include_usage = include_usage

    def feed(self, batch: Batch) -> bytes:
        record = self.record
        out = [self._chunk(chunk) for chunk in batch.head]
        raw = batch.raw
        if raw is not None:
            # After the reply started (its first token or its end is in the head of the first
            # batch), plain chunks leave as they came, counted but not split; only a usage and
            # what follows it are read one by one.
            plain = _plain_prefix(raw, batch.count)
            if plain:
                tokens = len(_TOKEN_EVENTS.findall(raw, 0, plain))
                if tokens:
                    record.token(tokens)
                out.append(raw if plain == len(raw) else raw[:plain])
            if plain < len(raw):
                rest = raw[plain:]
                rest_count = rest.count(b"\n\ndata: ") + 1
                out += [
                    self._chunk(chunk) for chunk in Batch(batch.node, raw=rest, count=rest_count)
                ]
        return b"".join(out)

    def _chunk(self, chunk: Chunk) -> bytes:
        """One event, read as far as the metrics need: chunks up to the first token (TTFT)
        and the one that carries usage are parsed; later tokens are counted from the text."""
        record = self.record
        data = chunk.data
        if data == "[DONE]":
            return _DONE
        if data[:1] != "{" or data[-1:] != "}":
            _ = chunk.payload  # not framed like a JSON object: parsing raises the fault
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
                        return encode_sse({k: v for k, v in payload.items() if k != "usage"})
                    return b""
        return b"data: " + data.encode() + b"\n\n"

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

    def feed(self, batch: Batch) -> bytes:
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

"""Sending one inference request through the fleet, failing over until the first token.

A node that cannot be reached, a load that fails, a node that answers 5xx, 404 (the model left)
or 409 (it is unloading), or a stream that breaks before its first token: the request moves to
the next candidate. When every candidate failed that way, the client gets the nodes' fault
(502, naming each node and what it did), not "overloaded": retrying would not help. Replies and
events are checked for the shape the gateway reads (a malformed one is the node's fault, 502).
Once a token has been passed on, a failure is the caller's to report (the gateway closes the
stream with an error event in the client's dialect).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cortex.errors import (
    ConflictError,
    CortexError,
    InsufficientMemoryError,
    NotFoundError,
    OverloadedError,
    UpstreamError,
    error_from_status,
)
from cortex.fleet.clients import UNREACHABLE
from cortex.translate.sse import SSEDecoder

if TYPE_CHECKING:
    from cortex.fleet.fleet import Fleet
    from cortex.fleet.ledger import Lease

__all__ = ["Chunk", "Route", "complete", "stream", "stream_batches"]

RETRYABLE = (UpstreamError, OverloadedError, NotFoundError, ConflictError, InsufficientMemoryError)
"""Errors that say "not this node, not now" rather than "not this request"."""


@dataclass(slots=True)
class Route:
    """Where a request went: filled in as it is dispatched (for metrics and logs).

    Args:
        model: the resolved model id.
        node: the node serving it (the last one tried).
        failures: `node: reason` for each node that failed before the first token.
    """

    model: str
    node: str | None = None
    failures: list[str] = field(default_factory=list)


class Chunk:
    """One event of a node's OpenAI stream; its JSON is parsed only when `payload` is read.

    A pure relay passes `data` on as it came and never pays for parsing it.

    Args:
        data: the event's data as sent (`[DONE]` for the terminator).
        node: the node that sent it (named in errors).
    """

    __slots__ = ("_payload", "data", "node")

    def __init__(self, data: str, node: str = "") -> None:
        self.data = data
        self.node = node
        self._payload: Any = _UNPARSED

    @property
    def done(self) -> bool:
        """Whether this is the `[DONE]` terminator."""
        return self.data == "[DONE]"

    @property
    def payload(self) -> Any:
        """The data parsed (None for `[DONE]`).

        Raises:
            UpstreamError: the data is not JSON.
        """
        if self._payload is _UNPARSED:
            if self.done:
                self._payload = None
            else:
                try:
                    self._payload = json.loads(self.data)
                except ValueError as exc:
                    raise UpstreamError(
                        f"node {self.node!r} sent an event that is not JSON: {self.data[:80]!r}"
                    ) from exc
        return self._payload

    def __repr__(self) -> str:
        return f"Chunk({self.data[:60]!r})"


_UNPARSED = object()


def _malformed(node: str, what: str, data: Any) -> UpstreamError:
    return UpstreamError(f"node {node!r} sent a malformed {what}: {str(data)[:120]!r}")


def _checked_choice(chunk: Chunk) -> dict[str, Any] | None:
    """The first choice of a chunk, its shape checked (None when it has none)."""
    payload = chunk.payload
    if not isinstance(payload, dict):
        raise _malformed(chunk.node, "event", chunk.data)
    choices = payload.get("choices")
    if not choices:
        return None
    if not isinstance(choices, list) or not isinstance(choices[0], dict):
        raise _malformed(chunk.node, "event", chunk.data)
    choice: dict[str, Any] = choices[0]
    if not isinstance(choice.get("delta", {}) or {}, dict):
        raise _malformed(chunk.node, "event", chunk.data)
    return choice


def _check_reply(result: dict[str, Any], node: str) -> dict[str, Any]:
    """A non-streamed reply, its shape checked (the gateway reads its choices)."""
    choices = result.get("choices")
    if not isinstance(choices, list) or not choices:
        raise _malformed(node, "reply", result)
    for choice in choices:
        if not isinstance(choice, dict) or not (
            isinstance(choice.get("message"), dict) or isinstance(choice.get("text"), str)
        ):
            raise _malformed(node, "reply", result)
    return result


def _starts_reply(chunk: Chunk) -> bool:
    """Whether a chunk carries a token (or ends the reply): after it, no more failover."""
    choice = _checked_choice(chunk)
    if choice is None:
        return "usage" in chunk.payload
    if choice.get("finish_reason") is not None or choice.get("text"):
        return True
    delta = choice.get("delta") or {}
    return bool(
        delta.get("content")
        or delta.get("tool_calls")
        or delta.get("reasoning_content")
        or delta.get("reasoning")
        or delta.get("refusal")
    )


def _stream_error(payload: Mapping[str, Any]) -> CortexError:
    error = payload.get("error")
    error = error if isinstance(error, dict) else {}
    status = error.get("status")
    return error_from_status(
        status if isinstance(status, int) else 502,
        str(error.get("message") or "the node's stream failed"),
    )


def _body_for(lease: Lease, body: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(body)
    out["model"] = lease.model
    return out


async def _next_lease(
    fleet: Fleet, route: Route, excluded: set[str], last: CortexError | None = None
) -> Lease:
    """The next candidate; when none is left, the error names every failure so far.

    If the last candidate answered with garbage or could not be reached (`last`), that is the
    client's error (502), not "overloaded": a retry would most likely meet the same nodes.
    """
    try:
        return await fleet.acquire(route.model, exclude=excluded, failures=route.failures)
    except OverloadedError as exc:
        if isinstance(last, UpstreamError) and route.failures:
            tried = "; ".join(route.failures)
            raise UpstreamError(f"no node could answer: {tried}", code=last.code) from exc
        raise


def _failed(fleet: Fleet, lease: Lease, exc: CortexError, route: Route) -> None:
    route.failures.append(f"{lease.node}: {exc.message}")
    if isinstance(exc, UpstreamError) and exc.code == UNREACHABLE:
        fleet.mark_down(lease.node, exc.message)
    else:
        fleet.refresh_soon(lease.node)


async def complete(
    fleet: Fleet,
    path: str,
    body: Mapping[str, Any],
    route: Route,
    *,
    lease: Lease | None = None,
) -> dict[str, Any]:
    """Send a non-streamed request, failing over to the next candidate on node failures.

    Args:
        fleet: the fleet.
        path: the node's route, e.g. `/v1/chat/completions`.
        body: the OpenAI request (its `model` is replaced by the resolved id).
        route: filled in with where it went.
        lease: a lease already held for the first attempt (released here).
    """
    excluded: set[str] = set()
    last: CortexError | None = None
    while True:
        if lease is None:
            lease = await _next_lease(fleet, route, excluded, last)
        route.node = lease.node
        try:
            with lease:
                return _check_reply(
                    await lease.client.post(path, _body_for(lease, body)), lease.node
                )
        except RETRYABLE as exc:
            _failed(fleet, lease, exc, route)
            excluded.add(lease.node)
            lease, last = None, exc


async def stream(
    fleet: Fleet,
    path: str,
    body: Mapping[str, Any],
    route: Route,
    *,
    lease: Lease | None = None,
) -> AsyncIterator[Chunk]:
    """Send a streamed request and yield the node's events, failing over before the first token.

    Events before the first token (the role chunk) are held back until it comes, so a retry on
    another node never repeats them. Closing the iterator closes the node's connection, which
    cancels the generation there.

    Args:
        fleet: the fleet.
        path: the node's route, e.g. `/v1/chat/completions`.
        body: the OpenAI request, with `stream: true`.
        route: filled in with where it went.
        lease: a lease already held for the first attempt (released here).
    """
    batches = stream_batches(fleet, path, body, route, lease=lease)
    try:
        async for batch in batches:
            for chunk in batch:
                yield chunk
    finally:
        await batches.aclose()


async def stream_batches(
    fleet: Fleet,
    path: str,
    body: Mapping[str, Any],
    route: Route,
    *,
    lease: Lease | None = None,
) -> AsyncGenerator[list[Chunk], None]:
    """As `stream`, but the events that arrived together come as one list (relays write them
    in one go: fewer writes under load)."""
    excluded: set[str] = set()
    last: CortexError | None = None
    while True:
        if lease is None:
            lease = await _next_lease(fleet, route, excluded, last)
        route.node = lease.node
        started = False
        held: list[Chunk] = []
        try:
            with lease:
                async with lease.client.stream(path, _body_for(lease, body)) as raw:
                    decoder: SSEDecoder | None = None
                    alive = fleet.ledger.alive_at
                    async for piece in raw:
                        alive[lease.node] = time.monotonic()
                        datas = _whole_data_events(piece) if decoder is None else None
                        if datas is None:  # anything unusual: the full SSE parser from now on
                            decoder = decoder or SSEDecoder()
                            datas = [e.data for e in decoder.feed(piece)]
                        batch = [Chunk(data, lease.node) for data in datas]
                        if started:
                            if batch:
                                yield batch
                            continue
                        for chunk in batch:
                            if isinstance(chunk.payload, dict) and "error" in chunk.payload:
                                raise _stream_error(chunk.payload)
                            held.append(chunk)
                            started = _starts_reply(chunk) or started
                        if started:
                            yield held
                    if not started:
                        raise UpstreamError(f"node {lease.node!r} ended the stream without a reply")
                    ended = decoder.finish() if decoder is not None else []
                    tail = [Chunk(e.data, lease.node) for e in ended]
                    if tail:
                        yield tail
            return
        except RETRYABLE as exc:
            if started:
                if isinstance(exc, UpstreamError) and exc.code == UNREACHABLE:
                    fleet.refresh_soon(lease.node)  # dead? then it is marked down at once
                raise
            _failed(fleet, lease, exc, route)
            excluded.add(lease.node)
            lease, last = None, exc


def _whole_data_events(piece: bytes) -> list[str] | None:
    """The data of `piece` when it is whole `data: ...` events and nothing else (what neurons
    and most servers send, one event per write); None for anything else (a split event, CRLF,
    comments, `event:` lines), which the full SSE parser then handles."""
    if not piece.endswith(b"\n\n") or b"\r" in piece:
        return None
    out = []
    for block in piece[:-2].split(b"\n\n"):
        if not block.startswith(b"data: ") or b"\n" in block:
            return None
        out.append(block[6:].decode("utf-8", "replace"))
    return out

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
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Callable,
    Collection,
    Iterator,
    Mapping,
)
from contextlib import AbstractAsyncContextManager, aclosing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

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
from cortex.translate.deltas import carries_token
from cortex.translate.sse import SSEDecoder

if TYPE_CHECKING:
    from cortex.fleet.ledger import Lease

__all__ = ["Batch", "Chunk", "Nodes", "Route", "complete", "stream", "stream_batches"]

RETRYABLE = (UpstreamError, OverloadedError, NotFoundError, ConflictError, InsufficientMemoryError)
"""Errors that say "not this node, not now" rather than "not this request"."""

T = TypeVar("T")


class Nodes(Protocol):
    """What dispatch needs from the fleet (`Fleet` is one)."""

    async def acquire(
        self, model: str, *, exclude: Collection[str] = (), failures: list[str] | None = None
    ) -> Lease:
        """Hold a node serving `model` (loading it if needed), none of `exclude`."""
        ...

    def mark_down(self, node: str, reason: str) -> None:
        """The node could not be reached: down until its next poll answers."""
        ...

    def refresh_soon(self, node: str) -> None:
        """The node misbehaved: poll it again soon."""
        ...

    def touch(self, node: str) -> None:
        """The node just sent inference bytes: alive, whatever its polls say."""
        ...


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
    """A non-streamed reply, its shape checked (the gateway reads its choices, or the vectors
    of an embeddings list)."""
    if result.get("object") == "list":
        if not isinstance(result.get("data"), list):
            raise _malformed(node, "reply", result)
        return result
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
    if choice.get("finish_reason") is not None:
        return True
    return carries_token(choice.get("delta") or choice)


def _stream_error(payload: Mapping[str, Any]) -> CortexError:
    error = payload.get("error")
    error = error if isinstance(error, dict) else {}
    status = error.get("status")
    return error_from_status(
        status if isinstance(status, int) else 502,
        str(error.get("message") or "the node's stream failed"),
    )


async def _failover(
    nodes: Nodes,
    route: Route,
    lease: Lease | None,
    attempt: Callable[[Lease], AsyncGenerator[T, None]],
) -> AsyncGenerator[T, None]:
    """The one failover loop: run `attempt` on a lease, then on the next candidate while it
    fails retryably before yielding anything; once it has yielded, its failure is the caller's.

    Args:
        nodes: the fleet.
        route: the model to serve, filled in with where it went and what failed.
        lease: a lease already held for the first attempt.
        attempt: sends the request through a lease and yields what goes to the client;
            the lease is released when it ends.
    """
    excluded: set[str] = set()
    last: CortexError | None = None
    while True:
        if lease is None:
            lease = await _next_lease(nodes, route, excluded, last)
        route.node = lease.node
        started = False
        try:
            with lease:
                async with aclosing(attempt(lease)) as items:
                    async for item in items:
                        started = True
                        yield item
            return
        except RETRYABLE as exc:
            if started:
                if isinstance(exc, UpstreamError) and exc.code == UNREACHABLE:
                    nodes.refresh_soon(lease.node)  # dead? then it is marked down at once
                raise
            route.failures.append(f"{lease.node}: {exc.message}")
            if isinstance(exc, UpstreamError) and exc.code == UNREACHABLE:
                nodes.mark_down(lease.node, exc.message)
            else:
                nodes.refresh_soon(lease.node)
            excluded.add(lease.node)
            lease, last = None, exc


async def _next_lease(
    nodes: Nodes, route: Route, excluded: set[str], last: CortexError | None = None
) -> Lease:
    """The next candidate; when none is left, the error names every failure so far.

    If the last candidate answered with garbage or could not be reached (`last`), that is the
    client's error (502), not "overloaded": a retry would most likely meet the same nodes.
    """
    try:
        return await nodes.acquire(route.model, exclude=excluded, failures=route.failures)
    except OverloadedError as exc:
        if isinstance(last, UpstreamError) and route.failures:
            tried = "; ".join(route.failures)
            raise UpstreamError(f"no node could answer: {tried}", code=last.code) from exc
        raise


def _body_for(lease: Lease, body: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(body)
    out["model"] = lease.model
    return out


async def complete(
    nodes: Nodes,
    path: str,
    body: Mapping[str, Any],
    route: Route,
    *,
    lease: Lease | None = None,
) -> dict[str, Any]:
    """Send a non-streamed request, failing over to the next candidate on node failures.

    Args:
        nodes: the fleet.
        path: the node's route, e.g. `/v1/chat/completions`.
        body: the OpenAI request (its `model` is replaced by the resolved id).
        route: filled in with where it went.
        lease: a lease already held for the first attempt (released here).
    """

    async def attempt(lease: Lease) -> AsyncGenerator[dict[str, Any], None]:
        yield _check_reply(await lease.client.post(path, _body_for(lease, body)), lease.node)

    async with aclosing(_failover(nodes, route, lease, attempt)) as replies:
        async for reply in replies:
            return reply
    raise AssertionError("an attempt yields its reply or raises")


async def stream(
    nodes: Nodes,
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
        nodes: the fleet.
        path: the node's route, e.g. `/v1/chat/completions`.
        body: the OpenAI request, with `stream: true`.
        route: filled in with where it went.
        lease: a lease already held for the first attempt (released here).
    """
    batches = stream_batches(nodes, path, body, route, lease=lease)
    try:
        async for batch in batches:
            for chunk in batch:
                yield chunk
    finally:
        await batches.aclose()


def stream_batches(
    nodes: Nodes,
    path: str,
    body: Mapping[str, Any],
    route: Route,
    *,
    lease: Lease | None = None,
) -> AsyncGenerator[Batch, None]:
    """As `stream`, but the events that arrived together come as one `Batch` (relays write
    them in one go, and may pass their bytes on as they came)."""

    def attempt(lease: Lease) -> AsyncGenerator[Batch, None]:
        return _batches(lease.client.stream(path, _body_for(lease, body)), lease.node, nodes.touch)

    return _failover(nodes, route, lease, attempt)


class Batch:
    """Events of a node's stream that arrived together: `head`, parsed, then `raw`, the rest
    as the node sent them.

    `raw` holds whole `data: ...` events and nothing else (what neurons and most servers send),
    `count` of them, split out only if the events are iterated: a relay may pass them on as
    they came. Events that came any other way are all in `head`.

    Args:
        node: the node that sent them.
        head: the events parsed (`Chunk`).
        raw: the rest, unsplit (None: none).
        count: how many events `raw` holds.
    """

    __slots__ = ("_events", "count", "head", "node", "raw")

    def __init__(
        self,
        node: str,
        head: list[Chunk] | None = None,
        *,
        raw: bytes | None = None,
        count: int = 0,
    ) -> None:
        self.node = node
        self.head = head or []
        self.raw = raw
        self.count = count if raw is not None else 0
        self._events: list[Chunk] | None = None if raw is not None else self.head

    @property
    def events(self) -> list[Chunk]:
        """Every event, those of `raw` split out and wrapped on first use."""
        if self._events is None:
            rest = [Chunk(data, self.node) for data in _split_events(self.raw or b"")]
            self._events = self.head + rest
        return self._events

    def __iter__(self) -> Iterator[Chunk]:
        return iter(self.events)

    def __len__(self) -> int:
        return len(self.head) + self.count

    def __repr__(self) -> str:
        return f"Batch({len(self)} events from {self.node!r})"


async def _batches(
    stream: AbstractAsyncContextManager[AsyncIterator[bytes]],
    node: str,
    touch: Callable[[str], None],
) -> AsyncGenerator[Batch, None]:
    """A node's SSE bytes (the answer of `stream`, entered here) as batches of events, the
    first one held until a token (or the end) comes; an error event before it, or an end
    without it, raises (so failover may move on). Whole `data:` events after the first token
    stay unsplit (`Batch.raw`)."""
    decoder: SSEDecoder | None = None
    started = False
    held: list[Chunk] = []
    async with stream as raw:
        async for piece in raw:
            touch(node)
            count = _whole_events(piece) if decoder is None else 0
            if started and count:
                yield Batch(node, raw=piece, count=count)
                continue
            if count:  # before the first token: parsed one by one up to it, the rest unsplit
                at = 0
                while at < len(piece) and not started:
                    end = piece.index(b"\n\n", at)
                    chunk = Chunk(piece[at + 6 : end].decode("utf-8", "replace"), node)
                    at, count = end + 2, count - 1
                    if isinstance(chunk.payload, dict) and "error" in chunk.payload:
                        raise _stream_error(chunk.payload)
                    held.append(chunk)
                    started = chunk.done or _starts_reply(chunk)
                if started:
                    rest = piece[at:] if count else None
                    yield Batch(node, held, raw=rest, count=count)
                continue
            decoder = decoder or SSEDecoder()  # anything unusual: the full SSE parser from now on
            batch = [Chunk(event.data, node) for event in decoder.feed(piece)]
            if started:
                if batch:
                    yield Batch(node, batch)
                continue
            for i, chunk in enumerate(batch):
                if started:
                    held.extend(batch[i:])  # the rest of the piece goes with it
                    break
                if isinstance(chunk.payload, dict) and "error" in chunk.payload:
                    raise _stream_error(chunk.payload)
                held.append(chunk)
                started = chunk.done or _starts_reply(chunk)
            if started:
                yield Batch(node, held)
    if not started:
        raise UpstreamError(f"node {node!r} ended the stream without a reply")
    tail = [Chunk(e.data, node) for e in (decoder.finish() if decoder is not None else [])]
    if tail:
        yield Batch(node, tail)


def _whole_events(piece: bytes) -> int:
    """How many events `piece` holds when it is whole `data: ...` events and nothing else (one
    line each, LF line ends), else 0: a split event, CRLF, comments, `event:` lines, which the
    full SSE parser then handles. Counted in C: each of the k events starts with `data: ` (at
    the start or after a blank line) and ends with a blank line, so a piece of k such starts
    that ends with a blank line and holds 2k line ends holds nothing else."""
    if not piece.endswith(b"\n\n") or not piece.startswith(b"data: ") or b"\r" in piece:
        return 0
    count = piece.count(b"\n\ndata: ") + 1
    return count if piece.count(b"\n") == 2 * count else 0


def _split_events(piece: bytes) -> list[str]:
    """The data of a piece of whole `data: ...` events (`_whole_events`)."""
    return [block[6:].decode("utf-8", "replace") for block in piece[:-2].split(b"\n\n")]

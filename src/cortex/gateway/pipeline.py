"""The gateway's one request path, whatever the dialect.

Each inference route is an `Adapter` (`openai_routes`, `anthropic_routes`,
`responses_routes`) handed to `Pipeline.endpoint`. For every request the pipeline:

1. reads the body within the size limit (`cortex.jsonbody`: bad JSON, nesting, lone surrogates
   are 400s); the key was checked before, by the guard middleware (`gateway/guard.py`);
2. picks the model (an id or alias; an unknown `claude-*` name means the default model);
3. lets the adapter parse the body into an `Exchange`: the OpenAI request for the node, how to
   translate the reply, and how to relay the stream;
4. holds a node serving the model (`Fleet.acquire`: loading, evicting as placement says), fits
   the request to the model's context window (`gateway/context.py`);
5. runs it through the fleet, failing over to the next node until the first token
   (`fleet/dispatch.py`), and answers whole or streams (`gateway/relay.py`: the response is
   committed at the first bytes, or after `commit_after_s` with keep-alives);
6. records it (`RequestRecord`): status, node, tokens, TTFT, duration, in flight.

What can go wrong and what is done: any `CortexError` before the stream starts is an HTTP error
in the client's dialect; after, an error event ends the stream. A bug (any other exception) is a
500 in the dialect's envelope, answered here rather than re-raised, so the connection stays
usable; it is logged with its traceback.
"""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, TypeAlias

import anyio
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from cortex.errors import (
    CortexError,
    Dialect,
    InvalidRequestError,
    ModelNotFoundError,
    RequestTooLargeError,
)
from cortex.fleet import Fleet, Lease, Route
from cortex.gateway.auth import request_key
from cortex.gateway.budgets import Budgets, Spend, estimate_prompt_tokens, estimate_tokens
from cortex.gateway.context import fit_to_context
from cortex.gateway.metrics import GatewayMetrics, RequestRecord
from cortex.gateway.relay import Relay, SSEResponse, error_response
from cortex.gateway.state import NoState
from cortex.jsonbody import parse_json_object

__all__ = ["Adapter", "Answer", "Endpoint", "Exchange", "Pipeline", "request_ids"]

log = logging.getLogger("cortex.gateway")

Answer: TypeAlias = Response | SSEResponse


class Exchange:
    """One request in one dialect, parsed: what goes to the node, and how the answer comes back.

    Args:
        chat: the OpenAI request for the node (sampling defaults are filled in later).
        stream: whether the client asked for a stream.
        path: the node's route (`/v1/chat/completions` or `/v1/completions`).
        exact_count: count the prompt's tokens even when it surely fits (Anthropic's
            `message_start` reports them).
        fits: fill in sampling defaults and fit the request to the context window (a chat or
            completion); False sends it as it is (embeddings).
    """

    def __init__(
        self,
        chat: dict[str, Any],
        *,
        stream: bool,
        path: str = "/v1/chat/completions",
        exact_count: bool = False,
        fits: bool = True,
    ) -> None:
        self.chat = chat
        self.stream = stream
        self.path = path
        self.exact_count = exact_count
        self.fits = fits

    def reply(self, result: dict[str, Any]) -> dict[str, Any]:
        """The node's whole OpenAI reply in the client's dialect."""
        return result

    def relay(self, record: RequestRecord, prompt_tokens: int | None) -> Relay:
        """How the node's stream becomes the client's SSE bytes (`gateway/relay.py`)."""
        raise NotImplementedError

    def frame(self, events: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """The whole stream, wait for the node included (Responses opens early): as it is."""
        return events


@dataclass(frozen=True)
class Adapter:
    """One front door of the gateway.

    Args:
        name: the `dialect` label of its metrics (`openai`, `anthropic`, `responses`).
        envelope: the error envelope its clients read (`openai` or `anthropic`).
        parse: the request body to an `Exchange` (raises `CortexError` on a bad request).
    """

    name: str
    envelope: Dialect
    parse: Callable[[dict[str, Any]], Exchange]


def request_ids(rid: str) -> dict[str, str]:
    """The response headers naming a request (`request-id` is the one Claude Code stores)."""
    return {"x-request-id": rid, "request-id": f"req_{rid}"}


class Pipeline:
    """The request path of one gateway app, and what its requests share.

    Args:
        fleet: the fleet requests go to.
        metrics: where requests are counted (one registry per app).
        keepalive_s: silence after which a stream gets a keep-alive.
        commit_after_s: how long a streamed request may wait (cold load) before its 200
            response starts with keep-alives; until then failures are plain HTTP errors
            (default: `keepalive_s`).
        max_body_mb: largest request body accepted (413 beyond).
        budgets: token budgets per key (`gateway/budgets.py`): reserved before dispatch,
            settled from the usage.
    """

    def __init__(
        self,
        fleet: Fleet,
        metrics: GatewayMetrics,
        *,
        keepalive_s: float = 10.0,
        commit_after_s: float | None = None,
        max_body_mb: float = 32.0,
        budgets: Budgets | None = None,
    ) -> None:
        self.fleet = fleet
        self.budgets = budgets
        self.metrics = metrics
        self.keepalive_s = keepalive_s
        self.commit_after_s = commit_after_s if commit_after_s is not None else keepalive_s
        self.max_body_bytes = int(max_body_mb * 1024 * 1024)

    # -- the steps ----------------------------------------------------------------------------

    async def read_json(self, request: Request) -> dict[str, Any]:
        """The request's body, a JSON object within the size limit.

        Raises:
            RequestTooLargeError: over `max_body_mb`.
            InvalidRequestError: not a JSON object (see `cortex.jsonbody.parse_json_object`).
        """
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
            raise RequestTooLargeError(f"the body is over {self.max_body_bytes} bytes")
        # Read straight from `receive` (Starlette's `body()` runs a generator per request).
        receive = request.receive
        message = await receive()
        if message["type"] != "http.request":
            raise ClientDisconnect()
        raw: bytes = message.get("body", b"")
        if message.get("more_body"):
            pieces = [raw]
            size = len(raw)
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    raise ClientDisconnect()
                piece = message.get("body", b"")
                size += len(piece)
                if size > self.max_body_bytes:
                    raise RequestTooLargeError(f"the body is over {self.max_body_bytes} bytes")
                pieces.append(piece)
                if not message.get("more_body"):
                    break
            raw = b"".join(pieces)
        if len(raw) > self.max_body_bytes:
            raise RequestTooLargeError(f"the body is over {self.max_body_bytes} bytes")
        return parse_json_object(raw)

    def pick_model(self, body: dict[str, Any], envelope: Dialect) -> str:
        """The model id the body's `model` names; for Anthropic clients an unknown `claude-*`
        name is the fleet's default model (Claude Code asks for its own tiers by name)."""
        name = body.get("model")
        if not isinstance(name, str) or not name:
            raise InvalidRequestError("`model` is required and must be a string", param="model")
        try:
            return self.fleet.resolve(name)
        except ModelNotFoundError:
            default = self.fleet.default_model
            if envelope == "anthropic" and name.lower().startswith("claude") and default:
                return default
            raise

    async def fit(
        self, lease: Lease, chat: dict[str, Any], envelope: Dialect, *, exact: bool = False
    ) -> tuple[dict[str, Any], int | None]:
        """The request with sampling defaults resolved, fitted to the model's context window,
        and its prompt's token count when it was counted."""
        sampled = self.fleet.sampling(lease.model, chat)
        context = self.fleet.context_length(lease.model)
        return await fit_to_context(lease, sampled, context, envelope, exact=exact)

    # -- the path -----------------------------------------------------------------------------

    def endpoint(self, adapter: Adapter) -> Endpoint:
        """The ASGI app of an inference route through `adapter`."""
        return Endpoint(self, adapter)

    async def handle(self, request: Request, adapter: Adapter) -> Answer:
        """Answer one inference request, whole or streamed."""
        rid = f"{random.getrandbits(128):032x}"  # as unique as a uuid4, without a syscall
        record = RequestRecord(self.metrics, adapter.name)
        envelope = adapter.envelope
        try:
            body = await self.read_json(request)
            record.model = model = self.pick_model(body, envelope)
            exchange = adapter.parse(body)
            spend = await self._reserve(request, exchange)
            if exchange.stream:
                events = self._streamed(record, model, exchange, envelope, spend)
                return SSEResponse(
                    exchange.frame(events),
                    envelope,
                    interval_s=self.keepalive_s,
                    commit_after_s=self.commit_after_s,
                    headers=request_ids(rid),
                )
            try:
                result = await self._whole(record, model, exchange, envelope)
            except CortexError:
                await spend.settle(0)  # nothing was answered
                raise
            await spend.settle(_used(record))
            return JSONResponse(result, headers=request_ids(rid))
        except CortexError as exc:
            record.finish(exc.status_for(envelope))
            return error_response(exc, envelope, request_ids(rid))
        except Exception as exc:
            log.exception("unhandled error on %s %s", request.method, request.url.path)
            record.finish(500)
            error = CortexError(f"internal error: {type(exc).__name__}")
            return error_response(error, envelope, request_ids(rid))

    async def _whole(
        self, record: RequestRecord, model: str, exchange: Exchange, envelope: Dialect
    ) -> dict[str, Any]:
        async with _Held(self.fleet, record, model, envelope) as held:
            chat = exchange.chat
            if exchange.fits:
                chat, _ = await self.fit(held.lease, chat, envelope)
            result = await self.fleet.complete(
                chat,
                path=exchange.path,
                route=held.route,
                lease=held.lease,
                resolved=exchange.fits,
            )
            record.usage(result.get("usage"))
            answer = exchange.reply(result)
            record.status = 200
            return answer

    async def _reserve(self, request: Request, exchange: Exchange) -> Spend:
        """Reserve the request's worst case from its key's budget (429 when it cannot)."""
        budgets = self.budgets
        if budgets is None or not budgets.active:
            return Spend(_NO_BUDGETS, None)
        tokens = estimate_tokens(exchange.chat)
        reservation = await budgets.reserve(request_key(request.headers), tokens)
        return Spend(budgets, reservation, estimate_prompt_tokens(exchange.chat))

    async def _streamed(
        self,
        record: RequestRecord,
        model: str,
        exchange: Exchange,
        envelope: Dialect,
        spend: Spend,
    ) -> AsyncIterator[bytes]:
        sent = False
        try:
            async with _Held(self.fleet, record, model, envelope) as held:
                chat, count = await self.fit(
                    held.lease, exchange.chat, envelope, exact=exchange.exact_count
                )
                relay = exchange.relay(record, count)
                batches = self.fleet.stream_batches(
                    chat, path=exchange.path, route=held.route, lease=held.lease, resolved=True
                )
                # The one loop of a relayed token: node batch in, client bytes out.
                try:
                    async for batch in batches:
                        data = relay.feed(batch)
                        if data:
                            sent = True
                            yield data
                    tail = relay.finish()
                    if tail:
                        yield tail
                    record.status = 200
                except CortexError as exc:
                    record.status = exc.status_for(envelope)
                    if not sent:
                        raise
                    yield relay.fail(exc)
            await spend.settle(_used(record))
        except CortexError:
            await spend.settle(_used(record) if sent else 0)
            raise
        finally:  # a client gone mid-stream: no final usage; the prompt and what was streamed
            if spend.reservation is not None:  # (nothing to settle for a key without budget)
                used = _used(record) if record.completion_tokens else None
                with anyio.CancelScope(shield=True):  # the stream's scope is cancelled by now
                    await spend.settle(used or spend.prompt_estimate + record.streamed_tokens)


class Endpoint:
    """An inference route as a plain ASGI app: the pipeline through one adapter.

    Not a Starlette request/response endpoint: the pipeline answers every error itself, so the
    exception-handling wrapper Starlette puts around each `send` of such an endpoint would be
    one more layer per relayed token for nothing.
    """

    __slots__ = ("adapter", "pipeline")

    def __init__(self, pipeline: Pipeline, adapter: Adapter) -> None:
        self.pipeline = pipeline
        self.adapter = adapter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        answer = await self.pipeline.handle(Request(scope, receive), self.adapter)
        await answer(scope, receive, send)


def _used(record: RequestRecord) -> int | None:
    """The tokens a request used, from its usage (None when no usage came)."""
    used = record.prompt_tokens + record.completion_tokens
    return used or None


_NO_BUDGETS = Budgets([], NoState())


class _Held:
    """A request's hold on its model: acquired on entry; released and recorded on exit, the
    status taken from the error that ended it (a bug is a 500; a client gone stays 499)."""

    def __init__(self, fleet: Fleet, record: RequestRecord, model: str, envelope: Dialect) -> None:
        self.fleet = fleet
        self.record = record
        self.envelope: Dialect = envelope
        self.route = Route(model)
        self._lease: Lease | None = None
        self._untrack: Callable[[], None] = lambda: None

    @property
    def lease(self) -> Lease:
        assert self._lease is not None
        return self._lease

    async def __aenter__(self) -> _Held:
        try:
            self._lease = await self.fleet.acquire(self.route.model)
        except CortexError as exc:
            self.record.finish(exc.status_for(self.envelope))
            raise
        self.route.node = self.record.node = self._lease.node
        self.route.model = self._lease.model
        self._untrack = self.record.track()
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: Any, tb: Any) -> None:
        if isinstance(exc, CortexError):
            self.record.status = exc.status_for(self.envelope)
        elif isinstance(exc, Exception):
            self.record.status = 500  # a bug, not a client gone (499 stays for cancellation)
        self.record.node = self.route.node or self.record.node
        self._untrack()
        self.lease.release()
        self.record.finish()

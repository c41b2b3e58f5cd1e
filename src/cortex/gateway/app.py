"""The gateway's Starlette app: both dialects in front of a `Fleet`.

`create_gateway_app(fleet)` returns the app. Routes: `/v1/models` (OpenAI list; the Anthropic
shape when the request carries `anthropic-version`), `/v1/chat/completions`, `/v1/completions`,
`/v1/messages`, `/v1/messages/count_tokens`, `/health`, the `HEAD /` and `/api/hello` probes,
and the admin API (`cortex.gateway.admin`). Handlers parse, call the fleet, and answer; one
error handler turns `CortexError`s into the client's dialect.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeAlias

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cortex import __version__
from cortex.config import AuthConfig, LimitsConfig
from cortex.drain import Drain
from cortex.errors import (
    CortexError,
    Dialect,
    InvalidRequestError,
    ModelNotFoundError,
    NotFoundError,
    RequestTooLargeError,
)
from cortex.fleet import dispatch
from cortex.fleet.fleet import Fleet
from cortex.fleet.ledger import Lease
from cortex.gateway import admin
from cortex.gateway.auth import KeyRing, dialect_of
from cortex.gateway.catalogue import anthropic_models, openai_models
from cortex.gateway.context import fit_to_context
from cortex.gateway.guard import gateway_middleware
from cortex.gateway.metrics import GatewayMetrics, RequestRecord
from cortex.gateway.openapi import openapi_document
from cortex.gateway.relay import (
    SSEResponse,
    error_response,
    openai_bytes,
    stream_response,
    translated_bytes,
)
from cortex.jsonbody import parse_json_object
from cortex.protocol import anthropic as A
from cortex.translate import (
    AnthropicStreamTranslator,
    anthropic_request_to_openai,
    openai_response_to_anthropic,
)
from cortex.translate.coerce import as_model

__all__ = ["Gateway", "create_gateway_app"]

log = logging.getLogger("cortex.gateway")

Answer: TypeAlias = Response | SSEResponse


class Gateway:
    """The handlers of one gateway app and what they share.

    Args:
        fleet: the fleet requests go to.
        metrics: where requests are counted (one registry per app).
        keepalive_s: silence after which a stream gets a keep-alive.
        commit_after_s: how long a streamed request may wait (cold load) before its 200
            response starts with keep-alives; until then failures are plain HTTP errors.
        max_body_mb: largest request body accepted (413 beyond).
    """

    def __init__(
        self,
        fleet: Fleet,
        metrics: GatewayMetrics,
        *,
        keepalive_s: float = 10.0,
        commit_after_s: float | None = None,
        max_body_mb: float = 32.0,
    ) -> None:
        self.fleet = fleet
        self.metrics = metrics
        self.keepalive_s = keepalive_s
        self.commit_after_s = commit_after_s if commit_after_s is not None else keepalive_s
        self.max_body_bytes = int(max_body_mb * 1024 * 1024)

    # -- plumbing -----------------------------------------------------------------------------

    async def _json(self, request: Request) -> dict[str, Any]:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
            raise RequestTooLargeError(f"the body is over {self.max_body_bytes} bytes")
        raw = await request.body()
        if len(raw) > self.max_body_bytes:
            raise RequestTooLargeError(f"the body is over {self.max_body_bytes} bytes")
        return parse_json_object(raw)

    def _model(self, body: dict[str, Any], dialect: Dialect) -> str:
        name = body.get("model")
        if not isinstance(name, str) or not name:
            raise InvalidRequestError("`model` is required and must be a string", param="model")
        try:
            return self.fleet.resolve(name)
        except ModelNotFoundError:
            default = self.fleet.default_model
            if dialect == "anthropic" and name.lower().startswith("claude") and default:
                return default
            raise

    async def _stream(self, produce: AsyncIterator[bytes], dialect: Dialect, rid: str) -> Answer:
        return await stream_response(
            produce,
            dialect,
            commit_after_s=self.commit_after_s,
            interval_s=self.keepalive_s,
            headers=_ids(rid),
        )

    async def _run(
        self,
        record: RequestRecord,
        model: str,
        work: Callable[[Lease], Awaitable[Any]],
        dialect: Dialect = "openai",
    ) -> Any:
        """Acquire the model, run `work(lease)` and account for it (non-streamed)."""
        lease: Lease | None = None
        untrack: Callable[[], None] = lambda: None  # noqa: E731
        try:
            lease = await self.fleet.acquire(model)
            record.node = lease.node
            untrack = record.track()
            result = await work(lease)
            record.status = 200
            return result
        except CortexError as exc:
            record.status = exc.status_for(dialect)
            raise
        finally:
            untrack()
            if lease is not None:
                lease.release()
            record.finish()

    # -- OpenAI -------------------------------------------------------------------------------

    async def chat_completions(self, request: Request) -> Answer:
        return await self._openai(request, "/v1/chat/completions")

    async def completions(self, request: Request) -> Answer:
        return await self._openai(request, "/v1/completions")

    async def _openai(self, request: Request, path: str) -> Answer:
        rid = uuid.uuid4().hex
        record = RequestRecord(self.metrics, "openai")
        try:
            body = await self._json(request)
            record.model = model = self._model(body, "openai")
        except CortexError as exc:
            record.finish(exc.status_for("openai"))
            raise
        if body.get("stream"):
            options = body.get("stream_options") or {}
            include_usage = bool(isinstance(options, dict) and options.get("include_usage"))
            body["stream_options"] = {**(options if isinstance(options, dict) else {})}
            body["stream_options"]["include_usage"] = True
            produce = self._openai_stream(record, model, body, path, include_usage)
            return await self._stream(produce, "openai", rid)

        async def work(lease: Lease) -> dict[str, Any]:
            sampled, _ = await self._fit(lease, body, "openai")
            route = dispatch.Route(lease.model)
            try:
                result = await self.fleet.complete(sampled, path=path, route=route, lease=lease)
            finally:
                record.node = route.node or lease.node
            record.usage(result.get("usage"))
            return result

        result = await self._run(record, model, work)
        return JSONResponse(result, headers=_ids(rid))

    async def _fit(
        self, lease: Lease, body: dict[str, Any], dialect: Dialect, *, exact: bool = False
    ) -> tuple[dict[str, Any], int | None]:
        sampled = self.fleet.sampling(lease.model, body)
        context = self.fleet.context_length(lease.model)
        return await fit_to_context(lease, sampled, context, dialect, exact=exact)

    async def _openai_stream(
        self, record: RequestRecord, model: str, body: dict[str, Any], path: str, usage: bool
    ) -> AsyncIterator[bytes]:
        async with _Streaming(self.fleet, record, model) as run:
            sampled, _ = await self._fit(run.lease, body, "openai")
            chunks = self.fleet.stream_batches(sampled, path=path, route=run.route, lease=run.lease)
            async for data in openai_bytes(chunks, record, include_usage=usage):
                yield data

    # -- Anthropic ----------------------------------------------------------------------------

    async def messages(self, request: Request) -> Answer:
        rid = uuid.uuid4().hex
        record = RequestRecord(self.metrics, "anthropic")
        try:
            body = await self._json(request)
            record.model = model = self._model(body, "anthropic")
            parsed = as_model(A.MessagesRequest, body)
            openai = anthropic_request_to_openai(parsed).model_dump(mode="json")
        except CortexError as exc:
            record.finish(exc.status_for("anthropic"))
            raise
        if parsed.stream:
            produce = self._anthropic_stream(record, model, parsed, openai)
            return await self._stream(produce, "anthropic", rid)

        async def work(lease: Lease) -> dict[str, Any]:
            sampled, _ = await self._fit(lease, openai, "anthropic")
            route = dispatch.Route(lease.model)
            try:
                result = await self.fleet.complete(sampled, route=route, lease=lease)
            finally:
                record.node = route.node or lease.node
            record.usage(result.get("usage"))
            message = openai_response_to_anthropic(result, request=parsed)
            return message.model_dump(mode="json")

        result = await self._run(record, model, work, "anthropic")
        return JSONResponse(result, headers=_ids(rid))

    async def _anthropic_stream(
        self,
        record: RequestRecord,
        model: str,
        parsed: A.MessagesRequest,
        openai: dict[str, Any],
    ) -> AsyncIterator[bytes]:
        async with _Streaming(self.fleet, record, model, dialect="anthropic") as run:
            sampled, count = await self._fit(run.lease, openai, "anthropic", exact=True)
            translator = AnthropicStreamTranslator(parsed, input_tokens=count)
            chunks = self.fleet.stream_batches(sampled, route=run.route, lease=run.lease)
            async for data in translated_bytes(chunks, record, translator, "anthropic"):
                yield data

    async def count_tokens(self, request: Request) -> Response:
        body = await self._json(request)
        model = self._model(body, "anthropic")
        body.setdefault("max_tokens", 1)
        body.pop("stream", None)
        openai = anthropic_request_to_openai(as_model(A.MessagesRequest, body))
        count = await self.fleet.count_tokens(
            model,
            [m.model_dump(mode="json") for m in openai.messages],
            [t.model_dump(mode="json") for t in openai.tools] if openai.tools else None,
        )
        return JSONResponse({"input_tokens": count})

    # -- catalogue and probes -----------------------------------------------------------------

    async def models(self, request: Request) -> Response:
        entries = self.fleet.catalogue()
        if "anthropic-version" in request.headers:
            return JSONResponse(anthropic_models(entries, request.query_params))
        return JSONResponse(openai_models(entries))

    async def model(self, request: Request) -> Response:
        name = request.path_params["model"]
        anthropic = "anthropic-version" in request.headers
        entries = self.fleet.catalogue()
        listing = anthropic_models(entries, {}) if anthropic else openai_models(entries)
        for item in listing["data"]:
            if item["id"] == name:
                return JSONResponse(item)
        raise ModelNotFoundError(f"model {name!r} does not exist in this fleet")

    async def health(self, request: Request) -> Response:
        nodes = self.fleet.snapshot().nodes.values()
        up = sum(1 for n in nodes if n.up)
        return JSONResponse(
            {"status": "ok", "version": __version__, "nodes_up": up, "nodes": len(nodes)}
        )

    async def probe(self, request: Request) -> Response:
        if request.method == "HEAD":
            return Response(status_code=200)
        return JSONResponse({"name": "cortex", "version": __version__})


class _Streaming:
    """A streamed request's hold on its model: acquired on entry, accounted for on exit."""

    def __init__(
        self, fleet: Fleet, record: RequestRecord, model: str, dialect: Dialect = "openai"
    ) -> None:
        self.fleet = fleet
        self.record = record
        self.model = model
        self.dialect: Dialect = dialect
        self.route = dispatch.Route(model)
        self._lease: Lease | None = None
        self._untrack: Callable[[], None] = lambda: None

    @property
    def lease(self) -> Lease:
        assert self._lease is not None
        return self._lease

    async def __aenter__(self) -> _Streaming:
        try:
            self._lease = await self.fleet.acquire(self.model)
        except CortexError as exc:
            self.record.status = exc.status_for(self.dialect)
            self.record.finish()
            raise
        self.route.node = self.record.node = self._lease.node
        self.route.model = self._lease.model
        self._untrack = self.record.track()
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: Any, tb: Any) -> None:
        if isinstance(exc, CortexError):
            self.record.status = exc.status_for(self.dialect)
        elif isinstance(exc, Exception):
            self.record.status = 500  # a bug, not a client gone (499 stays for cancellation)
        self.record.node = self.route.node or self.record.node
        self._untrack()
        self.lease.release()
        self.record.finish()


def _ids(rid: str) -> dict[str, str]:
    return {"x-request-id": rid, "request-id": f"req_{rid}"}


async def _cortex_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, CortexError)
    return error_response(exc, dialect_of(request.url.path, request.headers))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    dialect = dialect_of(request.url.path, request.headers)
    if exc.status_code == 404:
        return error_response(NotFoundError(f"no route {request.url.path}"), dialect)
    error = InvalidRequestError(str(exc.detail))
    return JSONResponse(error.to_dialect(dialect), status_code=exc.status_code)


async def _server_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    error = CortexError(f"internal error: {type(exc).__name__}")
    return error_response(error, dialect_of(request.url.path, request.headers))


async def _openapi(request: Request) -> Response:
    return JSONResponse(openapi_document())


def create_gateway_app(
    fleet: Fleet,
    *,
    auth: AuthConfig | None = None,
    metrics: GatewayMetrics | None = None,
    keepalive_s: float = 10.0,
    commit_after_s: float | None = None,
    max_body_mb: float = 32.0,
    manage_fleet: bool = False,
    limits: LimitsConfig | None = None,
    cors_origins: Sequence[str] = (),
    drain: Drain | None = None,
) -> Starlette:
    """Build the gateway's ASGI app over `fleet`.

    Args:
        fleet: the fleet to serve (its observer should be `metrics`, for loads and nodes).
        auth: API and admin keys (None or empty: open).
        metrics: the gateway's metrics (a new registry when None); `app.state.metrics`.
        keepalive_s: silence after which a stream gets a keep-alive (SSE comment or `ping`).
        commit_after_s: wait before a slow streamed request's response starts (default:
            `keepalive_s`).
        max_body_mb: largest request body accepted.
        manage_fleet: start the fleet with the app's lifespan and close it after.
        limits: per-key concurrency and rate limits (`[limits]`; None: none).
        cors_origins: origins allowed by CORS (empty: CORS off).
        drain: the server's graceful drain at SIGTERM (`cortex.drain`; None: none).
    """
    metrics = metrics or GatewayMetrics()
    gateway = Gateway(
        fleet,
        metrics,
        keepalive_s=keepalive_s,
        commit_after_s=commit_after_s,
        max_body_mb=max_body_mb,
    )
    admin_api = admin.AdminAPI(fleet)
    # Imported here: the Responses route builds on this module's Gateway.
    from cortex.gateway.responses_route import ResponsesRoute

    routes = [
        Route("/", gateway.probe, methods=["GET", "HEAD"]),
        Route("/api/hello", gateway.probe, methods=["GET", "HEAD"]),
        Route("/health", gateway.health, methods=["GET"]),
        Route("/v1/models", gateway.models, methods=["GET"]),
        Route("/v1/models/{model:path}", gateway.model, methods=["GET"]),
        Route("/v1/chat/completions", gateway.chat_completions, methods=["POST"]),
        Route("/v1/completions", gateway.completions, methods=["POST"]),
        Route("/v1/messages", gateway.messages, methods=["POST"]),
        Route("/v1/messages/count_tokens", gateway.count_tokens, methods=["POST"]),
        Route("/v1/responses", ResponsesRoute(gateway).handle, methods=["POST"]),
        Route("/openapi.json", _openapi, methods=["GET"]),
        *admin_api.routes(),
    ]
    keyring = KeyRing(auth.keys if auth else (), auth.admin_keys if auth else ())
    handlers: dict[Any, Callable[[Request, Exception], Awaitable[Response]]] = {
        CortexError: _cortex_error,
        HTTPException: _http_error,
        Exception: _server_error,
    }
    app = Starlette(
        routes=routes,
        middleware=gateway_middleware(
            keyring,
            limits=limits,
            cors_origins=cors_origins,
            max_body_bytes=int(max_body_mb * 1024 * 1024),
            drain=drain,
        ),
        exception_handlers=handlers,
        lifespan=admin.fleet_lifespan(fleet) if manage_fleet else None,
    )
    app.state.fleet = fleet
    app.state.metrics = metrics
    app.state.gateway = gateway
    return app

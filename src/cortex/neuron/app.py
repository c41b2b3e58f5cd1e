"""The neuron's Starlette app: the wire API (docs/neuron-api.md) over a `Harness`.

`create_neuron_app(harness)` returns the app; every route is a thin call into the harness, and
one error handler turns `CortexError`s into the OpenAI error envelope with their status.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, Literal, TypeVar

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from cortex import __version__
from cortex.drain import Drain, DrainMiddleware
from cortex.errors import (
    AuthenticationError,
    CortexError,
    InvalidRequestError,
    NotFoundError,
    OverloadedError,
)
from cortex.jsonbody import BodyLimitMiddleware
from cortex.neuron.auth import NodeTokenMiddleware
from cortex.neuron.completions import CompletionBuilder, sse
from cortex.neuron.conditional import conditional_json
from cortex.neuron.embeddings import EmbeddingRequest
from cortex.neuron.harness import GenerationStream, Harness
from cortex.neuron.metrics import NeuronMetrics
from cortex.neuron.model_ids import check_model_id
from cortex.neuron.openapi import openapi_document
from cortex.neuron.requests import (
    ChatCompletionRequest,
    CompletionRequest,
    ModelRequest,
    PullRequest,
    parse_body,
    to_generate_request,
)
from cortex.neuron.samples import ChoicesBuilder, SampleStreams, sample_request
from cortex.neuron.serving import CompletionRun, until_disconnect

__all__ = ["create_neuron_app"]

logger = logging.getLogger("cortex.neuron")

_T = TypeVar("_T")


class _Neuron:
    """The state and handlers of one app (no module globals: two apps live side by side)."""

    def __init__(
        self,
        harness: Harness,
        *,
        name: str,
        preload: Sequence[str],
        drain_timeout_s: float,
    ) -> None:
        self.harness = harness
        self.name = name
        self.preload = list(preload)
        self.drain_timeout_s = drain_timeout_s
        self.metrics = NeuronMetrics(harness)
        self.started = time.monotonic()
        self._preloads: list[asyncio.Task[None]] = []

    # --- node ---------------------------------------------------------------------------------

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", "version": __version__, "uptime_s": self._uptime()})

    async def status(self, request: Request) -> Response:
        stats = self.harness.stats()
        devices = await anyio.to_thread.run_sync(self.harness.devices)
        return conditional_json(
            request,
            {
                "name": self.name,
                "version": __version__,
                "uptime_s": self._uptime(),
                "harness": self.harness.kind,
                "devices": [device.to_json() for device in devices],
                "memory": {
                    "limit_mb": stats.memory_limit_mb,
                    "used_mb": round(stats.memory_used_mb, 1),
                    "free_mb": round(stats.memory_free_mb, 1),
                },
                "models": [entry.to_json() for entry in self.harness.models()],
                "requests": {"running": stats.running, "waiting": stats.waiting},
                "load_cycles": stats.load_cycles,
                "loads_started": stats.loads_started,
                "pulls": list(stats.pulls),
            },
            volatile=("uptime_s", "devices"),
        )

    def _uptime(self) -> float:
        return round(time.monotonic() - self.started, 3)

    async def metrics_route(self, request: Request) -> Response:
        body = self.metrics.exposition()
        return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(openapi_document())

    # --- models -------------------------------------------------------------------------------

    async def models(self, request: Request) -> Response:
        entries = await anyio.to_thread.run_sync(self.harness.models)
        return conditional_json(request, {"object": "list", "data": [e.to_json() for e in entries]})

    async def load(self, request: Request) -> Response:
        body = parse_body(await request.body(), ModelRequest)
        entry = await self.harness.load(body.model, body.source, body.quant)
        return JSONResponse(entry.to_json())

    async def pull(self, request: Request) -> Response:
        body = parse_body(await request.body(), PullRequest)
        entry = await self.harness.pull(body.source, body.model)
        return JSONResponse(entry.to_json())

    async def unload(self, request: Request) -> Response:
        body = parse_body(await request.body(), ModelRequest)
        timeout_s = body.drain_timeout_s
        entry = await self.harness.unload(body.model, drain_timeout_s=timeout_s)
        return JSONResponse(entry.to_json())

    async def openai_models(self, request: Request) -> Response:
        data = [
            {
                "id": entry.id,
                "object": "model",
                "created": int(entry.last_used_at or 0),
                "owned_by": self.name,
                "context_length": entry.context_length,
            }
            for entry in self.harness.models()
            if entry.state == "loaded"
        ]
        return JSONResponse({"object": "list", "data": data})

    async def tokenize(self, request: Request) -> Response:
        """vLLM's `POST /tokenize` for chats: the prompt's token count (the gateway's
        count_tokens and context checks use it)."""
        body = parse_body(await request.body(), ChatCompletionRequest)
        count = await self.harness.count_prompt_tokens(to_generate_request(body, "tokenize"))
        context = self.harness.model(body.model).context_length
        return JSONResponse({"count": count, "max_model_len": context})

    # --- generation ---------------------------------------------------------------------------

    async def chat_completions(self, request: Request) -> Response:
        return await self._complete(request, "chat")

    async def embeddings(self, request: Request) -> Response:
        """OpenAI's `POST /v1/embeddings` on a loaded embedding model."""
        endpoint = request.url.path
        model = "unknown"
        try:
            body = parse_body(await request.body(), EmbeddingRequest)
            model = body.model
            check_model_id(model)
            answer = await self.harness.embed(body)
        except CortexError as exc:
            self.metrics.requests.labels(model, endpoint, str(exc.status)).inc()
            raise
        self.metrics.requests.labels(model, endpoint, "200").inc()
        self.metrics.tokens.labels(model, "prompt").inc(answer["usage"]["prompt_tokens"])
        return JSONResponse(answer)

    async def completions(self, request: Request) -> Response:
        return await self._complete(request, "text")

    async def _complete(self, request: Request, kind: Literal["chat", "text"]) -> Response:
        arrived = time.perf_counter()
        endpoint = request.url.path
        model = "unknown"
        try:
            raw = await request.body()
            body: ChatCompletionRequest | CompletionRequest = (
                parse_body(raw, ChatCompletionRequest)
                if kind == "chat"
                else parse_body(raw, CompletionRequest)
            )
            model = body.model
            request_id = uuid.uuid4().hex
            wanted = to_generate_request(body, request_id)
            stream: GenerationStream | SampleStreams
            if wanted.n > 1:
                stream = SampleStreams(
                    lambda i: self.harness.generate(sample_request(wanted, i)), wanted.n
                )
            else:
                stream = self.harness.generate(wanted)
        except CortexError as exc:
            self.metrics.requests.labels(model, endpoint, str(exc.status)).inc()
            raise
        prefix = "chatcmpl-" if kind == "chat" else "cmpl-"
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        shape = (kind, prefix + request_id, int(time.time()), model)
        builder = (
            ChoicesBuilder(*shape, include_usage=include_usage, n=body.n)
            if body.n > 1
            else CompletionBuilder(*shape, include_usage=include_usage)
        )
        run = CompletionRun(self.metrics, stream, builder, endpoint, arrived)
        headers = {"x-request-id": request_id}
        if body.stream:
            first = await until_disconnect(request, run.first)
            if first is None:
                return Response(status_code=499)
            return StreamingResponse(
                run.sse(first),
                media_type="text/event-stream",
                headers={**headers, "cache-control": "no-cache"},
            )
        result = await until_disconnect(request, run.collect)
        if result is None:
            return Response(status_code=499)
        return JSONResponse(result, headers=headers)

    # --- lifespan -----------------------------------------------------------------------------

    @asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        for model_id in self.preload:
            task = asyncio.get_running_loop().create_task(self._preload(model_id))
            self._preloads.append(task)
        try:
            yield
        finally:
            for task in self._preloads:
                task.cancel()
            await self.harness.aclose(drain_timeout_s=self.drain_timeout_s)

    async def _preload(self, model_id: str) -> None:
        try:
            await self.harness.load(model_id)
            logger.info("preloaded %s", model_id)
        except CortexError as exc:
            logger.error("preload of %s failed: %s", model_id, exc.message)


def _error_response(error: CortexError) -> Response:
    return JSONResponse(error.to_openai(), status_code=error.status, headers=error.headers())


async def _cortex_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, CortexError)
    if isinstance(exc, AuthenticationError):
        response = _error_response(exc)
        response.headers["www-authenticate"] = "Bearer"
        return response
    return _error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        error: CortexError = NotFoundError(f"no route {request.method} {request.url.path}")
    else:
        error = InvalidRequestError(str(exc.detail))
        return JSONResponse(error.to_openai(), status_code=exc.status_code, headers=exc.headers)
    return _error_response(error)


async def _server_error(request: Request, exc: Exception) -> Response:
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return _error_response(CortexError(f"internal error: {type(exc).__name__}: {exc}"))


MAX_BODY_MB = 256
"""Largest request body, a bound on memory (the gateway's own `max_body_mb` is the policy)."""


def _drain_middleware(drain: Drain) -> Middleware:
    def stopping() -> OverloadedError:
        return OverloadedError("this neuron is shutting down; try another node", retry_after_s=5)

    return Middleware(
        DrainMiddleware,
        drain=drain,
        refusal=lambda scope: _error_response(stopping()),
        cut_event=lambda scope: sse(stopping().to_openai()),
    )


def create_neuron_app(
    harness: Harness,
    *,
    name: str = "neuron",
    token: str | None = None,
    preload: Sequence[str] = (),
    drain_timeout_s: float = 30.0,
    drain: Drain | None = None,
) -> Starlette:
    """Build the neuron's ASGI app over `harness`.

    Args:
        harness: serves the models (`EngineHarness`, `cortex.testing.FakeHarness`, ...).
        name: the node name shown in `/status`.
        token: when set, every route but `/health` needs `Authorization: Bearer <token>`
            (`cortex.neuron.auth`), inference included.
        preload: model ids loaded in the background at startup.
        drain_timeout_s: at shutdown, how long in-flight requests may finish before cancellation.
        drain: the server's graceful drain (`cortex.drain`): new requests get 503 while it runs.
    """
    neuron = _Neuron(harness, name=name, preload=preload, drain_timeout_s=drain_timeout_s)
    routes = [
        Route("/health", neuron.health, methods=["GET"]),
        Route("/status", neuron.status, methods=["GET"]),
        Route("/models", neuron.models, methods=["GET"]),
        Route("/models/load", neuron.load, methods=["POST"]),
        Route("/models/unload", neuron.unload, methods=["POST"]),
        Route("/models/pull", neuron.pull, methods=["POST"]),
        Route("/v1/chat/completions", neuron.chat_completions, methods=["POST"]),
        Route("/v1/completions", neuron.completions, methods=["POST"]),
        Route("/v1/embeddings", neuron.embeddings, methods=["POST"]),
        Route("/v1/models", neuron.openai_models, methods=["GET"]),
        Route("/tokenize", neuron.tokenize, methods=["POST"]),
        Route("/metrics", neuron.metrics_route, methods=["GET"]),
        Route("/openapi.json", neuron.openapi, methods=["GET"]),
    ]
    handlers: dict[Any, Callable[[Request, Exception], Awaitable[Response]]] = {
        CortexError: _cortex_error,
        HTTPException: _http_error,
        Exception: _server_error,
    }
    middleware = [] if drain is None else [_drain_middleware(drain)]
    middleware.append(Middleware(BodyLimitMiddleware, max_bytes=MAX_BODY_MB * 1024 * 1024))
    middleware.append(Middleware(NodeTokenMiddleware, token=token))
    app = Starlette(
        routes=routes, middleware=middleware, exception_handlers=handlers, lifespan=neuron.lifespan
    )
    app.state.neuron = neuron
    app.state.harness = harness
    app.state.metrics = neuron.metrics
    return app

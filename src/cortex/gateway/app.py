"""The gateway's Starlette app: routes, middleware and lifespan assembled over a `Fleet`.

Inference goes through the one request path (`gateway/pipeline.py`) with a dialect adapter per
front door: `openai_routes` (`/v1/chat/completions`, `/v1/completions`), `anthropic_routes`
(`/v1/messages`, `/v1/messages/count_tokens`), `responses_routes` (`/v1/responses`). Beside
them: the catalogue (`/v1/models`), `/health`, the `HEAD /` and `/api/hello` probes,
`/openapi.json`, the admin API (`gateway/admin.py`) and the dashboard (`gateway/dashboard.py`).
Access log, drain, keys and limits are one middleware, with CORS and the body size beside it
(`gateway/guard.py`); a `POST` to an inference route then goes straight to its pipeline endpoint
(`_Inference`). Errors are answered in the client's dialect (`gateway/error_handlers.py`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from cortex import __version__
from cortex.config import AuthConfig, LimitsConfig
from cortex.drain import Drain
from cortex.fleet import Fleet
from cortex.gateway import admin
from cortex.gateway.anthropic_routes import MESSAGES, count_tokens_endpoint
from cortex.gateway.auth import KeyRing
from cortex.gateway.budgets import Budgets, budgets_route
from cortex.gateway.catalogue import catalogue_routes
from cortex.gateway.dashboard import Dashboard
from cortex.gateway.embeddings_routes import EMBEDDINGS
from cortex.gateway.error_handlers import exception_handlers
from cortex.gateway.guard import gateway_middleware
from cortex.gateway.limits import Limiter
from cortex.gateway.metrics import GatewayMetrics
from cortex.gateway.openai_routes import CHAT_COMPLETIONS, COMPLETIONS
from cortex.gateway.openapi import openapi_document
from cortex.gateway.pipeline import Pipeline
from cortex.gateway.responses_routes import responses_adapter

__all__ = ["create_gateway_app"]


def _probe_routes(fleet: Fleet) -> list[Route]:
    """`/health` (with how many nodes are up), the `HEAD /` and `/api/hello` probes, and
    `/openapi.json`."""

    async def health(request: Request) -> Response:
        nodes = fleet.snapshot().nodes.values()
        up = sum(1 for n in nodes if n.up)
        body = {"status": "ok", "version": __version__, "nodes_up": up, "nodes": len(nodes)}
        return JSONResponse(body)

    async def probe(request: Request) -> Response:
        if request.method == "HEAD":
            return Response(status_code=200)
        return JSONResponse({"name": "cortex", "version": __version__})

    async def openapi(request: Request) -> Response:
        return JSONResponse(openapi_document())

    return [
        Route("/", probe, methods=["GET", "HEAD"]),
        Route("/api/hello", probe, methods=["GET", "HEAD"]),
        Route("/health", health, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
    ]


class _Inference:
    """`POST` to an inference route goes straight to its pipeline endpoint, past Starlette's
    router and exception layer (each one more wrapper around every relayed token's `send`);
    the pipeline answers its errors itself. Anything else (another method, a trailing slash)
    takes the router, where the same endpoints are registered."""

    def __init__(self, app: ASGIApp, routes: Mapping[str, ASGIApp]) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            endpoint = self.routes.get(scope["path"])
            if endpoint is not None:
                await endpoint(scope, receive, send)
                return
        await self.app(scope, receive, send)


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
    models_path: str | Path | None = None,
    budgets: Budgets | None = None,
    limiter: Limiter | None = None,
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
        models_path: the models.toml `POST /admin/models/pin` with `save` writes to.
        budgets: token budgets per key (`[[auth.budgets]]`; see `gateway/budgets.py`).
        limiter: `limits` kept elsewhere (Redis, `gateway/shared_limits.py`); None: in this
            process.
    """
    metrics = metrics or GatewayMetrics()
    pipeline = Pipeline(
        fleet,
        metrics,
        keepalive_s=keepalive_s,
        commit_after_s=commit_after_s,
        max_body_mb=max_body_mb,
        budgets=budgets,
    )
    inference = {
        "/v1/chat/completions": pipeline.endpoint(CHAT_COMPLETIONS),
        "/v1/completions": pipeline.endpoint(COMPLETIONS),
        "/v1/embeddings": pipeline.endpoint(EMBEDDINGS),
        "/v1/messages": pipeline.endpoint(MESSAGES),
        "/v1/responses": pipeline.endpoint(responses_adapter(pipeline.commit_after_s)),
    }
    admin_api = admin.AdminAPI(fleet, models_path=models_path)
    routes = [
        *_probe_routes(fleet),
        *catalogue_routes(fleet),
        *(Route(path, app, methods=["POST"]) for path, app in inference.items()),
        budgets_route(budgets),
        Route("/v1/messages/count_tokens", count_tokens_endpoint(pipeline), methods=["POST"]),
        *admin_api.routes(),
        *Dashboard(admin_api, metrics).routes(),
    ]
    keyring = KeyRing(auth.keys if auth else (), auth.admin_keys if auth else ())
    app = Starlette(
        routes=routes,
        middleware=[
            *gateway_middleware(
                keyring,
                limits=limits,
                cors_origins=cors_origins,
                max_body_bytes=int(max_body_mb * 1024 * 1024),
                drain=drain,
                limiter=limiter,
            ),
            Middleware(_Inference, routes=inference),
        ],
        exception_handlers=exception_handlers(),
        lifespan=admin.fleet_lifespan(fleet) if manage_fleet else None,
    )
    app.state.fleet = fleet
    app.state.metrics = metrics
    app.state.pipeline = pipeline
    return app

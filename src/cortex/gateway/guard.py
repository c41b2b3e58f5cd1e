"""The gateway's outer layers, outermost first: access log, drain, CORS, keys, limits, body size.

- access log (`cortex.gateway.access_log`): a line per request, refusals included;
- drain (`cortex.drain`): at SIGTERM new requests get 503 (Anthropic: 529) while in-flight ones
  finish; a stream cut at the drain timeout ends with an error event in its dialect;
- CORS: off unless `[gateway] cors_origins` names origins (no CORS headers at all otherwise);
  before the keys, so that a browser's preflight (which carries no key) is answered;
- API keys (`cortex.gateway.auth`) on every route but `/health`;
- per-key limits (`cortex.gateway.limits`): requests in flight and rate, 429 with Retry-After;
- body size (`cortex.jsonbody.BodyLimitMiddleware`): 413 before a body over `max_body_mb` is
  read whole.

All but CORS and the body size are one ASGI middleware, `Guard`: it reads the headers once
and wraps `send` once, so a relayed token passes through one wrapper rather than one per layer
(with CORS on, a second `Guard` behind Starlette's `CORSMiddleware` checks keys and limits).
Each check answers a refusal itself, in the client's dialect, through the access log.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cortex.config import LimitsConfig
from cortex.drain import Drain, run_in_drain
from cortex.errors import CortexError, Dialect, OverloadedError
from cortex.gateway.access_log import QUIET_PATHS, AccessEntry, access_logged
from cortex.gateway.auth import KeyRing, dialect_of
from cortex.gateway.limits import KeyLimiter, Limiter, identity
from cortex.gateway.relay import error_event, error_response
from cortex.jsonbody import BodyLimitMiddleware
from cortex.translate.sse import encode_sse

__all__ = ["Guard", "gateway_middleware"]

_EXPOSED = ["retry-after", "request-id", "x-request-id"]
_DRAIN_EXEMPT = frozenset({"/metrics"})  # served as usual while draining, not counted


def _stopping() -> OverloadedError:
    return OverloadedError("the gateway is shutting down; retry in a moment", retry_after_s=5)


def _headers(scope: Scope) -> dict[str, str]:
    """The request headers, names lower-cased (the last value wins)."""
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


class Guard:
    """The access log, drain, keys and limits around the app, in one ASGI middleware.

    Args:
        app: the app.
        log: write the access log.
        drain: the server's drain (None: none).
        keyring: the API and admin keys (None: keys are not checked here).
        limiter: per-key limits (None, or not active: none).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        log: bool = True,
        drain: Drain | None = None,
        keyring: KeyRing | None = None,
        limiter: Limiter | None = None,
    ) -> None:
        self.app = app
        self.log = log
        self.drain = drain
        self.keyring = keyring
        self.limiter = limiter if limiter is not None and limiter.active else None
        self.keyed = bool(keyring and keyring.keys)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        headers = _headers(scope)
        if not self.log or path in QUIET_PATHS:
            await self._drained(scope, receive, send, headers, None)
            return
        with access_logged(scope["method"], path, headers) as entry:
            await self._drained(scope, receive, send, headers, entry)

    async def _drained(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        headers: dict[str, str],
        entry: AccessEntry | None,
    ) -> None:
        drain = self.drain
        if drain is None or scope["path"] in _DRAIN_EXEMPT:
            if entry is not None:
                send = _logging(send, entry)
            await self._checked(scope, receive, send, headers)
            return
        if drain.draining:
            sending = _logging(send, entry) if entry is not None else send
            await _refusal(scope, headers)(scope, receive, sending)
            return

        def on_start(message: Message) -> None:
            if entry is None:
                return
            entry.status = int(message["status"])
            for name, value in message.get("headers") or ():
                if name.lower() == b"x-request-id":
                    entry.request_id = value.decode("latin-1")

        await run_in_drain(
            drain,
            lambda tracked: self._checked(scope, receive, tracked, headers),
            send,
            refuse=lambda tracked: _refusal(scope, headers)(scope, receive, tracked),
            cut_event=lambda: _cut_event(scope, headers),
            on_start=on_start,
        )

    async def _checked(
        self, scope: Scope, receive: Receive, send: Send, headers: dict[str, str]
    ) -> None:
        """Keys, then limits, then the app."""
        keyring = self.keyring
        if keyring is not None:
            refusal = keyring.refusal(scope["path"], headers)
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        limiter = self.limiter
        if limiter is None or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        who = identity(scope, headers, keyed=self.keyed)
        try:
            await limiter.enter(who)
        except CortexError as exc:  # over a limit, or a shared state away (503)
            dialect = dialect_of(scope["path"], headers)
            response = JSONResponse(
                exc.to_dialect(dialect), status_code=exc.status_for(dialect), headers=exc.headers()
            )
            await response(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            await limiter.leave(who)


def _logging(send: Send, entry: AccessEntry) -> Send:
    """`send`, noting the response's status and request id in the access-log entry."""

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            entry.status = int(message["status"])
            for name, value in message.get("headers") or ():
                if name.lower() == b"x-request-id":
                    entry.request_id = value.decode("latin-1")
        await send(message)

    return sending


def _refusal(scope: Scope, headers: dict[str, str]) -> Response:
    """The answer to a request that comes while the gateway drains."""
    if scope["path"] == "/health":
        return JSONResponse({"status": "draining"}, status_code=503)
    return error_response(_stopping(), dialect_of(scope["path"], headers))


def _cut_event(scope: Scope, headers: dict[str, str]) -> bytes:
    error = _stopping()
    if scope["path"].startswith("/v1/responses"):
        body = {"type": "error", "code": "server_shutting_down", "message": error.message}
        return encode_sse(body)
    return error_event(error, dialect_of(scope["path"], headers))


def _body_dialect(scope: Scope) -> Dialect:
    return dialect_of(scope["path"], _headers(scope))


def gateway_middleware(
    keyring: KeyRing,
    *,
    limits: LimitsConfig | None = None,
    cors_origins: Sequence[str] = (),
    max_body_bytes: int = 32 * 1024 * 1024,
    drain: Drain | None = None,
    limiter: Limiter | None = None,
) -> list[Middleware]:
    """The middleware stack of the gateway's API app (see the module docstring).

    Args:
        keyring: the API and admin keys.
        limits: per-key limits (None or all 0: none).
        cors_origins: origins allowed by CORS (empty: CORS off).
        max_body_bytes: the largest request body.
        drain: the server's drain (None: no graceful drain, e.g. in-process tests).
        limiter: the limits, when kept elsewhere than in this process (Redis); None: a
            `KeyLimiter` of `limits`.
    """
    if limiter is None:
        limiter = KeyLimiter(limits or LimitsConfig())
    if cors_origins:
        cors = Middleware(
            CORSMiddleware,
            allow_origins=list(cors_origins),
            allow_methods=["GET", "POST", "HEAD", "OPTIONS"],
            allow_headers=["*"],
            expose_headers=_EXPOSED,
            max_age=600,
        )
        stack = [
            Middleware(Guard, drain=drain),
            cors,
            Middleware(Guard, log=False, keyring=keyring, limiter=limiter),
        ]
    else:
        stack = [Middleware(Guard, drain=drain, keyring=keyring, limiter=limiter)]
    stack.append(Middleware(BodyLimitMiddleware, max_bytes=max_body_bytes, dialect=_body_dialect))
    return stack

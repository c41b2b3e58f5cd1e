"""The gateway's outer layers, outermost first: access log, drain, CORS, keys, limits, body size.

- access log (`cortex.gateway.access_log`): a line per request, refusals included;
- drain (`cortex.drain`): at SIGTERM new requests get 503 (Anthropic: 529) while in-flight ones
  finish; a stream cut at the drain timeout ends with an error event in its dialect;
- CORS: off unless `[gateway] cors_origins` names origins (no CORS headers at all otherwise);
  before the keys, so that a browser's preflight (which carries no key) is answered;
- API keys (`cortex.gateway.auth`) on every route but `/health`;
- per-key limits (`cortex.gateway.limits`): requests in flight and rate, 429 with Retry-After;
- body size: 413 before a body over `max_body_mb` is read whole.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import Scope

from cortex.config import LimitsConfig
from cortex.drain import Drain, DrainMiddleware
from cortex.errors import Dialect, OverloadedError
from cortex.gateway.access_log import AccessLogMiddleware
from cortex.gateway.auth import AuthMiddleware, KeyRing, dialect_of
from cortex.gateway.limits import KeyLimiter, Limiter, LimitsMiddleware
from cortex.gateway.relay import error_event, error_response
from cortex.jsonbody import BodyLimitMiddleware
from cortex.translate.sse import encode_sse

__all__ = ["gateway_middleware"]

_EXPOSED = ["retry-after", "request-id", "x-request-id"]


def _stopping() -> OverloadedError:
    return OverloadedError("the gateway is shutting down; retry in a moment", retry_after_s=5)


def _dialect(scope: Scope) -> Dialect:
    return dialect_of(scope["path"], _ScopeHeaders(scope))


def _refusal(scope: Scope) -> Response:
    return error_response(_stopping(), _dialect(scope))


def _cut_event(scope: Scope) -> bytes:
    error = _stopping()
    if scope["path"].startswith("/v1/responses"):
        body = {"type": "error", "code": "server_shutting_down", "message": error.message}
        return encode_sse(body)
    return error_event(error, _dialect(scope))


class _ScopeHeaders(dict[str, str]):
    def __init__(self, scope: Scope) -> None:
        super().__init__(
            (k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope["headers"]
        )


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
    stack: list[Middleware] = [Middleware(AccessLogMiddleware)]  # sees every answer, refusals too
    if drain is not None:
        stack.append(
            Middleware(DrainMiddleware, drain=drain, refusal=_refusal, cut_event=_cut_event)
        )
    if cors_origins:
        stack.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(cors_origins),
                allow_methods=["GET", "POST", "HEAD", "OPTIONS"],
                allow_headers=["*"],
                expose_headers=_EXPOSED,
                max_age=600,
            )
        )
    stack.append(Middleware(AuthMiddleware, keyring=keyring))
    if limiter is None:
        limiter = KeyLimiter(limits or LimitsConfig())
    if limiter.active:
        stack.append(Middleware(LimitsMiddleware, limiter=limiter, keyed=bool(keyring.keys)))
    stack.append(Middleware(BodyLimitMiddleware, max_bytes=max_body_bytes, dialect=_dialect))
    return stack

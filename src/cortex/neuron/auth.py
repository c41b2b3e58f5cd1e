"""The node's shared token: with one set, every route but `/health` needs it, inference included.

A neuron answers whoever reaches its port; the gateway in front of it holds the API keys, the
limits and the metrics. Were inference open, anyone on the network could go around all three,
so the token guards every route (the gateway's node client sends it on each call) and only the
liveness probe stays open. Tokens are compared by SHA-256 digest in constant time.
"""

from __future__ import annotations

import hashlib
import hmac

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from cortex.errors import AuthenticationError

__all__ = ["OPEN_PATHS", "NodeTokenMiddleware"]

OPEN_PATHS = frozenset({"/health"})


class NodeTokenMiddleware:
    """ASGI middleware refusing requests without `Authorization: Bearer <token>` (401).

    Args:
        app: the neuron's app.
        token: the node's token (None or empty: every route is open).
    """

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.digest = _digest(token) if token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.digest is None or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        if self.accepts(_bearer(scope)):
            await self.app(scope, receive, send)
            return
        error = AuthenticationError("this node needs its token: `Authorization: Bearer <token>`")
        response = JSONResponse(
            error.to_openai(), status_code=error.status, headers={"www-authenticate": "Bearer"}
        )
        await response(scope, receive, send)

    def accepts(self, given: str | None) -> bool:
        """Whether `given` is the node's token."""
        if self.digest is None:
            return True
        return given is not None and hmac.compare_digest(_digest(given), self.digest)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


def _bearer(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name.lower() == b"authorization":
            text: str = value.decode("latin-1")
            scheme, _, token = text.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            return None
    return None

"""The gateway app's exception handlers: every error answered in the client's dialect.

A `CortexError` raised by a route keeps its status and message; Starlette's own HTTP errors
(no such route, method not allowed) get the dialect's envelope; anything else is a bug: logged
with its traceback, answered 500 without its details.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from cortex.errors import CortexError, InvalidRequestError, NotFoundError
from cortex.gateway.auth import dialect_of
from cortex.gateway.relay import error_response

__all__ = ["exception_handlers"]

log = logging.getLogger("cortex.gateway")

Handler = Callable[[Request, Exception], Awaitable[Response]]


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


def exception_handlers() -> dict[Any, Handler]:
    """The handlers, for `Starlette(exception_handlers=...)`."""
    return {CortexError: _cortex_error, HTTPException: _http_error, Exception: _server_error}

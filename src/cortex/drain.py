"""Graceful shutdown of both servers: in-flight requests finish while new ones get 503.

The first SIGTERM (or Ctrl-C) starts a drain instead of closing the listener at once. Requests
already in flight go on; new ones are answered at once with 503 (and `/health` with 503
`{"status": "draining"}`, so load balancers and the gateway's poller stop sending here). The
server stops when the last request in flight ends, or when the drain timeout passes: streams
still running then are ended with an error event in their own format (never a silent cut), and
requests still waiting get their 503. A second signal stops at once. The process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Collection
from types import FrameType
from typing import Any

import anyio
import uvicorn
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["Drain", "DrainMiddleware", "DrainingServer", "run_in_drain"]

log = logging.getLogger("cortex.drain")

_CUT_GRACE_S = 2.0  # time the cut streams get to write their error event and end


class Drain:
    """Requests in flight on one server, and whether it is draining.

    Args:
        timeout_s: how long in-flight requests may take to finish once the drain starts.
    """

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.draining = False
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._scopes: set[anyio.CancelScope] = set()

    def start(self) -> None:
        """Refuse new requests from now on."""
        self.draining = True

    def enter(self, scope: anyio.CancelScope) -> None:
        """A request began; `scope` cancels it if the drain times out."""
        self.in_flight += 1
        self._scopes.add(scope)
        self._idle.clear()

    def leave(self, scope: anyio.CancelScope) -> None:
        """A request ended."""
        self.in_flight -= 1
        self._scopes.discard(scope)
        if self.in_flight == 0:
            self._idle.set()

    async def wait(self, timeout_s: float | None = None) -> bool:
        """Wait until nothing is in flight (True) or the timeout passes (False)."""
        try:
            await asyncio.wait_for(
                self._idle.wait(), self.timeout_s if timeout_s is None else timeout_s
            )
        except TimeoutError:
            return False
        return True

    def cut(self) -> int:
        """Cancel every request still in flight (each ends with its error event); how many."""
        for scope in list(self._scopes):
            scope.cancel()
        return len(self._scopes)


async def run_in_drain(
    drain: Drain,
    call: Callable[[Send], Awaitable[None]],
    send: Send,
    *,
    refuse: Callable[[Send], Awaitable[None]],
    cut_event: Callable[[], bytes],
    on_start: Callable[[Message], None] | None = None,
) -> None:
    """Run one exchange counted in `drain`; if the drain's timeout cuts it, end it properly.

    Args:
        call: runs the app with the `send` it is given (which tracks the response).
        send: the server's send.
        refuse: sends the 503 refusal (a cut before the response started).
        cut_event: the bytes that end an SSE stream cut at the timeout (its error event).
        on_start: called with the `http.response.start` message (access logging).
    """
    started = sse = ended = False

    async def tracked(message: Message) -> None:
        nonlocal started, sse, ended
        if message["type"] == "http.response.start":
            started = True
            for name, value in message.get("headers") or ():
                if name.lower() == b"content-type":
                    sse = value.startswith(b"text/event-stream")
            if on_start is not None:
                on_start(message)
        elif message["type"] == "http.response.body" and not message.get("more_body"):
            ended = True
        await send(message)

    with anyio.CancelScope() as cancel:
        drain.enter(cancel)
        try:
            await call(tracked)
        finally:
            drain.leave(cancel)
    if not cancel.cancelled_caught or ended:
        return
    # Cut at the drain timeout: end the exchange properly rather than drop the connection.
    with contextlib.suppress(OSError, RuntimeError):
        if not started:
            await refuse(tracked)
        elif sse:
            await tracked({"type": "http.response.body", "body": cut_event(), "more_body": False})
        else:
            await tracked({"type": "http.response.body", "body": b"", "more_body": False})


class DrainMiddleware:
    """ASGI middleware that counts requests in flight and refuses new ones while draining.

    Args:
        app: the app.
        drain: the server's drain.
        refusal: the 503 response for a request refused in the drain (in its dialect).
        cut_event: the bytes that end an SSE stream cut at the drain timeout (its error event).
        exempt: paths served as usual while draining and not counted (e.g. `/metrics`).
    """

    def __init__(
        self,
        app: ASGIApp,
        drain: Drain,
        *,
        refusal: Callable[[Scope], Response],
        cut_event: Callable[[Scope], bytes],
        exempt: Collection[str] = ("/metrics",),
    ) -> None:
        self.app = app
        self.drain = drain
        self.refusal = refusal
        self.cut_event = cut_event
        self.exempt = frozenset(exempt)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.exempt:
            await self.app(scope, receive, send)
            return
        if self.drain.draining:
            await self._refuse(scope)(scope, receive, send)
            return
        await run_in_drain(
            self.drain,
            lambda tracked: self.app(scope, receive, tracked),
            send,
            refuse=lambda tracked: self._refuse(scope)(scope, receive, tracked),
            cut_event=lambda: self.cut_event(scope),
        )

    def _refuse(self, scope: Scope) -> Response:
        if scope["path"] == "/health":
            return JSONResponse({"status": "draining"}, status_code=503)
        return self.refusal(scope)


class DrainingServer(uvicorn.Server):
    """A uvicorn server whose first SIGTERM/SIGINT drains `drain` before the listener closes.

    The signal is not re-raised afterwards (uvicorn's default), so the process exits 0.

    Args:
        config: the uvicorn configuration.
        drain: the drain its app's `DrainMiddleware` counts requests in.
    """

    def __init__(self, config: uvicorn.Config, drain: Drain) -> None:
        super().__init__(config)
        self.drain = drain
        self._loop: asyncio.AbstractEventLoop | None = None
        self._draining: asyncio.Task[None] | None = None

    async def serve(self, sockets: Any = None) -> None:
        """Serve until drained (see the class)."""
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """First signal: start the drain; a second one: stop now."""
        if self.drain.draining or self._loop is None:
            if self.should_exit and sig == signal.SIGINT:
                self.force_exit = True
            self.should_exit = True
            return
        self.drain.start()
        self._loop.call_soon_threadsafe(self._begin)

    def _begin(self) -> None:
        assert self._loop is not None
        self._draining = self._loop.create_task(self._drain_then_exit())

    async def _drain_then_exit(self) -> None:
        drain = self.drain
        log.info(
            "draining: %d request(s) in flight, up to %g s; new requests get 503",
            drain.in_flight,
            drain.timeout_s,
        )
        if not await drain.wait():
            log.warning("drain timeout: ending %d request(s) still in flight", drain.cut())
            await drain.wait(_CUT_GRACE_S)
        self.should_exit = True

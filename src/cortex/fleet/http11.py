"""A lean HTTP/1.1 client for the gateway's hop to its nodes (plain `http://`, JSON in, bytes out).

Why not httpx here: per request it builds and checks a `Request`, walks auth and redirect layers,
probes each pooled socket with `select()` and writes the headers and the body separately; per
streamed event it runs h11 (pure Python) and four generator layers. On the relay's hot path that
was about half of the gateway's CPU. This client writes each request in one `write`, parses with
httptools (C, the parser uvicorn uses), and hands body pieces straight to the reader.

What it does about what can go wrong:

- a pooled connection the node closed while idle is seen closed (`connection_lost`) and never
  reused; one closed by the node at the moment it is reused (the two idle timeouts race) fails
  before any response byte, and the request is sent once more on a fresh connection;
- idle connections are dropped after `keepalive_s` (below uvicorn's 5 s), so that race is rare;
- no byte for `read_timeout_s` while waiting: `ReadTimeout`; a connection that cannot be opened
  within `connect_timeout_s`: `ConnectTimeout`; refused or reset: `ConnectFailed`; the
  connection lost mid-response: `ConnectionBroken` (errors of `HTTPError`, which the node
  clients turn into `cortex.errors`);
- a reader that stops early (the client went away) closes the connection, which tells the node
  to stop generating; a reader slower than the node pauses reading (TCP back-pressure);
- a response that the parser rejects closes the connection (`ConnectionBroken`).
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any, cast

import httptools

__all__ = [
    "ConnectFailed",
    "ConnectTimeout",
    "ConnectionBroken",
    "HTTPError",
    "Pool",
    "ReadTimeout",
    "Response",
]

_PAUSE_AT = 64  # body pieces buffered before reading pauses (a slow reader)


class HTTPError(Exception):
    """A request that did not get a whole answer."""


class ConnectFailed(HTTPError):
    """The connection could not be opened (refused, unreachable)."""


class ConnectTimeout(HTTPError):
    """The connection was not opened in time."""


class ReadTimeout(HTTPError):
    """The node sent nothing for the read timeout."""


class ConnectionBroken(HTTPError):
    """The connection was lost (or the answer was not HTTP) before the answer ended."""


class _Connection(asyncio.Protocol):
    """One TCP connection, one request at a time; body pieces are queued for the reader."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.deadline = 0.0
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.pieces: collections.deque[bytes] = collections.deque()
        self.got_bytes = False
        self.head_done = False
        self.complete = False
        self.error: HTTPError | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.paused = False

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ConnectionBroken(f"the answer is not valid HTTP: {exc}"))
            self.close()
            return
        if not self.paused and len(self.pieces) > _PAUSE_AT and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.complete:
            return
        if exc is None and self.head_done and self._ends_at_close():
            self.complete = True  # a body without length or chunks ends where the connection does
            self._wake()
            return
        self._fail(ConnectionBroken(f"the connection was lost: {exc!r}"))

    def _ends_at_close(self) -> bool:
        names = {name for name, _ in self.headers}
        chunked = any(n == b"transfer-encoding" and b"chunked" in v for n, v in self.headers)
        return b"content-length" not in names and not chunked

    # -- httptools callbacks ----------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.head_done = True

    def on_body(self, body: bytes) -> None:
        self.pieces.append(body)

    def on_message_complete(self) -> None:
        self.complete = True
        if not self.parser.should_keep_alive():
            self.close()

    # -- use --------------------------------------------------------------------------------

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: HTTPError) -> None:
        if self.error is None:
            self.error = error
        self._wake()

    async def wait(self, timeout_s: float) -> None:
        """Until something new arrived (head, body, end or failure), at most `timeout_s`."""
        if self.error is not None:
            raise self.error
        waiter = self.waiter = self.loop.create_future()
        # One timer per exchange, moved lazily: each wait only pushes the deadline back (a
        # timer made and cancelled per relayed event cost more than the rest of the wait).
        self.deadline = self.loop.time() + timeout_s
        if self.timer is None:
            self.timer = self.loop.call_at(self.deadline, self._check_deadline)
        try:
            await waiter
        finally:
            self.waiter = None
        if self.error is not None:
            raise self.error

    def _check_deadline(self) -> None:
        self.timer = None
        waiter = self.waiter
        if waiter is None or waiter.done():
            return  # not waiting: the next wait arms it again
        if self.loop.time() >= self.deadline:
            self._fail(ReadTimeout("no answer in time"))
        else:
            self.timer = self.loop.call_at(self.deadline, self._check_deadline)

    def disarm(self) -> None:
        """Drop the read timer (the exchange ended)."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def take(self) -> bytes:
        """Every body piece received so far, as one."""
        pieces = self.pieces
        data = pieces.popleft() if len(pieces) == 1 else b"".join(pieces)
        pieces.clear()
        if self.paused and self.transport is not None and not self.closed:
            self.paused = False
            self.transport.resume_reading()
        return data

    def send(self, data: bytes) -> None:
        self._reset()
        if self.closed or self.transport is None:
            self.error = ConnectionBroken("the connection was closed")
            return
        self.transport.write(data)

    def close(self) -> None:
        self.closed = True
        self.disarm()
        if self.transport is not None:
            self.transport.close()


class Response:
    """A node's answer: its `status` and `headers` (names lowercased); the body is read with
    `read()` or iterated with `pieces()`; `close()` (always called) frees the connection."""

    def __init__(self, pool: Pool, connection: _Connection, read_timeout_s: float) -> None:
        self._pool = pool
        self._connection = connection
        self._read_timeout_s = read_timeout_s
        self.status = connection.status
        self.headers = connection.headers
        self._done = False

    async def pieces(self) -> AsyncIterator[bytes]:
        """The body as it arrives, in the pieces the network gave."""
        connection = self._connection
        while True:
            if connection.pieces:
                yield connection.take()
                continue
            if connection.complete:
                return
            await connection.wait(self._read_timeout_s)

    async def read(self) -> bytes:
        """The whole body."""
        return b"".join([piece async for piece in self.pieces()])

    def close(self) -> None:
        """End the exchange: a whole answer leaves its connection for the next request; an
        answer left unread closes it (the node sees the client go)."""
        if self._done:
            return
        self._done = True
        connection = self._connection
        connection.disarm()
        if connection.complete and not connection.closed and not connection.pieces:
            self._pool.release(connection)
        else:
            connection.close()


class Pool:
    """Keep-alive connections to one `host:port`.

    Args:
        host: the node's host.
        port: its port.
        connect_timeout_s: to open a connection.
        read_timeout_s: the default longest silence while waiting for the answer.
        keepalive_s: idle connections older than this are closed, not reused.
        max_idle: idle connections kept.
        headers: sent with every request (e.g. `authorization`).
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 600.0,
        keepalive_s: float = 2.0,
        max_idle: int = 64,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self.keepalive_s = keepalive_s
        self.max_idle = max_idle
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self._head_tail = f"Host: {host}:{port}\r\n{extra}".encode("latin-1")
        self._idle: list[_Connection] = []

    async def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        *,
        read_timeout_s: float | None = None,
        connect_timeout_s: float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        """Send a request and return once the answer's head arrived (the body follows).

        Raises:
            HTTPError: see the module's docstring.
        """
        head = f"{method} {path} HTTP/1.1\r\n".encode("latin-1") + self._head_tail
        if headers:
            head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode("latin-1")
        if body is not None:
            head += b"content-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(body)
            data = head + body
        else:
            data = head + b"\r\n"
        timeout = read_timeout_s if read_timeout_s is not None else self.read_timeout_s
        while True:
            connection = self._take_idle()
            reused = connection is not None
            if connection is None:
                connection = await self._connect(connect_timeout_s or self.connect_timeout_s)
            connection.send(data)
            try:
                while not connection.head_done:
                    await connection.wait(timeout)
            except ConnectionBroken:
                connection.close()
                if reused and not connection.got_bytes:
                    continue  # the node closed it as we reused it: once more, on a new one
                raise
            except BaseException:
                connection.close()
                raise
            return Response(self, connection, timeout)

    def _take_idle(self) -> _Connection | None:
        now = time.monotonic()
        while self._idle:
            connection = self._idle.pop()
            if not connection.closed and now - connection.idle_since < self.keepalive_s:
                return connection
            connection.close()
        return None

    def release(self, connection: _Connection) -> None:
        """A connection whose exchange ended well is idle again."""
        if len(self._idle) >= self.max_idle:
            connection.close()
            return
        connection.idle_since = time.monotonic()
        self._idle.append(connection)

    async def _connect(self, timeout_s: float) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _, protocol = await asyncio.wait_for(
                loop.create_connection(lambda: _Connection(loop), self.host, self.port),
                timeout_s,
            )
        except TimeoutError as exc:
            raise ConnectTimeout(f"could not connect within {timeout_s} s") from exc
        except OSError as exc:
            raise ConnectFailed(f"could not connect: {exc!r}") from exc
        return protocol

    def close(self) -> None:
        """Close every idle connection (those in use close when their exchange ends)."""
        for connection in self._idle:
            connection.close()
        self._idle.clear()


def pool_for(url: str, **kwargs: Any) -> Pool | None:
    """A `Pool` for a plain `http://host:port` base URL (None for anything else: https, a path)."""
    if not url.startswith("http://"):
        return None
    rest = url[len("http://") :].rstrip("/")
    if "/" in rest or "@" in rest:
        return None
    host, _, port = rest.rpartition(":") if rest.count(":") == 1 else (rest, "", "80")
    if not port.isdigit() or not host:
        return None
    return Pool(host, int(port), **kwargs)

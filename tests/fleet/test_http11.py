"""The lean HTTP/1.1 client of the gateway's hop (`cortex.fleet.http11`) against real sockets on
127.0.0.1, served by small asyncio servers that behave well or badly on purpose."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from cortex.fleet import http11
from cortex.testing import free_port

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Server:
    """A TCP server on a free port; counts the connections it accepted."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.gone = asyncio.Event()  # a client closed a connection mid-answer

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            self.gone.set()
        finally:
            writer.close()


async def _request(reader: asyncio.StreamReader) -> bytes:
    """One request's head and body (content-length) as read."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head + await reader.readexactly(length)


Serve = Callable[[Handler], Awaitable[tuple["Server", http11.Pool]]]


def _answer(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n%s\r\n%s" % (len(body), extra, body)


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    servers: list[asyncio.Server] = []
    pools: list[http11.Pool] = []

    async def start(handler: Handler) -> tuple[Server, http11.Pool]:
        server = Server(handler)
        port = free_port()
        servers.append(await asyncio.start_server(server._serve, "127.0.0.1", port))
        pool = http11.Pool("127.0.0.1", port, read_timeout_s=5.0)
        pools.append(pool)
        return server, pool

    yield start
    for pool in pools:
        pool.close()
    for s in servers:
        s.close()


async def _keep_answering(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        request = await _request(reader)
        writer.write(_answer(b'{"echo": %d}' % len(request)))
        await writer.drain()


async def test_requests_reuse_one_kept_alive_connection(serve: Serve) -> None:
    server, pool = await serve(_keep_answering)
    for _ in range(5):
        response = await pool.request("POST", "/x", b'{"a": 1}')
        assert response.status == 200
        assert (await response.read()).startswith(b'{"echo":')
        response.close()
    assert server.connections == 1


async def test_a_connection_closed_as_it_is_reused_is_retried_on_a_new_one(serve: Serve) -> None:
    answered = 0

    async def once_per_connection(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        nonlocal answered
        await _request(reader)
        writer.write(_answer(b"{}"))
        await writer.drain()
        answered += 1
        await _request(reader)  # the next request on this connection: closed unanswered

    server, pool = await serve(once_per_connection)
    for _ in range(3):
        response = await pool.request("POST", "/x", b"{}")
        assert (response.status, await response.read()) == (200, b"{}")
        response.close()
    assert answered == 3 and server.connections == 3


async def test_idle_connections_past_keepalive_are_not_reused(serve: Serve) -> None:
    server, pool = await serve(_keep_answering)
    pool.keepalive_s = 0.0
    for _ in range(2):
        response = await pool.request("GET", "/x")
        await response.read()
        response.close()
    assert server.connections == 2


async def test_chunked_and_close_delimited_bodies(serve: Serve) -> None:
    async def chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await _request(reader)
        if b"/chunked" in request:
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
            for piece in (b"data: 1\n\n", b"data: 2\n\n"):
                writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                await writer.drain()
            writer.write(b"0\r\n\r\n")
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\ndata: 3\n\n")
        await writer.drain()

    _, pool = await serve(chunked)
    response = await pool.request("POST", "/chunked", b"{}")
    assert await response.read() == b"data: 1\n\ndata: 2\n\n"
    response.close()
    response = await pool.request("POST", "/close", b"{}")
    assert await response.read() == b"data: 3\n\n"
    response.close()


async def test_silence_is_a_read_timeout(serve: Serve) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await writer.drain()
        await asyncio.Event().wait()

    _, pool = await serve(silent)
    with pytest.raises(http11.ReadTimeout):
        await pool.request("GET", "/x", read_timeout_s=0.0)  # not even the head in time
    response = await pool.request("GET", "/x", read_timeout_s=0.3)
    pieces = response.pieces()
    assert await pieces.__anext__() == b"hello"
    with pytest.raises(http11.ReadTimeout):
        await pieces.__anext__()
    response.close()


async def test_a_refused_connection() -> None:
    pool = http11.Pool("127.0.0.1", free_port())
    with pytest.raises(http11.ConnectFailed):
        await pool.request("GET", "/x")


async def test_garbage_and_a_cut_body_are_broken_answers(serve: Serve) -> None:
    async def bad(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await _request(reader)
        if b"/garbage" in request:
            writer.write(bytes(range(256)))
        else:
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{")
        await writer.drain()
        writer.transport.abort()

    _, pool = await serve(bad)
    with pytest.raises(http11.ConnectionBroken):
        await pool.request("GET", "/garbage")
    response = await pool.request("GET", "/cut")
    with pytest.raises(http11.ConnectionBroken):
        await response.read()
    response.close()


async def test_leaving_a_stream_early_closes_its_connection(serve: Serve) -> None:
    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        while True:
            writer.write(b"9\r\ndata: x\n\n\r\n")
            await writer.drain()
            await asyncio.sleep(0.01)

    server, pool = await serve(endless)
    response = await pool.request("POST", "/x", b"{}")
    async for piece in response.pieces():
        assert piece.startswith(b"data: x")
        break
    response.close()
    await asyncio.wait_for(server.gone.wait(), 10)
    assert pool._idle == []


async def test_a_slow_reader_gets_every_byte(serve: Serve) -> None:
    async def fast(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for i in range(2000):
            piece = b"data: %06d\n\n" % i
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            if i % 50 == 0:
                await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    _, pool = await serve(fast)
    response = await pool.request("POST", "/x", b"{}")
    got = bytearray()
    async for piece in response.pieces():
        got += piece
        await asyncio.sleep(0)
    response.close()
    assert bytes(got) == b"".join(b"data: %06d\n\n" % i for i in range(2000))

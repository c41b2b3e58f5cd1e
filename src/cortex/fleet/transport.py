"""An httpx transport that calls an ASGI app in-process and streams its response as it comes.

`httpx.ASGITransport` waits for the whole response before returning it, which would hold back
every token of an in-process neuron until the reply ends. This transport runs the app as a task
and hands body chunks to the caller as the app sends them; closing the response early tells the
app the client went away (`http.disconnect`) and cancels it, exactly like a dropped connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

import httpx

__all__ = ["ASGIApp", "StreamingASGITransport"]

Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [
        MutableMapping[str, Any],
        Callable[[], Awaitable[Message]],
        Callable[[Message], Awaitable[None]],
    ],
    Awaitable[None],
]

_END = object()


class _ResponseStream(httpx.AsyncByteStream):
    def __init__(
        self, chunks: asyncio.Queue[object], task: asyncio.Task[None], gone: asyncio.Event
    ) -> None:
        self._chunks = chunks
        self._task = task
        self._gone = gone

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            item = await self._chunks.get()
            if item is _END:
                break
            if isinstance(item, BaseException):
                raise httpx.ReadError(f"in-process app failed: {item!r}") from item
            assert isinstance(item, bytes)
            yield item

    async def aclose(self) -> None:
        self._gone.set()
        if not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task


class StreamingASGITransport(httpx.AsyncBaseTransport):
    """Send httpx requests to an ASGI app in this process, streaming the response.

    Args:
        app: the ASGI application (e.g. the neuron's Starlette app).
        client: the (host, port) the app sees as its client.
    """

    def __init__(self, app: ASGIApp, *, client: tuple[str, int] = ("127.0.0.1", 0)) -> None:
        self.app = app
        self.client = client

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": request.method,
            "headers": [(k.lower(), v) for k, v in request.headers.raw],
            "scheme": request.url.scheme,
            "path": request.url.path,
            "raw_path": request.url.raw_path.split(b"?")[0],
            "query_string": request.url.query,
            "server": (request.url.host, request.url.port or 80),
            "client": self.client,
            "root_path": "",
        }
        chunks: asyncio.Queue[object] = asyncio.Queue()
        started: asyncio.Future[tuple[int, list[tuple[bytes, bytes]]]] = (
            asyncio.get_running_loop().create_future()
        )
        gone = asyncio.Event()
        body_sent = False

        async def receive() -> Message:
            nonlocal body_sent
            if not body_sent:
                body_sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            if message["type"] == "http.response.start":
                if not started.done():
                    started.set_result((message["status"], list(message.get("headers", []))))
            elif message["type"] == "http.response.body":
                data = bytes(message.get("body", b""))
                if data:
                    await chunks.put(data)
                if not message.get("more_body", False):
                    await chunks.put(_END)

        async def run() -> None:
            # The app's failure is handed to the reader (never left in the task unretrieved).
            try:
                await self.app(scope, receive, send)
            except Exception as exc:
                if not started.done():
                    started.set_exception(exc)
                    return
                chunks.put_nowait(exc)
            if not started.done():
                started.set_exception(RuntimeError("the app returned without a response"))
                return
            chunks.put_nowait(_END)

        task = asyncio.create_task(run())
        try:
            status, headers = await started
        except BaseException:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            raise
        return httpx.Response(
            status, headers=headers, stream=_ResponseStream(chunks, task, gone), request=request
        )

"""A neuron that misbehaves on purpose: a raw asyncio HTTP server on a free port of 127.0.0.1.

It answers the poller like a real neuron (`/health`, `/status`, `/models`, `/tokenize`, loads),
so the gateway routes to it, and then misbehaves on inference in the way `mode` says: it
stalls, sends broken JSON or broken SSE, breaks HTTP framing, or resets the connection. Written
on raw sockets so that it can send bytes no well-behaved server framework would.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from typing import Any, Literal

from cortex.testing import free_port

Mode = Literal[
    "stall",
    "stall_after_first",
    "bad_json",
    "not_json_sse",
    "garbage_sse",
    "wrong_shape",
    "broken_framing",
    "mid_stream_garbage",
    "reset",
]

MODEL = "wobbly"


def _chunk(delta: dict[str, Any]) -> bytes:
    chunk = {
        "id": "chatcmpl-x",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": MODEL,
        "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
    }
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


def _model_entry() -> dict[str, Any]:
    return {
        "id": MODEL,
        "state": "loaded",
        "memory_mb": 100.0,
        "context_length": 4096,
        "architecture": "FakeForCausalLM",
        "device": "cpu",
        "pinned": False,
        "in_flight": 0,
        "last_used_at": None,
        "error": None,
    }


class MisbehavingNeuron:
    """Start with `with MisbehavingNeuron() as node:`; set `node.mode` between requests.

    Args:
        mode: how inference requests are (mis)answered.
    """

    def __init__(self, mode: Mode = "stall") -> None:
        self.mode: Mode = mode
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.inference_requests = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._stop: asyncio.Event | None = None

    def __enter__(self) -> MisbehavingNeuron:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the misbehaving neuron did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())
        self._loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self._ready.set()
        async with server:
            await self._stop.wait()
            server.close()
            # Stalled handlers wait forever by design: cancel them.
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {
                    k.strip().lower(): v.strip()
                    for k, _, v in (line.partition(":") for line in lines[1:] if line)
                }
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                if method == "POST" and path.startswith("/v1/"):
                    self.inference_requests += 1
                    await self._misbehave(json.loads(body or b"{}"), writer)
                    return
                await self._answer(path, writer)
        with contextlib.suppress(Exception):
            writer.close()

    async def _answer(self, path: str, writer: asyncio.StreamWriter) -> None:
        if path == "/status":
            data: Any = {
                "name": "wobbly-node",
                "version": "0",
                "devices": [],
                "memory": {"limit_mb": 1000.0, "used_mb": 100.0, "free_mb": 900.0},
                "models": [_model_entry()],
                "requests": {"running": 0, "waiting": 0},
                "load_cycles": 0,
            }
        elif path == "/models":
            data = {"object": "list", "data": [_model_entry()]}
        elif path == "/models/load":
            data = _model_entry()
        elif path == "/tokenize":
            data = {"count": 5, "max_model_len": 4096}
        else:
            data = {"status": "ok", "version": "0", "uptime_s": 1.0}
        self._send(writer, 200, "application/json", json.dumps(data).encode())
        await writer.drain()

    def _send(self, writer: asyncio.StreamWriter, status: int, kind: str, body: bytes) -> None:
        writer.write(
            f"HTTP/1.1 {status} OK\r\ncontent-type: {kind}\r\n"
            f"content-length: {len(body)}\r\n\r\n".encode()
            + body
        )

    def _stream_head(self, writer: asyncio.StreamWriter) -> None:
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n"
        )

    async def _misbehave(self, request: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        mode, streamed = self.mode, bool(request.get("stream"))
        if mode == "reset":
            writer.transport.abort()
            return
        if mode == "stall":
            await asyncio.Event().wait()
        if mode == "bad_json" and not streamed:
            self._send(writer, 200, "application/json", b'{"id": "chatcmpl-x", "choices": [')
        elif mode == "wrong_shape" and not streamed:
            body = json.dumps({"id": 7, "object": "chat.completion", "choices": [{"message": 5}]})
            self._send(writer, 200, "application/json", body.encode())
        elif mode == "broken_framing":
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                b'content-length: 1000\r\n\r\n{"choices": '
            )
            await writer.drain()
            writer.transport.abort()
            return
        else:
            self._stream_head(writer)
            first = _chunk({"role": "assistant", "content": ""}) + _chunk({"content": "Hello"})
            if mode in ("bad_json", "not_json_sse"):
                writer.write(b"data: {not json at all\n\n")
            elif mode == "garbage_sse":
                writer.write(bytes(range(256)) * 4)
            elif mode == "wrong_shape":
                writer.write(b'data: {"choices": 7}\n\ndata: [1, 2]\n\n')
            elif mode == "stall_after_first":
                writer.write(first)
                await writer.drain()
                await asyncio.Event().wait()
            elif mode == "mid_stream_garbage":
                writer.write(first + _chunk({"content": " there"}))
                await writer.drain()
                await asyncio.sleep(0.2)  # the good events reach the client first
                writer.write(b"data: {oops\n\n")
        await writer.drain()
        writer.close()

"""Clients the fleet talks to nodes through: cortex neurons, external OpenAI servers, in-process.

All three speak HTTP through one pooled `httpx.AsyncClient` each; the in-process one reaches the
embedded neuron's app through `StreamingASGITransport`, so nothing differs but the transport.
Errors come back as `cortex.errors` classes: the node's own error (its status, message and code
kept, so a context-limit sentence reaches the client verbatim) or `UpstreamError` with code
`node_unreachable` when the node could not be reached at all.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Protocol

import httpx

from cortex.errors import (
    ConflictError,
    CortexError,
    ModelNotFoundError,
    UpstreamError,
    UpstreamTimeoutError,
    error_from_status,
)
from cortex.fleet import http11
from cortex.fleet.state import ModelOnNode, NodeKind, NodeSnapshot
from cortex.fleet.transport import ASGIApp, StreamingASGITransport
from cortex.fleet.wire import parse_neuron

__all__ = [
    "HTTPNodeClient",
    "NeuronClient",
    "NodeClient",
    "OpenAIServerClient",
    "Timeouts",
    "in_process_client",
]

log = logging.getLogger("cortex.fleet")

UNREACHABLE = "node_unreachable"
_FULL_POLL_EVERY = 10  # polls: every tenth asks without If-None-Match
_POOLS = 8


class Timeouts:
    """Seconds each kind of call may take.

    Args:
        connect_s: to open a connection.
        request_s: between bytes of an answer (a stream may last longer, never go silent longer).
        load_s: for a model load to finish.

    A status poll has no timeout of its own: the poller bounds each round.
    """

    def __init__(
        self,
        *,
        connect_s: float = 5.0,
        request_s: float = 600.0,
        load_s: float = 600.0,
    ) -> None:
        self.connect_s = connect_s
        self.request_s = request_s
        self.load_s = load_s


class NodeClient(Protocol):
    """What the fleet needs from a node, whatever it runs."""

    name: str
    kind: NodeKind
    endpoint: str

    async def fetch(self) -> NodeSnapshot:
        """Poll the node: its devices, memory and models (raises when it does not answer)."""
        ...

    async def load(self, model: str, source: str | None = None, quant: str | None = None) -> None:
        """Load `model` there (pulled from `source` first if the node lacks it; its weights
        held as `quant` unless the node says otherwise for it); returns once it is loaded."""
        ...

    async def unload(self, model: str) -> None:
        """Unload `model` there (the node drains its in-flight requests first)."""
        ...

    async def pull(self, source: str) -> dict[str, Any]:
        """Pull a model there from `source` without loading it; the node's entry for it."""
        ...

    async def post(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST JSON, return the JSON answer (non-streamed inference)."""
        ...

    def stream(self, path: str, body: Mapping[str, Any]) -> Any:
        """POST JSON and stream the answer: `async with client.stream(...) as chunks`."""
        ...

    async def count_tokens(
        self, model: str, messages: Sequence[Any], tools: Sequence[Any] | None
    ) -> int:
        """Prompt tokens of a chat with the model's own tokenizer and chat template."""
        ...

    async def aclose(self) -> None:
        """Close its connections."""
        ...


class HTTPNodeClient:
    """The HTTP plumbing shared by every kind of node: pooled connections, errors, streams.

    A plain `http://host:port` node is reached through the lean client of `cortex.fleet.http11`
    (one write per request, a C parser, no per-request socket probe); https endpoints and
    in-process apps go through httpx.

    Args:
        name: the node's name.
        endpoint: its base URL.
        token: sent as `Authorization: Bearer` when set.
        timeouts: how long calls may take.
        transport: an httpx transport (in-process apps, tests); default: real connections.
    """

    kind: NodeKind = "neuron"

    def __init__(
        self,
        name: str,
        endpoint: str,
        *,
        token: str | None = None,
        timeouts: Timeouts | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.name = name
        self.endpoint = endpoint.rstrip("/")
        self.timeouts = timeouts or Timeouts()
        headers = {"authorization": f"Bearer {token}"} if token else {}
        t = self.timeouts
        # Several small pools rather than one big one: httpcore scans every connection of a pool
        # on each request and each response end, which costs O(connections) per event and
        # dominated the gateway's CPU at 64 concurrent streams. Inference requests take turns.
        tls = httpx.create_ssl_context() if self.endpoint.startswith("https:") else False
        self._pools = [
            httpx.AsyncClient(
                base_url=self.endpoint,
                headers=headers,
                transport=transport,
                verify=tls,
                timeout=httpx.Timeout(t.request_s, connect=t.connect_s, pool=t.request_s),
                # Idle connections are dropped before the node's own keep-alive timeout
                # (uvicorn's is 5 s) would close them under a new request.
                limits=httpx.Limits(
                    max_connections=512, max_keepalive_connections=64, keepalive_expiry=2.0
                ),
            )
            for _ in range(1 if transport is not None else _POOLS)
        ]
        self._http = self._pools[0]
        self._urls: dict[str, httpx.URL] = {}
        self._turn = itertools.cycle(self._pools)
        self._etags: dict[str, tuple[str, Any]] = {}
        self._polled: NodeSnapshot | None = None
        self._fetches = 0
        self._lean = (
            http11.pool_for(
                self.endpoint,
                connect_timeout_s=t.connect_s,
                read_timeout_s=t.request_s,
                keepalive_s=2.0,
                headers=headers,
            )
            if transport is None
            else None
        )

    async def _call(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        *,
        timeout_s: float | None = None,
        pool: httpx.AsyncClient | None = None,
    ) -> Any:
        if self._lean is not None:
            status, content, _ = await self._lean_exchange(method, path, body, timeout_s)
            return self._answer(status, content, path)
        timeout = (
            httpx.Timeout(timeout_s, connect=min(timeout_s, self.timeouts.connect_s))
            if timeout_s is not None
            else httpx.USE_CLIENT_DEFAULT
        )
        client = pool or self._http
        request = client.build_request(
            method, self._url(path), json=body if body is not None else None, timeout=timeout
        )
        response = await self._send(client, request, stream=False)
        return self._answer(response.status_code, response.content, path)

    def _answer(self, status: int, content: bytes, path: str) -> Any:
        if status >= 400:
            raise self._error(status, content)
        if not content:
            return {}
        try:
            return json.loads(content)
        except ValueError as exc:
            raise UpstreamError(f"node {self.name!r} sent invalid JSON for {path}") from exc

    async def _lean_exchange(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None,
        timeout_s: float | None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        assert self._lean is not None
        response = await self._lean_send(method, path, body, timeout_s, headers)
        try:
            content = await response.read()
        except http11.HTTPError as exc:
            raise self._broken(exc, path) from exc
        finally:
            response.close()
        return response.status, content, response.headers

    async def _get_if_changed(self, path: str) -> tuple[Any, bool]:
        """`GET path` with the ETag of its last answer: (the answer, whether it changed). A node
        that answers 304 (`cortex.neuron.conditional`) sends no body and is not parsed again."""
        cached = self._etags.get(path)
        fresh = self._fetches % _FULL_POLL_EVERY == 0  # device figures stay this fresh
        headers = {"if-none-match": cached[0]} if cached is not None and not fresh else {}
        if self._lean is not None:
            status, content, raw = await self._lean_exchange("GET", path, None, None, headers)
            etag = next((v.decode("latin-1") for k, v in raw if k == b"etag"), None)
        else:
            response = await self._send(
                self._http,
                self._http.build_request("GET", self._url(path), headers=headers),
                stream=False,
            )
            status, content = response.status_code, response.content
            etag = response.headers.get("etag")
        if status == 304 and cached is not None:
            return cached[1], False
        data = self._answer(status, content, path)
        if etag is not None:
            self._etags[path] = (etag, data)
        return data, True

    async def _lean_send(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None,
        timeout_s: float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> http11.Response:
        """Send through the lean client; its failures as cortex errors (as `_send` does)."""
        assert self._lean is not None
        data = _encode(body) if body is not None else None
        connect_s = min(timeout_s, self.timeouts.connect_s) if timeout_s is not None else None
        try:
            response = await self._lean.request(
                method,
                path,
                data,
                read_timeout_s=timeout_s,
                connect_timeout_s=connect_s,
                headers=headers,
            )
        except (http11.ReadTimeout, http11.ConnectTimeout) as exc:
            raise UpstreamTimeoutError(f"node {self.name!r} did not answer {path} in time") from exc
        except http11.HTTPError as exc:
            raise self._unreachable(exc) from exc
        if log.isEnabledFor(logging.DEBUG):  # what httpx's debug log said (never a header)
            log.debug("node %s: %s %s -> HTTP %d", self.name, method, path, response.status)
        return response

    def _broken(self, exc: http11.HTTPError, path: str) -> CortexError:
        """A failure while reading an answer's body."""
        if isinstance(exc, http11.ReadTimeout):
            return UpstreamTimeoutError(f"node {self.name!r} did not answer {path} in time")
        return self._unreachable(exc)

    async def _send(
        self, client: httpx.AsyncClient, request: httpx.Request, *, stream: bool
    ) -> httpx.Response:
        """Send `request`; a pooled connection that broke under it is retried once on a fresh one.

        A kept-alive connection can be closed by the node at the moment it is reused (the two
        idle timeouts race): that is no sign of a dead node. Only a failure to connect, or a
        second failure in a row, reports the node unreachable.
        """
        for attempt in (1, 2):
            try:
                return await client.send(request, stream=stream)
            except httpx.TimeoutException as exc:
                raise UpstreamTimeoutError(
                    f"node {self.name!r} did not answer {request.url.path} in time"
                ) from exc
            except httpx.ConnectError as exc:
                raise self._unreachable(exc) from exc
            except httpx.TransportError as exc:
                if attempt == 2:
                    raise self._unreachable(exc) from exc
        raise AssertionError("unreachable")

    def _unreachable(self, exc: Exception) -> UpstreamError:
        return UpstreamError(
            f"node {self.name!r} ({self.endpoint}) is unreachable: {exc!r}", code=UNREACHABLE
        )

    def _error(self, status: int, content: bytes) -> CortexError:
        """The node's error as a cortex error: status, message and code kept."""
        message = f"node {self.name!r} answered HTTP {status}"
        fields: dict[str, Any] = {}
        try:
            data = json.loads(content)
        except ValueError:
            data = None
        if isinstance(data, dict):
            error = data.get("error", data)
            if isinstance(error, dict):
                message = str(error.get("message") or message)
                fields = error
            elif isinstance(data.get("detail"), str):
                message = data["detail"]
        details = {k: fields[k] for k in ("required_mb", "free_mb") if k in fields}
        kwargs: dict[str, Any] = {}
        if details:
            kwargs["details"] = details
        if status != 507:
            for key in ("code", "param"):
                if isinstance(fields.get(key), str):
                    kwargs[key] = fields[key]
        return error_from_status(status, message, **kwargs)

    async def post(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST JSON, return the JSON answer."""
        result = await self._call("POST", path, body, pool=next(self._turn))
        if not isinstance(result, dict):
            raise UpstreamError(f"node {self.name!r} sent a non-object answer for {path}")
        return result

    @asynccontextmanager
    async def stream(
        self, path: str, body: Mapping[str, Any]
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        """POST JSON and yield the answer's raw bytes as they arrive.

        Raises the node's error (before yielding) when it answers with an error status. Leaving
        the block early closes the connection, which tells the node to stop generating. A
        stream that breaks raises `UpstreamError` (`UpstreamTimeoutError` when the node went
        silent) out of the block.
        """
        if self._lean is not None:
            lean = await self._lean_send("POST", path, body)
            try:
                if lean.status >= 400:
                    try:
                        content = await lean.read()
                    except http11.HTTPError as exc:
                        raise self._broken(exc, path) from exc
                    raise self._error(lean.status, content)
                # The pieces go to the reader as they are (no wrapping generator per piece);
                # their transport errors are named here, as they leave the block.
                yield lean.pieces()
            except http11.ReadTimeout as exc:
                raise UpstreamTimeoutError(f"node {self.name!r} went silent mid-stream") from exc
            except http11.HTTPError as exc:
                raise UpstreamError(
                    f"node {self.name!r} broke the stream: {exc!r}", code=UNREACHABLE
                ) from exc
            finally:
                lean.close()
            return
        pool = next(self._turn)
        request = pool.build_request("POST", self._url(path), json=body)
        response = await self._send(pool, request, stream=True)
        try:
            if response.status_code >= 400:
                raise self._error(response.status_code, await response.aread())
            yield _raw(response, self.name)
        finally:
            await response.aclose()

    def _url(self, path: str) -> httpx.URL:
        """The absolute URL of `path`, parsed once (httpx's URL parsing is slow per request)."""
        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = httpx.URL(self.endpoint + path)
        return url

    async def aclose(self) -> None:
        """Close the connection pool."""
        if self._lean is not None:
            self._lean.close()
        for pool in self._pools:
            await pool.aclose()


def _encode(body: Mapping[str, Any]) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


async def _raw(response: httpx.Response, name: str) -> AsyncIterator[bytes]:
    try:
        async for chunk in response.aiter_raw():
            yield chunk
    except httpx.TimeoutException as exc:
        raise UpstreamTimeoutError(f"node {name!r} went silent mid-stream") from exc
    except httpx.TransportError as exc:
        raise UpstreamError(f"node {name!r} broke the stream: {exc!r}", code=UNREACHABLE) from exc


class NeuronClient(HTTPNodeClient):
    """A cortex neuron: the wire API of docs/neuron-api.md, lifecycle included."""

    kind: NodeKind = "neuron"

    async def fetch(self) -> NodeSnapshot:
        """`GET /status` and `GET /models`, as one node snapshot: the very same object as the
        last one when the node answered both with 304 (nothing changed; see `Fleet`)."""
        self._fetches += 1
        (status, new_status), (listing, new_listing) = await asyncio.gather(
            self._get_if_changed("/status"), self._get_if_changed("/models")
        )
        if new_status or new_listing or self._polled is None:
            self._polled = parse_neuron(self.name, self.endpoint, status, listing)
        return self._polled

    async def load(self, model: str, source: str | None = None, quant: str | None = None) -> None:
        """`POST /models/load`: returns once loaded (404 unknown, 507 no memory, 409 unloading);
        with `source`, a neuron lacking the model pulls it first; `quant` asks for how the
        weights are held (the neuron's own setting for the model wins)."""
        body = {
            "model": model,
            **({"source": source} if source else {}),
            **({"quant": quant} if quant else {}),
        }
        await self._call("POST", "/models/load", body, timeout_s=self.timeouts.load_s)

    async def unload(self, model: str) -> None:
        """`POST /models/unload`: the neuron drains in-flight requests first."""
        await self._call("POST", "/models/unload", {"model": model}, timeout_s=self.timeouts.load_s)

    async def pull(self, source: str) -> dict[str, Any]:
        """`POST /models/pull`: returns the pulled model's entry (not loaded)."""
        entry = await self._call(
            "POST", "/models/pull", {"source": source}, timeout_s=self.timeouts.load_s
        )
        return dict(entry)

    async def count_tokens(
        self, model: str, messages: Sequence[Any], tools: Sequence[Any] | None
    ) -> int:
        """`POST /tokenize` (vLLM's shape): the chat template applied, generation prompt added."""
        body: dict[str, Any] = {"model": model, "messages": list(messages)}
        if tools:
            body["tools"] = list(tools)
        result = await self._call("POST", "/tokenize", body)
        return int(result["count"])


class OpenAIServerClient(HTTPNodeClient):
    """An external OpenAI-compatible server (vLLM, llama.cpp, SGLang, Ollama).

    It joins the catalogue and routing with whatever models it lists; it has no lifecycle, so
    its models count as loaded and pinned, and the fleet never loads or evicts there.
    """

    kind: NodeKind = "openai"

    async def fetch(self) -> NodeSnapshot:
        """`GET /v1/models`: every listed model is loaded there."""
        listing = await self._call("GET", "/v1/models")
        entries = listing.get("data", []) if isinstance(listing, dict) else []
        models = {}
        for entry in entries:
            if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
                continue
            context = entry.get("max_model_len") or entry.get("context_length")
            models[entry["id"]] = ModelOnNode(
                id=entry["id"],
                state="loaded",
                context_length=int(context) if isinstance(context, int | float) else None,
                pinned=True,
            )
        return NodeSnapshot(name=self.name, kind="openai", endpoint=self.endpoint, models=models)

    async def load(self, model: str, source: str | None = None, quant: str | None = None) -> None:
        """Nothing to do when the server lists the model; it cannot load (or pull) others."""
        snapshot = await self.fetch()
        if model not in snapshot.models:
            raise ModelNotFoundError(f"external server {self.name!r} does not serve {model!r}")

    async def unload(self, model: str) -> None:
        """External servers have no lifecycle: always a conflict."""
        raise ConflictError(f"node {self.name!r} is an external server; it cannot unload models")

    async def pull(self, source: str) -> dict[str, Any]:
        """External servers have no lifecycle: always a conflict."""
        raise ConflictError(f"node {self.name!r} is an external server; it cannot pull models")

    async def count_tokens(
        self, model: str, messages: Sequence[Any], tools: Sequence[Any] | None
    ) -> int:
        """vLLM's `POST /tokenize` (servers without it answer 404, passed on)."""
        body: dict[str, Any] = {"model": model, "messages": list(messages)}
        if tools:
            body["tools"] = list(tools)
        result = await self._call("POST", "/tokenize", body)
        return int(result["count"])


def in_process_client(
    name: str, app: ASGIApp, *, token: str | None = None, timeouts: Timeouts | None = None
) -> NeuronClient:
    """A client for a neuron app living in this process (the embedded default neuron)."""
    return NeuronClient(
        name,
        f"http://{name}.in-process",
        token=token,
        timeouts=timeouts,
        transport=StreamingASGITransport(app),
    )

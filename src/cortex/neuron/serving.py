"""One generation answered over HTTP: first event, SSE stream or body, metrics, disconnects."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
from starlette.requests import Request

from cortex.errors import CortexError, OverloadedError
from cortex.neuron.completions import SSE_DONE, CompletionBuilder, sse
from cortex.neuron.harness import GenerationStream
from cortex.neuron.metrics import NeuronMetrics
from cortex.neuron.types import GenerationEvent

if TYPE_CHECKING:
    from cortex.neuron.samples import SampleStreams

__all__ = ["CompletionRun", "until_disconnect"]

_T = TypeVar("_T")


class CompletionRun:
    """One generation being answered: its metrics, its first event, then the SSE stream or the
    whole body, and the stream closed whatever happens.

    Args:
        metrics: the app's metrics.
        stream: the harness's generation (or the samples of one, for `n > 1`).
        builder: shapes the OpenAI answer.
        endpoint: the route, for the metrics' labels.
        arrived: `time.perf_counter()` when the request arrived (for the TTFT).
    """

    def __init__(
        self,
        metrics: NeuronMetrics,
        stream: GenerationStream | SampleStreams,
        builder: CompletionBuilder,
        endpoint: str,
        arrived: float,
    ) -> None:
        self.metrics = metrics
        self.stream = stream
        self.builder = builder
        self.endpoint = endpoint
        self.arrived = arrived
        self.model = stream.model
        self.status = "499"  # until it ends otherwise: the client went away
        self._first_token_seen = False
        self._last_token_at = arrived

    def _observe(self, event: GenerationEvent) -> None:
        metrics = self.metrics
        if event.token_count:
            now = time.perf_counter()
            if not self._first_token_seen:
                self._first_token_seen = True
                metrics.time_to_first_token.labels(self.model).observe(now - self.arrived)
            else:
                gap = (now - self._last_token_at) / event.token_count
                metrics.inter_token_latency.labels(self.model).observe(gap)
            self._last_token_at = now
            metrics.batch_size.observe(max(1, self.stream.batch_size()))
        if event.finish_reason == "cancelled":
            raise OverloadedError("the generation was cancelled by the engine", code="cancelled")

    async def _next(self) -> GenerationEvent | None:
        try:
            event = await self.stream.__anext__()
        except StopAsyncIteration:
            return None
        self._observe(event)
        return event

    async def first(self) -> GenerationEvent:
        """The first event, so that errors (context length, queue full) get their status."""
        try:
            event = await self._next()
        except BaseException as exc:
            await self._finish(exc)
            raise
        if event is None:
            await self._finish(None)
            raise CortexError("the generation ended without any event")
        return event

    async def collect(self) -> dict[str, Any]:
        """The whole completion (non-streamed)."""
        try:
            event: GenerationEvent | None = await self.first()
            while event is not None:
                self.builder.add(event)
                event = await self._next()
        except BaseException as exc:
            await self._finish(exc)
            raise
        await self._finish(None)
        return self.builder.body()

    async def sse(self, first: GenerationEvent) -> AsyncIterator[bytes]:
        """The streamed completion; an error after the first byte is sent as an error event."""
        error: BaseException | None = None
        try:
            event: GenerationEvent | None = first
            while event is not None:
                yield self.builder.encode(event)
                event = await self._next()
            for chunk in self.builder.final_chunks():
                yield sse(chunk)
            yield SSE_DONE
        except CortexError as exc:
            error = exc
            yield sse(exc.to_openai())
        except BaseException as exc:
            error = exc
            raise
        finally:
            await self._finish(error)

    async def _finish(self, error: BaseException | None) -> None:
        await self.stream.aclose()
        if isinstance(error, CortexError):
            self.status = str(error.status)
        elif error is None:
            self.status = "200"
        elif not isinstance(error, asyncio.CancelledError):
            self.status = "500"
        metrics = self.metrics
        metrics.requests.labels(self.model, self.endpoint, self.status).inc()
        usage = self.builder.usage
        if usage is not None:
            metrics.tokens.labels(self.model, "prompt").inc(usage.prompt_tokens)
            metrics.tokens.labels(self.model, "completion").inc(usage.completion_tokens)
            for lookup in self.builder.prompt_usages():  # every sample's, for n > 1
                metrics.prefix_cache_queries.labels(self.model).inc(lookup.prompt_tokens)
                metrics.prefix_cache_hits.labels(self.model).inc(lookup.cached_tokens)
        elif self.builder.completion_tokens:
            metrics.tokens.labels(self.model, "completion").inc(self.builder.completion_tokens)


async def until_disconnect(request: Request, work: Callable[[], Awaitable[_T]]) -> _T | None:
    """Run `work`, cancelling it if the client disconnects first (then None)."""
    with anyio.CancelScope() as scope:

        async def watch() -> None:
            while (await request.receive())["type"] != "http.disconnect":
                pass
            scope.cancel()

        watcher = asyncio.get_running_loop().create_task(watch())
        try:
            return await work()
        finally:
            watcher.cancel()
    return None

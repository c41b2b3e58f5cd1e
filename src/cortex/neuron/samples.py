"""`n > 1`: several samples of one request, prefilled once, answered as one completion.

Sample 0 starts alone; once its first event arrives its prompt's KV is in the engine's prefix
cache, and samples 1..n-1 start then, reusing every full block of it (only the last, partial
block is computed again). Sample i draws with seed `seed + i` when the request has a seed (so
the answer is reproducible), else each draws its own. Events of all samples come out of one
`SampleStreams` as they are produced, each tagged with its `index`; `ChoicesBuilder` keeps one
`CompletionBuilder` per choice, so a body lists `choices[i]` in order and a stream interleaves
chunks by index. The usage counts the prompt once: sample 0's prompt tokens (and cached
tokens), the completion tokens of all samples.

What can go wrong: a sample failing (queue full, model unloaded) fails the whole request and
closes the others; a client leaving closes them all.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from cortex.neuron.completions import CompletionBuilder, usage_json
from cortex.neuron.harness import GenerationStream
from cortex.neuron.types import GenerateRequest, GenerationEvent, TokenUsage

__all__ = ["ChoicesBuilder", "SampleStreams", "sample_request"]


def sample_request(request: GenerateRequest, index: int) -> GenerateRequest:
    """Sample `index` of `request`: one sample, seed `seed + index` (when seeded)."""
    seed = request.sampling.seed
    if seed is not None:
        seed = (seed + index) % 2**63
    return replace(
        request,
        n=1,
        sampling=replace(request.sampling, seed=seed),
        request_id=f"{request.request_id}-{index}",
    )


_END = object()


class SampleStreams:
    """The events of `n` samples, as they come, tagged with their sample's index.

    Args:
        start: starts sample i (`harness.generate(sample_request(request, i))`); sample 0 is
            started at once, so that an unknown model raises here.
        n: how many samples.
    """

    def __init__(self, start: Callable[[int], GenerationStream], n: int) -> None:
        self._start = start
        self._n = n
        self._streams = [start(0)]
        self._queue: asyncio.Queue[tuple[int, Any]] = asyncio.Queue()
        self._pumps: list[asyncio.Task[None]] = []
        self._live = 0
        self._closed = False

    @property
    def model(self) -> str:
        """The model generating."""
        return self._streams[0].model

    def batch_size(self) -> int:
        """Requests in the model's batch now."""
        return self._streams[0].batch_size()

    def __aiter__(self) -> SampleStreams:
        return self

    async def __anext__(self) -> GenerationEvent:
        if self._closed:
            raise StopAsyncIteration
        if not self._pumps:
            return await self._open()
        while self._live:
            index, item = await self._queue.get()
            if item is _END:
                self._live -= 1
                continue
            if isinstance(item, BaseException):
                await self.aclose()
                raise item
            event: GenerationEvent = item
            return event if index == 0 else replace(event, index=index)
        await self.aclose()
        raise StopAsyncIteration

    async def _open(self) -> GenerationEvent:
        """Sample 0's first event (its prefill done), then the other samples started."""
        first = self._streams[0]
        try:
            event = await first.__anext__()
            self._streams += [self._start(i) for i in range(1, self._n)]
        except BaseException:
            await self.aclose()
            raise
        loop = asyncio.get_running_loop()
        ended = event.finish_reason is not None
        for index, stream in enumerate(self._streams):
            if index == 0 and ended:
                continue
            self._pumps.append(loop.create_task(self._pump(index, stream)))
        self._live = len(self._pumps)
        return event

    async def _pump(self, index: int, stream: GenerationStream) -> None:
        try:
            async for event in stream:
                self._queue.put_nowait((index, event))
        except Exception as error:
            self._queue.put_nowait((index, error))
        self._queue.put_nowait((index, _END))

    async def aclose(self) -> None:
        """Stop every sample and release the model (idempotent)."""
        if self._closed:
            return
        self._closed = True
        for pump in self._pumps:
            pump.cancel()
        for pump in self._pumps:
            with contextlib.suppress(BaseException):
                await pump
        for stream in self._streams:
            await stream.aclose()


class ChoicesBuilder(CompletionBuilder):
    """A completion of `n` choices: one `CompletionBuilder` per sample, the usage summed.

    Args:
        kind, completion_id, created, model, include_usage: as for `CompletionBuilder`.
        n: how many choices.
    """

    def __init__(
        self,
        kind: Any,
        completion_id: str,
        created: int,
        model: str,
        *,
        include_usage: bool = False,
        n: int = 1,
    ) -> None:
        super().__init__(kind, completion_id, created, model, include_usage=include_usage)
        self.choices = [
            CompletionBuilder(
                kind, completion_id, created, model, include_usage=include_usage, index=i
            )
            for i in range(n)
        ]

    def add(self, event: GenerationEvent) -> None:
        """Take one event of any sample (for the non-streamed body)."""
        self.choices[event.index].add(event)
        self._sum()

    def encode(self, event: GenerationEvent) -> bytes:
        """The server-sent events of one event of any sample."""
        data = self.choices[event.index].encode(event)
        self._sum()
        return data

    def chunks(self, event: GenerationEvent) -> list[dict[str, Any]]:
        """The stream chunks of one event of any sample."""
        out = self.choices[event.index].chunks(event)
        self._sum()
        return out

    def _sum(self) -> None:
        self.completion_tokens = sum(c.completion_tokens for c in self.choices)
        usages = [c.usage for c in self.choices]
        if all(u is not None for u in usages):
            first = usages[0]
            assert first is not None
            self.usage = TokenUsage(
                first.prompt_tokens,
                sum(u.completion_tokens for u in usages if u is not None),
                first.cached_tokens,
                sum(u.reasoning_tokens for u in usages if u is not None),
            )

    def prompt_usages(self) -> list[TokenUsage]:
        """Every sample's usage: each looked its prompt up in the prefix cache."""
        return [c.usage for c in self.choices if c.usage is not None]

    def body(self) -> dict[str, Any]:
        """The whole completion: `choices[i]` in order, the usage counting the prompt once."""
        body = self.choices[0].body()
        body["choices"] = [c.body()["choices"][0] for c in self.choices]
        body["usage"] = usage_json(self.usage) if self.usage is not None else None
        return body

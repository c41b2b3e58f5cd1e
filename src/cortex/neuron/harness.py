"""The `Harness` protocol a neuron serves through, and the registry-backed base of harnesses.

A harness lists its models, loads and unloads them, estimates their memory, streams generations
and reports its stats. `EngineHarness` (in `cortex.neuron.engine_harness`) runs the cortex
engine; `cortex.testing.FakeHarness` pretends, for tests. Both build on `RegistryHarness`, which
keeps the lifecycle rules in one place (`cortex.neuron.registry`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import anyio

from cortex.errors import InvalidRequestError
from cortex.neuron.gpus import Device, discover_devices
from cortex.neuron.registry import ModelLease, ModelRegistry
from cortex.neuron.types import (
    GenerateRequest,
    GenerationEvent,
    HarnessStats,
    LoadEvent,
    ModelEntry,
    ModelUsage,
)

if TYPE_CHECKING:
    from cortex.neuron.embeddings import EmbeddingRequest

__all__ = ["GenerationStream", "Harness", "RegistryHarness"]


class GenerationStream:
    """The events of one generation, holding its model until closed.

    Iterate it, then `aclose()` it (or use `async with`): closing early cancels the generation
    and frees its place in the batch. When the model is unloaded under it, the next step raises
    the cancel error of the lease (503 `model_unloaded`).
    """

    def __init__(self, events: AsyncIterator[GenerationEvent], lease: ModelLease) -> None:
        self._events = events
        self._lease = lease
        self._closed = False

    @property
    def model(self) -> str:
        """The model generating."""
        return self._lease.model

    def batch_size(self) -> int:
        """Requests in the model's batch now (this one included, once it runs)."""
        return self._lease.runner.usage().running

    def __aiter__(self) -> GenerationStream:
        return self

    async def __anext__(self) -> GenerationEvent:
        lease = self._lease
        if self._closed:
            raise StopAsyncIteration
        if lease.cancel_error is not None:
            await self.aclose()
            raise lease.cancel_error
        # While it waits, an unload can cancel the task (a native cancel, undone with
        # `uncancel` below, as asyncio.timeout does): a queued or mid-step request stops at once,
        # not only between tokens. Cheaper per token than a cancel scope.
        task = asyncio.current_task()
        lease.waiter = task
        try:
            return await self._events.__anext__()
        except asyncio.CancelledError:
            await self.aclose()
            if lease.waiter_cancelled and task is not None and task.uncancel() == 0:
                assert lease.cancel_error is not None
                raise lease.cancel_error from None
            raise
        except BaseException:  # the end, or an error: release the model
            await self.aclose()
            raise
        finally:
            lease.waiter = None

    async def aclose(self) -> None:
        """Stop the generation (if still running) and release the model (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            aclose = getattr(self._events, "aclose", None)
            if aclose is not None:
                with anyio.CancelScope(shield=True):
                    await aclose()
        finally:
            self._lease.release()

    async def __aenter__(self) -> GenerationStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


@runtime_checkable
class Harness(Protocol):
    """What a neuron serves through: models, their lifecycle, generation and stats."""

    @property
    def kind(self) -> str:
        """`engine`, `fake`, or another name of the implementation."""
        ...

    def models(self) -> list[ModelEntry]:
        """Every model this node can serve, with its state (scans the disks again)."""
        ...

    def model(self, model_id: str) -> ModelEntry:
        """One model's entry; raises `ModelNotFoundError` (404) for an unknown id."""
        ...

    async def load(
        self, model_id: str, source: str | None = None, quant: str | None = None
    ) -> ModelEntry:
        """Load a model (idempotent; concurrent calls share one load), pulling it from `source`
        first when the node lacks it, its weights held as `quant` unless this node says
        otherwise for it; see `ModelRegistry.load`."""
        ...

    async def pull(self, source: str, model_id: str | None = None) -> ModelEntry:
        """Pull a model without loading it; see `ModelRegistry.pull`."""
        ...

    async def unload(self, model_id: str, *, drain_timeout_s: float | None = None) -> ModelEntry:
        """Unload a model after draining its requests; see `ModelRegistry.unload`."""
        ...

    async def embed(self, request: EmbeddingRequest) -> dict[str, Any]:
        """`POST /v1/embeddings` on a loaded embedding model: the OpenAI answer."""
        ...

    def generate(self, request: GenerateRequest) -> GenerationStream:
        """Start a generation on a loaded model.

        Raises at once `ModelNotFoundError` (not loaded, 404) or `ConflictError` (unloading,
        409); the first step of the stream raises `ContextLengthExceededError` (400) or
        `OverloadedError` (queue full, 503).
        """
        ...

    def memory_estimate_mb(self, model_id: str) -> float:
        """What the model needs loaded: weights plus its KV cache budget, in MB."""
        ...

    async def count_prompt_tokens(self, request: GenerateRequest) -> int:
        """Prompt tokens of `request` by its loaded model's tokenizer and chat template."""
        ...

    def stats(self) -> HarnessStats:
        """Requests, KV cache use, memory and load counters now."""
        ...

    def devices(self) -> list[Device]:
        """The node's devices (GPUs via NVML, else the CPU)."""
        ...

    def subscribe(self, listener: Callable[[LoadEvent], None]) -> None:
        """Call `listener` after each load finishes."""
        ...

    async def aclose(self, *, drain_timeout_s: float | None = None) -> None:
        """Unload everything, draining in-flight requests first."""
        ...


class RegistryHarness:
    """A harness over a `ModelRegistry`: subclasses give the registry (scan + opener)."""

    kind = "registry"

    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry

    def models(self) -> list[ModelEntry]:
        """Every model this node can serve, after a fresh scan."""
        self.registry.refresh()
        return self.registry.entries()

    def model(self, model_id: str) -> ModelEntry:
        """One model's entry (404 if unknown)."""
        return self.registry.entry(model_id)

    async def load(
        self, model_id: str, source: str | None = None, quant: str | None = None
    ) -> ModelEntry:
        """Load a model (pulled from `source` first if missing); see `ModelRegistry.load`."""
        return await self.registry.load(model_id, source, quant)

    async def pull(self, source: str, model_id: str | None = None) -> ModelEntry:
        """Pull a model without loading it; see `ModelRegistry.pull`."""
        return await self.registry.pull(source, model_id)

    async def unload(self, model_id: str, *, drain_timeout_s: float | None = None) -> ModelEntry:
        """Unload a model; see `ModelRegistry.unload`."""
        return await self.registry.unload(model_id, drain_timeout_s=drain_timeout_s)

    async def embed(self, request: EmbeddingRequest) -> dict[str, Any]:
        """`POST /v1/embeddings` on a loaded embedding model (see `cortex.neuron.embeddings`).

        Raises:
            ModelNotFoundError: not loaded (404); InvalidRequestError: not an embedding model,
                or a bad input (400).
        """
        from cortex.neuron.embeddings import EmbeddingRunner, embeddings_body

        lease = self.registry.acquire(request.model)
        try:
            runner = lease.runner
            if not isinstance(runner, EmbeddingRunner):
                raise InvalidRequestError(
                    f"model {request.model!r} is not an embedding model: use POST "
                    "/v1/chat/completions or /v1/completions",
                    param="model",
                )
            runner.check_dimensions(request)
            vectors, tokens = await runner.embed(request.inputs())
            return embeddings_body(
                request,
                vectors,
                tokens,
                native_dimensions=runner.dimensions,
                normalizes=runner.normalizes,
            )
        finally:
            lease.release()

    def generate(self, request: GenerateRequest) -> GenerationStream:
        """Start a generation on a loaded model (see `Harness.generate`)."""
        lease = self.registry.acquire(request.model)
        try:
            events = lease.runner.generate(request)
        except BaseException:
            lease.release()
            raise
        return GenerationStream(events, lease)

    def memory_estimate_mb(self, model_id: str) -> float:
        """The model's memory estimate: weights plus KV cache budget."""
        return self.registry.spec(model_id).memory_mb

    async def count_prompt_tokens(self, request: GenerateRequest) -> int:
        """Prompt tokens of `request` (chat template applied) on its loaded model (404 if not)."""
        lease = self.registry.acquire(request.model)
        try:
            count: int = await anyio.to_thread.run_sync(lease.runner.count_prompt_tokens, request)
            return count
        finally:
            lease.release()

    def stats(self) -> HarnessStats:
        """Requests, KV use, memory and load counters over every loaded model; pulls running."""
        loads: dict[str, ModelUsage] = {
            model_id: runner.usage() for model_id, runner in self.registry.runners().items()
        }
        return HarnessStats(
            running=sum(load.running for load in loads.values()),
            waiting=sum(load.waiting for load in loads.values()),
            kv_usage={model_id: load.kv_usage for model_id, load in loads.items()},
            batch_size={model_id: load.running for model_id, load in loads.items()},
            waiting_by_model={model_id: load.waiting for model_id, load in loads.items()},
            memory_limit_mb=self.registry.limit_mb,
            memory_used_mb=self.registry.memory_used_mb(),
            memory_free_mb=self.registry.memory_free_mb(),
            load_cycles=self.registry.load_cycles,
            loads_started=self.registry.loads_started,
            template_folds={
                model_id: load.template_folds
                for model_id, load in loads.items()
                if load.template_folds
            },
            preemptions={model_id: load.preemptions for model_id, load in loads.items()},
            queue_time={
                model_id: load.queue_time
                for model_id, load in loads.items()
                if load.queue_time is not None
            },
            pulls=tuple(self.registry.pulls()),
        )

    def devices(self) -> list[Device]:
        """The node's devices."""
        return discover_devices()

    def subscribe(self, listener: Callable[[LoadEvent], None]) -> None:
        """Call `listener` after each load finishes."""
        self.registry.subscribe(listener)

    async def aclose(self, *, drain_timeout_s: float | None = None) -> None:
        """Unload every model, draining in-flight requests first."""
        await self.registry.aclose(drain_timeout_s=drain_timeout_s)

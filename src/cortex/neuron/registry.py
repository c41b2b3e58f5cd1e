"""The model registry: each model's lifecycle state, its memory, its loads, unloads and leases.

States: `available -> loading -> loaded -> unloading -> available`, or `failed` (with the error)
when a load fails; a failed model can be loaded again. Loads are idempotent and concurrent loads
of one model share one load. A load given a `source` for a model the node lacks pulls it first
(phase `pulling` of the same load, so concurrent requests share the pull as they share the
load); the pulled model is then known under the id asked for. A load must fit the memory cap (or
the device's free memory), else `InsufficientMemoryError` (507). An unload drains the model's
in-flight requests for a while, then cancels the rest with a clear error. Requests hold a
`ModelLease` while they run.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import anyio

from cortex.errors import (
    ConflictError,
    CortexError,
    InsufficientMemoryError,
    ModelNotFoundError,
    OverloadedError,
)
from cortex.neuron.model_ids import check_model_id
from cortex.neuron.types import (
    LoadedModel,
    LoadEvent,
    ModelEntry,
    ModelPrecision,
    ModelSpec,
    ModelState,
    Opener,
    ProgressCallback,
    Puller,
)

__all__ = ["ModelLease", "ModelRegistry"]


@dataclass(eq=False)
class _Record:
    spec: ModelSpec
    state: ModelState = "available"
    error: str | None = None
    runner: LoadedModel | None = None
    load_task: asyncio.Task[None] | None = None
    unload_task: asyncio.Task[None] | None = None
    leases: set[ModelLease] = field(default_factory=set)
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    last_used_at: float | None = None
    progress: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self.idle.set()

    @property
    def memory_mb(self) -> float:
        return self.runner.memory_mb if self.runner is not None else self.spec.memory_mb


class ModelLease:
    """A request's hold on a loaded model: the unload waits for it, or cancels it.

    The consumer (see `GenerationStream`) sets `waiter` to its task while it waits on the
    model, and checks `cancel_error` between steps; call `release()` when the request ends
    (idempotent).
    """

    def __init__(self, record: _Record, runner: LoadedModel, clock: Callable[[], float]) -> None:
        self._record = record
        self._clock = clock
        self.runner = runner
        self.model = record.spec.id
        self.cancel_error: CortexError | None = None
        self.waiter: asyncio.Task[Any] | None = None
        self.waiter_cancelled = False
        self._released = False

    def cancel(self, error: CortexError) -> None:
        """Stop the request with `error`: now if it waits on the model, else at its next step."""
        self.cancel_error = error
        if self.waiter is not None and not self.waiter_cancelled:
            self.waiter_cancelled = True
            self.waiter.cancel()

    def release(self) -> None:
        """End the hold (idempotent); the model's last use is now."""
        if self._released:
            return
        self._released = True
        record = self._record
        record.leases.discard(self)
        record.last_used_at = self._clock()
        if not record.leases:
            record.idle.set()


class ModelRegistry:
    """The models of one node and their lifecycle.

    Args:
        scan: returns the specs of the models this node can load (called again by `refresh`).
        opener: loads a spec into a runner.
        device: the device label shown in `/models`.
        limit_mb: the memory cap for models; None to use `device_free_mb`.
        device_free_mb: the device's free memory now (used when there is no cap).
        pinned: ids shown as pinned (the node's preloads).
        drain_timeout_s: how long an unload waits for in-flight requests before cancelling them.
        clock: wall-clock time, for `last_used_at`.
        puller: pulls a model the node lacks when a load names its source (None: no pulls).
        sizer: the spec a load asking for a `quant` runs with, re-estimated for it (None: the
            spec with that quant noted, its estimate unchanged).
    """

    def __init__(
        self,
        *,
        scan: Callable[[], Sequence[ModelSpec]],
        opener: Opener,
        device: str,
        limit_mb: float | None = None,
        device_free_mb: Callable[[], float] | None = None,
        pinned: Collection[str] = (),
        drain_timeout_s: float = 30.0,
        clock: Callable[[], float] = time.time,
        puller: Puller | None = None,
        sizer: Callable[[ModelSpec, str], ModelSpec] | None = None,
    ) -> None:
        if limit_mb is None and device_free_mb is None:
            raise ValueError("give a memory limit or a way to read the device's free memory")
        self._scan = scan
        self._opener = opener
        self.device = device
        self.limit_mb = limit_mb
        self._device_free_mb = device_free_mb
        self.pinned = frozenset(pinned)
        self.drain_timeout_s = drain_timeout_s
        self._clock = clock
        self._puller = puller
        self._sizer = sizer or (lambda spec, quant: replace(spec, quant=quant))
        self._pulled: dict[str, ModelSpec] = {}
        # Pulls running on their own, by a key of each: their source and progress. Progress
        # comes from the download's thread, which replaces an entry whole, never mutating one.
        self._pulls: dict[int, dict[str, Any]] = {}
        self._pull_keys = itertools.count()
        self._records: dict[str, _Record] = {}
        self._listeners: list[Callable[[LoadEvent], None]] = []
        self.load_cycles = 0
        self.loads_started = 0
        self.refresh()

    # --- catalogue ----------------------------------------------------------------------------

    def refresh(self) -> None:
        """Scan again: add new models, update idle ones, drop idle ones gone from disk."""
        specs = {**self._pulled, **{spec.id: spec for spec in self._scan()}}
        for model_id, record in list(self._records.items()):
            idle = record.state in ("available", "failed")
            if model_id not in specs and idle:
                del self._records[model_id]
            elif model_id in specs and idle:
                record.spec = specs[model_id]
        for model_id, spec in specs.items():
            self._records.setdefault(model_id, _Record(spec))

    def entries(self) -> list[ModelEntry]:
        """Every model, sorted by id."""
        return [self._entry(self._records[key]) for key in sorted(self._records)]

    def entry(self, model_id: str) -> ModelEntry:
        """One model's entry (404 if unknown)."""
        return self._entry(self._find(model_id))

    def spec(self, model_id: str) -> ModelSpec:
        """One model's spec (404 if unknown)."""
        return self._find(model_id).spec

    def loaded_ids(self) -> list[str]:
        """Ids of the models that can take requests now."""
        return sorted(k for k, r in self._records.items() if r.state == "loaded")

    def runners(self) -> dict[str, LoadedModel]:
        """The runners of loaded (and unloading) models, by id."""
        return {k: r.runner for k, r in self._records.items() if r.runner is not None}

    def subscribe(self, listener: Callable[[LoadEvent], None]) -> None:
        """Call `listener` after each load finishes (for metrics)."""
        self._listeners.append(listener)

    def _entry(self, record: _Record) -> ModelEntry:
        spec = record.spec
        context = record.runner.context_length if record.runner else spec.context_length
        describe = getattr(record.runner, "precision", None)  # engine runners say how they run
        precision: ModelPrecision | None = describe() if callable(describe) else None
        return ModelEntry(
            id=spec.id,
            state=record.state,
            memory_mb=record.memory_mb,
            context_length=context,
            architecture=spec.architecture,
            parameters=spec.parameters,
            active_parameters=spec.active_parameters,
            device=self.device,
            pinned=spec.id in self.pinned,
            in_flight=len(record.leases),
            last_used_at=record.last_used_at,
            error=record.error,
            progress=dict(record.progress) if record.progress else None,
            generation_config=spec.generation_config,
            kind=spec.kind,
            dtype=precision.dtype if precision else None,
            quant=precision.quant if precision else None,
            resident_mb=record.runner.memory_mb if record.runner is not None else None,
        )

    def _find(self, model_id: str, *, rescan: bool = False) -> _Record:
        check_model_id(model_id)
        record = self._records.get(model_id)
        if record is None and rescan:
            self.refresh()
            record = self._records.get(model_id)
        if record is None:
            raise ModelNotFoundError(
                f"model {model_id!r} is not available on this node; {self._loaded_text()}",
                details={"loaded_models": self.loaded_ids()},
            )
        return record

    def _loaded_text(self) -> str:
        loaded = self.loaded_ids()
        return "loaded models: " + ", ".join(loaded) if loaded else "no model is loaded"

    # --- memory -------------------------------------------------------------------------------

    def memory_used_mb(self) -> float:
        """Memory held by models that are loading, loaded or unloading."""
        return sum(
            r.memory_mb
            for r in self._records.values()
            if r.state in ("loading", "loaded", "unloading")
        )

    def memory_free_mb(self) -> float:
        """Memory left for another model: the cap minus what models hold, or the device's free
        memory minus what loading models will still take."""
        if self.limit_mb is not None:
            return max(0.0, self.limit_mb - self.memory_used_mb())
        assert self._device_free_mb is not None
        pending = sum(r.spec.memory_mb for r in self._records.values() if r.state == "loading")
        return max(0.0, self._device_free_mb() - pending)

    # --- lifecycle ----------------------------------------------------------------------------

    async def load(
        self, model_id: str, source: str | None = None, quant: str | None = None
    ) -> ModelEntry:
        """Load a model and return its entry once loaded; idempotent, concurrent calls share one.

        Args:
            model_id: the model.
            source: where to pull it from when this node lacks it (`hf:ORG/NAME[:QUANT]`).
            quant: how to hold its weights (`int4`, `int8`...), unless this node's own settings
                name one for it; a model already loaded stays as it is.

        Raises:
            ModelNotFoundError: unknown id (404).
            InsufficientMemoryError: it does not fit (507, with the required and free MB).
            ConflictError: it is unloading (409).
            CortexError: the load failed (the model is then `failed` with the error).
        """
        try:
            record = self._find(model_id, rescan=True)
        except ModelNotFoundError:
            if source is None or self._puller is None:
                raise
            # A stand-in until the pull says what the model is (no memory held meanwhile).
            placeholder = ModelSpec(id=model_id, memory_mb=0.0, source="pull")
            record = self._records.setdefault(model_id, _Record(placeholder))
        while True:
            if record.state == "loaded":
                return self._entry(record)
            if record.state == "unloading":
                raise ConflictError(f"model {model_id!r} is unloading; load it again when done")
            if record.state == "loading":
                assert record.load_task is not None
                await asyncio.shield(record.load_task)
                continue
            pull = source if record.spec.source == "pull" else None
            if quant is not None and pull is None and record.spec.quant != quant:
                record.spec = self._sizer(record.spec, quant)
            required, free = record.spec.memory_mb, self.memory_free_mb()
            if required > free:
                raise InsufficientMemoryError(
                    f"model {model_id!r} needs {required:.0f} MB but this node has "
                    f"{free:.0f} MB free; unload a model first",
                    required_mb=required,
                    free_mb=free,
                )
            record.state, record.error = "loading", None
            phase = "pulling" if pull is not None else "loading"
            record.progress = {"phase": phase, "fraction": None}
            task = asyncio.get_running_loop().create_task(self._run_load(record, pull, quant))
            record.load_task = task
            record.load_task.add_done_callback(_retrieve)
            self.loads_started += 1

    async def _run_load(
        self, record: _Record, source: str | None = None, quant: str | None = None
    ) -> None:
        def progress(phase: str, fraction: float | None, /, **facts: Any) -> None:
            record.progress = {"phase": phase, "fraction": fraction, **facts}

        started = time.perf_counter()
        try:
            if source is not None:
                await self._pull(record, source, progress, quant)
            runner = await self._opener(record.spec, progress)
        except BaseException as exc:
            record.state, record.progress = "failed", None
            record.error = _describe(exc)
            self._notify(LoadEvent(record.spec.id, "error", time.perf_counter() - started))
            if isinstance(exc, CortexError | asyncio.CancelledError):
                raise
            raise CortexError(f"loading {record.spec.id!r} failed: {record.error}") from exc
        record.runner, record.state, record.progress = runner, "loaded", None
        record.last_used_at = self._clock()
        self._notify(LoadEvent(record.spec.id, "ok", time.perf_counter() - started))

    async def _pull(
        self, record: _Record, source: str, progress: ProgressCallback, quant: str | None = None
    ) -> None:
        """Pull the model, then check it fits (its size is known only now)."""
        assert self._puller is not None
        spec = await self._puller(record.spec.id, source, progress)
        self._pulled[spec.id] = spec
        record.spec = self._sizer(spec, quant) if quant is not None else spec
        # This loading record's own estimate is counted as taken now: give it back to compare.
        free = self.memory_free_mb() + spec.memory_mb
        if spec.memory_mb > free:
            raise InsufficientMemoryError(
                f"model {spec.id!r} was pulled but needs {spec.memory_mb:.0f} MB and this node "
                f"has {free:.0f} MB free; unload a model first",
                required_mb=spec.memory_mb,
                free_mb=free,
            )
        progress("loading", None)

    def _notify(self, event: LoadEvent) -> None:
        for listener in self._listeners:
            listener(event)

    def pulls(self) -> list[dict[str, Any]]:
        """The pulls of `pull` running now: each its `source` and progress (`phase`, `fraction`,
        and from the download `bytes`, `total_bytes`, `file`). A pull on load shows as its
        model's `progress` instead."""
        return [dict(entry) for entry in list(self._pulls.values())]

    async def pull(self, source: str, model_id: str | None = None) -> ModelEntry:
        """Pull a model from `source` without loading it; its entry (`available`) once pulled,
        its progress in `pulls()` meanwhile.

        Args:
            source: `hf:ORG/NAME[:QUANT]` (or without `hf:`).
            model_id: the id to list it under (default: the hub's, `ORG/NAME[:QUANT]`).

        Raises:
            ConflictError: this node does not pull (409).
            CortexError: the pull failed (see `cortex.neuron.pull`).
        """
        if self._puller is None:
            raise ConflictError("this node cannot pull models")
        if model_id is not None:
            check_model_id(model_id)

        key = next(self._pull_keys)
        self._pulls[key] = {"source": source, "phase": "pulling", "fraction": None}

        def progress(phase: str, fraction: float | None, /, **facts: Any) -> None:
            if key in self._pulls:
                self._pulls[key] = {"source": source, "phase": phase, "fraction": fraction, **facts}

        try:
            spec = await self._puller(model_id or "", source, progress)
        finally:
            del self._pulls[key]
        self._pulled[spec.id] = spec
        self.refresh()
        return self._entry(self._records[spec.id])

    async def unload(self, model_id: str, *, drain_timeout_s: float | None = None) -> ModelEntry:
        """Unload a model: wait for its requests (up to the drain timeout), cancel the rest, free
        its memory. Idempotent; a failed model goes back to `available`."""
        record = self._find(model_id)
        timeout_s = self.drain_timeout_s if drain_timeout_s is None else drain_timeout_s
        while True:
            if record.state == "loading":
                assert record.load_task is not None
                await asyncio.wait([record.load_task])
                continue
            if record.state in ("available", "failed"):
                record.state, record.error = "available", None
                return self._entry(record)
            if record.state == "loaded":
                record.state = "unloading"
                task = asyncio.get_running_loop().create_task(self._run_unload(record, timeout_s))
                task.add_done_callback(_retrieve)
                record.unload_task = task
            assert record.unload_task is not None
            await asyncio.shield(record.unload_task)

    async def _run_unload(self, record: _Record, timeout_s: float) -> None:
        with anyio.move_on_after(timeout_s):
            await record.idle.wait()
        if record.leases:
            error = OverloadedError(
                f"request cancelled: model {record.spec.id!r} was unloaded and the request did "
                f"not finish within the {timeout_s:g} s drain timeout",
                code="model_unloaded",
            )
            for lease in list(record.leases):
                lease.cancel(error)
            with anyio.move_on_after(10.0):
                await record.idle.wait()
        runner, record.runner = record.runner, None
        try:
            if runner is not None:
                await runner.close()
        finally:
            record.state = "available"
            record.unload_task = None
            self.load_cycles += 1

    def acquire(self, model_id: str) -> ModelLease:
        """Hold a loaded model for one request.

        Raises:
            ModelNotFoundError: the model is not loaded here (404, naming the loaded ones).
            ConflictError: it is unloading (409).
        """
        record = self._records.get(check_model_id(model_id))
        if record is not None and record.state == "unloading":
            raise ConflictError(f"model {model_id!r} is unloading on this node")
        if record is None or record.state != "loaded" or record.runner is None:
            raise ModelNotFoundError(
                f"model {model_id!r} is not loaded on this node; {self._loaded_text()}",
                details={"loaded_models": self.loaded_ids()},
            )
        lease = ModelLease(record, record.runner, self._clock)
        record.leases.add(lease)
        record.idle.clear()
        record.last_used_at = self._clock()
        return lease

    async def aclose(self, *, drain_timeout_s: float | None = None) -> None:
        """Unload every model (draining each) and wait for pending loads to end."""
        for record in list(self._records.values()):
            if record.load_task is not None and not record.load_task.done():
                await asyncio.wait([record.load_task])
        async with anyio.create_task_group() as group:
            for model_id, record in list(self._records.items()):
                if record.state in ("loaded", "unloading"):
                    group.start_soon(self._unload_quietly, model_id, drain_timeout_s)

    async def _unload_quietly(self, model_id: str, drain_timeout_s: float | None) -> None:
        with contextlib.suppress(CortexError):
            await self.unload(model_id, drain_timeout_s=drain_timeout_s)


def _retrieve(task: asyncio.Task[None]) -> None:
    """Mark a background task's exception as seen (its awaiters, if any, got it already)."""
    if not task.cancelled():
        task.exception()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, CortexError):
        return exc.message
    if isinstance(exc, asyncio.CancelledError):
        return "the load was cancelled"
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if str(exc) else text

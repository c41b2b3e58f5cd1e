"""`Engine`: submit a request, get an async stream of token events; the model runs on a thread."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import secrets
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import torch

from cortex.engine.block_manager import BlockManager
from cortex.engine.device import (
    DtypePolicy,
    in_own_thread,
    measured_policy,
    release_host_memory,
)
from cortex.engine.histogram import LatencyHistogram
from cortex.engine.output import RequestOutput, TokenEvent, Usage
from cortex.engine.quant import describe_quant
from cortex.engine.runner import ModelRunner, kv_bytes_per_token, kv_cache_blocks
from cortex.engine.sampling import SamplingParams
from cortex.engine.scheduler import Scheduler
from cortex.engine.sequence import Sequence as EngineSequence
from cortex.errors import ContextLengthExceededError, InvalidRequestError, OverloadedError

if TYPE_CHECKING:
    from cortex.engine.grammar import Grammar, GrammarCompiler, GrammarMatcher
    from cortex.engine.models import Llama
    from cortex.engine.tokenizer import Tokenizer

__all__ = ["Engine", "EngineStats", "TokenEvent", "Usage"]

Prompt = Sequence[int] | Sequence[dict[str, Any]]


@dataclass(frozen=True)
class EngineStats:
    """The engine's load as of its last step.

    Args:
        running: requests in the running batch.
        waiting: requests queued (the scheduler's and those not yet admitted).
        kv_blocks_total: blocks of the paged KV cache.
        kv_blocks_used: blocks held by sequences.
        kv_usage: `kv_blocks_used / kv_blocks_total`, 0..1.
        kv_blocks_cached: blocks kept for the prefix cache.
        block_size: tokens per block.
        preemptions: sequences preempted since start.
        cuda_graphs: decode batch sizes replayed as CUDA graphs (empty on CPU or eager).
        queue_time: since start, each request's wait from its submission to the first step
            that scheduled it (a preempted request's wait to be scheduled again not counted).
    """

    running: int
    waiting: int
    kv_blocks_total: int
    kv_blocks_used: int
    kv_usage: float
    kv_blocks_cached: int
    block_size: int
    preemptions: int
    cuda_graphs: tuple[int, ...] = ()
    queue_time: LatencyHistogram = field(default_factory=LatencyHistogram)


@dataclass
class _Request:
    """A submitted request: its sequence, its output state and the queue its consumer reads."""

    seq: EngineSequence
    output: RequestOutput
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[TokenEvent | BaseException]
    submitted_at: float = field(default_factory=time.monotonic)

    @property
    def key(self) -> int:
        return self.seq.arrival  # unique per engine


class Engine:
    """Continuous-batching inference for one loaded model.

    All running requests share each forward step (see `Scheduler`) over a paged KV cache with
    prefix caching (see `BlockManager`). The model steps on a worker thread of its own; events
    reach each request's asyncio queue through `loop.call_soon_threadsafe`, so the event loop
    that consumes the streams never blocks on compute.

    Build one with `Engine.from_pretrained`; stream with `async for event in
    engine.generate(prompt, params)`; `close()` stops the worker and frees the memory.

    Args:
        model: the loaded model (its dtype is the KV cache's dtype).
        tokenizer: the model's tokenizer.
        kv_cache_mb: KV cache budget; None means 512 MB on CPU, half the free memory on CUDA.
        max_num_seqs: most requests in the running batch.
        max_waiting: most requests queued; more raise `OverloadedError`.
        max_num_batched_tokens: per-step token budget (chunked prefill); None means 512 on CPU
            and 8192 on CUDA.
        block_size: tokens per KV block.
        enable_prefix_caching: reuse the KV of shared prompt prefixes.
        model_id: the name the model is served under.
        use_cuda_graphs: capture decode steps as CUDA graphs; None means "on CUDA".
    """

    def __init__(
        self,
        model: Llama,
        tokenizer: Tokenizer,
        *,
        kv_cache_mb: float | None = None,
        max_num_seqs: int = 64,
        max_waiting: int = 256,
        max_num_batched_tokens: int | None = None,
        block_size: int = 16,
        enable_prefix_caching: bool = True,
        model_id: str = "model",
        use_cuda_graphs: bool | None = None,
    ) -> None:
        self.model_id = model_id
        self.tokenizer = tokenizer
        self.device, self.dtype = model.device, model.dtype
        self.vocab_size = model.config.vocab_size
        self.quant = describe_quant(model)  # `none`, `int8`, `int4-g64`, `int4-g32+int8`...
        self.kv_bytes_per_token = kv_bytes_per_token(model, self.dtype)
        num_blocks = kv_cache_blocks(model, self.dtype, block_size, kv_cache_mb)
        self.context_length = min(model.config.context_length, num_blocks * block_size)
        if max_num_batched_tokens is None:
            max_num_batched_tokens = 8192 if self.device.type == "cuda" else 512
        self._eos_ids = frozenset(model.config.eos_token_ids) | frozenset(tokenizer.eos_token_ids)
        self._blocks = BlockManager(
            num_blocks, block_size, enable_prefix_caching=enable_prefix_caching
        )
        self._scheduler = Scheduler(
            self._blocks,
            max_num_seqs=max_num_seqs,
            # Every running decode must fit one step, or some would starve.
            max_num_batched_tokens=max(max_num_batched_tokens, max_num_seqs),
            max_waiting=max_waiting,
        )
        # On CPU off this thread (see `device.in_own_thread`); CUDA graphs are captured here.
        build = in_own_thread if self.device.type == "cpu" else _call
        self._runner: ModelRunner | None = build(
            ModelRunner,
            model,
            num_blocks=num_blocks,
            block_size=block_size,
            max_num_seqs=max_num_seqs,
            max_model_len=self.context_length,
            use_cuda_graphs=use_cuda_graphs,
        )
        self.kv_cache_bytes = self._runner.kv_cache_bytes
        self.weights_bytes = self._runner.weights_bytes
        self._max_waiting = max_waiting
        # Worker-thread state: only the worker touches scheduler, runner and _requests.
        self._requests: dict[int, _Request] = {}
        self._preemptions = 0
        self._queue_time = LatencyHistogram()  # immutable: each step's snapshot shares it
        # Shared state, guarded by _cond.
        self._cond = threading.Condition()
        self._arrivals = itertools.count()
        self._inbox: list[_Request] = []
        self._aborts: set[int] = set()
        self._closing = False
        self._closed = False
        self._stats = self._snapshot()
        self._grammars: GrammarCompiler | None = None  # structured output, built on first use
        self._thread = threading.Thread(target=self._work, name=f"engine-{model_id}", daemon=True)
        self._thread.start()

    @classmethod
    def from_pretrained(
        cls,
        model_dir: str | Path,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | str | None = None,
        kv_cache_mb: float | None = None,
        max_num_seqs: int = 64,
        max_waiting: int = 256,
        model_id: str | None = None,
        policy: DtypePolicy | None = None,
        quant: str | None = None,
        **options: Any,
    ) -> Engine:
        """Load a model directory and start its engine.

        Args:
            model_dir: a Hugging Face model directory (config, tokenizer, safetensors).
            device: `cpu`, `cuda`, `cuda:1`...
            dtype: weights and KV dtype; None means the policy's.
            policy: how the device runs the model (dtype, prefill dtype, single-row kernel);
                None measures this machine once per process (`device.measured_policy`).
            kv_cache_mb: KV cache budget; None means 512 MB on CPU, half the free memory on CUDA.
            max_num_seqs: most requests in the running batch.
            max_waiting: most requests queued; more raise `OverloadedError`.
            model_id: the name the model is served under (default: the directory's name).
            quant: how to hold the weights: `none`, `bf16`, `int8`, `int4` (`int4-g32`,
                `-g64`, `-g128`); None keeps the checkpoint as stored (`cortex.engine.quant`).
            **options: the other keyword arguments of `Engine` (`max_num_batched_tokens`,
                `block_size`, `enable_prefix_caching`, `use_cuda_graphs`).
        """
        from cortex.engine.models import load_model, resolve_dtype
        from cortex.engine.tokenizer import Tokenizer

        model_dir = Path(model_dir)
        if policy is None or (dtype is not None and resolve_dtype(dtype) != policy.dtype):
            forced = resolve_dtype(dtype) if dtype is not None else None
            policy = measured_policy(device, forced)
        # On CPU off this thread: see `device.in_own_thread` (the decoding thread's speed
        # depends on it).
        build = in_own_thread if torch.device(device).type == "cpu" else _call
        model = build(load_model, model_dir, device=device, dtype=policy.dtype, quant=quant)
        model.apply_policy(policy)
        return cls(
            model,
            Tokenizer.from_dir(model_dir),
            kv_cache_mb=kv_cache_mb,
            max_num_seqs=max_num_seqs,
            max_waiting=max_waiting,
            model_id=model_id or model_dir.name,
            **options,
        )

    # -- requests ---------------------------------------------------------------------------

    def count_prompt_tokens(self, prompt: Prompt, tools: list[Any] | None = None) -> int:
        """How many tokens `prompt` (token ids or chat messages) takes once templated."""
        return len(self._prompt_ids(prompt, tools))

    async def generate(
        self,
        prompt: Prompt,
        params: SamplingParams | None = None,
        *,
        tools: list[Any] | None = None,
        request_id: str | None = None,
    ) -> AsyncIterator[TokenEvent]:
        """Generate from `prompt`: one event per token, then a final event with the usage.

        Stopping the iteration early (`break`, or cancelling the consuming task) cancels the
        request; its blocks are freed at the next step.

        Args:
            prompt: token ids, or chat messages (the chat template is applied).
            params: sampling controls; the defaults of `SamplingParams` when None.
            tools: tool definitions for the chat template.
            request_id: a name for the request.

        Raises:
            ContextLengthExceededError: prompt plus `max_tokens` exceed the context window
                (before anything is scheduled).
            OverloadedError: the waiting queue is full.
            InvalidRequestError: an empty prompt, or token ids outside the vocabulary.
        """
        params = params or SamplingParams()
        if prompt and isinstance(prompt[0], int):
            prompt_ids = self._prompt_ids(prompt, tools)
        else:  # templating and tokenizing a long chat is compute: keep it off the loop
            prompt_ids = await asyncio.to_thread(self._prompt_ids, prompt, tools)
        matcher = None
        if params.grammar is not None:  # compiling (once per grammar) is compute too
            matcher = await asyncio.to_thread(self.grammar_matcher, params.grammar)
        request = self._submit(prompt_ids, params, request_id or uuid.uuid4().hex, matcher)
        finished = False
        try:
            while not finished:
                item = await request.queue.get()
                if isinstance(item, BaseException):
                    finished = True
                    raise item
                finished = item.finish_reason is not None
                yield item
        finally:
            if not finished:
                self._abort(request.key)

    def _prompt_ids(self, prompt: Prompt, tools: list[Any] | None) -> list[int]:
        if not prompt:
            raise InvalidRequestError("the prompt is empty", param="messages")
        if isinstance(prompt[0], int):
            ids = [int(t) for t in prompt]  # type: ignore[arg-type]
            if any(not 0 <= t < self.vocab_size for t in ids):
                raise InvalidRequestError(
                    f"prompt token ids must be in [0, {self.vocab_size})", param="prompt"
                )
            return ids
        messages = [m for m in prompt if isinstance(m, dict)]
        if len(messages) != len(prompt):
            raise InvalidRequestError("a prompt is token ids or chat messages", param="messages")
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tools=tools)

    def grammar_matcher(self, grammar: Grammar) -> GrammarMatcher:
        """A matcher for `grammar` against this model's tokenizer (compiled once per grammar).

        Raises:
            InvalidRequestError: the grammar cannot be compiled for this tokenizer.
        """
        with self._cond:
            if self._grammars is None:
                from cortex.engine.grammar import GrammarCompiler

                self._grammars = GrammarCompiler(
                    self.tokenizer.backend.to_str(), self.vocab_size, self._eos_ids
                )
            compiler = self._grammars
        return compiler.matcher(grammar)

    def _submit(
        self,
        prompt_ids: list[int],
        params: SamplingParams,
        request_id: str,
        matcher: GrammarMatcher | None = None,
    ) -> _Request:
        if len(prompt_ids) + params.max_tokens > self.context_length:
            raise ContextLengthExceededError(
                len(prompt_ids), params.max_tokens, self.context_length
            )
        seed = params.seed if params.seed is not None else secrets.randbits(63)
        with self._cond:
            if self._closing:
                raise RuntimeError(f"engine {self.model_id!r} is closed")
            if self._stats.waiting >= self._max_waiting:
                raise OverloadedError(
                    f"model {self.model_id!r} has {self._max_waiting} requests waiting; retry later"
                )
            seq = EngineSequence(
                request_id, prompt_ids, params, seed=seed, arrival=next(self._arrivals)
            )
            seq.matcher = matcher
            request = _Request(
                seq,
                RequestOutput(self.tokenizer, seq, self._eos_ids),
                asyncio.get_running_loop(),
                asyncio.Queue(),
            )
            self._inbox.append(request)
            self._stats = replace(self._stats, waiting=self._stats.waiting + 1)
            self._cond.notify()
        return request

    def _abort(self, key: int) -> None:
        with self._cond:
            if not self._closing:
                self._aborts.add(key)
                self._cond.notify()

    # -- status -----------------------------------------------------------------------------

    def stats(self) -> EngineStats:
        """Load as of the last step (requests admitted since count as waiting)."""
        with self._cond:
            return self._stats

    def _snapshot(self) -> EngineStats:
        blocks = self._blocks
        return EngineStats(
            running=self._scheduler.num_running,
            waiting=self._scheduler.num_waiting + len(self._inbox),
            kv_blocks_total=blocks.num_blocks,
            kv_blocks_used=blocks.num_used_blocks,
            kv_usage=blocks.usage,
            kv_blocks_cached=blocks.num_cached_blocks,
            block_size=blocks.block_size,
            preemptions=self._preemptions,
            cuda_graphs=tuple(self._runner.graph_batch_sizes) if self._runner else (),
            queue_time=self._queue_time,
        )

    # -- the worker thread ------------------------------------------------------------------

    def _work(self) -> None:
        try:
            if self.device.type == "cuda":  # the current device is per thread
                torch.cuda.set_device(self.device)
            self._serve()
        except BaseException as error:  # a bug: fail every request rather than hang them
            with self._cond:
                self._closing = True
                pending = [*self._requests.values(), *self._inbox]
                self._requests.clear()
                self._inbox.clear()
            for request in pending:
                _deliver(request.loop, [(request.queue, RuntimeError(f"engine failed: {error!r}"))])
            raise

    def _serve(self) -> None:
        while True:
            with self._cond:
                while not (
                    self._closing or self._inbox or self._aborts or self._scheduler.has_work()
                ):
                    self._cond.wait()
                if self._closing:
                    return
                inbox, self._inbox = self._inbox, []
                aborts, self._aborts = self._aborts, set()
            self._admit(inbox, aborts)
            deliveries = self._step() if self._scheduler.has_work() else {}
            with self._cond:  # before delivering: a finished stream sees its blocks freed
                self._stats = self._snapshot()
            for loop, items in deliveries.items():
                _deliver(loop, items)

    def _admit(self, inbox: list[_Request], aborts: set[int]) -> None:
        for request in inbox:
            try:
                self._scheduler.add(request.seq)
            except OverloadedError as error:
                _deliver(request.loop, [(request.queue, error)])
                continue
            self._requests[request.key] = request
        for key in aborts:
            aborted = self._requests.pop(key, None)
            if aborted is not None:
                self._scheduler.finish(aborted.seq, "cancelled")

    def _count_queue_times(self, admitted: list[EngineSequence]) -> None:
        """Count the wait of each request scheduled for the first time (once per request, not
        per step; a preempted one coming back waited for blocks, not in the queue)."""
        now, histogram = time.monotonic(), self._queue_time
        for seq in admitted:
            request = self._requests.get(seq.arrival)
            if request is not None and seq.num_preemptions == 0:
                histogram = histogram.observe(now - request.submitted_at)
        self._queue_time = histogram

    def _step(self) -> dict[asyncio.AbstractEventLoop, list[tuple[Any, Any]]]:
        """Run one step; returns the events to deliver, grouped by event loop."""
        out = self._scheduler.schedule()
        self._preemptions += len(out.preempted)
        if out.admitted:
            self._count_queue_times(out.admitted)
        # The head of the queue always fits an empty cache (checked at submit), so a step
        # with work is never empty.
        assert not out.is_empty and self._runner is not None
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Any, Any]]] = {}
        try:
            result = self._runner.execute(out)
        except Exception as error:  # fail this step's requests, keep serving later ones
            for chunk in out.chunks:
                failed = self._requests.pop(chunk.seq.arrival)
                self._scheduler.finish(failed.seq, "error")
                by_loop.setdefault(failed.loop, []).append((failed.queue, error))
            return by_loop
        self._scheduler.postprocess(out, result.token_ids)
        for chunk, token_id, logprob in zip(
            out.chunks, result.token_ids, result.logprobs, strict=True
        ):
            if token_id is None:
                continue
            request = self._requests[chunk.seq.arrival]
            events, finish_reason = request.output.on_token(token_id, logprob)
            if finish_reason is not None:
                self._scheduler.finish(request.seq, finish_reason)
                events.append(request.output.final_event(finish_reason))
                del self._requests[request.key]
            by_loop.setdefault(request.loop, []).extend((request.queue, e) for e in events)
        return by_loop

    # -- shutdown ---------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """Whether `close()` has run."""
        return self._closed

    def close(self) -> None:
        """Stop the worker, end live requests as `cancelled`, and free the model and KV cache.

        Idempotent. Live streams get a final event with `finish_reason="cancelled"`.
        """
        with self._cond:
            if self._closing:
                return
            self._closing = True
            self._cond.notify_all()
        self._thread.join()
        for request in [*self._requests.values(), *self._inbox]:
            if not request.seq.is_finished:
                if request.key in self._requests:
                    self._scheduler.finish(request.seq, "cancelled")
                _deliver(request.loop, [(request.queue, request.output.final_event("cancelled"))])
        self._requests.clear()
        self._inbox.clear()
        if self._runner is not None:
            self._runner.close()
        self._runner = None
        self._closed = True
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        release_host_memory()


def _deliver(loop: asyncio.AbstractEventLoop, items: list[tuple[Any, Any]]) -> None:
    """Put items on their asyncio queues from the worker thread (dropped if the loop is gone)."""

    def put_all() -> None:
        for queue, item in items:
            queue.put_nowait(item)

    with contextlib.suppress(RuntimeError):  # the consumer's loop is closed: nobody listens
        loop.call_soon_threadsafe(put_all)


_T = TypeVar("_T")


def _call(work: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
    """`work(*args, **kwargs)` right here (`in_own_thread`'s counterpart off the CPU)."""
    return work(*args, **kwargs)

"""`EngineHarness`: the neuron's models served by the cortex engine (`cortex.engine.Engine`).

Each loaded model is one `Engine` (continuous batching over a paged KV cache on its own worker
thread), wrapped by an `EngineRunner` that turns OpenAI-level requests into token ids and
`SamplingParams` (chats through `cortex.engine.tool_calls.ChatPrompter`: tools, prefills), and
engine `TokenEvent`s into `GenerationEvent`s (a reasoning model's thought and tool calls read
out of the text; a `thinking_token_budget` enforced). Weights load in the dtype the device
policy measured fast (`cortex.engine.device.measured_policy`: bfloat16 on CUDA; on CPU by its
flags and a short probe), shown with the quantization and resident MB in `/models`; GGUF files
are imported to safetensors on first load, the import's progress visible in `/models`. A load's
last phase, `warming`, generates two tokens (`warm_up`) so the first request finds the kernels
compiled.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from cortex.engine.chat_layout import fold_layout
from cortex.engine.reasoning import ThinkMarkers, find_think_markers
from cortex.engine.tool_calls import ChatPrompt, ChatPrompter
from cortex.errors import ContextLengthExceededError, CortexError, InvalidRequestError
from cortex.neuron.catalogue import EMBEDDING_MODEL_TYPES, ModelCatalogue, read_generation_config
from cortex.neuron.embeddings import EmbeddingRunner
from cortex.neuron.gpus import device_free_mb
from cortex.neuron.harness import RegistryHarness
from cortex.neuron.pull import HubPuller
from cortex.neuron.registry import ModelRegistry
from cortex.neuron.structured import request_grammar
from cortex.neuron.thought_reader import ThoughtReader
from cortex.neuron.tool_reader import ToolCallReader
from cortex.neuron.types import (
    FinishReason,
    GenerateRequest,
    GenerationEvent,
    ModelPrecision,
    ModelSpec,
    ModelUsage,
    ProgressCallback,
    TokenUsage,
)

if TYPE_CHECKING:
    from cortex.config import NeuronConfig
    from cortex.engine.embedder import Embedder
    from cortex.engine.engine import Engine
    from cortex.engine.output import TokenEvent
    from cortex.engine.sampling import SamplingParams

__all__ = [
    "EngineHarness",
    "EngineRunner",
    "quant_bytes_per_weight",
    "resolve_device",
    "warm_up",
]

logger = logging.getLogger(__name__)

_MB = 1024 * 1024
_UNKNOWN = object()  # a runner's thought markers before the tokenizer is asked
_FINISH: dict[str, FinishReason] = {"stop": "stop", "length": "length", "cancelled": "cancelled"}
_WARM_UP_TEXT = "A first request, so that the next one finds the kernels ready."


def resolve_device(device: str) -> str:
    """`auto` -> `cuda:0` when torch sees a GPU, else `cpu`; `cuda` -> `cuda:0`."""
    if device == "auto":
        import torch

        return "cuda:0" if torch.cuda.is_available() else "cpu"
    return "cuda:0" if device == "cuda" else device


class EngineRunner:
    """A loaded model: an `Engine` and the model's sampling defaults.

    Args:
        engine: the running engine.
        generation_config: the model's defaults for omitted sampling fields.
    """

    def __init__(self, engine: Engine, generation_config: dict[str, Any] | None = None) -> None:
        self.engine = engine
        self.generation_config = dict(generation_config or {})
        self._prompter: ChatPrompter | None = None
        self._markers: ThinkMarkers | object | None = _UNKNOWN
        self._system_role: bool | None = None
        self.template_folds = 0
        stats = engine.stats()
        kv_tokens = stats.kv_blocks_total * stats.block_size
        self._memory_mb = (engine.weights_bytes + kv_tokens * engine.kv_bytes_per_token) / _MB

    @property
    def context_length(self) -> int:
        """The engine's context window (the model's, bounded by its KV cache)."""
        return int(self.engine.context_length)

    @property
    def memory_mb(self) -> float:
        """Weights plus the KV cache, as allocated."""
        return self._memory_mb

    def precision(self) -> ModelPrecision:
        """The dtype it runs in, how its weights are quantized, and their resident size."""
        engine = self.engine
        return ModelPrecision(
            dtype=str(engine.dtype).removeprefix("torch."),
            quant=engine.quant,
            weights_mb=engine.weights_bytes / _MB,
        )

    def usage(self) -> ModelUsage:
        """The engine's running and waiting requests, KV cache use, preemptions and queue
        times (its warm-up's included), and the chats folded."""
        stats = self.engine.stats()
        return ModelUsage(
            stats.running,
            stats.waiting,
            stats.kv_usage,
            self.template_folds,
            preemptions=stats.preemptions,
            queue_time=stats.queue_time,
        )

    async def close(self) -> None:
        """Stop the engine and free its memory (on a thread: it joins the worker)."""
        await anyio.to_thread.run_sync(self.engine.close)

    def generate(self, request: GenerateRequest) -> AsyncIterator[GenerationEvent]:
        """Tokenize (chat template for messages), then stream the engine's events."""
        return self._generate(request)

    async def _generate(self, request: GenerateRequest) -> AsyncIterator[GenerationEvent]:
        prompt_ids, chat = await asyncio.to_thread(self._prompt, request)
        params = self._params(request, len(prompt_ids))
        grammar = await asyncio.to_thread(request_grammar, request, chat)
        if grammar is not None:  # structured output
            params = replace(params, grammar=grammar)
        parser = chat.parser() if chat is not None else None
        reader = ToolCallReader(parser) if parser is not None else None
        thought = self._thought_reader(chat)
        async for generated in self._events(prompt_ids, params, request, thought):
            if reader is None:
                yield generated
            else:
                for part in reader.read(generated):
                    yield part

    def _thought_reader(self, chat: ChatPrompt | None) -> ThoughtReader | None:
        """For a chat with a reasoning model: the reader of its thought."""
        if chat is None:
            return None
        if self._markers is _UNKNOWN:
            self._markers = find_think_markers(self.engine.tokenizer)
        markers = self._markers
        if not isinstance(markers, ThinkMarkers):
            return None
        return ThoughtReader(markers, in_thought=markers.opens_in_thought(chat.text))

    async def _events(
        self,
        prompt_ids: list[int],
        params: SamplingParams,
        request: GenerateRequest,
        thought: ThoughtReader | None,
    ) -> AsyncIterator[GenerationEvent]:
        """The engine's events as `GenerationEvent`s, the thought read out of them.

        With a `thinking_token_budget`, a thought that reaches it is cut: this request is
        cancelled and the engine continues the same tokens with the closing marker appended
        (`ThinkMarkers.close_text`), so the answer follows within `max_tokens`; the prefix
        cache makes the continuation's prompt cheap.
        """
        tokenizer = self.engine.tokenizer
        logprob_tokenizer = tokenizer if params.logprobs else None
        budget = request.thinking_token_budget if thought is not None else None

        def over_budget() -> bool:
            return (
                budget is not None
                and thought is not None
                and thought.thinking
                and thought.reasoning_tokens >= budget
            )

        output_ids: list[int] = []
        cut = over_budget()  # a budget of 0 closes a thought the prompt opened at once
        if not cut:
            events = self.engine.generate(prompt_ids, params, request_id=request.request_id)
            try:
                async for event in events:
                    if event.token_id is not None:
                        output_ids.append(event.token_id)
                    generated = _event(event, logprob_tokenizer)
                    if thought is None:
                        yield generated
                        continue
                    generated = thought.read(generated)
                    cut = generated.finish_reason is None and over_budget()
                    yield generated
                    if cut:
                        break
            finally:  # leaving early (client gone, unload, budget) cancels the engine request
                aclose = getattr(events, "aclose", None)
                if aclose is not None:
                    await aclose()
        if not cut:
            return
        assert thought is not None
        close_ids = tokenizer.encode(thought.markers.close_text, add_special_tokens=False)
        spent = len(output_ids) + len(close_ids)
        closing = GenerationEvent(text=thought.markers.close_text, token_count=len(close_ids))
        if params.max_tokens - spent < 1:
            usage = TokenUsage(len(prompt_ids), spent)
            yield thought.read(replace(closing, finish_reason="length", usage=usage))
            return
        yield thought.read(closing)
        rest = replace(params, max_tokens=params.max_tokens - spent)
        continued = [*prompt_ids, *output_ids, *close_ids]
        answer = self.engine.generate(continued, rest, request_id=request.request_id)
        try:
            async for event in answer:
                generated = _event(event, logprob_tokenizer)
                if generated.usage is not None:
                    used = generated.usage
                    generated = replace(
                        generated,
                        usage=TokenUsage(
                            len(prompt_ids),
                            spent + used.completion_tokens,
                            min(used.cached_tokens, len(prompt_ids)),
                        ),
                    )
                yield thought.read(generated)
        finally:  # as above: a client gone mid-answer cancels the continuation at once
            aclose = getattr(answer, "aclose", None)
            if aclose is not None:
                await aclose()

    def count_prompt_tokens(self, request: GenerateRequest) -> int:
        """Prompt tokens of `request` (chat template applied), as `generate` would see them."""
        return len(self._prompt(request, counted=False)[0])

    def _prompt(
        self, request: GenerateRequest, *, counted: bool = True
    ) -> tuple[list[int], ChatPrompt | None]:
        """The prompt's token ids, and for a chat how it was rendered (tools, prefill).

        Args:
            counted: a fold this render needs counts in `template_folds` (generations do,
                token counts do not).
        """
        tokenizer = self.engine.tokenizer
        if request.messages is not None:
            chat = self._render_chat(request, counted=counted)
            return tokenizer.encode(chat.text, add_special_tokens=False), chat
        if isinstance(request.prompt, str):
            return list(tokenizer.encode(request.prompt, add_special_tokens=True)), None
        return list(request.prompt or []), None

    def _render_chat(self, request: GenerateRequest, *, counted: bool = True) -> ChatPrompt:
        """Render the chat; when the template refuses it, retry once with its layout folded.

        Simple templates concatenate `content`, which is null on assistant turns that only
        call tools: those get empty text. Templates that refuse a system turn out of place, a
        system role at all or two turns of one role in a row get the chat folded
        (`fold_layout`); each such rescue is logged and counted (`template_folds`).
        """
        messages = request.messages or []
        try:
            return self._render(request, messages)
        except InvalidRequestError as exc:
            refusal = exc
        if any(m.get("content") is None for m in messages):
            messages = [{**m, "content": m.get("content") or ""} for m in messages]
            try:
                return self._render(request, messages)
            except InvalidRequestError:
                pass
        folded = fold_layout(messages, system_role=self._has_system_role())
        if folded == messages:
            raise refusal
        try:
            chat = self._render(request, folded)
        except InvalidRequestError:
            raise refusal from None
        if not counted:
            return chat
        self.template_folds += 1
        logger.debug(
            "model %s: the chat template refused the messages (%s); rendered them folded",
            self.engine.model_id,
            refusal.message,
        )
        return chat

    def _has_system_role(self) -> bool:
        """Whether the chat template renders a system message (probed once)."""
        if self._system_role is None:
            probe = "cortex-system-probe-5c2e"
            messages = [{"role": "system", "content": probe}, {"role": "user", "content": "hi"}]
            try:
                text = self.engine.tokenizer.render_chat_template(messages)
            except CortexError:
                text = ""
            self._system_role = probe in text
        return self._system_role

    def _render(self, request: GenerateRequest, messages: list[dict[str, Any]]) -> ChatPrompt:
        if self._prompter is None:  # probes the chat template once
            self._prompter = ChatPrompter(self.engine.tokenizer)
        return self._prompter.render(
            messages,
            tools=request.tools,
            tool_choice=request.tool_choice,
            add_generation_prompt=request.add_generation_prompt,
            continue_final_message=request.continue_final_message,
            template_kwargs=request.chat_template_kwargs,
        )

    def _params(self, request: GenerateRequest, prompt_tokens: int) -> SamplingParams:
        from cortex.engine.sampling import SamplingParams

        options, defaults = request.sampling, self.generation_config
        room = self.context_length - prompt_tokens
        max_tokens = options.max_tokens if options.max_tokens is not None else room
        if max_tokens < 1:
            raise ContextLengthExceededError(prompt_tokens, 1, self.context_length)
        greedy_default = defaults.get("do_sample") is False
        temperature = options.temperature
        if temperature is None:
            temperature = 0.0 if greedy_default else float(defaults.get("temperature", 1.0))

        def pick(value: Any, key: str, fallback: Any) -> Any:
            return value if value is not None else defaults.get(key, fallback)

        return SamplingParams(
            temperature=temperature,
            top_p=float(pick(options.top_p, "top_p", 1.0)),
            top_k=int(pick(options.top_k, "top_k", 0)),
            min_p=float(pick(options.min_p, "min_p", 0.0)),
            repetition_penalty=float(pick(options.repetition_penalty, "repetition_penalty", 1.0)),
            presence_penalty=float(pick(options.presence_penalty, "presence_penalty", 0.0)),
            frequency_penalty=options.frequency_penalty,
            seed=options.seed,
            stop=tuple(dict.fromkeys([*options.stop, *_strings(defaults.get("stop_strings"))])),
            stop_token_ids=options.stop_token_ids,
            max_tokens=max_tokens,
            logprobs=options.logprobs,
            top_logprobs=options.top_logprobs,
            ignore_eos=options.ignore_eos,
        )


def _strings(value: Any) -> list[str]:
    """generation_config's `stop_strings`: one string or a list of them."""
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str) and v]
    return []


def _event(event: TokenEvent, tokenizer: Any) -> GenerationEvent:
    usage = None
    if event.usage is not None:
        usage = TokenUsage(
            event.usage.prompt_tokens, event.usage.completion_tokens, event.usage.cached_tokens
        )
    logprobs = None
    if tokenizer is not None and event.logprobs:
        logprobs = [_logprob_json(entry, tokenizer) for entry in event.logprobs]
    finish: FinishReason | None = None
    if event.finish_reason is not None:
        finish = _FINISH.get(event.finish_reason, "cancelled")
    return GenerationEvent(
        text=event.text,
        token_count=0 if event.token_id is None else 1,
        logprobs=logprobs,
        finish_reason=finish,
        usage=usage,
        stop_string=event.stop_string,
    )


def _logprob_json(entry: Any, tokenizer: Any) -> dict[str, Any]:
    def one(token_id: int, logprob: float) -> dict[str, Any]:
        token = tokenizer.decode([token_id])
        return {"token": token, "logprob": logprob, "bytes": list(token.encode())}

    return {
        **one(entry.token_id, entry.logprob),
        "top_logprobs": [one(top.token_id, top.logprob) for top in entry.top_logprobs],
    }


class EngineHarness(RegistryHarness):
    """The models of `models_dirs` (and the default model), served by the cortex engine.

    Args:
        models_dirs: folders to scan (see `cortex.neuron.catalogue`).
        device: `auto`, `cpu`, `cuda` or `cuda:N`.
        memory_mb: cap on the memory models may take; None: the device's free memory.
        kv_cache_mb: KV cache budget per model; None: one full context window.
        pinned: ids shown as pinned (the preloads).
        drain_timeout_s: how long an unload waits for in-flight requests.
        max_num_seqs: most requests in a model's running batch.
        max_waiting: most requests queued per model (more: 503).
        include_default: serve the default model too.
    """

    kind = "engine"

    def __init__(
        self,
        models_dirs: Sequence[Path] = (),
        *,
        device: str = "auto",
        memory_mb: float | None = None,
        kv_cache_mb: float | None = None,
        pinned: Sequence[str] = (),
        drain_timeout_s: float = 30.0,
        max_num_seqs: int = 64,
        max_waiting: int = 256,
        include_default: bool = True,
        quant: str | None = None,
        model_quant: Mapping[str, str | None] | None = None,
    ) -> None:
        from cortex.engine.device import measured_policy
        from cortex.engine.models.config import SUPPORTED_MODEL_TYPES

        self.device = resolve_device(device)
        # What this machine runs fast (CPU flags and a short probe): see cortex.engine.device.
        self.policy = measured_policy(self.device)
        self.dtype = self.policy.dtype_name
        self.max_num_seqs = max_num_seqs
        self.max_waiting = max_waiting
        # neuron.toml's `quant` and `[models.ID] quant` (cortex.engine.quant); None: as stored.
        self.quant = quant
        self.model_quant = {k: v for k, v in (model_quant or {}).items() if v is not None}
        self._as_found: dict[str, ModelSpec] = {}  # the last scan, sized as stored
        self.catalogue = ModelCatalogue(
            models_dirs,
            dtype_bytes=2 if self.dtype == "bfloat16" else 4,
            kv_cache_mb=kv_cache_mb,
            include_default=include_default,
            model_types=(*SUPPORTED_MODEL_TYPES, *EMBEDDING_MODEL_TYPES),
        )
        super().__init__(
            ModelRegistry(
                scan=self._scan,
                opener=self._open,
                device=self.device,
                limit_mb=memory_mb,
                device_free_mb=lambda: device_free_mb(self.device),
                pinned=pinned,
                drain_timeout_s=drain_timeout_s,
                puller=HubPuller(
                    dtype_bytes=self.catalogue.dtype_bytes,
                    kv_cache_mb=kv_cache_mb,
                    supported=SUPPORTED_MODEL_TYPES,
                ),
                sizer=self._sized_for,
            )
        )

    @classmethod
    def from_config(cls, config: NeuronConfig, *, drain_timeout_s: float = 30.0) -> EngineHarness:
        """The engine harness of a neuron.toml."""
        return cls(
            config.models_dirs,
            device=config.device,
            memory_mb=config.memory_mb,
            kv_cache_mb=config.kv_cache_mb,
            pinned=config.preload,
            drain_timeout_s=drain_timeout_s,
            quant=config.quant,
            model_quant={model: entry.quant for model, entry in config.models.items()},
        )

    async def _open(
        self, spec: ModelSpec, progress: ProgressCallback
    ) -> EngineRunner | EmbeddingRunner:
        # Built on threads that end with the build (`in_own_thread`): the engine's decode
        # thread must be the only one holding a pool of torch's CPU worker threads.
        from cortex.engine.device import in_own_thread

        if spec.kind == "embedding":
            assert spec.path is not None
            progress("loading", None)
            embedder = await anyio.to_thread.run_sync(in_own_thread, self._embedder, spec.path)
            return EmbeddingRunner(embedder)
        folder = spec.path
        if spec.source in ("gguf", "default"):
            folder = await self._import(spec, progress)
        assert folder is not None
        progress("loading", None)
        engine = await anyio.to_thread.run_sync(in_own_thread, self._engine, spec, folder)
        try:
            await warm_up(engine, progress)
        except BaseException:
            await anyio.to_thread.run_sync(engine.close)
            raise
        return EngineRunner(engine, spec.generation_config or read_generation_config(folder))

    def _engine(self, spec: ModelSpec, folder: Path) -> Engine:
        from cortex.engine.engine import Engine

        return Engine.from_pretrained(
            folder,
            device=self.device,
            policy=self.policy,
            kv_cache_mb=spec.kv_cache_mb,
            max_num_seqs=self.max_num_seqs,
            max_waiting=self.max_waiting,
            model_id=spec.id,
            quant=self.quant_of(spec.id, spec.quant),
        )

    def _embedder(self, folder: Path) -> Embedder:
        import torch

        from cortex.engine.embedder import Embedder

        # Encoders run in float32 on CPU (small; bf16 costs them accuracy), the policy's
        # dtype on GPUs.
        dtype = torch.float32 if self.device == "cpu" else getattr(torch, self.dtype)
        return Embedder.from_pretrained(folder, device=self.device, dtype=dtype)

    def quant_of(self, model_id: str, asked: str | None = None) -> str | None:
        """How `model_id`'s weights are held here: its `[models.ID] quant`, else the quant its
        load `asked` for (a models.toml profile's), else the node's."""
        return self.model_quant.get(model_id) or asked or self.quant

    def _scan(self) -> list[ModelSpec]:
        """The catalogue's models, each sized as it will be held here (quantized where asked).

        Placement and the registry's memory check read `memory_mb`: a model loaded int4 takes
        about a quarter of its bfloat16 weights, so it is sized that way before it is loaded.
        """
        found = self.catalogue.scan()
        self._as_found = {spec.id: spec for spec in found}
        return [self._sized(spec) for spec in found]

    def _sized_for(self, spec: ModelSpec, quant: str) -> ModelSpec:
        """The registry's sizer: `spec` as a load asking for `quant` will hold it."""
        found = self._as_found.get(spec.id, spec)  # a pulled model's spec is as stored
        return self._sized(replace(found, quant=quant))

    def _sized(self, spec: ModelSpec) -> ModelSpec:
        per_weight = quant_bytes_per_weight(self.quant_of(spec.id, spec.quant))
        if per_weight is None or spec.weights_mb <= 0:
            return spec
        weights_mb = spec.weights_mb * per_weight / self.catalogue.dtype_bytes
        memory_mb = spec.memory_mb - spec.weights_mb + weights_mb
        return replace(spec, weights_mb=weights_mb, memory_mb=memory_mb)

    async def _import(self, spec: ModelSpec, progress: ProgressCallback) -> Path:
        """Import a GGUF into safetensors (cached), reporting progress from the bytes written."""
        from cortex.engine import gguf
        from cortex.engine.device import in_own_thread

        assert spec.path is not None
        quant = self.quant_of(spec.id, spec.quant) or "none"
        # int4/int8 keep the file's blocks quantized (Q4 as they are) instead of floats.
        kept = "int4" if quant.startswith("int4") else ("int8" if quant == "int8" else "none")
        if spec.source == "default":
            out = gguf.cache_dir() / "models" / gguf.DEFAULT_MODEL_ID
            dtype = "float32"
            if kept != "none":
                out = out.with_name(f"{out.name}-{kept}")
        else:
            suffix = "-bf16" if self.dtype == "bfloat16" else ""
            if kept != "none":
                suffix = f"-{kept}"
            out = gguf.cache_dir() / "models" / (spec.path.stem.lower() + suffix)
            dtype = self.dtype
        expected = spec.weights_mb * _MB * (1 if dtype == self.dtype or kept != "none" else 2)
        progress("importing", 0.0)
        task = asyncio.get_running_loop().run_in_executor(
            None,
            lambda: in_own_thread(
                gguf.import_gguf, spec.path, out, dtype=dtype, progress=False, quant=kept
            ),
        )
        while not task.done():
            progress("importing", _written_fraction(out, expected))
            await asyncio.wait([task], timeout=0.25)
        return Path(await task)


async def warm_up(engine: Engine, progress: ProgressCallback) -> None:
    """Generate two tokens once, before the model is `loaded`: phase `warming`, fraction 0, then
    0.5 and 1 as the tokens come.

    A fresh engine's first steps are its slowest: Triton compiles its kernels on first use (on
    CUDA), and memory and caches meet the weights for the first time. One prefill and one
    decode step here mean the first client's request does not pay for them. The warm-up is a
    request like any other (it shows in the engine's queue time).

    Raises:
        Exception: the engine cannot generate (the load then fails with it).
    """
    from cortex.engine.sampling import SamplingParams

    progress("warming", 0.0)
    ids = engine.tokenizer.encode(_WARM_UP_TEXT, add_special_tokens=True)
    prompt = [i for i in ids if 0 <= i < engine.vocab_size][: engine.context_length - 2] or [0]
    params = SamplingParams(temperature=0.0, max_tokens=2, ignore_eos=True)
    tokens = 0
    async for event in engine.generate(prompt, params, request_id="warm-up"):
        if event.token_id is not None:
            tokens += 1
            progress("warming", tokens / params.max_tokens)


def quant_bytes_per_weight(quant: str | None) -> float | None:
    """Bytes one weight takes held as `quant` (`cortex.engine.quant`'s layouts); None: as loaded.

    bf16: two bytes; int8 and int4: `QuantSpec.bytes_per_weight`.
    """
    from cortex.engine.quant import parse_quant

    mode, spec = parse_quant(quant)
    if mode == "bf16":
        return 2.0
    return None if spec is None else spec.bytes_per_weight


def _written_fraction(out: Path, expected_bytes: float) -> float | None:
    """How much of an import is on disk: bytes in its temporary folders over the expected size."""
    written = 0
    try:
        for work in out.parent.glob(f".{out.name}.tmp-*"):
            written += sum(p.stat().st_size for p in work.iterdir() if p.is_file())
    except OSError:
        return None
    if not written or expected_bytes <= 0:
        return None
    return round(min(0.99, written / expected_bytes), 3)

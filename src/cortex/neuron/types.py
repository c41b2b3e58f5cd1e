"""Values passed between a neuron's app, harness and registry, and the `LoadedModel` protocol."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from cortex.engine.histogram import LatencyHistogram

__all__ = [
    "FinishReason",
    "GenerateRequest",
    "GenerationEvent",
    "HarnessStats",
    "LoadEvent",
    "LoadedModel",
    "ModelEntry",
    "ModelPrecision",
    "ModelSpec",
    "ModelState",
    "ModelUsage",
    "Opener",
    "ProgressCallback",
    "Puller",
    "SamplingOptions",
    "TokenUsage",
    "ToolCall",
    "ToolCallDelta",
]

ModelState = Literal["available", "loading", "loaded", "unloading", "failed"]
FinishReason = Literal["stop", "length", "tool_calls", "cancelled"]


@dataclass(frozen=True)
class SamplingOptions:
    """How to pick tokens; None means "the model's default" (its generation_config, else OpenAI's).

    Args:
        max_tokens: tokens to generate at most; None lets the reply run to the context's end.
        presence_penalty: None: the model's default (its generation_config), else 0.
        stop: strings that end the reply (not included in it).
        stop_token_ids: token ids that end the reply, besides the model's end-of-turn tokens.
        ignore_eos: keep generating past the model's end-of-turn tokens (for benchmarks).
    """

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float = 0.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    max_tokens: int | None = None
    logprobs: bool = False
    top_logprobs: int = 0
    ignore_eos: bool = False


@dataclass(frozen=True)
class GenerateRequest:
    """One generation: a chat (`messages`) or a completion (`prompt`), never both.

    Args:
        model: the model id.
        messages: chat messages (`role`, `content` as text, optional `tool_calls`...); the chat
            template of the model turns them into the prompt.
        prompt: the raw prompt of a completion, as text or token ids.
        tools: OpenAI function tools offered to the model (`{"type": "function", "function": ...}`).
        tool_choice: OpenAI's `tool_choice` (`auto`, `none`, `required`, a named function).
        add_generation_prompt: end the prompt with the header that opens the assistant's turn.
        continue_final_message: the reply continues the final message (an assistant prefill).
        chat_template_kwargs: more variables for the chat template (`enable_thinking`...).
        request_id: an id for logs and cancellation.
        thinking_token_budget: most tokens a reasoning model may think for; at the budget the
            thought is closed for it and the answer follows. None: no limit.
        response_format: structured output: `{"type": "json_object"}` or `{"type":
            "json_schema", "schema": {...}, "strict": bool}`; None: free text.
        n: how many samples to draw (choices of the answer); see `cortex.neuron.samples`.
    """

    model: str
    messages: list[dict[str, Any]] | None = None
    prompt: str | list[int] | None = None
    tools: list[dict[str, Any]] | None = None
    sampling: SamplingOptions = field(default_factory=SamplingOptions)
    request_id: str = ""
    tool_choice: str | dict[str, Any] | None = None
    add_generation_prompt: bool = True
    continue_final_message: bool = False
    chat_template_kwargs: dict[str, Any] | None = None
    thinking_token_budget: int | None = None
    response_format: dict[str, Any] | None = None
    n: int = 1

    def __post_init__(self) -> None:
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("a GenerateRequest has either messages or a prompt")


@dataclass(frozen=True)
class TokenUsage:
    """Tokens a request used; `prompt_tokens` includes the prefix cache's `cached_tokens`,
    `completion_tokens` the `reasoning_tokens` of the thought."""

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class ToolCall:
    """A call of a function tool the model made; `arguments` is a JSON object as text."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class ToolCallDelta:
    """A piece of a call streamed as the model writes it: the first piece of a call carries
    its `id` and `name`, every piece the next part of its arguments (JSON text)."""

    arguments: str = ""
    id: str | None = None
    name: str | None = None


@dataclass(frozen=True)
class GenerationEvent:
    """A step of a reply: new text, tool calls, and on the last event the finish reason and usage.

    Args:
        text: the new text of the answer (may be empty, e.g. while a multi-byte character is
            incomplete).
        reasoning: the new text of the model's thought (OpenAI's `reasoning_content`).
        tool_calls: calls the model completed, whole.
        tool_call_deltas: pieces of calls streamed as written (formats that stream them).
        token_count: how many tokens this event stands for.
        logprobs: OpenAI `logprobs.content` entries of those tokens, when asked for.
        stop_string: on the last event, the stop string that ended the reply (vLLM's
            `choices[].stop_reason`).
        index: the sample it belongs to, for a request of `n > 1` samples.
    """

    text: str = ""
    token_count: int = 0
    tool_calls: tuple[ToolCall, ...] = ()
    reasoning: str = ""
    tool_call_deltas: tuple[ToolCallDelta, ...] = ()
    logprobs: list[dict[str, Any]] | None = None
    finish_reason: FinishReason | None = None
    usage: TokenUsage | None = None
    stop_string: str | None = None
    index: int = 0


@dataclass(frozen=True)
class ModelEntry:
    """One model as `/models` shows it.

    Args:
        memory_mb: the estimate (weights + KV cache budget) until loaded, then what it holds.
        progress: while loading, `{"phase": ..., "fraction": 0..1}` (a pull, a GGUF import...),
            with `bytes` and `total_bytes` while pulling.
        generation_config: the model's own sampling defaults, when it ships them.
        kind: `chat` (generates: chat and text completions) or `embedding` (`/v1/embeddings`).
        dtype: the weights' and activations' dtype it runs in (`bfloat16`, `float32`...).
        quant: how its weight matrices are held: `none`, or the layout (`int8`, `int4-g32`...).
        resident_mb: once loaded, the memory it holds (weights as stored plus the KV cache as
            allocated); None before.
        parameters: every weight of the model, when known.
        active_parameters: the weights one token runs through (a mixture of experts runs only
            its top-k experts); equal to `parameters` for a dense model.
    """

    id: str
    state: ModelState
    memory_mb: float
    context_length: int | None
    architecture: str | None
    device: str
    pinned: bool = False
    in_flight: int = 0
    last_used_at: float | None = None
    error: str | None = None
    progress: dict[str, Any] | None = None
    generation_config: dict[str, Any] | None = None
    kind: str = "chat"
    parameters: int | None = None
    active_parameters: int | None = None
    dtype: str | None = None
    quant: str | None = None
    resident_mb: float | None = None

    def to_json(self) -> dict[str, Any]:
        """The wire form: every field, `progress`/`generation_config` only when present."""
        body: dict[str, Any] = {
            "id": self.id,
            "state": self.state,
            "memory_mb": round(self.memory_mb, 1),
            "context_length": self.context_length,
            "architecture": self.architecture,
            "parameters": self.parameters,
            "active_parameters": self.active_parameters,
            "kind": self.kind,
            "device": self.device,
            "dtype": self.dtype,
            "quant": self.quant,
            "resident_mb": None if self.resident_mb is None else round(self.resident_mb, 1),
            "pinned": self.pinned,
            "in_flight": self.in_flight,
            "last_used_at": self.last_used_at,
            "error": self.error,
        }
        if self.progress is not None:
            body["progress"] = self.progress
        if self.generation_config:
            body["generation_config"] = self.generation_config
        return body


@dataclass(frozen=True)
class LoadEvent:
    """A finished load: its model, outcome (`ok` or `error`) and how long it took."""

    model: str
    outcome: Literal["ok", "error"]
    seconds: float


@dataclass(frozen=True)
class HarnessStats:
    """A snapshot of the harness: requests running and waiting, KV cache use, memory, cycles.

    Args:
        running: requests being generated, over all models.
        waiting: requests queued, over all models.
        kv_usage: per loaded model, the fraction of its KV cache in use (0..1).
        batch_size: per loaded model, the requests in its current batch.
        memory_limit_mb: the `memory_mb` cap, or None when the device's free memory is the limit.
        memory_used_mb: memory held by loading, loaded and unloading models.
        memory_free_mb: memory left for another model.
        load_cycles: unloads completed since start (each closes a load/unload cycle).
        loads_started: loads begun since start (coalesced loads count once).
        template_folds: per loaded model, chats its template refused until their system turns
            were folded (see `EngineRunner`).
        preemptions: per loaded model, requests its engine preempted (since it loaded).
        queue_time: per loaded model, its requests' waits for a first scheduled step (since
            it loaded).
        pulls: the pulls running on their own (`ModelRegistry.pull`): each its `source` and
            progress (`phase`, `fraction`, `bytes`, `total_bytes`, `file`).
    """

    running: int
    waiting: int
    kv_usage: dict[str, float]
    batch_size: dict[str, int]
    waiting_by_model: dict[str, int]
    memory_limit_mb: float | None
    memory_used_mb: float
    memory_free_mb: float
    load_cycles: int
    loads_started: int
    template_folds: dict[str, int] = field(default_factory=dict)
    preemptions: dict[str, int] = field(default_factory=dict)
    queue_time: dict[str, LatencyHistogram] = field(default_factory=dict)
    pulls: tuple[dict[str, Any], ...] = ()


class ProgressCallback(Protocol):
    """Reports a load's progress: a phase (`pulling`, `importing`, `loading`, `warming`), a
    fraction 0..1 when known, and facts of the phase (`bytes`, `total_bytes` while pulling)."""

    def __call__(self, phase: str, fraction: float | None, /, **facts: Any) -> None: ...


@dataclass(frozen=True)
class ModelSpec:
    """A model this node can load, as found on disk (or configured, for the fake harness).

    Args:
        id: the model id clients use.
        memory_mb: the estimate of what it needs loaded: weights plus the KV cache budget.
        source: where it comes from: `hf`, `hf-cache`, `gguf`, `default` or `fake`.
        path: its folder or file (never derived from a client's input).
        parameters: every weight, counted from the file headers.
        active_parameters: the weights one token runs through (MoE: top-k experts only).
        quant: how a load asked for its weights to be held (a models.toml profile's `quant`,
            sent with the load); None: as the node's own settings say.
    """

    id: str
    memory_mb: float
    context_length: int | None = None
    architecture: str | None = None
    parameters: int | None = None
    active_parameters: int | None = None
    source: str = "hf"
    path: Path | None = None
    weights_mb: float = 0.0
    kv_cache_mb: float = 0.0
    generation_config: dict[str, Any] | None = None
    kind: str = "chat"
    quant: str | None = None


@dataclass(frozen=True)
class ModelPrecision:
    """How a loaded model is held: dtype, quantization, resident weights (for `/models`)."""

    dtype: str
    quant: str
    weights_mb: float


@dataclass(frozen=True)
class ModelUsage:
    """How busy a loaded model is: requests running (its batch) and waiting, KV cache use 0..1;
    since it loaded, how many chats its template refused until their layout was folded, how
    many requests were preempted, and how long requests waited for a first scheduled step."""

    running: int
    waiting: int
    kv_usage: float
    template_folds: int = 0
    preemptions: int = 0
    queue_time: LatencyHistogram | None = None


class LoadedModel(Protocol):
    """A loaded model: what a harness's opener returns and the registry holds until unload."""

    @property
    def context_length(self) -> int:
        """The context window it enforces."""
        ...

    @property
    def memory_mb(self) -> float:
        """The memory it holds."""
        ...

    def generate(self, request: GenerateRequest) -> AsyncIterator[GenerationEvent]:
        """Stream the reply to `request`; leaving the iteration early cancels it."""
        ...

    def count_prompt_tokens(self, request: GenerateRequest) -> int:
        """Prompt tokens of `request`, as `generate` would see them (for `POST /tokenize`)."""
        ...

    def usage(self) -> ModelUsage:
        """How busy it is now: its requests running and waiting, and its KV cache use."""
        ...

    async def close(self) -> None:
        """Free everything it holds (idempotent)."""
        ...


Opener = Callable[[ModelSpec, ProgressCallback], Awaitable[LoadedModel]]
"""Loads a model: the spec and a progress callback in, the `LoadedModel` out."""

Puller = Callable[[str, str, ProgressCallback], Awaitable[ModelSpec]]
"""Pulls a model this node lacks: its id, its source (`hf:ORG/NAME[:QUANT]`) and a progress
callback in, the spec of the pulled files (under that id) out."""

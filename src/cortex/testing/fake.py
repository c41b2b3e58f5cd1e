"""The fake harness: the engine harness's lifecycle rules with pretend models.

`FakeHarness` behaves like the engine harness (same lifecycle rules, memory accounting, errors)
without a model: loads take `load_s`, replies stream at `tokens_per_s` and say deterministically
which model and node answered and what they were told. When the last message is a user message
containing `call tool NAME` and a tool NAME was offered, the reply is a call of that tool whose
arguments fill each required string property with `"x"`. A "token" of the fake is a word with
its leading white space. With `ignore_eos` the reply repeats until `max_tokens`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import socket
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from cortex.config import FakeModel, NeuronConfig
from cortex.engine.histogram import LatencyHistogram
from cortex.errors import ContextLengthExceededError, CortexError, OverloadedError
from cortex.neuron.gpus import cpu_device
from cortex.neuron.harness import RegistryHarness
from cortex.neuron.pull import HubPuller
from cortex.neuron.registry import ModelRegistry
from cortex.neuron.types import (
    GenerateRequest,
    GenerationEvent,
    ModelPrecision,
    ModelSpec,
    ModelUsage,
    ProgressCallback,
    Puller,
    TokenUsage,
    ToolCall,
)

__all__ = ["DEFAULT_FAKE_MODELS", "FakeHarness", "FakeRunner", "fake_tokens"]

DEFAULT_FAKE_MODELS = (FakeModel(id="smollm2-135m-instruct", memory_mb=600.0, context_length=8192),)
"""The fake's models when `[[fake.models]]` names none: a stand-in for the default model."""

_TOKEN = re.compile(r"\s*\S+")
_CALL_TOOL = re.compile(r"call tool ([A-Za-z0-9_.\-]+)")


def fake_tokens(text: str) -> list[str]:
    """The fake's tokens of `text`: each word with the white space before it."""
    return _TOKEN.findall(text)


class FakeRunner:
    """A loaded fake model: deterministic replies at a fixed token rate.

    Args:
        max_running: requests generated at once (None = no limit); the others wait.
        max_waiting: requests that may wait (None = no limit); beyond it, 503 queue full.
        quant: the `quant` its load asked for, shown in `/models` like an engine's (None:
            `none`).
    """

    def __init__(
        self,
        model: FakeModel,
        *,
        node: str,
        tokens_per_s: float,
        max_running: int | None = None,
        max_waiting: int | None = None,
        quant: str | None = None,
    ) -> None:
        self.model = model
        self.quant = quant or "none"
        self.node = node
        self.tokens_per_s = tokens_per_s
        self.max_running = max_running
        self.max_waiting = max_waiting
        self._running = 0
        self._waiting = 0
        self._tokens_held = 0
        self._freed = asyncio.Event()
        self.queue_time = LatencyHistogram()  # waits for a slot under `max_running`
        self.closed = False

    @property
    def context_length(self) -> int:
        """The configured context window."""
        return self.model.context_length

    @property
    def memory_mb(self) -> float:
        """The configured memory."""
        return self.model.memory_mb

    def precision(self) -> ModelPrecision:
        """How it pretends to hold its weights: float32, the `quant` its load asked for."""
        return ModelPrecision("float32", self.quant, self.model.memory_mb)

    def usage(self) -> ModelUsage:
        """Running and waiting requests; KV use as tokens held over the context window; the
        waits for a slot as queue times (it never preempts)."""
        return ModelUsage(
            self._running,
            self._waiting,
            min(1.0, self._tokens_held / self.context_length),
            queue_time=self.queue_time,
        )

    async def close(self) -> None:
        """Nothing to free; remembers it was closed."""
        self.closed = True

    def count_prompt_tokens(self, request: GenerateRequest) -> int:
        """Fake tokens of the prompt: words of every message, three per message, the tools."""
        if isinstance(request.prompt, list):
            return len(request.prompt)
        if request.prompt is not None:
            return len(fake_tokens(request.prompt))
        count = 0
        for message in request.messages or ():
            count += 3 + len(fake_tokens(_text_of(message)))
        if request.tools:
            count += len(fake_tokens(json.dumps(request.tools)))
        return count

    def generate(self, request: GenerateRequest) -> AsyncIterator[GenerationEvent]:
        """Stream the deterministic reply (see the module docstring)."""
        return self._generate(request)

    async def _generate(self, request: GenerateRequest) -> AsyncIterator[GenerationEvent]:
        prompt_tokens = self.count_prompt_tokens(request)
        max_tokens = request.sampling.max_tokens
        if prompt_tokens + (max_tokens or 1) > self.context_length:
            raise ContextLengthExceededError(prompt_tokens, max_tokens or 0, self.context_length)
        budget = max_tokens if max_tokens is not None else self.context_length - prompt_tokens
        await self._admit()
        self._tokens_held += prompt_tokens
        held = prompt_tokens
        try:
            call = self._tool_call(request)
            if call is not None:
                await asyncio.sleep(1 / self.tokens_per_s)
                usage = TokenUsage(prompt_tokens, len(fake_tokens(call.arguments)) + 1)
                yield GenerationEvent(
                    token_count=usage.completion_tokens,
                    tool_calls=(call,),
                    finish_reason="tool_calls",
                    usage=usage,
                )
                return
            words, finish = self._reply_tokens(request, budget)
            for i, word in enumerate(words):
                await asyncio.sleep(1 / self.tokens_per_s)
                self._tokens_held += 1
                held += 1
                last = i == len(words) - 1
                logprobs = _logprobs(word) if request.sampling.logprobs else None
                yield GenerationEvent(
                    text=word,
                    token_count=1,
                    logprobs=logprobs,
                    finish_reason=finish if last else None,
                    usage=TokenUsage(prompt_tokens, len(words)) if last else None,
                )
            if not words:
                yield GenerationEvent(finish_reason=finish, usage=TokenUsage(prompt_tokens, 0))
        finally:
            self._tokens_held -= held
            self._running -= 1
            self._freed.set()

    async def _admit(self) -> None:
        arrived = time.monotonic()
        if self.max_running is None or self._running < self.max_running:
            self._running += 1
            self.queue_time = self.queue_time.observe(time.monotonic() - arrived)
            return
        if self.max_waiting is not None and self._waiting >= self.max_waiting:
            raise OverloadedError(
                f"the queue of {self.model.id!r} is full ({self._waiting} requests waiting)"
            )
        self._waiting += 1
        try:
            while self._running >= self.max_running:
                self._freed.clear()
                await self._freed.wait()
        finally:
            self._waiting -= 1
        self._running += 1
        self.queue_time = self.queue_time.observe(time.monotonic() - arrived)

    def reply_text(self, request: GenerateRequest) -> str:
        """The whole reply the fake gives to `request` (before `max_tokens` and stop strings)."""
        if request.prompt is not None:
            prompt = request.prompt
            said = prompt if isinstance(prompt, str) else f"{len(prompt)} tokens"
        else:
            said = _text_of(request.messages[-1]) if request.messages else ""
        return f"This is {self.model.id} on {self.node}. You said: {said.strip() or 'nothing'}"

    def _reply_tokens(self, request: GenerateRequest, budget: int) -> tuple[list[str], Any]:
        text = self.reply_text(request)
        finish = "stop"
        cuts = [text.find(stop) for stop in request.sampling.stop if stop and stop in text]
        if cuts:
            text = text[: min(cuts)]
        words = fake_tokens(text)
        if request.sampling.ignore_eos and words:  # keep talking to the budget (benchmarks)
            words = [words[i % len(words)] for i in range(budget)]
        if len(words) > budget or request.sampling.ignore_eos:
            words, finish = words[:budget], "length"
        return words, finish

    def _tool_call(self, request: GenerateRequest) -> ToolCall | None:
        messages = request.messages or []
        if not messages or messages[-1].get("role") != "user" or not request.tools:
            return None
        match = _CALL_TOOL.search(_text_of(messages[-1]))
        if match is None:
            return None
        for tool in request.tools:
            function = tool.get("function") or {}
            if function.get("name") != match.group(1):
                continue
            schema = function.get("parameters") or {}
            properties = schema.get("properties") or {}
            arguments = {
                name: "x"
                for name in schema.get("required") or ()
                if _is_string_schema(properties.get(name))
            }
            digest = hashlib.sha256(
                json.dumps([self.model.id, messages], sort_keys=True, default=str).encode()
            ).hexdigest()
            return ToolCall(
                id=f"call_{digest[:24]}", name=match.group(1), arguments=json.dumps(arguments)
            )
        return None


def _is_string_schema(schema: Any) -> bool:
    if not isinstance(schema, dict):
        return False
    kind = schema.get("type")
    return kind == "string" or (isinstance(kind, list) and "string" in kind)


def _text_of(message: Mapping[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            part.get("text", "") for part in content if isinstance(part, dict) and "text" in part
        )
    return ""


def _logprobs(token: str) -> list[dict[str, Any]]:
    data = list(token.encode())
    return [{"token": token, "logprob": 0.0, "bytes": data, "top_logprobs": []}]


class FakeHarness(RegistryHarness):
    """A harness with fake models: real lifecycle rules, configurable delays and failures.

    Args:
        models: the fake models (`FakeModel(id, memory_mb, context_length)`).
        load_s: seconds each load takes (its first four fifths in phase `loading`, the rest
            in `warming`, as the engine's loads report them).
        tokens_per_s: the reply's token rate.
        fail_load: ids whose load fails (after `load_s`) with an injected error.
        memory_mb: the memory cap; default: the host's available RAM at start.
        node: the node name said in replies.
        puller: pulls models named by a load's `source` (default: `HubPuller` from the hub
            `HF_ENDPOINT` names); the pulled model is then served by a fake runner.
    """

    kind = "fake"

    def __init__(
        self,
        models: Sequence[FakeModel] = DEFAULT_FAKE_MODELS,
        *,
        load_s: float = 0.0,
        tokens_per_s: float = 1000.0,
        fail_load: Sequence[str] = (),
        memory_mb: float | None = None,
        node: str = "fake",
        pinned: Sequence[str] = (),
        drain_timeout_s: float = 30.0,
        max_running: int | None = None,
        max_waiting: int | None = None,
        puller: Puller | None = None,
    ) -> None:
        self.fake_models = {model.id: model for model in models}
        self.load_s = load_s
        self.tokens_per_s = tokens_per_s
        self.fail_load = frozenset(fail_load)
        self.node = node
        self.max_running = max_running
        self.max_waiting = max_waiting
        self.opened: list[str] = []
        limit = memory_mb if memory_mb is not None else cpu_device().memory_free_mb
        super().__init__(
            ModelRegistry(
                scan=self._scan,
                opener=self._open,
                device="cpu",
                limit_mb=limit,
                pinned=pinned,
                drain_timeout_s=drain_timeout_s,
                # Pulls are real (`hf:` sources, from HF_ENDPOINT); the pulled model is faked.
                puller=puller or HubPuller(),
            )
        )

    @classmethod
    def from_config(cls, config: NeuronConfig, *, node: str | None = None) -> FakeHarness:
        """The fake of a neuron.toml: `[fake]` keys, `[[fake.models]]`, `memory_mb`, `preload`."""
        fake = config.fake
        return cls(
            (fake.models if fake and fake.models else DEFAULT_FAKE_MODELS),
            load_s=fake.load_s if fake else 0.0,
            tokens_per_s=fake.tokens_per_s if fake else 1000.0,
            fail_load=fake.fail_load if fake else (),
            memory_mb=config.memory_mb,
            node=node or config.name or socket.gethostname(),
            pinned=config.preload,
        )

    def _scan(self) -> list[ModelSpec]:
        return [
            ModelSpec(
                id=model.id,
                memory_mb=model.memory_mb,
                context_length=model.context_length,
                architecture="FakeForCausalLM",
                source="fake",
                weights_mb=model.memory_mb,
            )
            for model in self.fake_models.values()
        ]

    async def _open(self, spec: ModelSpec, progress: ProgressCallback) -> FakeRunner:
        # Like the engine: weights first (four fifths of `load_s`), then a warm-up.
        for phase, seconds in (("loading", self.load_s * 0.8), ("warming", self.load_s * 0.2)):
            deadline = time.monotonic() + seconds
            while (left := deadline - time.monotonic()) > 0:
                progress(phase, round(1 - left / seconds, 3))
                await asyncio.sleep(min(left, 0.05))
        self.opened.append(spec.id)
        if spec.id in self.fail_load:
            raise CortexError(f"injected load failure of {spec.id!r} (fake fail_load)")
        model = self.fake_models.get(spec.id) or FakeModel(
            id=spec.id,
            memory_mb=max(1.0, spec.memory_mb),
            context_length=spec.context_length or 4096,
        )
        return FakeRunner(
            model,
            node=self.node,
            tokens_per_s=self.tokens_per_s,
            max_running=self.max_running,
            max_waiting=self.max_waiting,
            quant=spec.quant,
        )

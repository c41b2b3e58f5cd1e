"""`FakeNodeClient`: a node of the fleet held in memory, with no process and no HTTP.

The fleet talks to nodes through the `NodeClient` protocol; this one answers from a few dicts,
so a `Fleet` (and a gateway app over it) can run in one process at sizes no machine runs as
neuron processes: a hundred nodes of two hundred models each, for the control plane's tests and
`benchmarks/bench_fleet_scale.py --simulate`. Like a neuron answering 304, `fetch()` hands back
the very same snapshot while nothing changed there.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

from cortex.errors import ConflictError, ModelNotFoundError, NotFoundError
from cortex.fleet.state import ModelOnNode, NodeKind, NodeSnapshot
from cortex.testing.fake import fake_tokens

__all__ = ["FakeNodeClient"]


class FakeNodeClient:
    """A neuron as the fleet sees it, answering at once from memory.

    Replies are `This is MODEL on NODE. You said: LAST MESSAGE`, like the fake harness's; loads
    and unloads take effect at once; a request for a model not loaded there is a 404 (the fleet
    loads first).

    Args:
        name: the node's name.
        models: the model ids it can serve.
        loaded: those loaded from the start.
        memory_mb: its memory capacity.
        model_mb: the memory each model takes.
        context_length: each model's context window.
    """

    kind: NodeKind = "neuron"

    def __init__(
        self,
        name: str,
        models: Iterable[str],
        *,
        loaded: Iterable[str] = (),
        memory_mb: float = 1e6,
        model_mb: float = 10.0,
        context_length: int = 4096,
    ) -> None:
        self.name = name
        self.endpoint = f"fake://{name}"
        self.models = list(models)
        self.loaded = set(loaded)
        self.memory_mb = memory_mb
        self.model_mb = model_mb
        self.context_length = context_length
        self.fetches = 0
        self.requests = 0
        self._snapshot: NodeSnapshot | None = None

    async def fetch(self) -> NodeSnapshot:
        """Its models and memory: the same object as last time while nothing changed."""
        self.fetches += 1
        if self._snapshot is None:
            models = {
                m: ModelOnNode(
                    id=m,
                    state="loaded" if m in self.loaded else "available",
                    memory_mb=self.model_mb,
                    context_length=self.context_length,
                )
                for m in self.models
            }
            self._snapshot = NodeSnapshot(
                name=self.name,
                kind="neuron",
                endpoint=self.endpoint,
                models=models,
                memory_capacity_mb=self.memory_mb,
                memory_free_mb=self.memory_mb - self.model_mb * len(self.loaded),
            )
        return self._snapshot

    async def load(self, model: str, source: str | None = None, quant: str | None = None) -> None:
        """Load `model` at once (a 404 when this node does not have it)."""
        if model not in self.models:
            raise ModelNotFoundError(f"node {self.name!r} has no model {model!r}")
        self.loaded.add(model)
        self._snapshot = None

    async def unload(self, model: str) -> None:
        """Unload `model` at once."""
        self.loaded.discard(model)
        self._snapshot = None

    async def pull(self, source: str) -> dict[str, Any]:
        """A fake node cannot pull: always a conflict."""
        raise ConflictError(f"node {self.name!r} is a fake; it cannot pull {source!r}")

    async def post(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """A whole chat (or text) completion."""
        model, text = self._reply(body)
        tokens = len(fake_tokens(text))
        usage = {"prompt_tokens": 1, "completion_tokens": tokens, "total_tokens": 1 + tokens}
        if path.endswith("/completions") and "chat" not in path:
            choice: dict[str, Any] = {"index": 0, "text": text, "finish_reason": "stop"}
            kind = "text_completion"
        else:
            message = {"role": "assistant", "content": text}
            choice = {"index": 0, "message": message, "finish_reason": "stop"}
            kind = "chat.completion"
        return {
            "id": f"fake-{self.requests}",
            "object": kind,
            "created": 0,
            "model": model,
            "choices": [choice],
            "usage": usage,
        }

    @asynccontextmanager
    async def stream(
        self, path: str, body: Mapping[str, Any]
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        """A streamed chat: a role chunk, a chunk a token, the finish, `[DONE]`, each one piece."""
        model, text = self._reply(body)

        def event(delta: dict[str, Any], finish: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
            chunk = {
                "id": f"fake-{self.requests}",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": model,
                "choices": [choice],
            }
            return b"data: " + json.dumps(chunk).encode() + b"\n\n"

        async def pieces() -> AsyncIterator[bytes]:
            yield event({"role": "assistant", "content": ""})
            for token in fake_tokens(text):
                yield event({"content": token})
            yield event({}, "stop")
            yield b"data: [DONE]\n\n"

        yield pieces()

    async def count_tokens(
        self, model: str, messages: Sequence[Any], tools: Sequence[Any] | None
    ) -> int:
        """The fake's tokens of every message's text."""
        return sum(len(fake_tokens(str(m.get("content", "")))) for m in messages)

    async def aclose(self) -> None:
        """Nothing to close."""

    def _reply(self, body: Mapping[str, Any]) -> tuple[str, str]:
        model = str(body.get("model", ""))
        if model not in self.loaded:
            raise NotFoundError(f"model {model!r} is not loaded on node {self.name!r}")
        self.requests += 1
        messages = body.get("messages") or [{"content": body.get("prompt", "")}]
        said = messages[-1].get("content", "") if isinstance(messages[-1], dict) else ""
        return model, f"This is {model} on {self.name}. You said: {said}"

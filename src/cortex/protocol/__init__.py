"""Wire envelopes of each dialect cortex speaks: pydantic models, no logic.

`cortex.protocol.openai` (Chat Completions, legacy completions, embeddings, models),
`cortex.protocol.anthropic` (Messages, stream events, count_tokens, models) and
`cortex.protocol.responses` / `cortex.protocol.responses_events` (the Responses API). Input
models keep unknown fields; output models dump exactly what the official SDKs expect.
"""

from __future__ import annotations

from cortex.protocol import anthropic, openai, responses, responses_events
from cortex.protocol.base import WireModel

__all__ = ["WireModel", "anthropic", "openai", "responses", "responses_events"]

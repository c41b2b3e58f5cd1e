"""Wire envelopes of each dialect cortex speaks: pydantic models, no logic.

`cortex.protocol.openai` (Chat Completions, legacy completions, embeddings, models) and
`cortex.protocol.anthropic` (Messages, stream events, count_tokens, models). Input models keep
unknown fields; output models dump exactly what the official SDKs expect.
"""

from __future__ import annotations

from cortex.protocol import anthropic, openai
from cortex.protocol.base import WireModel

__all__ = ["WireModel", "anthropic", "openai"]

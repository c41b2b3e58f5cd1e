"""The embeddings front door: `POST /v1/embeddings` (OpenAI), routed like any request.

The body goes to the node as it came; the model is placed, loaded on demand and evicted like a
chat model. Nothing is fitted to a context window (the node truncates each input to the
model's longest) and nothing streams. The node refuses a chat model here, and an embedding
model on the chat routes, with a 400 that names the right route.
"""

from __future__ import annotations

from typing import Any

from cortex.errors import InvalidRequestError
from cortex.gateway.pipeline import Adapter, Exchange

__all__ = ["EMBEDDINGS", "EmbeddingsExchange"]


class EmbeddingsExchange(Exchange):
    """An embeddings request: sent on as it is, answered whole."""

    def __init__(self, body: dict[str, Any]) -> None:
        if body.get("stream"):
            raise InvalidRequestError("stream: embeddings are answered whole", param="stream")
        super().__init__(body, stream=False, path="/v1/embeddings", fits=False)


EMBEDDINGS = Adapter("openai", "openai", EmbeddingsExchange)
"""`POST /v1/embeddings`."""

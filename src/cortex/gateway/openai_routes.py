"""The OpenAI front door: `POST /v1/chat/completions` and `POST /v1/completions`.

The body goes to the node as it came (the node speaks OpenAI); the stream is passed through
without re-encoding (`relay.OpenAIRelay`), the usage chunk kept only when the client asked for
it (the gateway always asks the node for it, to count tokens).
"""

from __future__ import annotations

from typing import Any

from cortex.gateway.metrics import RequestRecord
from cortex.gateway.pipeline import Adapter, Exchange
from cortex.gateway.relay import OpenAIRelay, Relay

__all__ = ["CHAT_COMPLETIONS", "COMPLETIONS", "OpenAIExchange"]


class OpenAIExchange(Exchange):
    """An OpenAI request: sent on as it is, its stream passed through."""

    def __init__(self, body: dict[str, Any], path: str) -> None:
        stream = bool(body.get("stream"))
        self.include_usage = False
        if stream:
            options = body.get("stream_options")
            options = dict(options) if isinstance(options, dict) else {}
            self.include_usage = bool(options.get("include_usage"))
            body["stream_options"] = {**options, "include_usage": True}
        super().__init__(body, stream=stream, path=path)

    def relay(self, record: RequestRecord, prompt_tokens: int | None) -> Relay:
        return OpenAIRelay(record, include_usage=self.include_usage)


def _chat(body: dict[str, Any]) -> Exchange:
    return OpenAIExchange(body, "/v1/chat/completions")


def _completion(body: dict[str, Any]) -> Exchange:
    return OpenAIExchange(body, "/v1/completions")


CHAT_COMPLETIONS = Adapter("openai", "openai", _chat)
"""`POST /v1/chat/completions`."""

COMPLETIONS = Adapter("openai", "openai", _completion)
"""`POST /v1/completions` (legacy)."""

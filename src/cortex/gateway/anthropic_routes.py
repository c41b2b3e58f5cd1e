"""The Anthropic front door: `POST /v1/messages` and `POST /v1/messages/count_tokens`.

A Messages request is validated (`protocol.anthropic`), translated to an OpenAI chat request
(`translate`), and its reply translated back, whole or as Anthropic stream events. The first
event waits for the first token, so a failure before it is a plain HTTP error (Claude Code
retries a 529); `message_start` carries the prompt's exact token count.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from cortex.gateway.metrics import RequestRecord
from cortex.gateway.pipeline import Adapter, Exchange, Pipeline
from cortex.gateway.relay import Relay, TranslatedRelay
from cortex.protocol import anthropic as A
from cortex.translate import (
    AnthropicStreamTranslator,
    anthropic_request_to_openai,
    openai_response_to_anthropic,
)
from cortex.translate.coerce import as_model

__all__ = ["MESSAGES", "MessagesExchange", "count_tokens_endpoint"]


class MessagesExchange(Exchange):
    """A Messages request, as the OpenAI chat request the node runs."""

    def __init__(self, body: dict[str, Any]) -> None:
        self.request = as_model(A.MessagesRequest, body)
        chat = anthropic_request_to_openai(self.request).model_dump(mode="json")
        super().__init__(chat, stream=bool(self.request.stream), exact_count=True)

    def reply(self, result: dict[str, Any]) -> dict[str, Any]:
        return openai_response_to_anthropic(result, request=self.request).model_dump(mode="json")

    def relay(self, record: RequestRecord, prompt_tokens: int | None) -> Relay:
        translator = AnthropicStreamTranslator(self.request, input_tokens=prompt_tokens)
        return TranslatedRelay(record, translator)


MESSAGES = Adapter("anthropic", "anthropic", MessagesExchange)
"""`POST /v1/messages`."""


def count_tokens_endpoint(pipeline: Pipeline) -> Any:
    """`POST /v1/messages/count_tokens`: the prompt's tokens by the model's own tokenizer and
    chat template (the model is loaded first if it must be)."""

    async def count_tokens(request: Request) -> Response:
        body = await pipeline.read_json(request)
        model = pipeline.pick_model(body, "anthropic")
        body.setdefault("max_tokens", 1)
        body.pop("stream", None)
        chat = anthropic_request_to_openai(as_model(A.MessagesRequest, body))
        count = await pipeline.fleet.count_tokens(
            model,
            [m.model_dump(mode="json") for m in chat.messages],
            [t.model_dump(mode="json") for t in chat.tools] if chat.tools else None,
        )
        return JSONResponse({"input_tokens": count})

    return count_tokens

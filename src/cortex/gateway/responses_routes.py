"""The Responses API front door (`POST /v1/responses`, the Codex CLI's dialect).

The request is translated to an OpenAI chat request and runs through the pipeline like any
other (metrics with `dialect="responses"`, errors in OpenAI's envelope); the reply is translated
back, whole or as Responses stream events. A stream starts with the node's first chunk, or with
`response.created` once the wait (a cold load) passes half of the gateway's commit time; from
then on a failure, even one before the node answered, ends it with `response.failed`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from cortex.errors import CortexError
from cortex.gateway.metrics import RequestRecord
from cortex.gateway.pipeline import Adapter, Exchange
from cortex.gateway.relay import Relay, TranslatedRelay
from cortex.translate.responses_api import (
    openai_response_to_responses,
    parse_responses_request,
    responses_request_to_openai,
)
from cortex.translate.responses_stream import ResponsesStreamTranslator
from cortex.translate.sse import encode_sse
from cortex.translate.stream_items import StreamEvent

__all__ = ["ResponsesExchange", "responses_adapter"]

log = logging.getLogger("cortex.gateway")


class ResponsesExchange(Exchange):
    """A Responses request, as the OpenAI chat request the node runs.

    Args:
        body: the request body.
        open_after_s: how long the stream may wait for the node before `response.created`
            goes out on its own.
    """

    def __init__(self, body: dict[str, Any], open_after_s: float) -> None:
        self.request = parse_responses_request(body)
        chat = responses_request_to_openai(self.request).model_dump(mode="json")
        super().__init__(chat, stream=bool(self.request.stream))
        self.translator = ResponsesStreamTranslator(self.request)
        self.open_after_s = open_after_s

    def reply(self, result: dict[str, Any]) -> dict[str, Any]:
        return openai_response_to_responses(result, request=self.request).model_dump(mode="json")

    def relay(self, record: RequestRecord, prompt_tokens: int | None) -> Relay:
        return TranslatedRelay(record, self.translator)

    async def frame(self, events: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """The stream, opened early with `response.created` when the node is slow to start, so
        that the gateway commits it with real events; a failure after that is `response.failed`."""
        guarded = self._guarded(events)
        first = asyncio.ensure_future(guarded.__anext__())
        try:
            done, _ = await asyncio.wait({first}, timeout=self.open_after_s)
            if not done:
                yield _sse(self.translator.start())
            try:
                yield await first
            except StopAsyncIteration:
                return
            async for data in guarded:
                yield data
        finally:
            if not first.done():
                first.cancel()
                await asyncio.wait({first})
            elif not first.cancelled():
                first.exception()  # retrieved: it was raised above, or we are closing anyway
            await guarded.aclose()

    async def _guarded(self, events: AsyncIterator[bytes]) -> AsyncGenerator[bytes, None]:
        try:
            async for data in events:
                yield data
        except Exception as exc:
            if not self.translator.started:
                raise  # nothing sent yet: a plain HTTP error
            if not isinstance(exc, CortexError):
                log.error("responses stream failed: %r", exc)
            yield _sse(self.translator.fail(exc))
        finally:
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                await aclose()


def _sse(events: list[StreamEvent]) -> bytes:
    return b"".join(encode_sse(event) for event in events)


def responses_adapter(commit_after_s: float) -> Adapter:
    """`POST /v1/responses`, opening slow streams at half of `commit_after_s`."""
    return Adapter("responses", "openai", lambda body: ResponsesExchange(body, commit_after_s / 2))

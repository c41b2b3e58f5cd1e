"""`POST /v1/responses`: the OpenAI Responses API (Codex CLI's dialect) over the fleet's chat.

The request is translated to an OpenAI chat request and runs through the fleet exactly like
`/v1/chat/completions` (routing, loads, context fitting, sampling defaults, failover, metrics
with `dialect="responses"`); the reply is translated back, whole or as Responses stream events.
Errors before the stream starts are plain HTTP errors in OpenAI's envelope. A stream starts
with the node's first chunk, or with `response.created` once the wait (a cold load) passes
half of the gateway's commit time; from then on a failure ends it with `response.failed`.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from cortex.errors import CortexError
from cortex.fleet import dispatch
from cortex.fleet.fleet import Lease
from cortex.gateway.app import Answer, Gateway, _Streaming
from cortex.gateway.metrics import RequestRecord
from cortex.gateway.relay import translated_bytes
from cortex.protocol.responses import ResponsesRequest
from cortex.translate.responses_api import (
    openai_response_to_responses,
    parse_responses_request,
    responses_request_to_openai,
)
from cortex.translate.responses_stream import ResponsesStreamTranslator
from cortex.translate.sse import encode_sse
from cortex.translate.stream_items import StreamEvent

__all__ = ["ResponsesRoute"]

log = logging.getLogger("cortex.gateway")


class ResponsesRoute:
    """The `/v1/responses` endpoint of one gateway app (`handle`).

    Args:
        gateway: the app's handlers, whose fleet, metrics and plumbing it shares.
    """

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def handle(self, request: Request) -> Answer:
        """Answer one `POST /v1/responses`, whole or streamed."""
        gateway = self.gateway
        rid = uuid.uuid4().hex
        record = RequestRecord(gateway.metrics, "responses")
        try:
            body = await gateway._json(request)
            record.model = model = gateway._model(body, "openai")
            parsed = parse_responses_request(body)
            chat = responses_request_to_openai(parsed).model_dump(mode="json")
        except CortexError as exc:
            record.finish(exc.status_for("openai"))
            raise
        headers = {"x-request-id": rid}
        if parsed.stream:
            produce = self._stream(record, model, parsed, chat)
            return await gateway._stream(produce, "openai", rid)

        async def work(lease: Lease) -> dict[str, Any]:
            sampled, _ = await gateway._fit(lease, chat, "openai")
            route = dispatch.Route(lease.model)
            try:
                result = await gateway.fleet.complete(sampled, route=route, lease=lease)
            finally:
                record.node = route.node or lease.node
            record.usage(result.get("usage"))
            response = openai_response_to_responses(result, request=parsed)
            return response.model_dump(mode="json")

        result = await gateway._run(record, model, work)
        return JSONResponse(result, headers=headers)

    async def _stream(
        self, record: RequestRecord, model: str, parsed: ResponsesRequest, chat: dict[str, Any]
    ) -> AsyncIterator[bytes]:
        """The SSE bytes of a streamed response; `response.created` goes out early if the
        node is slow to start, so that the gateway commits the stream with real events."""
        translator = ResponsesStreamTranslator(parsed)
        events = self._events(record, model, chat, translator)
        first = asyncio.ensure_future(events.__anext__())
        try:
            done, _ = await asyncio.wait({first}, timeout=self.gateway.commit_after_s / 2)
            if not done:
                yield _sse(translator.start())
            try:
                yield await first
            except StopAsyncIteration:
                return
            async for data in events:
                yield data
        finally:
            if not first.done():
                first.cancel()
                await asyncio.wait({first})
            elif not first.cancelled():
                first.exception()  # retrieved: it was raised above, or we are closing anyway
            await events.aclose()

    async def _events(
        self,
        record: RequestRecord,
        model: str,
        chat: dict[str, Any],
        translator: ResponsesStreamTranslator,
    ) -> AsyncGenerator[bytes, None]:
        try:
            async with _Streaming(self.gateway.fleet, record, model) as run:
                sampled, _ = await self.gateway._fit(run.lease, chat, "openai")
                batches = self.gateway.fleet.stream_batches(
                    sampled, route=run.route, lease=run.lease
                )
                async for data in translated_bytes(batches, record, translator, "openai"):
                    yield data
        except Exception as exc:
            if not translator.started:
                raise  # nothing sent yet: a plain HTTP error
            if not isinstance(exc, CortexError):
                log.error("responses stream failed: %r", exc)
            yield _sse(translator.fail(exc))


def _sse(events: list[StreamEvent]) -> bytes:
    return b"".join(encode_sse(event) for event in events)

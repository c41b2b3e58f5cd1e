"""Pure translation between the dialects cortex speaks: no I/O, no clock, no globals.

Requests (`anthropic_request_to_openai`, `openai_request_to_anthropic`), non-streamed replies
(`openai_response_to_anthropic`, `anthropic_response_to_openai`), streams
(`AnthropicStreamTranslator`, `OpenAIStreamTranslator`: `feed(item) -> list`,
`finish() -> list`), the Responses API (`responses_request_to_openai`,
`openai_response_to_responses`, `ResponsesStreamTranslator`), SSE bytes (`encode_sse`,
`SSEDecoder`), and errors both ways. Every function takes envelope models (`cortex.protocol`)
or plain dicts of the same shape. Ids and timestamps come from an `IdFactory` the caller
passes in (seeded in tests).
"""

from __future__ import annotations

from cortex.translate.accumulate import collect_chat_completion, collect_message
from cortex.translate.anthropic_stream import AnthropicStreamTranslator
from cortex.translate.errors import (
    anthropic_error_to_openai,
    error_from_anthropic,
    error_from_openai,
    openai_error_to_anthropic,
)
from cortex.translate.ids import IdFactory
from cortex.translate.openai_stream import OpenAIStreamTranslator
from cortex.translate.replies import anthropic_response_to_openai, openai_response_to_anthropic
from cortex.translate.request_to_anthropic import DEFAULT_MAX_TOKENS, openai_request_to_anthropic
from cortex.translate.request_to_openai import BILLING_HEADER_PREFIX, anthropic_request_to_openai
from cortex.translate.responses_api import (
    openai_response_to_responses,
    parse_responses_request,
    responses_request_to_openai,
)
from cortex.translate.responses_stream import ResponsesStreamTranslator
from cortex.translate.sse import DONE, SSEDecoder, SSEEvent, encode_sse, encode_sse_comment
from cortex.translate.stream_items import StreamEvent, StreamItem
from cortex.translate.tool_input import RAW_ARGUMENTS_KEY, ToolInputStream

__all__ = [
    "BILLING_HEADER_PREFIX",
    "DEFAULT_MAX_TOKENS",
    "DONE",
    "RAW_ARGUMENTS_KEY",
    "AnthropicStreamTranslator",
    "IdFactory",
    "OpenAIStreamTranslator",
    "ResponsesStreamTranslator",
    "SSEDecoder",
    "SSEEvent",
    "StreamEvent",
    "StreamItem",
    "ToolInputStream",
    "anthropic_error_to_openai",
    "anthropic_request_to_openai",
    "anthropic_response_to_openai",
    "collect_chat_completion",
    "collect_message",
    "encode_sse",
    "encode_sse_comment",
    "error_from_anthropic",
    "error_from_openai",
    "openai_error_to_anthropic",
    "openai_request_to_anthropic",
    "openai_response_to_anthropic",
    "openai_response_to_responses",
    "parse_responses_request",
    "responses_request_to_openai",
]

"""Pydantic envelopes of the Anthropic Messages dialect: requests, replies, stream events."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Discriminator, Field, Tag

from cortex.protocol.base import WireModel, tag_of

__all__ = [
    "Base64Source",
    "BlockDelta",
    "ContentBlock",
    "ContentBlockDeltaEvent",
    "ContentBlockStartEvent",
    "ContentBlockStopEvent",
    "CountTokensRequest",
    "CountTokensResponse",
    "DocumentBlock",
    "ErrorBody",
    "ErrorEvent",
    "ErrorResponse",
    "ImageBlock",
    "InputJSONDelta",
    "InputMessage",
    "Message",
    "MessageDelta",
    "MessageDeltaEvent",
    "MessageDeltaUsage",
    "MessageStartEvent",
    "MessageStopEvent",
    "MessagesRequest",
    "Metadata",
    "ModelInfo",
    "ModelList",
    "OutputConfig",
    "PingEvent",
    "RedactedThinkingBlock",
    "SignatureDelta",
    "StopReason",
    "StreamEvent",
    "TextBlock",
    "TextDelta",
    "ThinkingBlock",
    "ThinkingConfig",
    "ThinkingDelta",
    "Tool",
    "ToolChoice",
    "ToolResultBlock",
    "ToolUseBlock",
    "URLSource",
    "UnknownBlock",
    "UnknownDelta",
    "Usage",
]

StopReason = Literal[
    "end_turn",
    "max_tokens",
    "stop_sequence",
    "tool_use",
    "pause_turn",
    "refusal",
    "model_context_window_exceeded",
]


# -- content blocks --------------------------------------------------------------------------


class TextBlock(WireModel):
    """`{"type": "text", "text": ...}`; `cache_control` and `citations` are accepted."""

    type: Literal["text"] = "text"
    text: str


class Base64Source(WireModel):
    """`{"type": "base64", "media_type", "data"}` (images, PDFs)."""

    type: Literal["base64"] = "base64"
    media_type: str
    data: str


class URLSource(WireModel):
    """`{"type": "url", "url"}`; other source kinds (`text`, `content`, `file`) stay as extras."""

    type: str = "url"
    url: str | None = None


class ImageBlock(WireModel):
    """`{"type": "image", "source": base64 or url}`."""

    type: Literal["image"] = "image"
    source: Base64Source | URLSource


class DocumentBlock(WireModel):
    """`{"type": "document", "source", "title"?, "context"?}`; source kept as a dict."""

    type: Literal["document"] = "document"
    source: dict[str, Any]
    title: str | None = None
    context: str | None = None


class ToolUseBlock(WireModel):
    """`{"type": "tool_use", "id", "name", "input": {...}}`: input is a JSON object."""

    type: Literal["tool_use"] = "tool_use"
    id: str
    name: str
    input: dict[str, Any] = Field(default_factory=dict)


class ToolResultBlock(WireModel):
    """`{"type": "tool_result", "tool_use_id", "content"?, "is_error"?}`."""

    type: Literal["tool_result"] = "tool_result"
    tool_use_id: str
    content: str | list[ContentBlock] | None = None
    is_error: bool | None = None


class ThinkingBlock(WireModel):
    """`{"type": "thinking", "thinking", "signature"}`."""

    type: Literal["thinking"] = "thinking"
    thinking: str
    signature: str = ""


class RedactedThinkingBlock(WireModel):
    """`{"type": "redacted_thinking", "data"}` (opaque)."""

    type: Literal["redacted_thinking"] = "redacted_thinking"
    data: str


class UnknownBlock(WireModel):
    """Any other block (server tools, search results, tool references): kept, not failed."""

    type: str


_BLOCK_TYPES = frozenset(
    {"text", "image", "document", "tool_use", "tool_result", "thinking", "redacted_thinking"}
)

ContentBlock = Annotated[
    Annotated[TextBlock, Tag("text")]
    | Annotated[ImageBlock, Tag("image")]
    | Annotated[DocumentBlock, Tag("document")]
    | Annotated[ToolUseBlock, Tag("tool_use")]
    | Annotated[ToolResultBlock, Tag("tool_result")]
    | Annotated[ThinkingBlock, Tag("thinking")]
    | Annotated[RedactedThinkingBlock, Tag("redacted_thinking")]
    | Annotated[UnknownBlock, Tag("unknown")],
    Discriminator(tag_of(_BLOCK_TYPES)),
]


ToolResultBlock.model_rebuild()


# -- request ---------------------------------------------------------------------------------


class InputMessage(WireModel):
    """One turn: `user`, `assistant` or (mid-conversation) `system`; text or blocks."""

    role: Literal["user", "assistant", "system"]
    content: str | list[ContentBlock]


class Tool(WireModel):
    """A custom tool `{name, description?, input_schema}`; server tools carry a dated `type`."""

    name: str
    description: str | None = None
    input_schema: dict[str, Any] | None = None
    type: str | None = None
    strict: bool | None = None


class ToolChoice(WireModel):
    """`{"type": "auto" | "any" | "tool" | "none", "name"?, "disable_parallel_tool_use"?}`."""

    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class ThinkingConfig(WireModel):
    """`{"type": "enabled", "budget_tokens"}`, `{"type": "disabled"}` or `{"type": "adaptive"}`."""

    type: str
    budget_tokens: int | None = None


class OutputConfig(WireModel):
    """`{"effort"?, "format"?: {"type": "json_schema", "schema"}}`."""

    effort: str | None = None
    format: dict[str, Any] | None = None


class Metadata(WireModel):
    """`{"user_id"?}`; Claude Code puts an opaque JSON string here."""

    user_id: str | None = None


class MessagesRequest(WireModel):
    """`POST /v1/messages` body. Unknown fields (context_management, betas...) are kept."""

    model: str
    max_tokens: int = Field(ge=1)
    messages: list[InputMessage]
    system: str | list[TextBlock] | None = None
    stop_sequences: list[str] | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    stream: bool | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    metadata: Metadata | None = None
    thinking: ThinkingConfig | None = None
    output_config: OutputConfig | None = None


class CountTokensRequest(WireModel):
    """`POST /v1/messages/count_tokens` body: a create request without `max_tokens`."""

    model: str
    messages: list[InputMessage]
    system: str | list[TextBlock] | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    thinking: ThinkingConfig | None = None


class CountTokensResponse(WireModel):
    """`{"input_tokens": N}`."""

    input_tokens: int


# -- reply -----------------------------------------------------------------------------------


class Usage(WireModel):
    """Token counts. `input_tokens` excludes cached tokens (unlike OpenAI's prompt_tokens)."""

    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None


class Message(WireModel):
    """A reply (`type: "message"`); also the `message` of `message_start` (empty content)."""

    wire_nulls: ClassVar[frozenset[str]] = frozenset({"stop_reason", "stop_sequence"})

    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    model: str
    content: list[ContentBlock] = Field(default_factory=list)
    stop_reason: StopReason | None = None
    stop_sequence: str | None = None
    usage: Usage


# -- stream events ---------------------------------------------------------------------------


class MessageStartEvent(WireModel):
    """First event: the message with empty content and the prompt's usage."""

    type: Literal["message_start"] = "message_start"
    message: Message


class ContentBlockStartEvent(WireModel):
    """Opens block `index` (text with `""`, thinking, tool_use with `input: {}`...)."""

    type: Literal["content_block_start"] = "content_block_start"
    index: int
    content_block: ContentBlock


class TextDelta(WireModel):
    """`{"type": "text_delta", "text"}`."""

    type: Literal["text_delta"] = "text_delta"
    text: str


class InputJSONDelta(WireModel):
    """`{"type": "input_json_delta", "partial_json"}`: fragments concatenate to one object."""

    type: Literal["input_json_delta"] = "input_json_delta"
    partial_json: str


class ThinkingDelta(WireModel):
    """`{"type": "thinking_delta", "thinking"}`."""

    type: Literal["thinking_delta"] = "thinking_delta"
    thinking: str


class SignatureDelta(WireModel):
    """`{"type": "signature_delta", "signature"}`: sent once, just before the block stops."""

    type: Literal["signature_delta"] = "signature_delta"
    signature: str


class UnknownDelta(WireModel):
    """Any other delta (`citations_delta`...): kept."""

    type: str


_DELTA_TYPES = frozenset({"text_delta", "input_json_delta", "thinking_delta", "signature_delta"})

BlockDelta = Annotated[
    Annotated[TextDelta, Tag("text_delta")]
    | Annotated[InputJSONDelta, Tag("input_json_delta")]
    | Annotated[ThinkingDelta, Tag("thinking_delta")]
    | Annotated[SignatureDelta, Tag("signature_delta")]
    | Annotated[UnknownDelta, Tag("unknown")],
    Discriminator(tag_of(_DELTA_TYPES)),
]


class ContentBlockDeltaEvent(WireModel):
    """A piece of block `index`: text_delta, input_json_delta, thinking_delta, signature_delta."""

    type: Literal["content_block_delta"] = "content_block_delta"
    index: int
    delta: BlockDelta


class ContentBlockStopEvent(WireModel):
    """Closes block `index`."""

    type: Literal["content_block_stop"] = "content_block_stop"
    index: int


class MessageDelta(WireModel):
    """`{"stop_reason", "stop_sequence"}` of the final `message_delta`."""

    wire_nulls: ClassVar[frozenset[str]] = frozenset({"stop_reason", "stop_sequence"})

    stop_reason: StopReason | None = None
    stop_sequence: str | None = None


class MessageDeltaUsage(WireModel):
    """Cumulative usage: `output_tokens` overwrites; the others overwrite when present."""

    output_tokens: int
    input_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None


class MessageDeltaEvent(WireModel):
    """The stop reason and the final usage."""

    type: Literal["message_delta"] = "message_delta"
    delta: MessageDelta
    usage: MessageDeltaUsage


class MessageStopEvent(WireModel):
    """Last event of a good stream."""

    type: Literal["message_stop"] = "message_stop"


class PingEvent(WireModel):
    """Keep-alive; may come anywhere."""

    type: Literal["ping"] = "ping"


class ErrorBody(WireModel):
    """`{"type": "<error type>", "message"}`."""

    type: str
    message: str


class ErrorEvent(WireModel):
    """A mid-stream error; it ends the stream."""

    type: Literal["error"] = "error"
    error: ErrorBody


StreamEvent = Annotated[
    MessageStartEvent
    | ContentBlockStartEvent
    | ContentBlockDeltaEvent
    | ContentBlockStopEvent
    | MessageDeltaEvent
    | MessageStopEvent
    | PingEvent
    | ErrorEvent,
    Field(discriminator="type"),
]


class ErrorResponse(WireModel):
    """The error envelope `{"type": "error", "error": {...}, "request_id"?}`."""

    type: Literal["error"] = "error"
    error: ErrorBody
    request_id: str | None = None


# -- models ----------------------------------------------------------------------------------


class ModelInfo(WireModel):
    """One entry of `GET /v1/models` in Anthropic's shape."""

    type: Literal["model"] = "model"
    id: str
    display_name: str
    created_at: str = "1970-01-01T00:00:00Z"
    lifecycle: Literal["active", "deprecated", "retired"] = "active"
    max_input_tokens: int | None = None
    max_tokens: int | None = None


class ModelList(WireModel):
    """A page of models: `data`, `has_more`, `first_id`, `last_id`."""

    wire_nulls: ClassVar[frozenset[str]] = frozenset({"first_id", "last_id"})

    data: list[ModelInfo]
    has_more: bool = False
    first_id: str | None = None
    last_id: str | None = None

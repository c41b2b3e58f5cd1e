"""Envelopes of the OpenAI Responses API (`POST /v1/responses`): the request and the response.

Field names follow the official SDK's types (openai-python `types/responses/`). Requests tolerate
unknown fields, unknown tool types and unknown input item types: the translation decides what
to serve, drop or refuse. The stream events are in `cortex.protocol.responses_events`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Discriminator, Field, Tag

from cortex.protocol.base import WireModel, tag_of

__all__ = [
    "ContentPart",
    "FunctionCallItem",
    "FunctionCallOutputItem",
    "FunctionTool",
    "IncompleteDetails",
    "InputContent",
    "InputFile",
    "InputImage",
    "InputItem",
    "InputMessage",
    "InputText",
    "InputTokensDetails",
    "ItemReference",
    "ItemStatus",
    "MessageContent",
    "OtherInputItem",
    "OtherTool",
    "OutputContent",
    "OutputItem",
    "OutputMessage",
    "OutputText",
    "OutputTokensDetails",
    "ReasoningConfig",
    "ReasoningItem",
    "ReasoningText",
    "Refusal",
    "Response",
    "ResponseError",
    "ResponseStatus",
    "ResponseUsage",
    "ResponsesRequest",
    "SummaryText",
    "TextConfig",
    "TextFormat",
    "TextFormatJsonObject",
    "TextFormatJsonSchema",
    "TextFormatText",
    "Tool",
    "ToolChoice",
    "ToolChoiceAllowed",
    "ToolChoiceFunction",
    "ToolChoiceOther",
]

ResponseStatus = Literal["completed", "failed", "in_progress", "cancelled", "queued", "incomplete"]
ItemStatus = Literal["in_progress", "completed", "incomplete"]


def _item_kind(value: Any) -> str:
    """The tag of an input item: its `type` ("message" when absent), "other" when unknown."""
    if isinstance(value, Mapping):
        kind = value.get("type", "message")
    else:
        kind = getattr(value, "type", None)
    return kind if isinstance(kind, str) and kind in _INPUT_ITEMS else "other"


# -- content parts ---------------------------------------------------------------------------


class InputText(WireModel):
    """A text part of an input message."""

    type: Literal["input_text"] = "input_text"
    text: str


class InputImage(WireModel):
    """An image part: a URL (http(s) or `data:` URI) or an uploaded file's id."""

    type: Literal["input_image"] = "input_image"
    image_url: str | None = None
    file_id: str | None = None
    detail: str = "auto"


class InputFile(WireModel):
    """A file part: inline base64 data, an uploaded file's id or a URL."""

    type: Literal["input_file"] = "input_file"
    file_data: str | None = None
    file_id: str | None = None
    file_url: str | None = None
    filename: str | None = None


class OutputText(WireModel):
    """Assistant text: in output messages, and in assistant history sent back as input."""

    type: Literal["output_text"] = "output_text"
    text: str
    annotations: list[Any] = Field(default_factory=list)
    logprobs: list[Any] | None = Field(default_factory=list)


class Refusal(WireModel):
    """The model declined to answer."""

    type: Literal["refusal"] = "refusal"
    refusal: str


class ReasoningText(WireModel):
    """Raw reasoning text of a reasoning item."""

    type: Literal["reasoning_text"] = "reasoning_text"
    text: str


class SummaryText(WireModel):
    """A reasoning summary: cortex has no summarizer, so when a request asks for a summary
    (`reasoning.summary`) the whole thought is written as one."""

    type: Literal["summary_text"] = "summary_text"
    text: str


InputContent = Annotated[InputText | InputImage | InputFile, Field(discriminator="type")]
"""A part of user, system or developer content, and of a function call's output."""

MessageContent = Annotated[
    InputText | InputImage | InputFile | OutputText | Refusal, Field(discriminator="type")
]
"""A part of any input message, assistant history included."""

OutputContent = Annotated[OutputText | Refusal, Field(discriminator="type")]
"""A part of an output message."""

ContentPart = Annotated[OutputText | Refusal | ReasoningText, Field(discriminator="type")]
"""A part announced by the content-part stream events."""

# -- input items -----------------------------------------------------------------------------


class InputMessage(WireModel):
    """A message in `input`; `type` may be left out (the SDK's "easy" message)."""

    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[MessageContent]
    id: str | None = None
    status: ItemStatus | None = None


class FunctionCallItem(WireModel):
    """The model calling a function: an output item, echoed back as an input item."""

    type: Literal["function_call"] = "function_call"
    id: str | None = None
    call_id: str
    name: str
    arguments: str
    status: ItemStatus | None = None


class FunctionCallOutputItem(WireModel):
    """The caller's result for the function call with the same `call_id`."""

    type: Literal["function_call_output"] = "function_call_output"
    id: str | None = None
    call_id: str
    output: str | list[InputContent]
    status: ItemStatus | None = None


class ReasoningItem(WireModel):
    """The model's reasoning: raw text in `content`, or in `summary` when the request asked
    for a summary (`reasoning.summary`)."""

    type: Literal["reasoning"] = "reasoning"
    id: str | None = None
    summary: list[SummaryText] = Field(default_factory=list)
    content: list[ReasoningText] | None = None
    encrypted_content: str | None = None
    status: ItemStatus | None = None


class ItemReference(WireModel):
    """A reference to a stored item (cortex stores none, so these are refused)."""

    type: Literal["item_reference"] = "item_reference"
    id: str


class OtherInputItem(WireModel):
    """An input item of a type cortex does not serve (hosted tool calls and the like)."""

    type: str


_INPUT_ITEMS = frozenset(
    {"message", "function_call", "function_call_output", "reasoning", "item_reference"}
)

InputItem = Annotated[
    Annotated[InputMessage, Tag("message")]
    | Annotated[FunctionCallItem, Tag("function_call")]
    | Annotated[FunctionCallOutputItem, Tag("function_call_output")]
    | Annotated[ReasoningItem, Tag("reasoning")]
    | Annotated[ItemReference, Tag("item_reference")]
    | Annotated[OtherInputItem, Tag("other")],
    Discriminator(_item_kind),
]
"""One item of `input`: a message when it has no `type`."""

# -- tools, tool choice, text format, reasoning ----------------------------------------------


class FunctionTool(WireModel):
    """A function the model may call; flat, unlike Chat's `{"function": {...}}`."""

    type: Literal["function"] = "function"
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class OtherTool(WireModel):
    """A tool of another type (`web_search`, `file_search`, `namespace`, ...): dropped."""

    type: str


Tool = Annotated[
    Annotated[FunctionTool, Tag("function")] | Annotated[OtherTool, Tag("other")],
    Discriminator(tag_of(frozenset({"function"}), fallback="other")),
]
"""A tool in `tools`."""


class ToolChoiceFunction(WireModel):
    """Force a call of the named function."""

    type: Literal["function"] = "function"
    name: str


class ToolChoiceAllowed(WireModel):
    """Restrict the model to a subset of `tools` (`mode` auto or required)."""

    type: Literal["allowed_tools"] = "allowed_tools"
    mode: Literal["auto", "required"] = "auto"
    tools: list[dict[str, Any]] = Field(default_factory=list)


class ToolChoiceOther(WireModel):
    """A choice naming a hosted tool (`web_search`, `mcp`, ...), which cortex does not run."""

    type: str


ToolChoice = (
    Literal["none", "auto", "required"]
    | Annotated[
        Annotated[ToolChoiceFunction, Tag("function")]
        | Annotated[ToolChoiceAllowed, Tag("allowed_tools")]
        | Annotated[ToolChoiceOther, Tag("other")],
        Discriminator(tag_of(frozenset({"function", "allowed_tools"}), fallback="other")),
    ]
)
"""How the model picks tools."""


class TextFormatText(WireModel):
    """Plain text output (the default)."""

    type: Literal["text"] = "text"


class TextFormatJsonObject(WireModel):
    """Any JSON object."""

    type: Literal["json_object"] = "json_object"


class TextFormatJsonSchema(WireModel):
    """JSON matching `schema`; flat, unlike Chat's nested `json_schema`."""

    type: Literal["json_schema"] = "json_schema"
    name: str
    schema_: dict[str, Any] = Field(alias="schema")
    description: str | None = None
    strict: bool | None = None


TextFormat = Annotated[
    TextFormatText | TextFormatJsonObject | TextFormatJsonSchema, Field(discriminator="type")
]
"""The format of the output text."""


class TextConfig(WireModel):
    """The `text` field: output format and verbosity."""

    format: TextFormat | None = None
    verbosity: str | None = None


class ReasoningConfig(WireModel):
    """The `reasoning` field: effort and summary preferences."""

    effort: str | None = None
    summary: str | None = None


# -- the request -----------------------------------------------------------------------------


class ResponsesRequest(WireModel):
    """The body of `POST /v1/responses` (`ResponseCreateParams`).

    `previous_response_id`, `conversation`, `background` and `item_reference` items need
    stored responses; they are parsed here and refused by the translation with a 400.
    """

    model: str
    input: str | list[InputItem] = Field(default_factory=list)
    instructions: str | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    max_output_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    text: TextConfig | None = None
    reasoning: ReasoningConfig | None = None
    stream: bool | None = False
    store: bool | None = None
    include: list[str] | None = None
    prompt_cache_key: str | None = None
    client_metadata: dict[str, Any] | None = None
    metadata: dict[str, str] | None = None
    previous_response_id: str | None = None
    conversation: str | dict[str, Any] | None = None
    background: bool | None = None
    user: str | None = None
    safety_identifier: str | None = None
    truncation: str | None = None
    service_tier: str | None = None


# -- the response ----------------------------------------------------------------------------


class OutputMessage(WireModel):
    """An assistant message in `output`."""

    type: Literal["message"] = "message"
    id: str
    role: Literal["assistant"] = "assistant"
    status: ItemStatus
    content: list[OutputContent] = Field(default_factory=list)


OutputItem = Annotated[
    OutputMessage | FunctionCallItem | ReasoningItem, Field(discriminator="type")
]
"""One item of a response's `output`."""


class InputTokensDetails(WireModel):
    """Prompt tokens read from the prefix cache (written: not reported by local engines)."""

    cached_tokens: int = 0
    cache_write_tokens: int = 0


class OutputTokensDetails(WireModel):
    """Generated tokens spent on reasoning."""

    reasoning_tokens: int = 0


class ResponseUsage(WireModel):
    """Token counts; `total_tokens = input_tokens + output_tokens`."""

    input_tokens: int
    input_tokens_details: InputTokensDetails = Field(default_factory=InputTokensDetails)
    output_tokens: int
    output_tokens_details: OutputTokensDetails = Field(default_factory=OutputTokensDetails)
    total_tokens: int


class ResponseError(WireModel):
    """Why a response failed (`code` as the API spells it, e.g. `server_error`)."""

    code: str
    message: str


class IncompleteDetails(WireModel):
    """Why a response is incomplete."""

    reason: Literal["max_output_tokens", "content_filter"] | None = None


class Response(WireModel):
    """The response object, returned whole or carried by the lifecycle stream events."""

    wire_nulls: ClassVar[frozenset[str]] = frozenset(
        {
            "error",
            "incomplete_details",
            "instructions",
            "max_output_tokens",
            "previous_response_id",
            "temperature",
            "top_p",
            "usage",
        }
    )

    id: str
    object: Literal["response"] = "response"
    created_at: int
    completed_at: int | None = None
    status: ResponseStatus
    model: str
    output: list[OutputItem] = Field(default_factory=list)
    usage: ResponseUsage | None = None
    error: ResponseError | None = None
    incomplete_details: IncompleteDetails | None = None
    instructions: str | None = None
    tools: list[FunctionTool] = Field(default_factory=list)
    tool_choice: ToolChoice = "auto"
    parallel_tool_calls: bool = True
    max_output_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    text: TextConfig | None = None
    reasoning: ReasoningConfig | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    previous_response_id: str | None = None
    prompt_cache_key: str | None = None
    store: bool = False
    background: bool = False
    truncation: str = "disabled"

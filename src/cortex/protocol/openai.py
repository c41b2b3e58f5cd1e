"""Pydantic envelopes of the OpenAI wire dialect: chat, legacy completions, embeddings, models."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Discriminator, Field, Tag, model_validator

from cortex.protocol.base import WireModel, tag_of

__all__ = [
    "ChatCompletion",
    "ChatCompletionChunk",
    "ChatCompletionMessage",
    "ChatCompletionRequest",
    "ChatMessage",
    "Choice",
    "ChoiceLogprobs",
    "ChunkChoice",
    "ChunkDelta",
    "Completion",
    "CompletionChoice",
    "CompletionRequest",
    "CompletionTokensDetails",
    "ContentPart",
    "Embedding",
    "EmbeddingList",
    "EmbeddingRequest",
    "EmbeddingUsage",
    "ErrorBody",
    "ErrorResponse",
    "FilePart",
    "FinishReason",
    "FunctionCall",
    "FunctionDefinition",
    "ImagePart",
    "ImageURL",
    "InputAudioPart",
    "JSONSchemaFormat",
    "Model",
    "ModelList",
    "NamedToolChoice",
    "PromptTokensDetails",
    "ResponseFormat",
    "StreamOptions",
    "TextPart",
    "TokenLogprob",
    "Tool",
    "ToolCall",
    "ToolCallDelta",
    "TopLogprob",
    "UnknownPart",
    "Usage",
]

FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "function_call"]


# -- content parts -------------------------------------------------------------------------


class TextPart(WireModel):
    """`{"type": "text", "text": ...}`."""

    type: Literal["text"] = "text"
    text: str


class ImageURL(WireModel):
    """An image by `http(s)` URL or `data:` URI; `detail` is auto, low or high."""

    url: str
    detail: str | None = None


class ImagePart(WireModel):
    """`{"type": "image_url", "image_url": {"url": ...}}`."""

    type: Literal["image_url"] = "image_url"
    image_url: ImageURL


class InputAudioPart(WireModel):
    """`{"type": "input_audio", "input_audio": {"data", "format"}}` (not served locally)."""

    type: Literal["input_audio"] = "input_audio"
    input_audio: dict[str, Any]


class FilePart(WireModel):
    """`{"type": "file", "file": {"file_data"?, "file_id"?, "filename"?}}`."""

    type: Literal["file"] = "file"
    file: dict[str, Any]


class UnknownPart(WireModel):
    """Any other part type (`refusal` parts in history, newer kinds): kept as is."""

    type: str


_PART_TYPES = frozenset({"text", "image_url", "input_audio", "file"})

ContentPart = Annotated[
    Annotated[TextPart, Tag("text")]
    | Annotated[ImagePart, Tag("image_url")]
    | Annotated[InputAudioPart, Tag("input_audio")]
    | Annotated[FilePart, Tag("file")]
    | Annotated[UnknownPart, Tag("unknown")],
    Discriminator(tag_of(_PART_TYPES)),
]


# -- tools -----------------------------------------------------------------------------------


class FunctionDefinition(WireModel):
    """A function a model may call: `name`, `description`, JSON Schema `parameters`."""

    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(WireModel):
    """`{"type": "function", "function": {...}}`; other tool types keep `function` empty."""

    type: str = "function"
    function: FunctionDefinition | None = None


class FunctionCall(WireModel):
    """A function name and its arguments, a JSON string on the wire."""

    name: str
    arguments: str = ""


class ToolCall(WireModel):
    """One tool call of an assistant message: `{id, type: "function", function}`."""

    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class NamedToolChoice(WireModel):
    """`{"type": "function", "function": {"name": ...}}` (or `allowed_tools` and kin)."""

    type: str = "function"
    function: dict[str, Any] | None = None
    allowed_tools: dict[str, Any] | None = None


class JSONSchemaFormat(WireModel):
    """The `json_schema` of a `response_format`: `name`, `schema`, `strict`, `description`."""

    name: str = "output"
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None
    description: str | None = None


class ResponseFormat(WireModel):
    """`{"type": "text" | "json_object" | "json_schema", "json_schema"?}`."""

    type: str
    json_schema: JSONSchemaFormat | None = None


class StreamOptions(WireModel):
    """`{"include_usage"?: bool}`: ask for a final usage chunk with `choices: []`."""

    include_usage: bool | None = None


# -- chat request ----------------------------------------------------------------------------


class ChatMessage(WireModel):
    """One message of a chat request, any role (system, developer, user, assistant, tool).

    One permissive class instead of a union per role: the translator checks what each role
    needs. `reasoning_content` / `reasoning` carry a local model's thinking in history.
    `content` is always sent (`null` for an assistant turn with only tool calls).
    """

    wire_nulls: ClassVar[frozenset[str]] = frozenset({"content"})

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    function_call: FunctionCall | None = None
    refusal: str | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None


class ChatCompletionRequest(WireModel):
    """`POST /v1/chat/completions` body, plus the vLLM-style extras a neuron accepts."""

    model: str
    messages: list[ChatMessage]
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    n: int | None = None
    stop: str | list[str] | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    tools: list[Tool] | None = None
    tool_choice: str | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    functions: list[FunctionDefinition] | None = None
    function_call: str | dict[str, Any] | None = None
    response_format: ResponseFormat | None = None
    seed: int | None = None
    user: str | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    reasoning_effort: str | None = None
    metadata: dict[str, Any] | None = None
    # vLLM / llama.cpp extras, understood by cortex neurons.
    top_k: int | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    thinking_token_budget: int | None = None
    stop_token_ids: list[int] | None = None


# -- chat response ---------------------------------------------------------------------------


class TopLogprob(WireModel):
    """One alternative token with its log-probability."""

    token: str
    logprob: float
    bytes: list[int] | None = None


class TokenLogprob(WireModel):
    """One sampled token with its log-probability and the top alternatives."""

    token: str
    logprob: float
    bytes: list[int] | None = None
    top_logprobs: list[TopLogprob] = Field(default_factory=list)


class ChoiceLogprobs(WireModel):
    """`{"content": [TokenLogprob...]}`."""

    content: list[TokenLogprob] | None = None
    refusal: list[TokenLogprob] | None = None


class ChatCompletionMessage(WireModel):
    """The assistant message of a non-streamed reply; `content` is null when only tools."""

    wire_nulls: ClassVar[frozenset[str]] = frozenset({"content", "refusal"})

    role: Literal["assistant"] = "assistant"
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[ToolCall] | None = None
    reasoning_content: str | None = None


class Choice(WireModel):
    """One choice of a `chat.completion`."""

    wire_nulls: ClassVar[frozenset[str]] = frozenset({"logprobs"})

    index: int = 0
    message: ChatCompletionMessage
    finish_reason: FinishReason | None = None
    logprobs: ChoiceLogprobs | None = None


class PromptTokensDetails(WireModel):
    """`{"cached_tokens": N}`: prompt tokens served from the prefix cache."""

    cached_tokens: int | None = None


class CompletionTokensDetails(WireModel):
    """`{"reasoning_tokens": N}`."""

    reasoning_tokens: int | None = None


class Usage(WireModel):
    """Token counts; `prompt_tokens` includes cached tokens (unlike Anthropic's input)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails | None = None
    completion_tokens_details: CompletionTokensDetails | None = None

    @model_validator(mode="before")
    @classmethod
    def _total(cls, data: Any) -> Any:
        # Some servers leave out total_tokens; it is always the sum.
        if isinstance(data, dict) and data.get("total_tokens") is None:
            prompt, completion = data.get("prompt_tokens") or 0, data.get("completion_tokens") or 0
            return {**data, "total_tokens": prompt + completion}
        return data


class ChatCompletion(WireModel):
    """A non-streamed chat reply (`object: "chat.completion"`)."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage | None = None
    system_fingerprint: str | None = None


class ToolCallDelta(WireModel):
    """A fragment of tool call `index`: id, type and name once, then argument pieces."""

    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: dict[str, Any] | None = None


class ChunkDelta(WireModel):
    """The `delta` of a stream chunk; only the keys that changed are present."""

    role: str | None = None
    content: str | None = None
    refusal: str | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


class ChunkChoice(WireModel):
    """One choice of a stream chunk."""

    wire_nulls: ClassVar[frozenset[str]] = frozenset({"finish_reason"})

    index: int = 0
    delta: ChunkDelta = Field(default_factory=ChunkDelta)
    finish_reason: FinishReason | None = None
    logprobs: ChoiceLogprobs | None = None


class ChatCompletionChunk(WireModel):
    """One streamed `chat.completion.chunk`; the usage chunk has `choices: []`."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice] = Field(default_factory=list)
    usage: Usage | None = None


# -- legacy completions ----------------------------------------------------------------------


class CompletionRequest(WireModel):
    """`POST /v1/completions` body (prompt as text, texts, token ids or lists of them)."""

    model: str
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    n: int | None = None
    stop: str | list[str] | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    logprobs: int | None = None
    echo: bool | None = None
    suffix: str | None = None
    seed: int | None = None
    user: str | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None


class CompletionChoice(WireModel):
    """One choice of a `text_completion` (also the shape of its stream chunks)."""

    wire_nulls: ClassVar[frozenset[str]] = frozenset({"finish_reason", "logprobs"})

    index: int = 0
    text: str
    finish_reason: Literal["stop", "length", "content_filter"] | None = None
    logprobs: dict[str, Any] | None = None


class Completion(WireModel):
    """A legacy completion reply or stream chunk (`object: "text_completion"`)."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


# -- embeddings, models, errors --------------------------------------------------------------


class EmbeddingRequest(WireModel):
    """`POST /v1/embeddings`; the SDK sends `encoding_format: "base64"` by default."""

    model: str
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: int | None = None
    user: str | None = None


class Embedding(WireModel):
    """One vector: floats, or base64 of little-endian float32 bytes."""

    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingUsage(WireModel):
    """`{"prompt_tokens", "total_tokens"}`."""

    prompt_tokens: int
    total_tokens: int


class EmbeddingList(WireModel):
    """The reply of `/v1/embeddings`."""

    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage


class Model(WireModel):
    """One entry of `GET /v1/models`; extra fields (Anthropic's superset) are kept."""

    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "cortex"


class ModelList(WireModel):
    """`{"object": "list", "data": [Model...]}`."""

    object: Literal["list"] = "list"
    data: list[Model]


class ErrorBody(WireModel):
    """`{"message", "type", "param", "code"}`; `param` and `code` are always sent."""

    wire_nulls: ClassVar[frozenset[str]] = frozenset({"param", "code"})

    message: str
    type: str | None = None
    param: str | None = None
    code: str | int | None = None


class ErrorResponse(WireModel):
    """The OpenAI error envelope `{"error": {...}}` (also sent mid-stream as a `data:` line)."""

    error: ErrorBody

"""The OpenAI requests a neuron accepts, validated into `GenerateRequest`s (wrong input -> 400).

Besides the standard fields, chat and completion requests take vLLM's `top_k`, `min_p`,
`repetition_penalty` and `ignore_eos`, and chat requests vLLM's `add_generation_prompt`,
`continue_final_message` (an assistant prefill is continued, not closed),
`chat_template_kwargs`, `stop_token_ids` and `thinking_token_budget`. A reasoning model's
thought is switched by `chat_template_kwargs.enable_thinking` or, when that is absent, by
`reasoning_effort` (`none`/`minimal` off, any other effort on). Unknown fields are ignored, as
OpenAI-compatible servers do.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from cortex.config.schema import Quant
from cortex.errors import InvalidRequestError
from cortex.jsonbody import parse_json_object
from cortex.neuron.model_ids import MODEL_ID_PATTERN, check_model_id
from cortex.neuron.pull import SOURCE_PATTERN
from cortex.neuron.types import GenerateRequest, SamplingOptions

__all__ = [
    "ChatCompletionRequest",
    "CompletionRequest",
    "Integral",
    "ModelRequest",
    "TokenId",
    "parse_body",
    "to_generate_request",
]


ModelId = Annotated[
    str,
    Field(min_length=1, max_length=256, json_schema_extra={"pattern": MODEL_ID_PATTERN}),
]
"""A model id: checked against `MODEL_ID_PATTERN` by `check_model_id` (400 with its words)."""


def _integral(value: Any) -> Any:
    """JSON Schema counts `2.0` as an integer: take it, and nothing else that is not an int."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


Integral = BeforeValidator(_integral)
"""Makes a strict `int` also take integral floats (`3.0`), as JSON Schema's `integer` does."""
TokenId = Annotated[int, Field(ge=0), Integral]


MAX_SAMPLES = 64
"""The most samples (`n`) one request may ask for."""


class _Body(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")


class StreamOptions(_Body):
    """`stream_options`: `include_usage` adds a last chunk with the usage."""

    include_usage: bool = False


class FunctionDefinition(_Body):
    """A function tool: its name, description and JSON Schema of the arguments."""

    name: Annotated[str, Field(min_length=1, max_length=128)]
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(_Body):
    """`{"type": "function", "function": {...}}`."""

    type: Literal["function"] = "function"
    function: FunctionDefinition


class ToolCallFunction(_Body):
    """The function part of an assistant's tool call."""

    name: str
    arguments: str


class MessageToolCall(_Body):
    """A tool call in an assistant message of the history."""

    id: str
    type: Literal["function"] = "function"
    function: ToolCallFunction


class ContentPart(_Body):
    """A part of a message's content; only `text` parts are understood (the models read text)."""

    type: Literal["text"]
    text: str


class ChatMessage(_Body):
    """One message of the conversation."""

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[MessageToolCall] | None = None
    tool_call_id: str | None = None


class JsonSchemaFormat(_Body):
    """The `json_schema` of a `response_format`: the schema, and whether it is `strict`."""

    name: str | None = None
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: bool | None = None


class PlainFormat(_Body):
    """`response_format` of `text` or `json_object`."""

    type: Literal["text", "json_object"]


class SchemaFormat(_Body):
    """`response_format` of `json_schema`: structured output, the schema required."""

    type: Literal["json_schema"]
    json_schema: JsonSchemaFormat


ResponseFormat = Annotated[PlainFormat | SchemaFormat, Field(discriminator="type")]


class _Sampling(_Body):
    model: ModelId
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: Annotated[int, Field(ge=1), Integral] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    top_k: Annotated[int, Field(ge=-1), Integral] | None = None
    min_p: Annotated[float, Field(ge=0, le=1)] | None = None
    repetition_penalty: Annotated[float, Field(gt=0, le=10)] | None = None
    presence_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    frequency_penalty: Annotated[float, Field(ge=-2, le=2)] = 0.0
    seed: Annotated[int, Field(ge=-(2**63), lt=2**63), Integral] | None = None
    stop: str | list[str] | None = None
    stop_token_ids: list[TokenId] | None = None
    n: Annotated[int, Field(ge=1, le=MAX_SAMPLES), Integral] = 1
    ignore_eos: bool = False
    response_format: ResponseFormat | None = None


class ChatCompletionRequest(_Sampling):
    """`POST /v1/chat/completions`."""

    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_completion_tokens: Annotated[int, Field(ge=1), Integral] | None = None
    logprobs: bool = False
    top_logprobs: Annotated[int, Field(ge=0, le=20), Integral] | None = None
    tools: list[Tool] | None = None
    tool_choice: str | dict[str, Any] | None = None
    add_generation_prompt: bool = True
    continue_final_message: bool = False
    chat_template_kwargs: dict[str, Any] | None = None
    reasoning_effort: str | None = None
    thinking_token_budget: Annotated[int, Field(ge=0), Integral] | None = None


class CompletionRequest(_Sampling):
    """`POST /v1/completions` (one prompt: text or token ids)."""

    prompt: (
        str
        | Annotated[list[str], Field(min_length=1, max_length=1)]
        | Annotated[list[TokenId], Field(min_length=1)]
        | Annotated[
            list[Annotated[list[TokenId], Field(min_length=1)]], Field(min_length=1, max_length=1)
        ]
    )
    logprobs: Annotated[int, Field(ge=0, le=20), Integral] | None = None
    echo: Literal[False] = False
    suffix: None = None


class ModelRequest(_Body):
    """`POST /models/load` and `/models/unload`: `{"model": id}`; a load may name the `source`
    to pull the model from when the node lacks it (`hf:ORG/NAME[:QUANT]`) and the `quant` to
    hold its weights in (a models.toml profile's; the node's own `[models.ID] quant` wins)."""

    model: ModelId
    drain_timeout_s: Annotated[float, Field(ge=0)] | None = None
    source: Annotated[str, Field(max_length=96, pattern=SOURCE_PATTERN)] | None = None
    quant: Quant | None = None


class PullRequest(_Body):
    """`POST /models/pull`: `{"source": "hf:ORG/NAME[:QUANT]"}`, optionally the `model` id to
    list it under (default: the hub's)."""

    source: Annotated[str, Field(max_length=96, pattern=SOURCE_PATTERN)]
    model: ModelId | None = None


_T = TypeVar("_T", bound=BaseModel)
# The names pydantic gives a union's branches in error locations (`str`, `list[ContentPart]`...).
_UNION_TAG = re.compile(r"^(str|int|float|bool|none|[a-z-]+\[.*\]|[A-Z]\w*)$")


def parse_body(raw: bytes, model: type[_T]) -> _T:
    """Parse a JSON body into `model`.

    Raises:
        InvalidRequestError: not JSON, not an object, or a field of the wrong type or value
            (400, `param` names the field).
    """
    data = parse_json_object(raw)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        # Of a union's failed branches, the deepest says most (`content.0.type`, not `content`).
        error = max(exc.errors(), key=lambda e: len(e["loc"]))
        param = ".".join(str(p) for p in error["loc"] if not _UNION_TAG.match(str(p))) or None
        raise InvalidRequestError(f"{param}: {error['msg']}", param=param) from None


def _stop(stop: str | list[str] | None) -> tuple[str, ...]:
    if stop is None:
        return ()
    return (stop,) if isinstance(stop, str) else tuple(stop)


def _options(body: _Sampling, max_tokens: int | None, logprobs: bool, top: int) -> SamplingOptions:
    return SamplingOptions(
        temperature=body.temperature,
        top_p=body.top_p,
        top_k=None if body.top_k is None else max(0, body.top_k),
        min_p=body.min_p,
        repetition_penalty=body.repetition_penalty,
        presence_penalty=body.presence_penalty,
        frequency_penalty=body.frequency_penalty,
        seed=body.seed,
        stop=_stop(body.stop),
        stop_token_ids=tuple(body.stop_token_ids or ()),
        max_tokens=max_tokens,
        logprobs=logprobs,
        top_logprobs=top,
        ignore_eos=body.ignore_eos,
    )


def _message(message: ChatMessage) -> dict[str, Any]:
    content = message.content
    if isinstance(content, list):
        content = "".join(part.text for part in content)
    out: dict[str, Any] = {"role": message.role, "content": content}
    if message.name is not None:
        out["name"] = message.name
    if message.tool_call_id is not None:
        out["tool_call_id"] = message.tool_call_id
    if message.tool_calls:
        out["tool_calls"] = [_history_call(call) for call in message.tool_calls]
    extra = message.model_extra or {}
    thought = extra.get("reasoning_content") or extra.get("reasoning")
    if isinstance(thought, str) and thought:  # an earlier thought, for templates that render it
        out["reasoning_content"] = thought
    return out


def _history_call(call: MessageToolCall) -> dict[str, Any]:
    # Chat templates (Qwen, Llama 3, Hermes) read `arguments` as a mapping, as transformers does.
    try:
        arguments: Any = json.loads(call.function.arguments)
    except (json.JSONDecodeError, RecursionError):
        arguments = call.function.arguments
    return {
        "id": call.id,
        "type": "function",
        "function": {"name": call.function.name, "arguments": arguments},
    }


def _template_kwargs(body: ChatCompletionRequest) -> dict[str, Any] | None:
    """`chat_template_kwargs`, with `enable_thinking` from `reasoning_effort` when not given."""
    kwargs = dict(body.chat_template_kwargs or {})
    effort = body.reasoning_effort
    if effort is not None and "enable_thinking" not in kwargs:
        kwargs["enable_thinking"] = effort not in ("none", "minimal")
    return kwargs or body.chat_template_kwargs


def _response_format(body: _Sampling) -> dict[str, Any] | None:
    """`response_format` as the harness takes it: `{"type", "schema"?, "strict"?}`."""
    fmt = body.response_format
    if fmt is None or fmt.type == "text":
        return None
    if isinstance(fmt, PlainFormat):
        return {"type": "json_object"}
    return {
        "type": "json_schema",
        "schema": fmt.json_schema.schema_,
        "strict": bool(fmt.json_schema.strict),
    }


def to_generate_request(
    body: ChatCompletionRequest | CompletionRequest, request_id: str
) -> GenerateRequest:
    """Turn a validated OpenAI request into the harness's `GenerateRequest`.

    Raises:
        InvalidRequestError: an invalid model id, several prompts, `echo`/`suffix`, or image parts.
    """
    check_model_id(body.model)
    if isinstance(body, ChatCompletionRequest):
        max_tokens = body.max_completion_tokens or body.max_tokens
        tools = None
        if body.tools and body.tool_choice != "none":
            tools = [tool.model_dump(exclude_none=True) for tool in body.tools]
        return GenerateRequest(
            model=body.model,
            messages=[_message(m) for m in body.messages],
            tools=tools,
            sampling=_options(body, max_tokens, body.logprobs, body.top_logprobs or 0),
            request_id=request_id,
            tool_choice=body.tool_choice if tools else None,
            add_generation_prompt=body.add_generation_prompt,
            continue_final_message=body.continue_final_message,
            chat_template_kwargs=_template_kwargs(body),
            thinking_token_budget=body.thinking_token_budget,
            response_format=_response_format(body),
            n=body.n,
        )
    prompt = body.prompt
    if isinstance(prompt, list) and isinstance(prompt[0], str | list):
        prompt = prompt[0]  # a batch of one (the schema allows no more)
    assert isinstance(prompt, str) or all(isinstance(t, int) for t in prompt)
    wants_logprobs = body.logprobs is not None
    return GenerateRequest(
        model=body.model,
        prompt=prompt,
        sampling=_options(body, body.max_tokens or 16, wants_logprobs, body.logprobs or 0),
        request_id=request_id,
        response_format=_response_format(body),
        n=body.n,
    )

"""The OpenAI requests a neuron accepts, validated into `GenerateRequest`s (wrong input -> 400).

Besides the standard fields, chat and completion requests take vLLM's `top_k`, `min_p`,
`repetition_penalty` and `ignore_eos`. Unknown fields are ignored, as OpenAI-compatible servers do.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cortex.errors import InvalidRequestError
from cortex.neuron.registry import check_model_id
from cortex.neuron.types import GenerateRequest, SamplingOptions

__all__ = [
    "ChatCompletionRequest",
    "CompletionRequest",
    "ModelRequest",
    "parse_body",
    "to_generate_request",
]


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

    type: str
    text: str | None = None


class ChatMessage(_Body):
    """One message of the conversation."""

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[MessageToolCall] | None = None
    tool_call_id: str | None = None


class _Sampling(_Body):
    model: str
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    top_k: Annotated[int, Field(ge=-1)] | None = None
    min_p: Annotated[float, Field(ge=0, le=1)] | None = None
    repetition_penalty: Annotated[float, Field(gt=0, le=10)] | None = None
    presence_penalty: Annotated[float, Field(ge=-2, le=2)] = 0.0
    frequency_penalty: Annotated[float, Field(ge=-2, le=2)] = 0.0
    seed: int | None = None
    stop: str | list[str] | None = None
    n: Annotated[int, Field(ge=1, le=1)] = 1
    ignore_eos: bool = False


class ChatCompletionRequest(_Sampling):
    """`POST /v1/chat/completions`."""

    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    logprobs: bool = False
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    tools: list[Tool] | None = None
    tool_choice: str | dict[str, Any] | None = None


class CompletionRequest(_Sampling):
    """`POST /v1/completions` (one prompt: text or token ids)."""

    prompt: str | list[str] | list[int] | list[list[int]]
    logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    echo: bool = False
    suffix: str | None = None


class ModelRequest(_Body):
    """`POST /models/load` and `/models/unload`: `{"model": id}`."""

    model: str
    drain_timeout_s: Annotated[float, Field(ge=0)] | None = None


_T = TypeVar("_T", bound=BaseModel)


def parse_body(raw: bytes, model: type[_T]) -> _T:
    """Parse a JSON body into `model`.

    Raises:
        InvalidRequestError: not JSON, not an object, or a field of the wrong type or value
            (400, `param` names the field).
    """
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidRequestError(f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidRequestError("the body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        param = ".".join(str(part) for part in error["loc"]) or None
        more = len(exc.errors()) - 1
        extra = f" (and {more} more error{'s' if more > 1 else ''})" if more else ""
        raise InvalidRequestError(f"{param}: {error['msg']}{extra}", param=param) from None


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
        max_tokens=max_tokens,
        logprobs=logprobs,
        top_logprobs=top,
        ignore_eos=body.ignore_eos,
    )


def _message(message: ChatMessage, index: int) -> dict[str, Any]:
    content = message.content
    if isinstance(content, list):
        texts = []
        for j, part in enumerate(content):
            if part.type != "text" or part.text is None:
                raise InvalidRequestError(
                    f"content parts of type {part.type!r} are not supported (text only)",
                    param=f"messages.{index}.content.{j}.type",
                )
            texts.append(part.text)
        content = "".join(texts)
    out: dict[str, Any] = {"role": message.role, "content": content}
    if message.name is not None:
        out["name"] = message.name
    if message.tool_call_id is not None:
        out["tool_call_id"] = message.tool_call_id
    if message.tool_calls:
        out["tool_calls"] = [_history_call(call) for call in message.tool_calls]
    return out


def _history_call(call: MessageToolCall) -> dict[str, Any]:
    # Chat templates (Qwen, Llama 3, Hermes) read `arguments` as a mapping, as transformers does.
    try:
        arguments: Any = json.loads(call.function.arguments)
    except json.JSONDecodeError:
        arguments = call.function.arguments
    return {
        "id": call.id,
        "type": "function",
        "function": {"name": call.function.name, "arguments": arguments},
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
            messages=[_message(m, i) for i, m in enumerate(body.messages)],
            tools=tools,
            sampling=_options(body, max_tokens, body.logprobs, body.top_logprobs or 0),
            request_id=request_id,
        )
    if body.echo or body.suffix:
        raise InvalidRequestError("`echo` and `suffix` are not supported", param="echo")
    prompt = body.prompt
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], str | list):
        if len(prompt) != 1:
            raise InvalidRequestError("only one prompt per request is supported", param="prompt")
        prompt = prompt[0]
    if isinstance(prompt, list) and not prompt:
        raise InvalidRequestError("the prompt is empty", param="prompt")
    assert isinstance(prompt, str) or all(isinstance(t, int) for t in prompt)
    wants_logprobs = body.logprobs is not None
    return GenerateRequest(
        model=body.model,
        prompt=prompt,  # type: ignore[arg-type]  # narrowed by the assert above
        sampling=_options(body, body.max_tokens or 16, wants_logprobs, body.logprobs or 0),
        request_id=request_id,
    )

"""Responses API <-> OpenAI Chat: the request, the whole response, and what both share.

Served over a Chat backend (docs/responses.md): `instructions` and `system`/`developer`
messages become system messages, `function_call` items become assistant `tool_calls`,
`function_call_output` items become `tool` messages, flat function tools become nested Chat
tools, `text.format` becomes `response_format`, `max_output_tokens` becomes `max_tokens`.

Deliberately dropped: tools of any type but `function` (`web_search`, `file_search`,
`namespace`, `custom`, ...: cortex runs no hosted tools), input items of unknown types (calls
of those tools echoed back in history), `store`, `include`, `metadata`, `client_metadata`,
`truncation`, `service_tier`. Refused with a 400: anything that needs stored responses
(`previous_response_id`, `conversation`, `background`, `item_reference` items), uploaded files
(`file_id`, `file_url`), and a `tool_choice` naming a hosted tool.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from cortex.errors import (
    CortexError,
    InvalidRequestError,
    OverloadedError,
    RateLimitError,
    UpstreamError,
)
from cortex.protocol.openai import (
    ChatCompletion,
    ChatCompletionRequest,
    FunctionDefinition,
    JSONSchemaFormat,
    NamedToolChoice,
    ResponseFormat,
    StreamOptions,
    Tool,
    Usage,
)
from cortex.protocol.responses import (
    FunctionCallItem,
    FunctionTool,
    IncompleteDetails,
    InputTokensDetails,
    OutputContent,
    OutputItem,
    OutputMessage,
    OutputText,
    OutputTokensDetails,
    ReasoningItem,
    ReasoningText,
    Refusal,
    Response,
    ResponseError,
    ResponsesRequest,
    ResponseStatus,
    ResponseUsage,
    SummaryText,
    TextConfig,
    TextFormatJsonObject,
    TextFormatJsonSchema,
    TextFormatText,
    ToolChoiceAllowed,
    ToolChoiceFunction,
)
from cortex.translate.ids import IdFactory
from cortex.translate.mapping import refuse_samples
from cortex.translate.responses_input import input_to_messages

__all__ = [
    "openai_response_to_responses",
    "parse_responses_request",
    "response_error",
    "response_shell",
    "response_status",
    "response_usage",
    "responses_request_to_openai",
    "tool_arguments",
    "wants_summary",
]


def parse_responses_request(body: ResponsesRequest | Mapping[str, Any]) -> ResponsesRequest:
    """Validate a `POST /v1/responses` body; a malformed one raises a 400 naming the field.

    The field is named as OpenAI names it (`input[2].call_id`), from the most specific of
    pydantic's errors. A `ResponsesRequest` is returned as it is.
    """
    if isinstance(body, ResponsesRequest):
        return body
    try:
        return ResponsesRequest.model_validate(body)
    except ValidationError as exc:
        error = max(exc.errors(), key=lambda e: len(e["loc"]))
        where = _field_path(error["loc"], body)
        raise InvalidRequestError(f"{where}: {error['msg']}", param=where or None) from exc


def _field_path(loc: tuple[int | str, ...], body: Any) -> str:
    """`input[0].role` for pydantic's `('input', 'list[...]', 0, 'message', 'role')`.

    Segments that are not keys or indexes of the body (union branch labels) are skipped;
    the last segment always counts (a missing field is not in the body).
    """
    path, node = "", body
    for position, segment in enumerate(loc):
        last = position == len(loc) - 1
        if isinstance(segment, int) and isinstance(node, list) and segment < len(node):
            path, node = f"{path}[{segment}]", node[segment]
        elif isinstance(segment, str) and (last or (isinstance(node, Mapping) and segment in node)):
            path = f"{path}.{segment}" if path else segment
            node = node.get(segment) if isinstance(node, Mapping) else None
    return path


# -- request: Responses -> Chat ----------------------------------------------------------------


def responses_request_to_openai(
    request: ResponsesRequest | Mapping[str, Any],
) -> ChatCompletionRequest:
    """The OpenAI chat request that serves a Responses request (model or dict).

    `stream` is kept, with `stream_options.include_usage` when streaming; `max_tokens` is
    `max_output_tokens` as is (clamping it to the context is the caller's business).

    Raises:
        InvalidRequestError: for what needs stored state or uploaded files, a `tool_choice`
            naming a hosted tool or an absent function, a `function_call_output` without its
            `function_call`, or an input with no message at all.
    """
    request = parse_responses_request(request)
    refuse_samples(request.model_extra, "Responses API")
    _refuse_stateful(request)
    messages = input_to_messages(request)
    tools, tool_choice = _tools(request)
    # Not a Chat field: passed on as an extra for prefix-cache affinity further down.
    extra = (
        {} if request.prompt_cache_key is None else {"prompt_cache_key": request.prompt_cache_key}
    )
    return ChatCompletionRequest(
        model=request.model,
        messages=messages,
        max_tokens=request.max_output_tokens,
        temperature=request.temperature,
        top_p=request.top_p,
        stream=bool(request.stream),
        stream_options=StreamOptions(include_usage=True) if request.stream else None,
        tools=tools or None,
        tool_choice=tool_choice,
        parallel_tool_calls=request.parallel_tool_calls if tools else None,
        response_format=_response_format(request.text),
        reasoning_effort=request.reasoning.effort if request.reasoning else None,
        user=request.user,
        **extra,
    )


def _refuse_stateful(request: ResponsesRequest) -> None:
    stateful = {
        "previous_response_id": request.previous_response_id,
        "conversation": request.conversation,
        "background": request.background or None,
    }
    for field, value in stateful.items():
        if value is not None:
            raise InvalidRequestError(
                f"{field} is not supported: cortex does not store responses; "
                "send the whole conversation in `input` (with store: false)",
                param=field,
            )


def _tools(request: ResponsesRequest) -> tuple[list[Tool], str | NamedToolChoice | None]:
    functions = [tool for tool in request.tools or [] if isinstance(tool, FunctionTool)]
    choice = request.tool_choice
    mode: str | NamedToolChoice | None
    if isinstance(choice, ToolChoiceAllowed):
        allowed = {t.get("name") for t in choice.tools if t.get("type") == "function"}
        functions = [tool for tool in functions if tool.name in allowed]
        mode = choice.mode
    elif isinstance(choice, ToolChoiceFunction):
        if choice.name not in {tool.name for tool in functions}:
            raise InvalidRequestError(
                f"tool_choice names function {choice.name!r}, which is not in tools",
                param="tool_choice",
            )
        mode = NamedToolChoice(type="function", function={"name": choice.name})
    elif choice is None or isinstance(choice, str):
        mode = choice
    else:
        raise InvalidRequestError(
            f"tool_choice of type {choice.type!r} names a hosted tool; cortex serves "
            "function tools only",
            param="tool_choice",
        )
    if not functions:
        if mode == "required":
            raise InvalidRequestError(
                "tool_choice is 'required' but there is no function tool "
                "(cortex serves function tools only)",
                param="tool_choice",
            )
        return [], None
    tools = [
        Tool(
            function=FunctionDefinition(
                name=tool.name,
                description=tool.description,
                parameters=tool.parameters,
                strict=tool.strict,
            )
        )
        for tool in functions
    ]
    return tools, mode


def _response_format(text: TextConfig | None) -> ResponseFormat | None:
    fmt = text.format if text else None
    if isinstance(fmt, TextFormatJsonSchema):
        schema = JSONSchemaFormat(
            name=fmt.name, schema=fmt.schema_, strict=fmt.strict, description=fmt.description
        )
        return ResponseFormat(type="json_schema", json_schema=schema)
    if isinstance(fmt, TextFormatJsonObject):
        return ResponseFormat(type="json_object")
    return None


# -- response: Chat -> Responses ---------------------------------------------------------------


def response_shell(request: ResponsesRequest, response_id: str, created_at: int) -> Response:
    """The response as it stands before any output: `in_progress`, echoing the request."""
    return Response(
        id=response_id,
        created_at=created_at,
        status="in_progress",
        model=request.model,
        instructions=request.instructions,
        tools=[tool for tool in request.tools or [] if isinstance(tool, FunctionTool)],
        tool_choice=request.tool_choice or "auto",
        parallel_tool_calls=request.parallel_tool_calls is not False,
        max_output_tokens=request.max_output_tokens,
        temperature=request.temperature,
        top_p=request.top_p,
        text=request.text or TextConfig(format=TextFormatText()),
        reasoning=request.reasoning,
        metadata=request.metadata or {},
        prompt_cache_key=request.prompt_cache_key,
    )


def response_status(
    finish_reason: str | None,
) -> tuple[ResponseStatus, IncompleteDetails | None]:
    """The response `status` and `incomplete_details` for a Chat `finish_reason`."""
    if finish_reason == "length":
        return "incomplete", IncompleteDetails(reason="max_output_tokens")
    if finish_reason == "content_filter":
        return "incomplete", IncompleteDetails(reason="content_filter")
    return "completed", None


def response_usage(usage: Usage | None) -> ResponseUsage | None:
    """Responses usage from Chat usage (`input_tokens` counts cached tokens too)."""
    if usage is None:
        return None
    prompt_details = usage.prompt_tokens_details
    completion_details = usage.completion_tokens_details
    return ResponseUsage(
        input_tokens=usage.prompt_tokens,
        input_tokens_details=InputTokensDetails(
            cached_tokens=(prompt_details.cached_tokens or 0) if prompt_details else 0
        ),
        output_tokens=usage.completion_tokens,
        output_tokens_details=OutputTokensDetails(
            reasoning_tokens=(completion_details.reasoning_tokens or 0) if completion_details else 0
        ),
        total_tokens=usage.prompt_tokens + usage.completion_tokens,
    )


def response_error(error: BaseException) -> ResponseError:
    """The `error` of a failed response; `code` is what Responses clients act on.

    `context_length_exceeded` (Codex compacts its history on it), `rate_limit_exceeded`,
    `server_is_overloaded` (retried), `invalid_prompt`, else the error's own code or
    `server_error`.
    """
    if not isinstance(error, CortexError):
        return ResponseError(code="server_error", message=str(error) or type(error).__name__)
    if isinstance(error, RateLimitError):
        code = "rate_limit_exceeded"
    elif isinstance(error, OverloadedError):
        code = "server_is_overloaded"
    elif error.code:
        code = error.code
    elif isinstance(error, InvalidRequestError):
        code = "invalid_prompt"
    else:
        code = "server_error"
    return ResponseError(code=code, message=error.message)


def openai_response_to_responses(
    response: ChatCompletion | Mapping[str, Any],
    *,
    request: ResponsesRequest | Mapping[str, Any],
    ids: IdFactory | None = None,
) -> Response:
    """The Responses `Response` for a non-streamed OpenAI chat reply.

    Output order: a reasoning item (from `reasoning_content` or `reasoning`: its raw text in
    `content`, or in `summary` when the request asks for one, see `wants_summary`), a message item
    (when there is text or a refusal), then one `function_call` item per tool call (the
    upstream call id is kept as `call_id`, so the next turn's `function_call_output`
    matches; empty arguments become `{}`). `finish_reason` length or content_filter make
    the response `incomplete`, its last item too. Ids come from `ids` in output order after
    the response id, exactly as `ResponsesStreamTranslator` draws them.

    Args:
        response: the OpenAI reply, as an envelope model or a dict.
        request: the Responses request it answers (echoed in the response).
        ids: makes the response id, item ids, call ids the upstream lacked, `created_at`.

    Raises:
        UpstreamError: when `response` is not a chat completion.
    """
    request = parse_responses_request(request)
    ids = ids or IdFactory()
    if not isinstance(response, ChatCompletion):
        try:
            response = ChatCompletion.model_validate(response)
        except ValidationError as exc:
            raise UpstreamError(f"upstream reply is not a chat completion: {exc}") from exc
    chat = response
    result = response_shell(request, ids.new("resp_"), ids.created())
    result.usage = response_usage(chat.usage)
    if not chat.choices:
        result.status = "completed"
        return result
    choice = chat.choices[0]
    message = choice.message
    status, incomplete = response_status(choice.finish_reason)
    output: list[OutputItem] = []
    reasoning = message.reasoning_content or (message.model_extra or {}).get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        item = ReasoningItem(id=ids.new("rs_"), status="completed")
        if wants_summary(request):
            item.summary = [SummaryText(text=reasoning)]
        else:
            item.content = [ReasoningText(text=reasoning)]
        output.append(item)
    parts: list[OutputContent] = []
    if message.content:
        parts.append(OutputText(text=message.content))
    if message.refusal:
        parts.append(Refusal(refusal=message.refusal))
    if parts:
        output.append(OutputMessage(id=ids.new("msg_"), status="completed", content=parts))
    for call in message.tool_calls or []:
        output.append(
            FunctionCallItem(
                id=ids.new("fc_"),
                call_id=call.id or ids.call_id(),
                name=call.function.name,
                arguments=tool_arguments(call.function.arguments),
                status="completed",
            )
        )
    if output and status == "incomplete":
        output[-1].status = "incomplete"
    result.output = output
    result.status = status
    result.incomplete_details = incomplete
    return result


def wants_summary(request: ResponsesRequest) -> bool:
    """Whether the request asks for reasoning summaries (`reasoning.summary`: `auto`,
    `concise`, `detailed`).

    cortex has no summarizer: such a request gets the whole thought as the reasoning item's one
    `summary_text` part (streamed as `response.reasoning_summary_text.delta`), which is what
    clients that show only summaries (the Codex CLI) display; otherwise the thought is the
    item's raw `content` (`response.reasoning_text.delta`), as vLLM and gpt-oss write it.
    """
    return bool(request.reasoning and request.reasoning.summary)


def tool_arguments(arguments: Any) -> str:
    """Function-call arguments as the JSON text Responses carries (`{}` when empty)."""
    if not isinstance(arguments, str):
        return json.dumps(arguments, ensure_ascii=False)
    return arguments if arguments.strip() else "{}"

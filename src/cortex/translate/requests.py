"""Request translation: Anthropic Messages <-> OpenAI Chat Completions, both ways."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from pydantic import TypeAdapter

from cortex.errors import InvalidRequestError
from cortex.protocol import anthropic as A
from cortex.protocol import openai as O
from cortex.translate.coerce import as_model
from cortex.translate.ids import IdFactory
from cortex.translate.mapping import (
    dump_tool_input,
    image_source_from_url,
    image_url_from_source,
    parse_tool_arguments,
)

__all__ = [
    "BILLING_HEADER_PREFIX",
    "DEFAULT_MAX_TOKENS",
    "anthropic_request_to_openai",
    "openai_request_to_anthropic",
]

BILLING_HEADER_PREFIX: Final = "x-anthropic-billing-header:"
"""Claude Code's per-conversation attribution line, stripped from the system prompt: it would
sit at the head of every prompt and defeat prefix caching (vLLM strips it too)."""

DEFAULT_MAX_TOKENS: Final = 4096
"""`max_tokens` for an Anthropic request made from an OpenAI request that set none."""

_TOOL_ERROR_PREFIX: Final = "Error: "
_BLOCK: Final[TypeAdapter[A.ContentBlock]] = TypeAdapter(A.ContentBlock)


# -- Anthropic -> OpenAI ---------------------------------------------------------------------


def anthropic_request_to_openai(
    request: A.MessagesRequest | Mapping[str, Any],
) -> O.ChatCompletionRequest:
    """Translate an Anthropic Messages request into an OpenAI chat request.

    System text (string or blocks, minus Claude Code's billing header) becomes the first
    system message; consecutive same-role turns merge; each user turn's `tool_result` blocks
    become `tool` messages placed before the rest of the turn (images inside them follow in a
    user message); `tool_use` becomes `tool_calls` with JSON-string arguments; thinking
    becomes `reasoning_content`; custom tools become functions and server tools are dropped.
    A final assistant turn is a prefill: `continue_final_message` is set for the neuron.
    Streamed requests ask for `stream_options.include_usage`.

    Args:
        request: the Anthropic request, as an envelope model or a dict.

    Returns:
        The OpenAI request. `max_tokens` is passed as is; clamping it to the model's context
        is the caller's business.

    Raises:
        InvalidRequestError: for content no local model can take (PDF documents).
    """
    req = as_model(A.MessagesRequest, request)
    messages: list[dict[str, Any]] = []
    system = _system_text(req.system)
    if system:
        messages.append({"role": "system", "content": system})
    for role, blocks in _merged_turns(req.messages):
        if role == "user":
            messages.extend(_user_turn_to_openai(blocks))
        elif role == "assistant":
            messages.append(_assistant_turn_to_openai(blocks))
        else:
            messages.append({"role": "system", "content": "\n\n".join(_texts(blocks))})
    out: dict[str, Any] = {"model": req.model, "messages": messages, "max_tokens": req.max_tokens}
    for name in ("temperature", "top_p", "top_k"):
        if getattr(req, name) is not None:
            out[name] = getattr(req, name)
    if req.stop_sequences:
        out["stop"] = list(req.stop_sequences)
    if req.stream:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    tools = [_tool_to_openai(t) for t in req.tools or () if _is_custom_tool(t)]
    if tools:
        out["tools"] = tools
    if req.tool_choice is not None:
        out.update(_tool_choice_to_openai(req.tool_choice))
    if req.metadata is not None and req.metadata.user_id:
        out["user"] = req.metadata.user_id
    if req.thinking is not None and req.thinking.type in ("enabled", "disabled"):
        out["chat_template_kwargs"] = {"enable_thinking": req.thinking.type == "enabled"}
    if req.output_config is not None:
        fmt = req.output_config.format
        if fmt and fmt.get("type") == "json_schema":
            schema = {"name": "output", "schema": fmt.get("schema") or {}, "strict": True}
            out["response_format"] = {"type": "json_schema", "json_schema": schema}
        if req.output_config.effort:
            out["reasoning_effort"] = req.output_config.effort
    if req.messages and req.messages[-1].role == "assistant":
        out["continue_final_message"] = True
        out["add_generation_prompt"] = False
    return O.ChatCompletionRequest.model_validate(out)


def _system_text(system: str | list[A.TextBlock] | None) -> str:
    if system is None:
        return ""
    if isinstance(system, str):
        return "" if system.startswith(BILLING_HEADER_PREFIX) else system
    texts = [b.text for b in system if b.text and not b.text.startswith(BILLING_HEADER_PREFIX)]
    return "\n\n".join(texts)


def _merged_turns(messages: list[A.InputMessage]) -> list[tuple[str, list[Any]]]:
    """Consecutive same-role turns as one turn of blocks (Anthropic merges them too)."""
    turns: list[tuple[str, list[Any]]] = []
    for msg in messages:
        blocks = [A.TextBlock(text=msg.content)] if isinstance(msg.content, str) else msg.content
        if turns and turns[-1][0] == msg.role:
            turns[-1][1].extend(blocks)
        else:
            turns.append((msg.role, list(blocks)))
    return turns


def _texts(blocks: list[Any]) -> list[str]:
    """The non-empty texts of text-like blocks (text, text documents, search results)."""
    texts: list[str] = []
    for block in blocks:
        if isinstance(block, A.TextBlock):
            text = block.text
        elif isinstance(block, A.DocumentBlock):
            text = _document_text(block)
        elif block.type == "search_result":
            text = "\n\n".join(_texts(_blocks_of(getattr(block, "content", None))))
        else:
            continue
        if text:
            texts.append(text)
    return texts


def _blocks_of(content: Any) -> list[Any]:
    if isinstance(content, str):
        return [A.TextBlock(text=content)]
    if isinstance(content, list):
        return [_BLOCK.validate_python(c) if isinstance(c, Mapping) else c for c in content]
    return []


def _document_text(block: A.DocumentBlock) -> str:
    source = block.source
    if source.get("type") == "text":
        text = str(source.get("data", ""))
    elif source.get("type") == "content":
        text = "\n\n".join(_texts(_blocks_of(source.get("content"))))
    else:
        raise InvalidRequestError(
            f"document source {source.get('type')!r} is not supported by local models; "
            "send the document's text instead",
            param="messages",
        )
    return f"{block.title}\n\n{text}" if block.title and text else text


def _parts(blocks: list[Any]) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    for block in blocks:
        if isinstance(block, A.ImageBlock):
            url = image_url_from_source(block.source.model_dump(mode="json"))
            parts.append({"type": "image_url", "image_url": {"url": url}})
        else:
            parts.extend({"type": "text", "text": t} for t in _texts([block]))
    return parts


def _content(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    """Text-only content as one string (what chat templates expect), else the parts."""
    if all(p["type"] == "text" for p in parts):
        return "\n\n".join(p["text"] for p in parts)
    return parts


def _user_turn_to_openai(blocks: list[Any]) -> list[dict[str, Any]]:
    tool_messages: list[dict[str, Any]] = []
    tool_images: list[dict[str, Any]] = []
    rest: list[Any] = []
    for block in blocks:
        if isinstance(block, A.ToolResultBlock):
            result_blocks = _blocks_of(block.content)
            text = "\n".join(_texts(result_blocks))
            if block.is_error and not text.startswith(_TOOL_ERROR_PREFIX.strip()):
                text = _TOOL_ERROR_PREFIX + text
            tool_messages.append(
                {"role": "tool", "tool_call_id": block.tool_use_id, "content": text}
            )
            tool_images.extend(p for p in _parts(result_blocks) if p["type"] == "image_url")
        else:
            rest.append(block)
    parts = tool_images + _parts(rest)
    if tool_messages and not parts:
        return tool_messages
    return [*tool_messages, {"role": "user", "content": _content(parts)}]


def _assistant_turn_to_openai(blocks: list[Any]) -> dict[str, Any]:
    texts = _texts(blocks)
    thinking = "".join(b.thinking for b in blocks if isinstance(b, A.ThinkingBlock))
    calls = [
        {
            "id": b.id,
            "type": "function",
            "function": {"name": b.name, "arguments": dump_tool_input(b.input)},
        }
        for b in blocks
        if isinstance(b, A.ToolUseBlock)
    ]
    message: dict[str, Any] = {"role": "assistant", "content": "\n\n".join(texts)}
    if calls:
        message["tool_calls"] = calls
        if not texts:
            message["content"] = None
    if thinking:
        message["reasoning_content"] = thinking
    return message


def _is_custom_tool(tool: A.Tool) -> bool:
    return tool.type in (None, "custom") and tool.input_schema is not None


def _tool_to_openai(tool: A.Tool) -> dict[str, Any]:
    function: dict[str, Any] = {"name": tool.name, "parameters": tool.input_schema}
    if tool.description:
        function["description"] = tool.description
    if tool.strict is not None:
        function["strict"] = tool.strict
    return {"type": "function", "function": function}


def _tool_choice_to_openai(choice: A.ToolChoice) -> dict[str, Any]:
    out: dict[str, Any]
    if choice.type == "tool":
        out = {"tool_choice": {"type": "function", "function": {"name": choice.name}}}
    else:
        out = {"tool_choice": {"auto": "auto", "any": "required", "none": "none"}[choice.type]}
    if choice.disable_parallel_tool_use and choice.type != "none":
        out["parallel_tool_calls"] = False
    return out


# -- OpenAI -> Anthropic ---------------------------------------------------------------------


def openai_request_to_anthropic(
    request: O.ChatCompletionRequest | Mapping[str, Any],
    *,
    default_max_tokens: int = DEFAULT_MAX_TOKENS,
    ids: IdFactory | None = None,
) -> A.MessagesRequest:
    """Translate an OpenAI chat request into an Anthropic Messages request.

    Leading system and developer messages become the top-level `system`; later ones stay in
    place as `system` turns. Consecutive `tool` messages become one user turn of
    `tool_result` blocks, and a user message right after them joins that turn. Assistant
    `tool_calls` become `tool_use` blocks (arguments that are not a JSON object are kept
    under `RAW_ARGUMENTS_KEY`), `reasoning_content` a thinking block. `stop` becomes
    `stop_sequences`, `user` becomes `metadata.user_id`, `parallel_tool_calls: false`
    becomes `disable_parallel_tool_use`. Sampling knobs Anthropic lacks (seed, penalties,
    logprobs) are dropped.

    Args:
        request: the OpenAI request, as an envelope model or a dict.
        default_max_tokens: `max_tokens` when the request has neither `max_completion_tokens`
            nor `max_tokens` (Anthropic requires one).
        ids: makes the ids of legacy `function_call`s and thinking signatures.

    Raises:
        InvalidRequestError: for `n > 1`, audio input, or files that are not inline PDFs.
    """
    req = as_model(O.ChatCompletionRequest, request)
    ids = ids or IdFactory()
    if req.n is not None and req.n > 1:
        raise InvalidRequestError("n > 1 is not supported", param="n")
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    legacy_call_id = ""
    for msg in req.messages:
        if msg.role in ("system", "developer"):
            text = _openai_text(msg.content)
            if not turns:
                if text:
                    system.append({"type": "text", "text": text})
            else:
                _append_turn(turns, "system", [{"type": "text", "text": text}])
        elif msg.role == "user":
            _append_turn(turns, "user", _openai_user_blocks(msg.content))
        elif msg.role == "assistant":
            if msg.function_call is not None:
                legacy_call_id = ids.tool_use_id()
            _append_turn(turns, "assistant", _openai_assistant_blocks(msg, ids, legacy_call_id))
        else:
            call_id = msg.tool_call_id or legacy_call_id
            result = {
                "type": "tool_result",
                "tool_use_id": call_id,
                "content": _openai_tool_content(msg.content),
            }
            _append_turn(turns, "user", [result], tool_result=True)
    out: dict[str, Any] = {
        "model": req.model,
        "max_tokens": req.max_completion_tokens or req.max_tokens or default_max_tokens,
        "messages": [_turn_message(t) for t in turns],
    }
    if system:
        out["system"] = system[0]["text"] if len(system) == 1 else system
    for name in ("temperature", "top_p", "top_k", "stream"):
        if getattr(req, name) is not None:
            out[name] = getattr(req, name)
    if req.stop:
        out["stop_sequences"] = [req.stop] if isinstance(req.stop, str) else list(req.stop)
    functions = [t.function for t in req.tools or () if t.type == "function" and t.function]
    functions += req.functions or []
    if functions:
        out["tools"] = [_function_to_tool(f) for f in functions]
    choice = _tool_choice_to_anthropic(req.tool_choice or req.function_call)
    if req.parallel_tool_calls is False and (choice is None or choice["type"] != "none"):
        choice = {**(choice or {"type": "auto"}), "disable_parallel_tool_use": True}
    if choice is not None:
        out["tool_choice"] = choice
    if req.user:
        out["metadata"] = {"user_id": req.user}
    out.update(_thinking_to_anthropic(req, out["max_tokens"]))
    return A.MessagesRequest.model_validate(out)


def _openai_text(content: str | list[Any] | None) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "\n\n".join(t for p in content if (t := getattr(p, "text", None)))


def _append_turn(
    turns: list[dict[str, Any]], role: str, blocks: list[Any], *, tool_result: bool = False
) -> None:
    if turns and turns[-1]["role"] == role:
        turns[-1]["content"].extend(blocks)
        turns[-1]["single_text"] = False
    else:
        single = not tool_result and len(blocks) == 1 and blocks[0]["type"] == "text"
        turns.append({"role": role, "content": list(blocks), "single_text": single})


def _turn_message(turn: dict[str, Any]) -> dict[str, Any]:
    """A single-string turn stays a string; anything merged or multi-part is a block list."""
    if turn["single_text"]:
        return {"role": turn["role"], "content": turn["content"][0]["text"]}
    return {"role": turn["role"], "content": turn["content"]}


def _openai_user_blocks(content: str | list[Any] | None) -> list[dict[str, Any]]:
    if content is None:
        return [{"type": "text", "text": ""}]
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    blocks: list[dict[str, Any]] = []
    for part in content:
        if isinstance(part, O.ImagePart):
            blocks.append({"type": "image", "source": image_source_from_url(part.image_url.url)})
        elif isinstance(part, O.FilePart):
            blocks.append(_file_to_document(part))
        elif isinstance(part, O.InputAudioPart):
            raise InvalidRequestError("audio input is not supported", param="messages")
        elif text := getattr(part, "text", None):
            blocks.append({"type": "text", "text": text})
    return blocks


def _file_to_document(part: O.FilePart) -> dict[str, Any]:
    data = part.file.get("file_data")
    if isinstance(data, str) and data.startswith("data:"):
        source = image_source_from_url(data)
        document: dict[str, Any] = {"type": "document", "source": source}
        if part.file.get("filename"):
            document["title"] = part.file["filename"]
        return document
    raise InvalidRequestError("only inline (file_data) files are supported", param="messages")


def _openai_assistant_blocks(
    msg: O.ChatMessage, ids: IdFactory, legacy_call_id: str
) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    thinking = msg.reasoning_content or msg.reasoning
    if thinking:
        blocks.append({"type": "thinking", "thinking": thinking, "signature": ids.signature()})
    text = _openai_text(msg.content) or (msg.refusal or "")
    if text:
        blocks.append({"type": "text", "text": text})
    for call in msg.tool_calls or ():
        blocks.append(_tool_use(call.id, call.function))
    if msg.function_call is not None:
        blocks.append(_tool_use(legacy_call_id, msg.function_call))
    if not blocks:
        blocks.append({"type": "text", "text": ""})
    return blocks


def _tool_use(call_id: str, function: O.FunctionCall) -> dict[str, Any]:
    arguments = parse_tool_arguments(function.arguments)
    return {"type": "tool_use", "id": call_id, "name": function.name, "input": arguments}


def _openai_tool_content(content: str | list[Any] | None) -> str | list[dict[str, Any]]:
    if content is None or isinstance(content, str):
        return content or ""
    return [{"type": "text", "text": t} for p in content if (t := getattr(p, "text", None))]


def _function_to_tool(function: O.FunctionDefinition) -> dict[str, Any]:
    tool: dict[str, Any] = {
        "name": function.name,
        "input_schema": function.parameters or {"type": "object", "properties": {}},
    }
    if function.description:
        tool["description"] = function.description
    if function.strict is not None:
        tool["strict"] = function.strict
    return tool


def _tool_choice_to_anthropic(choice: Any) -> dict[str, Any] | None:
    if choice is None:
        return None
    if isinstance(choice, str):
        return {"type": {"auto": "auto", "required": "any", "none": "none"}.get(choice, "auto")}
    fields = choice if isinstance(choice, Mapping) else choice.model_dump(mode="json")
    function = fields.get("function") or {}
    name = function.get("name") or fields.get("name")
    if fields.get("type", "function") == "function" and name:
        return {"type": "tool", "name": name}
    mode = (fields.get("allowed_tools") or {}).get("mode")
    return {"type": "any" if mode == "required" else "auto"}


def _thinking_to_anthropic(req: O.ChatCompletionRequest, max_tokens: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    enable = (req.chat_template_kwargs or {}).get("enable_thinking")
    if req.reasoning_effort == "none":
        enable = False
    if enable is True:
        out["thinking"] = {"type": "enabled", "budget_tokens": max(1024, max_tokens // 2)}
    elif enable is False:
        out["thinking"] = {"type": "disabled"}
    config: dict[str, Any] = {}
    if req.reasoning_effort in ("low", "medium", "high", "xhigh", "max"):
        config["effort"] = req.reasoning_effort
    fmt = req.response_format
    if fmt is not None and fmt.type == "json_schema" and fmt.json_schema is not None:
        config["format"] = {"type": "json_schema", "schema": fmt.json_schema.schema_ or {}}
    if config:
        out["output_config"] = config
    return out

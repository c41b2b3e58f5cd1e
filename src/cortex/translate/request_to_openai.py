"""Request translation, Anthropic Messages -> OpenAI Chat: what a neuron gets for Claude Code."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from pydantic import TypeAdapter

from cortex.errors import InvalidRequestError
from cortex.protocol import anthropic as A
from cortex.protocol import openai as O
from cortex.translate.coerce import as_model
from cortex.translate.mapping import dump_tool_input, image_url_from_source, refuse_samples

__all__ = ["BILLING_HEADER_PREFIX", "anthropic_request_to_openai"]

BILLING_HEADER_PREFIX: Final = "x-anthropic-billing-header:"
"""Claude Code's per-conversation attribution line, stripped from the system prompt: it would
sit at the head of every prompt and defeat prefix caching (vLLM strips it too)."""

_TOOL_ERROR_PREFIX: Final = "Error: "
_BLOCK: Final[TypeAdapter[A.ContentBlock]] = TypeAdapter(A.ContentBlock)


def anthropic_request_to_openai(
    request: A.MessagesRequest | Mapping[str, Any],
) -> O.ChatCompletionRequest:
    """Translate an Anthropic Messages request into an OpenAI chat request.

    System text (string or blocks, minus Claude Code's billing header) becomes the first
    system message; consecutive same-role turns merge; each user turn's `tool_result` blocks
    become `tool` messages placed before the rest of the turn (images inside them follow in a
    user message); `tool_use` becomes `tool_calls` with JSON-string arguments; thinking
    becomes `reasoning_content`; custom tools become functions and server tools are dropped.
    `thinking` `enabled`/`disabled` switches the template's `enable_thinking` (`adaptive` leaves
    the model's default) and `budget_tokens` becomes vLLM's `thinking_token_budget`.
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
    refuse_samples(req.model_extra, "Anthropic Messages API")
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
    out.update(_thinking_to_openai(req.thinking))
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


def _thinking_to_openai(thinking: A.ThinkingConfig | None) -> dict[str, Any]:
    """`thinking` as the neuron's switches: `chat_template_kwargs.enable_thinking` and
    `thinking_token_budget` (the engine closes the thought at that many tokens)."""
    if thinking is None or thinking.type not in ("enabled", "disabled"):
        return {}  # adaptive (Claude Code's default for unknown models): the model decides
    out: dict[str, Any] = {"chat_template_kwargs": {"enable_thinking": thinking.type == "enabled"}}
    if thinking.type == "enabled" and thinking.budget_tokens is not None:
        out["thinking_token_budget"] = max(0, thinking.budget_tokens)
    return out


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

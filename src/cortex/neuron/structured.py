"""The grammar a request's reply must match: `response_format` and `strict` function tools.

`response_format` `json_object` and `json_schema` (strict or not) constrain the reply's text.
When a request offers function tools and one of them is marked `strict`, the reply is
constrained, in the tool-call format the model writes (Hermes, Qwen3-Coder XML, Llama 3 JSON
or Mistral: `cortex.engine.tool_call_grammar`), to plain text or calls whose arguments match
each strict tool's `parameters`; with `tool_choice` `required` or a named function, to calls
only (one call of it, when named). Tools take precedence over `response_format` when both
apply.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cortex.engine.tool_calls import ChatPrompt, parse_tool_choice

if TYPE_CHECKING:
    from cortex.engine.grammar import Grammar
    from cortex.neuron.types import GenerateRequest

__all__ = ["request_grammar"]


def _strict_tools(request: GenerateRequest, chat: ChatPrompt) -> list[dict[str, Any]] | None:
    """The tools offered to the reply, when one of them is strict."""
    if chat.tool_format is None or not request.tools:
        return None
    offered = [
        tool
        for tool in request.tools
        if (tool.get("function") or {}).get("name") in chat.tool_names
    ]
    if not any((tool.get("function") or {}).get("strict") for tool in offered):
        return None
    return offered


def request_grammar(request: GenerateRequest, chat: ChatPrompt | None) -> Grammar | None:
    """The grammar `request`'s reply must match, or None for free text.

    Args:
        request: the generation (its `response_format` and `tools`).
        chat: how its chat was rendered (the tool format, and the forced start of a call).

    Raises:
        InvalidRequestError: a schema cannot be enforced (the message names the keyword).
    """
    from cortex.engine import grammar, tool_call_grammar

    tools = _strict_tools(request, chat) if chat is not None else None
    if tools is not None and chat is not None and chat.tool_format is not None:
        choice = parse_tool_choice(request.tool_choice)
        required = choice.mode == "required"
        forced = chat.prefill if required and not request.continue_final_message else ""
        return tool_call_grammar.tool_call_grammar(
            chat.tool_format, tools, prefill=forced, required=required, parallel=choice.name is None
        )
    fmt = request.response_format
    if fmt is None:
        return None
    if fmt["type"] == "json_object":
        return grammar.json_object_grammar()
    return grammar.json_schema_grammar(
        fmt.get("schema") or {}, strict=bool(fmt.get("strict")), param="response_format"
    )

"""Tools in the prompt: the chat template's own way, or Hermes-style when the template has none.

`ChatPrompter` renders a chat for one tokenizer. When the model's template renders tools (it
is probed once with a made-up tool), they go to the template and the reply is parsed in the
format its source names (`detect_format`). When it ignores them (SmolLM2, the default model),
the tools are written into the system prompt as Qwen2.5's template writes them: a `<tools>`
block of JSON schemas and the `<tool_call>` instruction; earlier calls become `<tool_call>`
blocks in the assistant's text and tool results `<tool_response>` blocks in a user turn; the
reply is parsed as Hermes. `tool_choice` `none` renders no tools and parses nothing;
`required` or a named function says so in that instruction and starts the reply with the
opening of a call (`forced_prefix`), which the parser is primed with.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from cortex.engine.tool_calls.formats import HERMES, ToolCallFormat, detect_format
from cortex.engine.tool_calls.parser import ToolCallParser
from cortex.errors import CortexError, InvalidRequestError

if TYPE_CHECKING:
    from cortex.engine.tokenizer import Tokenizer

__all__ = [
    "ChatPrompt",
    "ChatPrompter",
    "ToolChoice",
    "hermes_history",
    "hermes_tools_prompt",
    "parse_tool_choice",
    "tools_in_system_prompt",
]

_PROBE_TOOL = "cortex_probe_tool_7d41"
# Template variables a request's `chat_template_kwargs` may not override.
_RESERVED = frozenset({"messages", "tools", "add_generation_prompt", "continue_final_message"})

_TOOLS_HEAD = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)
_TOOLS_TAIL = (
    "\n</tools>\n\nFor each function call, return a json object with function name and "
    "arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
)


@dataclass(frozen=True)
class ToolChoice:
    """A request's `tool_choice`, normalised.

    Attributes:
        mode: `none` (no tools), `auto` (the model decides) or `required` (it must call one).
        name: the function that must be called (mode `required`), if one is named.
        allowed: the names of the tools that may be used (`allowed_tools`); None: all.
    """

    mode: Literal["none", "auto", "required"] = "auto"
    name: str | None = None
    allowed: frozenset[str] | None = None


def _function_name(value: Any) -> str | None:
    """The name of `{"type": "function", "function": {"name"}}` or the flat `{"name"}`."""
    if not isinstance(value, Mapping):
        return None
    function = value.get("function")
    name = function.get("name") if isinstance(function, Mapping) else value.get("name")
    return name if isinstance(name, str) and name else None


def _parameters(tool: Any) -> Any:
    """The JSON Schema of a function tool's parameters (nested or flat form)."""
    if not isinstance(tool, Mapping):
        return None
    function = tool.get("function")
    source = function if isinstance(function, Mapping) else tool
    return source.get("parameters")


def parse_tool_choice(value: str | Mapping[str, Any] | None) -> ToolChoice:
    """Read OpenAI's `tool_choice`: `none`, `auto`, `required`, `{"type": "function", "function":
    {"name"}}` (or the flat `{"type": "function", "name"}`), or `{"type": "allowed_tools",
    "allowed_tools": {"mode", "tools"}}`.

    Raises:
        InvalidRequestError: any other value.
    """
    if value is None or value == "auto":
        return ToolChoice()
    if value in ("none", "required"):
        return ToolChoice("none" if value == "none" else "required")
    if isinstance(value, Mapping) and value.get("type") == "function":
        name = _function_name(value)
        if name is not None:
            return ToolChoice("required", name)
    if isinstance(value, Mapping) and value.get("type") == "allowed_tools":
        allowed = value.get("allowed_tools")
        if isinstance(allowed, Mapping) and allowed.get("mode", "auto") in ("auto", "required"):
            names = [_function_name(tool) for tool in allowed.get("tools") or ()]
            required = allowed.get("mode") == "required"
            return ToolChoice(
                "required" if required else "auto",
                allowed=frozenset(n for n in names if n is not None),
            )
    raise InvalidRequestError(
        'tool_choice must be "none", "auto", "required", a function '
        '({"type": "function", "function": {"name": ...}}) or allowed_tools',
        param="tool_choice",
    )


def hermes_tools_prompt(tools: Sequence[Mapping[str, Any]], choice: ToolChoice) -> str:
    """The tools block of a system prompt, as Qwen2.5's template writes it, plus what
    `tool_choice` demands."""
    schemas = "".join("\n" + json.dumps(tool, ensure_ascii=False) for tool in tools)
    text = _TOOLS_HEAD + schemas + _TOOLS_TAIL
    if choice.name is not None:
        text += f"\n\nIn this reply you must call the function {json.dumps(choice.name)}."
    elif choice.mode == "required":
        text += "\n\nIn this reply you must call at least one of these functions."
    return text


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI text parts
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
    return ""


def _hermes_call(call: Mapping[str, Any]) -> str:
    function = call.get("function") or {}
    arguments = function.get("arguments", {})
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except ValueError:
            arguments = {}
    name = json.dumps(str(function.get("name", "")), ensure_ascii=False)
    dumped = json.dumps(arguments, ensure_ascii=False)
    return '<tool_call>\n{"name": ' + name + ', "arguments": ' + dumped + "}\n</tool_call>"


def hermes_history(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The conversation for a template that knows no tools: an assistant's calls become
    `<tool_call>` blocks after its text, and each run of tool results one user turn of
    `<tool_response>` blocks (Qwen2.5's way)."""
    out: list[dict[str, Any]] = []
    results: list[str] = []
    for message in messages:
        role = message.get("role")
        if role in ("tool", "function"):
            results.append(f"<tool_response>\n{_text(message.get('content'))}\n</tool_response>")
            continue
        if results:
            out.append({"role": "user", "content": "\n".join(results)})
            results = []
        if role == "assistant" and message.get("tool_calls"):
            content = _text(message.get("content"))
            parts = [content] if content else []
            parts += [_hermes_call(call) for call in message["tool_calls"]]
            rest = {k: v for k, v in message.items() if k != "tool_calls"}
            out.append({**rest, "content": "\n".join(parts)})
        else:
            out.append(dict(message))
    if results:
        out.append({"role": "user", "content": "\n".join(results)})
    return out


def tools_in_system_prompt(
    messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]], choice: ToolChoice
) -> list[dict[str, Any]]:
    """`messages` with the Hermes tools block at the end of the system prompt (added first
    when there is none)."""
    block = hermes_tools_prompt(tools, choice)
    chat = [dict(m) for m in messages]
    if chat and chat[0].get("role") == "system":
        system = _text(chat[0].get("content"))
        chat[0]["content"] = f"{system}\n\n{block}" if system else block
        return chat
    return [{"role": "system", "content": block}, *chat]


@dataclass(frozen=True)
class ChatPrompt:
    """A rendered chat and how to read the reply.

    Attributes:
        text: the prompt text (encode it without added special tokens).
        tool_format: the format to parse the reply in; None when no tools are offered.
        prefill: the text the reply continues (the final assistant message when it is
            continued, or the forced start of a call); the parser is primed with it.
        tool_names: the names of the offered tools.
        tool_schemas: the JSON Schema of each offered function's parameters, by name.
    """

    text: str
    tool_format: ToolCallFormat | None = None
    prefill: str = ""
    tool_names: frozenset[str] = frozenset()
    tool_schemas: Mapping[str, Any] = field(default_factory=dict)

    def parser(self) -> ToolCallParser | None:
        """A fresh parser for the reply, or None when no tools are offered."""
        if self.tool_format is None:
            return None
        return self.tool_format.parser(
            prefill=self.prefill, tool_names=self.tool_names, tool_schemas=self.tool_schemas
        )


def _renders_tools(tokenizer: Tokenizer) -> bool:
    """Whether the chat template writes tools into the prompt (it is tried with a made-up one)."""
    probe = {"type": "function", "function": {"name": _PROBE_TOOL, "parameters": {}}}
    try:
        text = tokenizer.render_chat_template([{"role": "user", "content": "hi"}], True, [probe])
    except CortexError:
        return False
    return _PROBE_TOOL in text


class ChatPrompter:
    """Renders chats, tools included, for one tokenizer (the template is probed once, here).

    Args:
        tokenizer: the model's tokenizer and chat templates.

    Attributes:
        native_tools: whether the chat template renders tools itself.
        tool_format: the format replies are parsed in when tools are offered.
    """

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        self.native_tools = _renders_tools(tokenizer)
        template = tokenizer.chat_templates.get("tool_use") or tokenizer.chat_template
        self.tool_format = detect_format(template) if self.native_tools else HERMES

    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: str | Mapping[str, Any] | None = None,
        add_generation_prompt: bool = True,
        continue_final_message: bool = False,
        template_kwargs: Mapping[str, Any] | None = None,
    ) -> ChatPrompt:
        """Render a chat.

        Args:
            messages: OpenAI chat messages (`tool_calls` arguments as JSON text or mappings).
            tools: OpenAI function tools.
            tool_choice: OpenAI's `tool_choice` (see `parse_tool_choice`).
            add_generation_prompt: open the assistant's turn at the end.
            continue_final_message: leave the final message open for the model to continue
                (an assistant prefill); no generation prompt then.
            template_kwargs: more template variables (`enable_thinking`...); the names the
                template takes from cortex (`messages`, `tools`...) are ignored.

        Raises:
            InvalidRequestError: a `tool_choice` naming a function not offered, or requiring a
                call with no tools; the template refuses the messages.
            CortexError: the model has no chat template.
        """
        choice = parse_tool_choice(tool_choice)
        offered = [] if choice.mode == "none" else list(tools or ())
        if choice.allowed is not None:
            offered = [tool for tool in offered if _function_name(tool) in choice.allowed]
        names = frozenset(n for n in map(_function_name, offered) if n is not None)
        if choice.name is not None and choice.name not in names:
            raise InvalidRequestError(
                f"tool_choice names the function {choice.name!r}, which is not among the tools",
                param="tool_choice",
            )
        if choice.mode == "required" and not offered:
            raise InvalidRequestError(
                "tool_choice requires a tool call, but no tools are offered", param="tool_choice"
            )
        chat: list[dict[str, Any]] = [dict(m) for m in messages]
        if not self.native_tools:
            chat = hermes_history(chat)
            if offered:
                chat = tools_in_system_prompt(chat, offered, choice)
        variables = {k: v for k, v in (template_kwargs or {}).items() if k not in _RESERVED}
        text = self.tokenizer.render_chat_template(
            chat,
            add_generation_prompt and not continue_final_message,
            offered if offered and self.native_tools else None,
            continue_final_message=continue_final_message,
            **variables,
        )
        prefill = ""
        if continue_final_message:
            if chat and chat[-1].get("role") == "assistant":
                prefill = _text(chat[-1].get("content"))
        elif offered and choice.mode == "required" and add_generation_prompt:
            prefill = self.tool_format.forced_prefix(choice.name)
            text += prefill
        tool_format = self.tool_format if offered else None
        schemas = {_function_name(t): _parameters(t) for t in offered}
        return ChatPrompt(
            text, tool_format, prefill, names, {k: v for k, v in schemas.items() if k}
        )

r"""Grammars of replies that may call tools, one per tool-call format, strict arguments enforced.

A reply is plain text (when no call is required) or calls only, written as the model's format
writes them so that its parser (`cortex.engine.tool_calls`) reads them back:

- `hermes`: `<tool_call>\n{"name": N, "arguments": ARGS}\n</tool_call>`, `\n` between calls.
- `qwen3_xml`: `<tool_call>\n<function=N>\n` then `<parameter=K>\nV\n</parameter>\n` per
  argument, then `</function>\n</tool_call>`. A `string` argument is written as raw text,
  anything else as JSON (the parser types values by the same rule), so a strict tool's
  arguments are constrained one by one: the properties in the schema's order, the required
  ones always, each value by its own schema. Raw text cannot be held to a `pattern` or a
  `format`; a strict tool whose `string` arguments use them, or whose schema is not a plain
  object of properties, is refused with a 400 naming the keyword.
- `llama3_json`: `{"name": N, "parameters": ARGS}`, `; ` between calls. The bare form, which
  the parser reads like the one after `<|python_tag|>` (a special token not every vocabulary
  has, and one the detokenizer drops anyway).
- `mistral`: `[{"name": N, "arguments": ARGS}, ...]`, the bare array, or after the
  `[TOOL_CALLS][` of a forced call's prefill.

Tools marked `strict` have their `parameters` schema enforced; the others take any object
(any parameters, in the XML format). Text may not hold what the parser would take for the
start of a call (it would be read as one, unchecked).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import llguidance

from cortex.engine.grammar import Grammar, check_grammar, json_schema_grammar, with_json_options
from cortex.engine.tool_calls import HERMES, LLAMA3_JSON, MISTRAL, QWEN3_XML, ToolCallFormat
from cortex.errors import InvalidRequestError

__all__ = ["hermes_tool_call_grammar", "tool_call_grammar"]


def _lark(text: str) -> str:
    return json.dumps(text)  # a JSON string literal is a valid Lark string literal


@dataclass(frozen=True)
class _Syntax:
    """How one format writes a run of calls (see the module docstring)."""

    head: Callable[[str], str]  # the start of a call to the named function, up to its arguments
    tail: str  # what closes a call after its arguments
    separator: str  # between two calls
    text_excluded: str  # a regex of texts the parser would read as (the start of) a call
    opening: str = ""  # before the first call
    closing: str = ""  # after the last call
    xml: bool = False  # arguments as `<parameter=K>` blocks rather than one JSON object


_SYNTAX: dict[str, _Syntax] = {
    HERMES.name: _Syntax(
        head=lambda name: '<tool_call>\n{"name": ' + json.dumps(name) + ', "arguments": ',
        tail="}\n</tool_call>",
        separator="\n",
        text_excluded=r"(?s:.*<tool_call>.*)",
    ),
    QWEN3_XML.name: _Syntax(
        head=lambda name: f"<tool_call>\n<function={name}>\n",
        tail="</function>\n</tool_call>",
        separator="\n",
        text_excluded=r"(?s:.*(<tool_call>|<function=).*)",
        xml=True,
    ),
    LLAMA3_JSON.name: _Syntax(
        head=lambda name: '{"name": ' + json.dumps(name) + ', "parameters": ',
        tail="}",
        separator="; ",
        text_excluded=r"(?s:\s*\{.*)|(?s:.*<\|python_tag\|>.*)",
    ),
    MISTRAL.name: _Syntax(
        head=lambda name: '{"name": ' + json.dumps(name) + ', "arguments": ',
        tail="}",
        separator=", ",
        text_excluded=r"(?s:\s*\[.*)|(?s:.*\[TOOL_CALLS\].*)",
        opening="[",
        closing="]",
    ),
}

# What a raw-text (`string`) argument of the XML format can be held to, besides annotations.
_RAW_STRING_KEYWORDS = frozenset({"type", "enum", "const", "minLength", "maxLength"})
_ANNOTATIONS = frozenset(
    {"title", "description", "default", "examples", "$comment", "deprecated", "readOnly"}
)
_XML_OBJECT_KEYWORDS = frozenset(
    {"type", "properties", "required", "additionalProperties", "$defs", "definitions", "$schema"}
)
_PARAMETER_END = "\n</parameter>\n"


def _function(tool: Mapping[str, Any]) -> Mapping[str, Any]:
    function = tool.get("function")
    return function if isinstance(function, Mapping) else {}


def _json_arguments(schema: Mapping[str, Any]) -> str:
    return f"%json{json.dumps(with_json_options(schema, lenient=False))}"


def _xml_refused(param: str, keyword: str, why: str) -> InvalidRequestError:
    return InvalidRequestError(
        f"{param}: `{keyword}` cannot be enforced in the model's tool-call format "
        f"(Qwen3-Coder XML, whose string arguments are raw text): {why}",
        param=param,
    )


def _xml_string_value(schema: Mapping[str, Any], param: str, rule: str) -> list[str]:
    """The rules of a raw-text argument held to its `string` schema, ended by its closing."""
    for keyword in schema:
        if keyword not in _RAW_STRING_KEYWORDS and keyword not in _ANNOTATIONS:
            raise _xml_refused(param, keyword, "only enum, const, minLength and maxLength can")
    choices = [schema["const"]] if "const" in schema else schema.get("enum")
    if choices is not None:
        if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
            raise _xml_refused(param, "enum", "a string argument's values must be strings")
        alternatives = " | ".join(_lark(c + _PARAMETER_END) for c in choices)
        return [f"{rule}: {alternatives or _lark(_PARAMETER_END)}"]
    low, high = schema.get("minLength", 0), schema.get("maxLength")
    if not isinstance(low, int) or (high is not None and not isinstance(high, int)):
        raise _xml_refused(param, "maxLength", "lengths must be integers")
    length = f"{{{low},{'' if high is None else high}}}"
    # Lazy: the value ends at the first closing tag, which it therefore never contains.
    return [f"{rule}[lazy]: /(?s:.{length})/ {_lark(_PARAMETER_END)}"]


def _xml_arguments(schema: Mapping[str, Any], param: str, rule: str) -> list[str]:
    """The rules of a strict tool's arguments as `<parameter=K>` blocks; `rule` is their start."""
    for keyword in schema:
        if keyword not in _XML_OBJECT_KEYWORDS and keyword not in _ANNOTATIONS:
            raise _xml_refused(param, keyword, "arguments are written one parameter at a time")
    if schema.get("type", "object") != "object":
        raise _xml_refused(param, "type", "the arguments must be an object")
    properties = schema.get("properties") or {}
    required = schema.get("required") or []
    if not isinstance(properties, Mapping) or not isinstance(required, list):
        raise InvalidRequestError(f"{param}: invalid `properties` or `required`", param=param)
    missing = [name for name in required if name not in properties]
    if missing:
        raise InvalidRequestError(
            f"{param}: required {missing[0]!r} is not among the properties", param=param
        )
    defs = {k: schema[k] for k in ("$defs", "definitions") if k in schema}
    rules: list[str] = []
    parts: list[str] = []
    for number, (name, value) in enumerate(properties.items()):
        where = f"{param}.properties.{name}"
        if not isinstance(value, Mapping):
            raise InvalidRequestError(
                f"{where}: a property's schema must be an object", param=param
            )
        if any(c in str(name) for c in "<>\n"):
            raise _xml_refused(param, str(name), "a parameter's name cannot hold <, > or newlines")
        value_rule = f"{rule}_{number}"
        if value.get("type") == "string":  # exactly the parser's rule for raw text
            rules += _xml_string_value(value, where, value_rule)
        else:
            rules.append(
                f"{value_rule}: {_json_arguments({**value, **defs})} {_lark(_PARAMETER_END)}"
            )
        block = f"{_lark(f'<parameter={name}>' + chr(10))} {value_rule}"
        parts.append(block if name in required else f"({block})?")
    rules.append(f"{rule}: {' '.join(parts) or _lark('')}")
    return rules


_XML_ANY_ARGUMENTS = [
    'xml_any: ("<parameter=" XML_NAME ">\\n" xml_any_value)*',
    "XML_NAME: /[^<>\\n]+/",
    f"xml_any_value[lazy]: /(?s:.*)/ {_lark(_PARAMETER_END)}",
]


def tool_call_grammar(
    tool_format: ToolCallFormat,
    tools: Sequence[Mapping[str, Any]],
    *,
    prefill: str = "",
    required: bool = False,
    parallel: bool = True,
) -> Grammar:
    """The grammar of a reply in `tool_format` whose calls' arguments match the tools'.

    Args:
        tool_format: the format the model writes calls in (`ChatPrompt.tool_format`).
        tools: OpenAI function tools (`{"type": "function", "function": {...}}`).
        prefill: the start of a call already in the prompt (`tool_format.forced_prefix`);
            the grammar matches what follows it.
        required: the reply must call a tool.
        parallel: several calls may follow one another (else one call at most).

    Raises:
        InvalidRequestError: a strict tool's schema cannot be compiled, or cannot be
            enforced in this format (the message names the keyword).
    """
    syntax = _SYNTAX[tool_format.name]
    rules: list[str] = []
    calls: list[str] = []
    firsts: list[str] = []
    any_xml = False
    for number, tool in enumerate(tools):
        function = _function(tool)
        name = str(function.get("name", ""))
        schema = function.get("parameters") or {"type": "object"}
        param = f"tools[{number}].function.parameters"
        args = f"args_{number}"
        if function.get("strict"):  # checked on its own so that the error names the tool
            json_schema_grammar(schema, strict=True, param=param)
            if syntax.xml:
                rules += _xml_arguments(schema, param, args)
            else:
                rules.append(f"{args}: {_json_arguments(schema)}")
        elif syntax.xml:
            any_xml = True
            rules.append(f"{args}: xml_any")
        else:
            rules.append(f"{args}: {_json_arguments({'type': 'object'})}")
        rest = f"{args} {_lark(syntax.tail)}"
        calls.append(f"{_lark(syntax.head(name))} {rest}")
        forced = tool_format.forced_prefix(name)
        if prefill and forced.startswith(prefill):
            firsts.append(f"{_lark(forced[len(prefill) :])} {rest}" if forced != prefill else rest)
    if not calls:
        raise InvalidRequestError("no tools to constrain the reply to", param="tools")
    if any_xml:
        rules += _XML_ANY_ARGUMENTS
    rules.append("call: " + " | ".join(calls))
    more = f"({_lark(syntax.separator)} call)*" if parallel else ""
    closing = _lark(syntax.closing) if syntax.closing else ""
    if prefill:  # the forced start of a call is in the prompt: the first call continues it
        if not firsts:
            raise InvalidRequestError("the forced tool call matches no tool", param="tool_choice")
        rules.append("first_call: " + " | ".join(firsts))
        start = f"start: first_call {more} {closing}"
    else:
        opening = _lark(syntax.opening) if syntax.opening else ""
        block = f"{opening} call {more} {closing}"
        # Plain text, or calls only: text may not hide a call the grammar does not check.
        start = f"start: {block}"
        if not required:
            start = f"start: TEXT | {block}"
            rules.append(f"TEXT: /(?s:.*)/ & ~/{syntax.text_excluded}/")
    text = llguidance.LLMatcher.grammar_from_lark("\n".join([start, *rules]))
    check_grammar(text, "tools")
    return Grammar(text, "tool_calls")


def hermes_tool_call_grammar(
    tools: Sequence[Mapping[str, Any]],
    *,
    prefill: str = "",
    required: bool = False,
    parallel: bool = True,
) -> Grammar:
    """`tool_call_grammar` in the Hermes format (cortex's own, for templates without tools)."""
    return tool_call_grammar(HERMES, tools, prefill=prefill, required=required, parallel=parallel)

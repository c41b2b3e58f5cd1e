"""`ToolCallFormat`s and `detect_format`: which format a model writes, from its chat template."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from cortex.engine.tool_calls.hermes import HermesParser
from cortex.engine.tool_calls.json_calls import Llama3JsonParser, MistralParser
from cortex.engine.tool_calls.parser import ToolCallParser, new_call_id
from cortex.engine.tool_calls.qwen3_xml import Qwen3XmlParser

__all__ = [
    "FORMATS",
    "HERMES",
    "LLAMA3_JSON",
    "MISTRAL",
    "QWEN3_XML",
    "ToolCallFormat",
    "detect_format",
]


@dataclass(frozen=True)
class ToolCallFormat:
    """A way of writing tool calls: its name and its parser.

    Attributes:
        name: `hermes`, `qwen3_xml`, `llama3_json` or `mistral`.
        parser_type: the `ToolCallParser` subclass that reads it.
    """

    name: str
    parser_type: type[ToolCallParser]

    def parser(
        self,
        *,
        prefill: str = "",
        tool_names: Collection[str] | None = None,
        new_id: Callable[[], str] = new_call_id,
        tool_schemas: Mapping[str, Any] | None = None,
    ) -> ToolCallParser:
        """A fresh parser for one reply (see `ToolCallParser` for the arguments)."""
        return self.parser_type(
            prefill=prefill, tool_names=tool_names, new_id=new_id, tool_schemas=tool_schemas
        )

    def forced_prefix(self, name: str | None) -> str:
        """The start of a call, for `tool_choice` `required` (None) or a named function."""
        return self.parser_type.forced_prefix(name)


HERMES = ToolCallFormat("hermes", HermesParser)
QWEN3_XML = ToolCallFormat("qwen3_xml", Qwen3XmlParser)
LLAMA3_JSON = ToolCallFormat("llama3_json", Llama3JsonParser)
MISTRAL = ToolCallFormat("mistral", MistralParser)
FORMATS: tuple[ToolCallFormat, ...] = (HERMES, LLAMA3_JSON, MISTRAL)
"""The formats that write calls as JSON (`QWEN3_XML` writes XML, typed by the tool's schema)."""

# Strings that mark each format in a chat template's source, checked in this order.
_TEMPLATE_MARKERS: tuple[tuple[tuple[str, ...], ToolCallFormat], ...] = (
    (("<function=",), QWEN3_XML),
    (("<tool_call>",), HERMES),
    (("[TOOL_CALLS]",), MISTRAL),
    (("<|python_tag|>", '"parameters": dictionary of argument name'), LLAMA3_JSON),
)


def detect_format(template: str | None) -> ToolCallFormat:
    """The tool-call format a chat template teaches its model, found by its markers.

    `<function=` means Qwen3-Coder's XML, `<tool_call>` Hermes, `[TOOL_CALLS]` Mistral,
    `<|python_tag|>` (or Llama 3.1's wording of the JSON call) Llama 3 JSON; a template with
    none of them (or no template) gets Hermes, the convention cortex itself renders tools in
    for such models.

    Args:
        template: the chat template's jinja source.
    """
    for markers, found in _TEMPLATE_MARKERS:
        if template and any(marker in template for marker in markers):
            return found
    return HERMES

r"""Tool calls in a model's text: the formats models write them in, and a streaming parser each.

A parser is fed the reply's text deltas and returns text deltas and calls, in order: a call
starts (`ToolCallStart`) once its name is known and its arguments follow as the model writes
them (`ToolCallArguments` pieces; `CallStream` and `JsonPrefix` for the JSON formats), or, for
a layout that cannot stream, comes whole (`ToolCall`). It holds back only what could still
become a call: the part of a marker seen so far (`<tool_c`), a call whose head is not whole, a
JSON prefix that could not be closed yet, and whitespace that may separate text from a call
(dropped when a call follows, so `"Sure.\n<tool_call>..."` gives the text `"Sure."`). What turns
out not to be a valid call before any of it went out (broken JSON, a marker in prose) comes
back as the text it was; a call that breaks after it started is closed where it broke
(`ToolCallParser.cut_calls`).

Formats (see docs/tools.md):

- `hermes` (Hermes, Qwen2.5/3, SmolLM3): `<tool_call>\n{"name": ..., "arguments": {...}}\n
  </tool_call>`, several in a row.
- `qwen3_xml` (Qwen3-Coder): `<tool_call>\n<function=NAME>\n<parameter=K>\nV\n</parameter>\n
  </function>\n</tool_call>`, values typed by the tool's schema, streamed as they come
  (`ToolCallStart`, then `ToolCallArguments` pieces).
- `llama3_json` (Llama 3.1 to 3.3): `<|python_tag|>{"name": ..., "parameters": {...}}`, or that
  JSON alone as the whole reply.
- `mistral`: `[TOOL_CALLS] [{"name": ..., "arguments": {...}}, ...]` (or `[TOOL_CALLS]name[ARGS]
  {...}`).

`detect_format(template_source)` picks the format from markers in the chat template;
`ChatPrompter` renders chats with tools (the fallback for templates without tools included).
"""

from __future__ import annotations

from cortex.engine.tool_calls.formats import (
    FORMATS,
    HERMES,
    LLAMA3_JSON,
    MISTRAL,
    QWEN3_XML,
    ToolCallFormat,
    detect_format,
)
from cortex.engine.tool_calls.hermes import HermesParser
from cortex.engine.tool_calls.json_calls import Llama3JsonParser, MistralParser
from cortex.engine.tool_calls.parser import (
    Item,
    ToolCall,
    ToolCallArguments,
    ToolCallParser,
    ToolCallStart,
    new_call_id,
)
from cortex.engine.tool_calls.prompt import ChatPrompt, ChatPrompter, ToolChoice, parse_tool_choice
from cortex.engine.tool_calls.qwen3_xml import Qwen3XmlParser

__all__ = [
    "FORMATS",
    "HERMES",
    "LLAMA3_JSON",
    "MISTRAL",
    "QWEN3_XML",
    "ChatPrompt",
    "ChatPrompter",
    "HermesParser",
    "Item",
    "Llama3JsonParser",
    "MistralParser",
    "Qwen3XmlParser",
    "ToolCall",
    "ToolCallArguments",
    "ToolCallFormat",
    "ToolCallParser",
    "ToolCallStart",
    "ToolChoice",
    "detect_format",
    "new_call_id",
    "parse_tool_choice",
]

"""Reading a tool-call parser's output back: calls as they stream (`ToolCallStart`, then
`ToolCallArguments` pieces) or whole (`ToolCall`)."""

from __future__ import annotations

from typing import Any

from cortex.engine.tool_calls import Item, ToolCall, ToolCallArguments, ToolCallStart


def calls(items: list[Item]) -> list[tuple[str, str, int]]:
    """Each call's name, its arguments as the pieces concatenate, and how many pieces."""
    out: list[list[Any]] = []
    for item in items:
        if isinstance(item, ToolCallStart):
            out.append([item.name, "", 0])
        elif isinstance(item, ToolCallArguments):
            out[-1][1] += item.text
            out[-1][2] += 1
        elif isinstance(item, ToolCall):
            out.append([item.name, item.arguments, 1])
    return [(name, arguments, pieces) for name, arguments, pieces in out]

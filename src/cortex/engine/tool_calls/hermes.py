"""`HermesParser`: `<tool_call>` JSON `</tool_call>` blocks (Hermes, Qwen2.5/3, SmolLM3)."""

from __future__ import annotations

import json
from typing import Any

from cortex.engine.tool_calls.parser import Item, ToolCallParser, held_suffix

__all__ = ["HermesParser"]


class HermesParser(ToolCallParser):
    """`<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>`, any number in a row.

    A call still open when the reply ends counts if its JSON is complete (models often stop
    right after it); otherwise it is text.
    """

    OPEN = "<tool_call>"
    CLOSE = "</tool_call>"

    def __init__(self, **options: Any) -> None:
        self._buffer = ""
        self._inside = False
        self._searched = 0  # inside: where to look for the closing marker again
        self._gap = ""  # the whitespace dropped before the open call
        self._after_call = False
        super().__init__(**options)

    def _parse(self, text: str) -> list[Item]:
        self._buffer += text
        out: list[Item] = []
        while True:
            buffer = self._buffer
            if self._inside:
                end = buffer.find(self.CLOSE, self._searched)
                if end < 0:
                    self._searched = max(0, len(buffer) - len(self.CLOSE) + 1)
                    return out
                body, self._buffer = buffer[:end], buffer[end + len(self.CLOSE) :]
                self._inside, self._searched = False, 0
                calls = self._calls(body, marked=True)
                if calls is None:
                    out.append(self._gap + self.OPEN + body + self.CLOSE)
                else:
                    out.extend(calls)
                    self._after_call = True
                continue
            if self._after_call:
                buffer = self._buffer = buffer.lstrip()
                if not buffer:
                    return out
                self._after_call = False
            start = buffer.find(self.OPEN)
            if start >= 0:
                before = buffer[:start]
                kept = before.rstrip()
                out.append(kept)
                self._gap = before[len(kept) :]
                self._buffer = buffer[start + len(self.OPEN) :]
                self._inside = True
                continue
            cut = len(buffer) - held_suffix(buffer, self.OPEN)
            out.append(buffer[:cut])
            self._buffer = buffer[cut:]
            return out

    def _end(self) -> list[Item]:
        held, self._buffer = self._buffer, ""
        if self._inside:
            self._inside = False
            calls = self._calls(held, marked=True)
            return [self._gap + self.OPEN + held] if calls is None else list(calls)
        return self._end_text(held)

    def _held_length(self) -> int:
        if self._inside:
            return len(self._gap) + len(self.OPEN) + len(self._buffer)
        return len(self._buffer)

    @staticmethod
    def forced_prefix(name: str | None) -> str:
        """`<tool_call>\\n{"name": "` (and the name and `"arguments": ` when given)."""
        if name is None:
            return '<tool_call>\n{"name": "'
        return '<tool_call>\n{"name": ' + json.dumps(name) + ', "arguments": '

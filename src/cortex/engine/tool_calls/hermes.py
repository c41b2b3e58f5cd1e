"""`HermesParser`: `<tool_call>` JSON `</tool_call>` blocks (Hermes, Qwen2.5/3, SmolLM3)."""

from __future__ import annotations

import json
from typing import Any, Literal

from cortex.engine.tool_calls.call_stream import CallStream
from cortex.engine.tool_calls.parser import Item, ToolCallParser, held_suffix

__all__ = ["HermesParser"]

_Mode = Literal["text", "call", "whole", "close", "skip"]


class HermesParser(ToolCallParser):
    """`<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>`, any number in a row.

    A call laid out as models write it (`name` first, then an `arguments` object) streams: it
    starts once its arguments open and they follow piece by piece (`CallStream`). Any other
    body is read whole at `</tool_call>`: a list of calls, arguments as a JSON string, no
    arguments. A call still open when the reply ends counts if its JSON is complete (models
    often stop right after it); otherwise it is text, or, once it streams, closed (`cut`).
    """

    OPEN = "<tool_call>"
    CLOSE = "</tool_call>"

    def __init__(self, **options: Any) -> None:
        self._buffer = ""
        self._mode: _Mode = "text"
        self._stream: CallStream | None = None
        self._searched = 0  # whole: where to look for the closing marker again
        self._gap = ""  # the whitespace dropped before the open call
        self._after_call = False
        super().__init__(**options)

    def _parse(self, text: str) -> list[Item]:
        self._buffer += text
        out: list[Item] = []
        while self._step(out):
            pass
        return out

    def _step(self, out: list[Item]) -> bool:
        """One move of the state machine; False when it needs more text."""
        if self._mode == "call":
            return self._streaming(out)
        if self._mode == "whole":
            return self._whole(out)
        if self._mode == "close":
            return self._closing()
        if self._mode == "skip":
            return self._skipping()
        return self._text(out)

    def _text(self, out: list[Item]) -> bool:
        if self._after_call:  # whitespace between calls, or after the last, is layout
            self._buffer = self._buffer.lstrip()
            if not self._buffer:
                return False
            self._after_call = False
        buffer = self._buffer
        start = buffer.find(self.OPEN)
        if start >= 0:
            before = buffer[:start]
            kept = before.rstrip()
            out.append(kept)
            self._gap = before[len(kept) :]
            self._buffer = buffer[start + len(self.OPEN) :]
            self._stream = CallStream(new_id=self._new_id, stop=self.CLOSE)
            self._mode = "call"
            return True
        cut = len(buffer) - held_suffix(buffer, self.OPEN)
        out.append(buffer[:cut])
        self._buffer = buffer[cut:]
        return False

    def _streaming(self, out: list[Item]) -> bool:
        """A call read as it streams; it may turn out to be one to read whole."""
        call = self._stream
        assert call is not None
        out += call.feed(self._buffer)
        self._buffer = ""
        if call.state == "head":
            return False
        self._made_call = self._made_call or call.state != "whole"
        if call.state == "whole":
            self._buffer, self._searched, self._mode = call.raw, 0, "whole"
        elif call.state in ("done", "cut"):
            self._buffer = call.rest
            self._mode = "close" if call.state == "done" else "skip"
            self.cut_calls += int(call.state == "cut")
        else:
            return False
        self._stream = None
        return True

    def _whole(self, out: list[Item]) -> bool:
        """A call to read whole: its JSON up to `</tool_call>`."""
        buffer = self._buffer
        end = buffer.find(self.CLOSE, self._searched)
        if end < 0:
            self._searched = max(0, len(buffer) - len(self.CLOSE) + 1)
            return False
        body, self._buffer = buffer[:end], buffer[end + len(self.CLOSE) :]
        self._mode = "text"
        calls = self._calls(body, marked=True)
        if calls is None:
            out.append(self._gap + self.OPEN + body + self.CLOSE)
        else:
            out.extend(calls)
            self._after_call = True
        return True

    def _closing(self) -> bool:
        """After a streamed call's object: its `</tool_call>` (a reply may leave it out)."""
        stripped = self._buffer.lstrip()
        if not stripped or (len(stripped) < len(self.CLOSE) and self.CLOSE.startswith(stripped)):
            return False
        if stripped.startswith(self.CLOSE):
            stripped = stripped[len(self.CLOSE) :]
        self._buffer, self._mode, self._after_call = stripped, "text", True
        return True

    def _skipping(self) -> bool:
        """After a call cut where its JSON broke: the rest of its block is dropped."""
        end = self._buffer.find(self.CLOSE)
        if end < 0:
            self._buffer = self._buffer[len(self._buffer) - held_suffix(self._buffer, self.CLOSE) :]
            return False
        self._buffer = self._buffer[end + len(self.CLOSE) :]
        self._mode, self._after_call = "text", True
        return True

    def _end(self) -> list[Item]:
        held, self._buffer = self._buffer, ""
        mode, self._mode = self._mode, "text"
        if mode == "call":
            call, self._stream = self._stream, None
            assert call is not None
            if call.state != "head":  # started: close what streamed
                self.cut_calls += int(call.state == "arguments")
                return call.close()
            held = call.raw
            mode = "whole"
        if mode == "whole":
            calls = self._calls(held, marked=True)
            return [self._gap + self.OPEN + held] if calls is None else list(calls)
        if mode in ("close", "skip"):
            return []
        return self._end_text(held)

    def _held_length(self) -> int:
        if self._mode == "call" and self._stream is not None and self._stream.state == "head":
            return len(self._gap) + len(self.OPEN) + len(self._stream.raw)
        if self._mode == "whole":
            return len(self._gap) + len(self.OPEN) + len(self._buffer)
        return len(self._buffer) if self._mode == "text" else 0

    @staticmethod
    def forced_prefix(name: str | None) -> str:
        """`<tool_call>\\n{"name": "` (and the name and `"arguments": ` when given)."""
        if name is None:
            return '<tool_call>\n{"name": "'
        return '<tool_call>\n{"name": ' + json.dumps(name) + ', "arguments": '

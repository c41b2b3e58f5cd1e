"""Calls written as JSON after a marker or as the whole reply: Llama 3 and Mistral."""

from __future__ import annotations

import json
from abc import abstractmethod
from typing import Any, Literal

from cortex.engine.tool_calls.call_stream import CallStream
from cortex.engine.tool_calls.json_stream import JsonEnd
from cortex.engine.tool_calls.parser import Item, ToolCall, ToolCallParser, held_suffix

__all__ = ["Llama3JsonParser", "MistralParser"]


_Mode = Literal[
    "start",
    "text",
    "marker",
    "named",
    "opening",
    "call",
    "json",
    "element",
    "after_element",
    "between",
]


class _JsonCallsParser(ToolCallParser):
    """Text, then JSON call values after a marker (or opening the reply): Llama and Mistral.

    A call object (`{"name": ..., "arguments": {...}}`), alone or in a marked array, streams
    (`CallStream`); any other value (a bare array, another layout) is read whole once it ends.
    """

    MARKER = ""

    def __init__(self, **options: Any) -> None:
        self._buffer = ""
        self._mode: _Mode = "start"
        self._raw = ""  # held text before the JSON (whitespace, marker, name), text if no call
        self._marked = False
        self._name: str | None = None  # Mistral v11: the name comes before the arguments
        self._end_of_json = JsonEnd()
        self._scanned = 0
        self._stream: CallStream | None = None
        self._in_array = False  # the open call is an element of a marked array
        self._array_open = ""  # held: `[` before the first element, until it streams
        super().__init__(**options)

    def _parse(self, text: str) -> list[Item]:
        self._buffer += text
        out: list[Item] = []
        while self._step(out):
            pass
        return out

    def _step(self, out: list[Item]) -> bool:
        """One move of the state machine; False when it needs more text."""
        mode = self._mode
        if mode == "start":
            return self._start()
        if mode == "text":
            return self._text(out)
        if mode == "marker":
            return self._after_marker(out)
        if mode == "named":
            return self._after_name(out)
        if mode == "opening":
            return self._opening()
        if mode == "call":
            return self._streaming(out)
        if mode == "element":
            return self._element(out)
        if mode == "after_element":
            return self._after_element(out)
        if mode == "between":
            return self._between()
        return self._json(out)

    @abstractmethod
    def _start(self) -> bool:
        """At the reply's start: a call without its marker, or text."""

    def _bare_call(self, stripped: str) -> None:
        """The reply opens with a call's JSON, written without the marker."""
        self._raw = self._buffer[: len(self._buffer) - len(stripped)]
        self._buffer = stripped
        self._open_json(marked=False)

    def _text(self, out: list[Item]) -> bool:
        buffer = self._buffer
        start = buffer.find(self.MARKER)
        if start >= 0:
            before = buffer[:start]
            kept = before.rstrip()
            out.append(kept)
            self._raw = before[len(kept) :] + self.MARKER
            self._buffer = buffer[start + len(self.MARKER) :]
            self._mode = "marker"
            return True
        cut = len(buffer) - held_suffix(buffer, self.MARKER)
        out.append(buffer[:cut])
        self._buffer = buffer[cut:]
        return False

    def _skip_space(self) -> str:
        """Move the buffer's leading whitespace to the held text; returns the rest."""
        stripped = self._buffer.lstrip()
        self._raw += self._buffer[: len(self._buffer) - len(stripped)]
        self._buffer = stripped
        return stripped

    def _after_marker(self, out: list[Item]) -> bool:
        """After the marker the JSON follows."""
        stripped = self._skip_space()
        if not stripped:
            return False
        if stripped[0] in "{[":
            self._open_json(marked=True)
        else:
            self._give_up(out)
        return True

    def _after_name(self, out: list[Item]) -> bool:
        """After a call's name (Mistral v11) its arguments object follows."""
        stripped = self._skip_space()
        if not stripped:
            return False
        if stripped[0] == "{":
            self._open_json(marked=True)
        else:
            self._give_up(out)
        return True

    def _open_json(self, *, marked: bool) -> None:
        self._mode = "opening"
        self._marked = marked

    def _opening(self) -> bool:
        """A JSON value opens: a call object streams, a marked array's calls too."""
        buffer = self._buffer
        if buffer[0] == "[" and self._marked and self._name is None:
            rest = buffer[1:].lstrip()
            if not rest:
                return False
            if rest[0] == "{":
                self._array_open = buffer[: len(buffer) - len(rest)]
                self._buffer, self._in_array = rest, True
                self._stream_call()
                return True
        if buffer[0] == "{":
            self._stream_call()
        else:
            self._read_whole()
        return True

    def _stream_call(self) -> None:
        marked, names = self._marked, self._tool_names
        self._stream = CallStream(
            new_id=self._new_id,
            accept=lambda name: marked or names is None or name in names,
            name=self._name,
        )
        self._mode = "call"

    def _read_whole(self) -> None:
        self._mode = "json"
        self._end_of_json = JsonEnd()
        self._scanned = 0

    def _streaming(self, out: list[Item]) -> bool:
        """A call read as it streams; it may turn out to be one to read whole."""
        call = self._stream
        assert call is not None
        out += call.feed(self._buffer)
        self._buffer = ""
        if call.state == "head":
            return False
        if call.state == "whole":  # read whole: the call, or the array it was to open
            if self._array_open:
                self._in_array = False
            self._buffer, self._array_open, self._stream = self._array_open + call.raw, "", None
            self._read_whole()
            return True
        if call.state in ("arguments", "tail"):
            return False
        self._made_call, self._stream, self._raw, self._name = True, None, "", None
        self._buffer, self._array_open = call.rest, ""
        if call.state == "cut":
            self.cut_calls += 1
            self._in_array, self._mode = False, "text"
        else:
            self._mode = "after_element" if self._in_array else "between"
        return True

    def _element(self, out: list[Item]) -> bool:
        """In a marked array, after `,`: the next call object."""
        stripped = self._buffer.lstrip()
        if not stripped:
            return False
        self._buffer = stripped
        if stripped[0] == "{":
            self._stream_call()
        else:
            self._in_array, self._mode = False, "text"
        return True

    def _after_element(self, out: list[Item]) -> bool:
        """In a marked array, after a call: `,` and the next, or `]`."""
        stripped = self._buffer.lstrip()
        if not stripped:
            return False
        if stripped[0] == ",":
            self._buffer, self._mode = stripped[1:], "element"
        elif stripped[0] == "]":
            self._buffer, self._mode, self._in_array = stripped[1:], "between", False
        else:
            self._buffer, self._mode, self._in_array = stripped, "text", False
        return True

    def _json(self, out: list[Item]) -> bool:
        end = self._end_of_json.feed(self._buffer[self._scanned :])
        if end is None:
            self._scanned = len(self._buffer)
            return False
        end += self._scanned
        value, self._buffer = self._buffer[:end], self._buffer[end:]
        calls = self._json_calls(value)
        if calls is None:
            out.append(self._raw + value)
            self._raw, self._mode, self._name, self._in_array = "", "text", None, False
            return True
        out.extend(calls)
        self._raw, self._name = "", None
        self._mode = "after_element" if self._in_array else "between"
        return True

    def _json_calls(self, value: str) -> list[ToolCall] | None:
        if self._name is None:
            return self._calls(value, marked=self._marked)
        try:
            call = self._call(json.loads(value), marked=True, name=self._name)
        except ValueError:
            return None
        if call is None:
            return None
        self._made_call = True
        return [call]

    def _between(self) -> bool:
        """After a call: whitespace is dropped, then text (or the next marker) follows."""
        self._buffer = self._buffer.lstrip()
        if not self._buffer:
            return False
        self._mode = "text"
        return True

    def _give_up(self, out: list[Item]) -> None:
        """What was held is text after all."""
        out.append(self._raw)
        self._raw, self._mode, self._name = "", "text", None

    def _end(self) -> list[Item]:
        call = self._stream
        if call is not None and call.state != "head":  # streaming: close what streamed
            self.cut_calls += int(call.state == "arguments")
            self._raw = self._buffer = ""
            self._stream = None
            return call.close()
        # An unfinished JSON value cannot be a call: everything held is text.
        held = self._held_text()
        self._raw = self._buffer = self._array_open = ""
        self._stream = None
        return self._end_text(held)

    def _held_text(self) -> str:
        """What is held back that is text unless a call takes it."""
        head = self._stream.raw if self._stream is not None and self._stream.state == "head" else ""
        return self._raw + self._array_open + head + self._buffer

    def _held_length(self) -> int:
        if self._stream is not None and self._stream.state != "head":
            return 0
        return len(self._held_text())


class Llama3JsonParser(_JsonCallsParser):
    """Llama 3.1+: `<|python_tag|>` then `{"name": ..., "parameters": {...}}` (several split by
    `;`), or a reply that is only that JSON (the tag is a special token, which the engine's
    detokenizer drops).

    A call without the tag counts only if it names an offered tool and has `parameters` (or
    `arguments`); any other JSON reply is text.
    """

    MARKER = "<|python_tag|>"

    def _start(self) -> bool:
        stripped = self._buffer.lstrip()
        if not stripped:
            return False
        if stripped[0] == "{":
            self._bare_call(stripped)
        elif len(stripped) < len(self.MARKER) and self.MARKER.startswith(stripped):
            return False
        else:
            self._mode = "text"
        return True

    def _between(self) -> bool:
        # Calls come one after another, separated by `;`.
        self._buffer = self._buffer.lstrip().lstrip(";").lstrip()
        if not self._buffer:
            return False
        if self._buffer[0] == "{":
            self._open_json(marked=self._marked)
        else:
            self._mode = "text"
        return True

    @staticmethod
    def forced_prefix(name: str | None) -> str:
        """`{"name": "` (and the name and `"parameters": ` when given)."""
        if name is None:
            return '{"name": "'
        return '{"name": ' + json.dumps(name) + ', "parameters": '


class MistralParser(_JsonCallsParser):
    """Mistral: `[TOOL_CALLS] [{"name": ..., "arguments": {...}}, ...]` (v0.3 tokenizers),
    `[TOOL_CALLS]name[ARGS]{...}` (v11), or a reply that is only the JSON array (the marker is a
    special token, which the engine's detokenizer drops).

    An array without the marker counts only if every call names an offered tool.
    """

    MARKER = "[TOOL_CALLS]"
    ARGS = "[ARGS]"
    MAX_NAME = 128

    def _start(self) -> bool:
        stripped = self._buffer.lstrip()
        if not stripped:
            return False
        if stripped[0] == "[" and not stripped.startswith(self.MARKER):
            rest = stripped[1:].lstrip()
            if rest.startswith("{"):
                self._bare_call(stripped)
                return True
            if not rest or (len(stripped) < len(self.MARKER) and self.MARKER.startswith(stripped)):
                return False  # `[` before `{`, or the marker's start
        self._mode = "text"
        return True

    def _after_marker(self, out: list[Item]) -> bool:
        stripped = self._buffer.lstrip()
        if not stripped or stripped[0] in "{[":
            return super()._after_marker(out)
        # v11: the name, `[ARGS]` (or not), then the arguments object.
        ends = [i for i in (stripped.find(self.ARGS), stripped.find("{")) if i >= 0]
        if not ends:
            if len(stripped) > self.MAX_NAME:
                self._give_up(out)
                return True
            return False
        end = min(ends)
        name = stripped[:end].strip()
        if not name or len(name) > self.MAX_NAME or any(c.isspace() for c in name):
            self._give_up(out)
            return True
        if stripped.startswith(self.ARGS, end):
            end += len(self.ARGS)
        self._skip_space()
        self._raw += stripped[:end]
        self._buffer = stripped[end:]
        self._name = name
        self._mode = "named"
        return True

    @staticmethod
    def forced_prefix(name: str | None) -> str:
        """`[TOOL_CALLS][{"name": "` (and the name and `"arguments": ` when given)."""
        if name is None:
            return '[TOOL_CALLS][{"name": "'
        return '[TOOL_CALLS][{"name": ' + json.dumps(name) + ', "arguments": '

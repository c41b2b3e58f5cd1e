"""`Qwen3XmlParser`: Qwen3-Coder's XML calls, streamed argument by argument.

```
<tool_call>
<function=get_weather>
<parameter=city>
Paris
</parameter>
</function>
</tool_call>
```

Values are written untyped; the function's JSON Schema types them: a `string` parameter's
value is the text, any other's is its JSON (the text when it is not JSON; an unknown
parameter is read the same way). The arguments stream as they are written: `{"city": ` when a
parameter opens, a string value in pieces as the model writes it (other types once their
value is whole), `}` when the function closes; the pieces concatenate to one JSON object.
A `<tool_call>` whose body is JSON is read as Hermes writes it (Qwen3 does), streamed the same
way (`CallStream`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal

from cortex.engine.tool_calls.call_stream import CallStream
from cortex.engine.tool_calls.parser import (
    Item,
    ToolCallArguments,
    ToolCallParser,
    ToolCallStart,
    held_suffix,
)

__all__ = ["Qwen3XmlParser"]

_Mode = Literal["text", "call", "json", "name", "body", "value", "after", "skip"]
_OPEN, _CLOSE = "<tool_call>", "</tool_call>"
_FUNCTION, _FUNCTION_END = "<function=", "</function>"
_PARAMETER, _PARAMETER_END = "<parameter=", "</parameter>"
_MAX_NAME = 256  # a `<function=` or `<parameter=` whose `>` does not come soon is not one


def _typed(value: str) -> Any:
    """A value that is not a string by its schema: its JSON, or the text when it is not JSON."""
    text = value.strip()
    if text in ("True", "False"):  # Python's spelling, which models borrow
        return text == "True"
    try:
        return json.loads(text)
    except ValueError:
        return value


class Qwen3XmlParser(ToolCallParser):
    """`<tool_call><function=NAME><parameter=K>V</parameter>...</function></tool_call>`.

    A call's `ToolCallStart` comes once its name is whole, its arguments as
    `ToolCallArguments` pieces. A call cut by the end of the reply is closed (its JSON stays
    whole); a `<tool_call>` that opens no function is text.
    """

    def __init__(self, **options: Any) -> None:
        self._buffer = ""
        self._mode: _Mode = "text"
        self._raw = ""  # held text of a call not yet started (text again if none comes)
        self._gap = ""
        self._name = ""
        self._params = 0  # parameters written in the open call
        self._schema: Mapping[str, Any] = {}
        self._kind: Any = None  # the open parameter's schema
        self._streaming = False  # the open value streams as a string
        self._value = ""  # the open value, when it does not stream
        self._value_start = True  # no character of the open value seen yet
        self._after_call = False
        self._stream: CallStream | None = None  # a Hermes JSON body, streamed
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
        if mode == "text":
            return self._text(out)
        if mode == "call":
            return self._call_body(out)
        if mode == "json":
            return self._json(out)
        if mode == "name":
            return self._function_name(out)
        if mode == "body":
            return self._body(out)
        if mode == "value":
            return self._value_text(out)
        if mode == "skip":
            return self._skip_block()
        return self._after(out)

    # -- outside calls ----------------------------------------------------------------------

    def _text(self, out: list[Item]) -> bool:
        if self._after_call:  # whitespace between calls, or after the last, is layout
            self._buffer = self._buffer.lstrip()
            if not self._buffer:
                return False
            self._after_call = False
        buffer = self._buffer
        hits = [(i, m) for m in (_OPEN, _FUNCTION) if (i := buffer.find(m)) >= 0]
        if hits:
            start, marker = min(hits)
            before = buffer[:start]
            kept = before.rstrip()
            out.append(kept)
            self._gap = before[len(kept) :]
            self._raw = marker
            self._buffer = buffer[start + len(marker) :]
            self._mode = "call" if marker == _OPEN else "name"
            return True
        cut = len(buffer) - held_suffix(buffer, _OPEN, _FUNCTION)
        out.append(buffer[:cut])
        self._buffer = buffer[cut:]
        return False

    def _call_body(self, out: list[Item]) -> bool:
        """After `<tool_call>`: a `<function=`, or Hermes JSON."""
        stripped = self._buffer.lstrip()
        if not stripped:
            return False
        if stripped.startswith(_FUNCTION):
            self._raw += self._buffer[: len(self._buffer) - len(stripped)] + _FUNCTION
            self._buffer = stripped[len(_FUNCTION) :]
            self._mode = "name"
            return True
        if _FUNCTION.startswith(stripped):
            return False
        self._mode = "json"
        self._stream = CallStream(new_id=self._new_id, stop=_CLOSE)
        return True

    def _json(self, out: list[Item]) -> bool:
        """A Hermes call: JSON up to `</tool_call>`, streamed as `HermesParser` does, or read
        whole when it is not laid out to stream."""
        stream = self._stream
        if stream is not None:
            out += stream.feed(self._buffer)
            self._buffer = ""
            if stream.state in ("head", "arguments", "tail"):
                return False
            self._stream = None
            if stream.state != "whole":
                self._made_call = True
                self.cut_calls += int(stream.state == "cut")
                self._buffer, self._raw = stream.rest, ""
                self._mode = "after" if stream.state == "done" else "skip"
                return True
            self._buffer = stream.raw
        end = self._buffer.find(_CLOSE)
        if end < 0:
            return False
        body, self._buffer = self._buffer[:end], self._buffer[end + len(_CLOSE) :]
        calls = self._calls(body, marked=True)
        if calls is None:
            out.append(self._gap + self._raw + body + _CLOSE)
        else:
            out.extend(calls)
            self._after_call = True
        self._mode, self._raw = "text", ""
        return True

    def _function_name(self, out: list[Item]) -> bool:
        """After `<function=`: the name up to `>` starts the call."""
        end = self._buffer.find(">")
        if end < 0:
            if len(self._buffer) > _MAX_NAME:
                return self._not_a_call(out)
            return False
        name = self._buffer[:end].strip()
        if not name:
            return self._not_a_call(out)
        self._buffer = self._buffer[end + 1 :]
        self._name, self._params, self._raw = name, 0, ""
        schema = self._tool_schemas.get(name)
        properties = schema.get("properties") if isinstance(schema, Mapping) else None
        self._schema = properties if isinstance(properties, Mapping) else {}
        self._made_call = True
        out.append(ToolCallStart(name, self._new_id()))
        self._mode = "body"
        return True

    def _not_a_call(self, out: list[Item]) -> bool:
        out.append(self._gap + self._raw + self._buffer[:1])
        self._buffer = self._buffer[1:]
        self._raw = self._gap = ""
        self._mode = "text"
        return True

    # -- inside a call ----------------------------------------------------------------------

    def _body(self, out: list[Item]) -> bool:
        """Between parameters: the next `<parameter=K>`, or `</function>`."""
        buffer = self._buffer = self._buffer.lstrip()
        if not buffer:
            return False
        if buffer.startswith(_PARAMETER):
            end = buffer.find(">")
            if end < 0:
                return len(buffer) > _MAX_NAME and self._skip_junk()
            key = buffer[len(_PARAMETER) : end].strip()
            self._buffer = buffer[end + 1 :]
            opening = "{" if self._params == 0 else ", "
            self._params += 1
            self._kind = self._schema.get(key)
            kind = self._kind.get("type") if isinstance(self._kind, Mapping) else None
            self._streaming = kind == "string"
            self._value, self._value_start = "", True
            text = opening + json.dumps(key, ensure_ascii=False) + ": "
            out.append(ToolCallArguments(text + ('"' if self._streaming else "")))
            self._mode = "value"
            return True
        if buffer.startswith(_FUNCTION_END):
            self._buffer = buffer[len(_FUNCTION_END) :]
            out.append(ToolCallArguments("{}" if self._params == 0 else "}"))
            self._mode = "after"
            return True
        if _PARAMETER.startswith(buffer) or _FUNCTION_END.startswith(buffer):
            return False
        return self._skip_junk()

    def _skip_junk(self) -> bool:
        """Drop what is not markup between parameters, up to the next `<`."""
        nxt = self._buffer.find("<", 1)
        self._buffer = self._buffer[nxt:] if nxt > 0 else ""
        return bool(self._buffer)

    def _value_text(self, out: list[Item]) -> bool:
        """A parameter's value, up to `</parameter>` (one newline each side is layout)."""
        buffer = self._buffer
        if self._value_start:
            if not buffer:
                return False
            if buffer.startswith("\n"):
                buffer = self._buffer = buffer[1:]
            self._value_start = False
        end = buffer.find(_PARAMETER_END)
        if end < 0:
            # Held: a partial `</parameter>` and the whitespace before it (maybe the layout's).
            cut = len(buffer) - held_suffix(buffer, _PARAMETER_END)
            self._take(buffer[:cut], out)
            self._buffer = buffer[cut:]
            return False
        value = buffer[:end]
        self._take(value.removesuffix("\n"), out)
        self._buffer = buffer[end + len(_PARAMETER_END) :]
        self._close_value(out)
        return True

    def _take(self, text: str, out: list[Item]) -> None:
        if not text:
            return
        if self._streaming:
            out.append(ToolCallArguments(json.dumps(text, ensure_ascii=False)[1:-1]))
        else:
            self._value += text

    def _close_value(self, out: list[Item]) -> None:
        if self._streaming:
            out.append(ToolCallArguments('"'))
        else:
            typed = _typed(self._value)
            out.append(ToolCallArguments(json.dumps(typed, ensure_ascii=False)))
        self._mode = "body"

    def _skip_block(self) -> bool:
        """After a JSON call cut where it broke: the rest of its block is dropped."""
        end = self._buffer.find(_CLOSE)
        if end < 0:
            self._buffer = self._buffer[len(self._buffer) - held_suffix(self._buffer, _CLOSE) :]
            return False
        self._buffer = self._buffer[end + len(_CLOSE) :]
        self._mode, self._after_call = "text", True
        return True

    def _after(self, out: list[Item]) -> bool:
        """After `</function>`: the `</tool_call>` that may close it."""
        stripped = self._buffer.lstrip()
        if not stripped:
            return False
        if stripped.startswith(_CLOSE):
            self._buffer = stripped[len(_CLOSE) :]
        elif _CLOSE.startswith(stripped):
            return False
        self._mode, self._after_call = "text", True
        return True

    # -- the end ----------------------------------------------------------------------------

    def _end(self) -> list[Item]:
        out: list[Item] = []
        held, self._buffer = self._buffer, ""
        mode, self._mode = self._mode, "text"
        stream, self._stream = self._stream, None
        if mode == "json" and stream is not None:
            if stream.state != "head":  # streaming: close what streamed
                self.cut_calls += int(stream.state == "arguments")
                return stream.close()
            held = stream.raw
        if mode in ("call", "json", "name"):
            if mode == "json":
                calls = self._calls(held, marked=True)
                if calls is not None:
                    return list(calls)
            return [self._gap + self._raw + held]
        if mode == "value":  # cut inside a value: close it, then the call
            self._take(held.removesuffix("\n") if held.strip() else "", out)
            self._close_value(out)
            mode = "body"
        if mode == "body":
            self.cut_calls += 1
            out.append(ToolCallArguments("{}" if self._params == 0 else "}"))
            return out
        if mode in ("after", "skip"):
            return out
        return self._end_text(held)

    def _held_length(self) -> int:
        if self._mode == "json" and self._stream is not None:
            streaming = self._stream.state != "head"
            return 0 if streaming else len(self._gap) + len(self._raw) + len(self._stream.raw)
        if self._mode in ("call", "json", "name"):
            return len(self._gap) + len(self._raw) + len(self._buffer)
        if self._mode == "text":
            return len(self._buffer)
        return 0

    @staticmethod
    def forced_prefix(name: str | None) -> str:
        """`<tool_call>\\n<function=` (and the name and `>\\n` when given)."""
        if name is None:
            return "<tool_call>\n<function="
        return f"<tool_call>\n<function={name}>\n"

"""Tool arguments streamed as text, re-emitted so that every prefix is valid JSON of an object.

The anthropic SDK parses `input_json_delta` fragments as partial JSON after every delta and
raises (ending the client's stream) when the text so far cannot begin a JSON value. A local
model's arguments can be broken or cut off. `ToolInputStream` passes fragments on while they
stay a valid prefix of a JSON object, escapes raw control characters inside strings, holds
back the final `}`, and at the end closes whatever is open: a good object gets its `}`;
broken or truncated text keeps what parsed and adds the whole raw text under
`RAW_ARGUMENTS_KEY`, so nothing is lost and the client never crashes.
"""

from __future__ import annotations

import json
import re
from typing import Final

__all__ = ["RAW_ARGUMENTS_KEY", "ToolInputStream", "parse_arguments_text"]

RAW_ARGUMENTS_KEY: Final = "__raw_arguments__"
"""Tool arguments that are not a JSON object travel as `{RAW_ARGUMENTS_KEY: "<text>"}`.

A model can emit broken JSON; Anthropic's `tool_use.input` must be an object. Keeping the text
lets the client see it and lets the reverse translation restore it verbatim, so the model sees
its own output when the history comes back.
"""

_PLAIN_RUN = re.compile(r'[^"\\\x00-\x1f]+')
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}
_LITERALS = {"t": "rue", "f": "alse", "n": "ull"}
_HEX = frozenset("0123456789abcdefABCDEF")
# Number grammar: state -> {character class -> next state}; classes: "-", "+", "0", "1"
# (1-9), ".", "e".
_NUMBER: Final[dict[str, dict[str, str]]] = {
    "start": {"-": "sign", "0": "zero", "1": "int"},
    "sign": {"0": "zero", "1": "int"},
    "zero": {".": "dot", "e": "e"},
    "int": {"0": "int", "1": "int", ".": "dot", "e": "e"},
    "dot": {"0": "frac", "1": "frac"},
    "frac": {"0": "frac", "1": "frac", "e": "e"},
    "e": {"+": "esign", "-": "esign", "0": "exp", "1": "exp"},
    "esign": {"0": "exp", "1": "exp"},
    "exp": {"0": "exp", "1": "exp"},
}
_NUMBER_FIX = {"sign": "0", "dot": "0", "e": "0", "esign": "0"}
_NUMBER_CLASS = {c: "1" for c in "123456789"} | {"0": "0", ".": ".", "e": "e", "E": "e"}
_NUMBER_CLASS |= {"-": "-", "+": "+"}


class ToolInputStream:
    """Incremental guard for one tool call's argument text.

    Example:
        >>> s = ToolInputStream()
        >>> s.feed('{"a": [1, tr') + s.feed("ue]}") + s.close()
        '{"a": [1, true]}'
        >>> s = ToolInputStream()
        >>> s.feed('{"a": "x') + s.close()
        '{"a": "x","__raw_arguments__":"{\\\\"a\\\\": \\\\"x"}'
    """

    __slots__ = (
        "_broken",
        "_escape",
        "_expect",
        "_is_key",
        "_literal",
        "_number",
        "_raw",
        "_stack",
        "_token",
        "_top_empty",
    )

    def __init__(self) -> None:
        self._raw: list[str] = []
        self._stack: list[str] = []
        # start, key_or_end, key, colon, value_or_end, value, comma_or_end, done
        self._expect = "start"
        self._token = ""  # "", "string", "number" or "literal"
        self._is_key = False
        self._escape = 0  # 0 none, 1 after a backslash, 2..5 inside \uXXXX
        self._number = ""
        self._literal = ""
        self._broken = False
        self._top_empty = False  # whether the top-level object closed with no member

    @property
    def raw(self) -> str:
        """Everything fed so far, verbatim."""
        return "".join(self._raw)

    @property
    def complete(self) -> bool:
        """Whether what was fed is one whole JSON object (its last brace read, nothing broken)."""
        return self._expect == "done" and not self._broken

    def feed(self, fragment: str) -> str:
        """Take the next fragment; return the text that is safe to send now (maybe empty)."""
        self._raw.append(fragment)
        if self._broken:
            return ""
        out: list[str] = []
        i, end = 0, len(fragment)
        while i < end:
            if self._token == "string" and not self._escape:
                run = _PLAIN_RUN.match(fragment, i)
                if run is not None:
                    out.append(run.group())
                    i = run.end()
                    continue
            piece = self._step(fragment[i])
            if piece is None:
                self._broken = True
                break
            out.append(piece)
            i += 1
        return "".join(out)

    def close(self) -> str:
        """The text that completes what was sent into one valid JSON object ("" if none)."""
        raw = self.raw
        if self._expect == "start":
            return "" if not raw.strip() else json.dumps({RAW_ARGUMENTS_KEY: raw})
        if self._expect == "done" and not self._broken:
            return "}"
        out: list[str] = []

        def push(text: str) -> None:
            for char in text:
                piece = self._step(char)
                assert piece is not None, (text, char)
                out.append(piece)

        if self._token == "string":
            push("\\" if self._escape == 1 else "0" * (6 - self._escape) if self._escape else "")
            push('"')
        elif self._token == "number":
            push(_NUMBER_FIX.get(self._number, ""))
            self._token = ""
            self._value_done()
        elif self._token == "literal":
            push(self._literal)
        while True:
            if self._expect == "colon":
                push(":null")
            elif self._expect == "value":
                push("null")
            elif len(self._stack) > 1:
                push('"":null' if self._expect == "key" else "}" if self._stack[-1] == "o" else "]")
            else:
                break
        if self._expect == "done":  # the object was whole; text came after it
            self._stack = ["o"]
            self._expect = "key_or_end" if self._top_empty else "comma_or_end"
        comma = "," if self._expect == "comma_or_end" else ""
        push(f"{comma}{json.dumps(RAW_ARGUMENTS_KEY)}:{json.dumps(raw)}}}")
        return "".join(out) + "}"

    # -- the grammar ---------------------------------------------------------------------------

    def _step(self, c: str) -> str | None:
        """The text to emit for `c`, or None when `c` cannot continue a JSON object."""
        token = self._token
        if token == "string":
            escape = self._escape
            if escape == 1:  # state changes only for a valid character: close() relies on it
                if c == "u":
                    self._escape = 2
                    return c
                if c not in '"\\/bfnrt':
                    return None
                self._escape = 0
                return c
            if escape:
                if c not in _HEX:
                    return None
                self._escape = 0 if escape == 5 else escape + 1
                return c
            if c == "\\":
                self._escape = 1
                return c
            if c == '"':
                self._token = ""
                if self._is_key:
                    self._expect = "colon"
                else:
                    self._value_done()
                return c
            if c < " ":
                return _ESCAPES.get(c) or f"\\u{ord(c):04x}"
            return c
        if token == "number":
            following = _NUMBER[self._number].get(_NUMBER_CLASS.get(c, ""))
            if following is not None:
                self._number = following
                return c
            if self._number in _NUMBER_FIX:
                return None
            self._token = ""
            self._value_done()
        elif token == "literal":
            if c != self._literal[0]:
                return None
            self._literal = self._literal[1:]
            if not self._literal:
                self._token = ""
                self._value_done()
            return c
        expect = self._expect
        if c in " \t\n\r":
            return "" if expect in ("start", "done") else c
        if expect == "start":
            if c != "{":
                return None
            self._stack.append("o")
            self._expect = "key_or_end"
            return c
        if expect in ("key_or_end", "key"):
            if c == '"':
                self._token, self._is_key = "string", True
                return c
            if c == "}" and expect == "key_or_end":
                return self._close_container()
            return None
        if expect == "colon":
            if c != ":":
                return None
            self._expect = "value"
            return c
        if expect in ("value", "value_or_end"):
            if c == "]" and expect == "value_or_end":
                return self._close_container()
            if c in "{[":
                self._stack.append("o" if c == "{" else "a")
                self._expect = "key_or_end" if c == "{" else "value_or_end"
            elif c == '"':
                self._token, self._is_key = "string", False
            elif c in _LITERALS:
                self._token, self._literal = "literal", _LITERALS[c]
            elif c == "-" or (c.isdigit() and c.isascii()):
                self._token = "number"
                self._number = _NUMBER["start"][_NUMBER_CLASS[c]]
            else:
                return None
            return c
        if expect == "comma_or_end":
            top = self._stack[-1]
            if c == ",":
                self._expect = "key" if top == "o" else "value"
                return c
            if (c == "}" and top == "o") or (c == "]" and top == "a"):
                return self._close_container()
        return None

    def _close_container(self) -> str:
        closing = "}" if self._stack.pop() == "o" else "]"
        if not self._stack:
            self._top_empty = self._expect == "key_or_end"
            self._expect = "done"
            return ""  # the last brace waits for close(): text may still follow
        self._value_done()
        return closing

    def _value_done(self) -> None:
        self._expect = "comma_or_end"


def parse_arguments_text(text: str) -> dict[str, object]:
    """Tool arguments text as an object, by the same rules as the stream (never raises)."""
    stream = ToolInputStream()
    body = stream.feed(text) + stream.close()
    if not body:
        return {}
    value = json.loads(body)
    assert isinstance(value, dict)
    return value

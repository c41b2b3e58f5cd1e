"""JSON read as it streams: where a value ends (`JsonEnd`), and how far an object can be passed
on while it is still being written (`JsonPrefix`)."""

from __future__ import annotations

import json

__all__ = ["JsonEnd", "JsonPrefix"]

_SPACE = frozenset(" \t\n\r")
_CLOSER = {"{": "}", "[": "]"}
_ESCAPES = frozenset('"\\/bfnrtu')
_HEX = frozenset("0123456789abcdefABCDEF")
_DIGITS = frozenset("0123456789")
_LITERALS = {"t": "rue", "f": "alse", "n": "ull"}
# States after which the text read so far closes by appending quotes and brackets alone.
_WHOLE_NUMBER = frozenset({"zero", "int", "frac", "exp_digits"})
_NUMBER = _WHOLE_NUMBER | {"minus", "dot", "exp", "exp_sign"}
_CLOSABLE = _WHOLE_NUMBER | {"key_or_end", "value_or_end", "after_value"}


class JsonEnd:
    """Finds where the JSON object or array that opens a text ends, fed the text in pieces.

    Brackets are counted outside strings only; nothing else is checked.

    Args:
        depth: brackets already open before the first piece (1: inside an object whose
            opening brace was read elsewhere).
    """

    def __init__(self, depth: int = 0) -> None:
        self.depth = depth
        self.in_string = False
        self.escaped = False

    def feed(self, text: str) -> int | None:
        """The offset in `text` just past the closing bracket, or None while still open."""
        for i, char in enumerate(text):
            if self.in_string:
                if self.escaped:
                    self.escaped = False
                elif char == "\\":
                    self.escaped = True
                elif char == '"':
                    self.in_string = False
            elif char == '"':
                self.in_string = True
            elif char in "{[":
                self.depth += 1
            elif char in "}]":
                self.depth -= 1
                if self.depth <= 0:
                    return i + 1
        return None


class JsonPrefix:
    """One JSON object fed in pieces, validated as it comes and passed on as far as it can
    still be closed.

    A prefix can be closed when appending closing quotes and brackets alone makes it valid JSON:
    `{"a": [1, "b` closes with `"]}`. What cannot (a key and its colon before the value opens,
    a comma, `tru`, `-`, `1.`, half an escape) is held until the object goes on, so each
    `take()` returns the next piece of a prefix that `closing()` makes whole. Raw control
    characters inside strings, which JSON forbids but models write, are passed on escaped.

    Attributes:
        done: the object is complete (its closing brace was read).
        broken: a character no JSON could hold there came; reading stopped before it.
    """

    def __init__(self) -> None:
        self.done = False
        self.broken = False
        self._state = "start"
        self._closers = ""  # what closes the open containers, innermost first
        self._in_key = False  # the open string is a key (escapes return to it)
        self._literal = ""  # the rest of a `true`, `false` or `null` being read
        self._hex = 0  # hex digits still due in a `\\u` escape
        self._pending: list[str] = []  # read, not yet taken
        self._safe = 0  # how much of `_pending` ends at a closable point
        self._safe_closing = ""  # what closes the text up to that point
        self._taken_closing = ""

    def feed(self, text: str) -> int:
        """Read `text` until the object ends or breaks; returns how many characters it took."""
        for i, char in enumerate(text):
            if self.done or self.broken:
                return i
            if not self._step(char):
                self.broken = True
                return i
        return len(text)

    def take(self) -> str:
        """The text read since the last `take()` that can be passed on now."""
        piece = "".join(self._pending[: self._safe])
        del self._pending[: self._safe]
        self._safe = 0
        self._taken_closing = self._safe_closing
        return piece

    def closing(self) -> str:
        """What makes everything taken so far one valid JSON object (`""` once it is done)."""
        return self._taken_closing

    # -- the state machine ------------------------------------------------------------------

    def _step(self, char: str) -> bool:
        """Read one character; False if it breaks the JSON."""
        state = self._state
        if state == "string":
            self._string_char(char)
        elif state == "escape":
            if char not in _ESCAPES:
                return False
            self._hex = 4 if char == "u" else 0
            self._pending.append(char)
            self._state = "unicode" if self._hex else "string"
        elif state == "unicode":
            if char not in _HEX:
                return False
            self._pending.append(char)
            self._hex -= 1
            if not self._hex:
                self._state = "string"
        elif state in _NUMBER and self._number(char):
            pass
        elif state in _NUMBER and state not in _WHOLE_NUMBER:
            return False  # `-`, `1.`, `1e` end no number
        else:
            if state in _NUMBER:
                self._state = "after_value"  # the number ended: read the character after it
            if char in _SPACE and self._state != "literal":
                self._pending.append(char)  # layout between tokens: the state stays
            elif not self._structural(char):
                return False
        self._mark()
        return True

    def _string_char(self, char: str) -> None:
        if char == '"':
            self._state = "colon" if self._in_key else "after_value"
        elif char == "\\":
            self._state = "escape"
        elif char < " ":
            char = json.dumps(char)[1:-1]
        self._pending.append(char)

    def _structural(self, char: str) -> bool:
        """A character outside strings."""
        state = self._state
        if state == "start":
            if char != "{":
                return False
            return self._open(char)
        if state == "literal":
            if not self._literal.startswith(char):
                return False
            self._literal = self._literal[1:]
            self._pending.append(char)
            if not self._literal:
                self._state = "after_value"
            return True
        if state in ("key_or_end", "key"):
            if char == "}" and state == "key_or_end":
                return self._close(char)
            if char != '"':
                return False
            self._pending.append(char)
            self._state, self._in_key = "string", True
            return True
        if state == "colon":
            if char != ":":
                return False
            self._pending.append(char)
            self._state = "value"
            return True
        if state == "after_value":
            if char == ",":
                self._pending.append(char)
                self._state = "key" if self._closers[0] == "}" else "value"
                return True
            return char == self._closers[0] and self._close(char)
        # `value` or `value_or_end`: a value opens
        if char == "]" and state == "value_or_end":
            return self._close(char)
        return self._value(char)

    def _value(self, char: str) -> bool:
        if char in _CLOSER:
            return self._open(char)
        self._pending.append(char)
        if char == '"':
            self._state, self._in_key = "string", False
        elif char == "-":
            self._state = "minus"
        elif char == "0":
            self._state = "zero"
        elif char in _DIGITS:
            self._state = "int"
        elif char in _LITERALS:
            self._state, self._literal = "literal", _LITERALS[char]
        else:
            self._pending.pop()
            return False
        return True

    def _number(self, char: str) -> bool:
        """Whether `char` goes on the number (`-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]?
        [0-9]+)?`); taken if so."""
        state, digit = self._state, char in _DIGITS
        if state == "minus":
            follows = ("zero" if char == "0" else "int") if digit else None
        elif state in ("zero", "int"):
            follows = "int" if digit and state == "int" else None
            if char == ".":
                follows = "dot"
        elif state in ("dot", "frac"):
            follows = "frac" if digit else None
        elif state == "exp":
            follows = "exp_digits" if digit else ("exp_sign" if char in "+-" else None)
        else:  # exp_sign, exp_digits
            follows = "exp_digits" if digit else None
        if char in "eE" and state in ("zero", "int", "frac"):
            follows = "exp"
        if follows is None:
            return False
        self._pending.append(char)
        self._state = follows
        return True

    def _open(self, bracket: str) -> bool:
        self._pending.append(bracket)
        self._closers = _CLOSER[bracket] + self._closers
        self._state = "key_or_end" if bracket == "{" else "value_or_end"
        return True

    def _close(self, bracket: str) -> bool:
        self._pending.append(bracket)
        self._closers = self._closers[1:]
        self._state = "after_value"
        if not self._closers:
            self.done = True
        return True

    def _mark(self) -> None:
        """Note the end of what was read as a safe place to stop, if the text closes there."""
        state = self._state
        if self.done:
            self._safe, self._safe_closing = len(self._pending), ""
        elif state == "string" and not self._in_key:
            self._safe, self._safe_closing = len(self._pending), '"' + self._closers
        elif state in _CLOSABLE:
            self._safe, self._safe_closing = len(self._pending), self._closers

"""`CallStream`: one JSON call object, `{"name": NAME, "arguments": {...}}`, passed on as the
model writes it (Hermes, Llama 3 JSON and Mistral calls).

The call starts (`ToolCallStart`) once its head is read: `{`, the `name` key and its string,
`,`, the `arguments` (or `parameters`) key, `:` and the `{` that opens the arguments. The
arguments then stream as `ToolCallArguments` pieces, each checked to keep the text a JSON
prefix that closing quotes and brackets can finish (`JsonPrefix`), and the rest of the call
object is read past. What goes wrong decides by when it does:

- before the start (no name first, arguments written as a JSON string or a list, broken JSON,
  the reply ending): nothing was sent, so the caller reads the text whole as before, and a call
  that is not valid comes back as the text it was;
- after it (a character that breaks the JSON, a closing marker or the end of the reply before
  the arguments close): the pieces already sent cannot be taken back, so the arguments are
  closed where they broke off (`{"city": "Par` + `"}`) and the call ends there, `cut`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Literal

from cortex.engine.tool_calls.json_stream import JsonEnd, JsonPrefix
from cortex.engine.tool_calls.parser import Item, ToolCallArguments, ToolCallStart

__all__ = ["ARGUMENT_KEYS", "CallHead", "CallStream", "read_head"]

ARGUMENT_KEYS = ("arguments", "parameters")
_SPACE = " \t\n\r"
_MAX_STRING = 256  # a key or name longer than this is no call head
_More = Literal["more"]


@dataclass(frozen=True)
class CallHead:
    """A call object's head: its function's name, and where its arguments object opens."""

    name: str
    arguments_at: int


def read_head(text: str, keys: Collection[str] = ARGUMENT_KEYS) -> CallHead | _More | None:
    """Read `{"name": NAME, "arguments": {` at the start of `text` (whitespace allowed).

    Returns:
        The head once its arguments' `{` is in `text`; `"more"` while `text` could still
        become one; None when it cannot (another layout, which is read whole instead).
        The answer for a text never changes once it is not `"more"`, however it goes on.
    """
    at, name = 0, ""
    for token in ("{", "name_key", ":", "name", ",", "arguments_key", ":", "{"):
        while at < len(text) and text[at] in _SPACE:
            at += 1
        if at == len(text):
            return "more"
        if len(token) == 1:
            if text[at] != token:
                return None
            if name and token == "{":
                return CallHead(name, at)
            at += 1
            continue
        if text[at] != '"':
            return None
        end = _string_end(text, at)
        if end < 0:
            return "more" if len(text) - at <= _MAX_STRING else None
        if end - at > _MAX_STRING:
            return None
        try:
            value = json.loads(text[at:end])
        except ValueError:
            return None
        if token == "name_key" and value != "name":
            return None
        if token == "arguments_key" and value not in keys:
            return None
        if token == "name":
            if not value:
                return None
            name = value
        at = end
    raise AssertionError("the head's last token returns")


def _partial_marker(text: str, marker: str) -> int:
    """How long a beginning of `marker` ends `text` (0 if none)."""
    for length in range(min(len(marker) - 1, len(text)), 0, -1):
        if text.endswith(marker[:length]):
            return length
    return 0


def _string_end(text: str, start: int) -> int:
    """Past the closing quote of the string that opens at `start`, or -1 if it is open."""
    at = start + 1
    while at < len(text):
        char = text[at]
        if char == "\\":
            at += 2
        elif char == '"':
            return at + 1
        else:
            at += 1
    return -1


_State = Literal["head", "whole", "arguments", "tail", "done", "cut"]


class CallStream:
    """One call object read as it streams (see the module's docstring).

    `feed(text)` takes the text from the object's `{` on (whitespace before it allowed) and
    returns the call's items; `state` says where it stands:

    - `head`: not started; everything fed is held in `raw`.
    - `whole`: it will not stream (another layout); the caller reads `raw` whole.
    - `arguments`, `tail`: started; the arguments, then the rest of the object.
    - `done`, `cut`: ended (the object closed, or the arguments were closed where they broke
      off); what was fed after the call is in `rest`.

    Args:
        new_id: makes the call's id.
        accept: whether a name read from the head may be called (else `whole`).
        stop: a marker that ends the call wherever it comes (Hermes' `</tool_call>`).
        name: the function, already known (Mistral's `name[ARGS]{...}`): `text` starts at the
            arguments object itself.
    """

    def __init__(
        self,
        *,
        new_id: Callable[[], str],
        accept: Callable[[str], bool] = bool,
        stop: str = "",
        name: str | None = None,
    ) -> None:
        self.state: _State = "head"
        self.raw = ""
        self.rest = ""
        self._new_id = new_id
        self._accept = accept
        self._stop = stop
        self._arguments = JsonPrefix()
        self._held = ""  # in the arguments: what may begin the stop marker
        self._tail = ""
        self._tail_end = JsonEnd(depth=1)
        self._scanned = 0
        self._name = name

    def feed(self, text: str) -> list[Item]:
        """Take the next text of the call; returns its items."""
        out: list[Item] = []
        if self.state == "head":
            self.raw += text
            text = self._read_head(out)
        if self.state == "arguments":
            text = self._read_arguments(text, out)
        if self.state == "tail":
            self._read_tail(text)
        elif self.state in ("done", "cut"):
            self.rest += text
        return out

    def close(self) -> list[Item]:
        """The reply ended: close open arguments (the call is `cut`)."""
        if self.state != "arguments":
            return []
        out: list[Item] = []
        self._read_arguments("", out, final=True)  # a stop marker's start that never went on
        return out

    def _read_head(self, out: list[Item]) -> str:
        """Start the call once its head is whole; returns the text after the head."""
        raw = self.raw
        stop = raw.find(self._stop) if self._stop else -1
        if self._name is not None:
            at = len(raw) - len(raw.lstrip())
            head: CallHead | _More | None = "more" if at == len(raw) else None
            if at < len(raw) and raw[at] == "{":
                head = CallHead(self._name, at)
        else:
            head = read_head(raw if stop < 0 else raw[:stop])
        if head == "more" and stop < 0:
            return ""
        if not isinstance(head, CallHead) or not self._accept(head.name):
            self.state = "whole"
            return ""
        out.append(ToolCallStart(head.name, self._new_id()))
        self.state, self.raw = "arguments", ""
        return raw[head.arguments_at :]

    def _read_arguments(self, text: str, out: list[Item], *, final: bool = False) -> str:
        """Pass the arguments on; returns the text after them (or after where they broke)."""
        text, self._held = self._held + text, ""
        stop = text.find(self._stop) if self._stop else -1
        if stop < 0 and self._stop and not final:  # a stop marker's start waits for more text
            partial = _partial_marker(text, self._stop)
            text, self._held = text[: len(text) - partial], text[len(text) - partial :]
        arguments = self._arguments
        used = arguments.feed(text if stop < 0 else text[:stop])
        piece = arguments.take()
        if piece:
            out.append(ToolCallArguments(piece))
        if arguments.done:
            self.state = "tail" if self._name is None else "done"
        elif arguments.broken or stop >= 0 or final:
            self._cut(out)
        if self.state == "arguments":
            return ""
        rest, self._held = text[used:] + self._held, ""
        return rest

    def _cut(self, out: list[Item]) -> None:
        piece = self._arguments.take() + self._arguments.closing()
        if piece:
            out.append(ToolCallArguments(piece))
        self.state = "cut"

    def _read_tail(self, text: str) -> None:
        """After the arguments: up to the call object's closing brace, or the stop marker."""
        self._tail += text
        end = self._tail_end.feed(self._tail[self._scanned :])
        end = None if end is None else end + self._scanned
        self._scanned = len(self._tail) if end is None else end
        stop = self._tail.find(self._stop) if self._stop else -1
        if stop >= 0 and (end is None or stop < end):
            end = stop
        if end is not None:
            self.state, self.rest, self._tail = "done", self._tail[end:], ""

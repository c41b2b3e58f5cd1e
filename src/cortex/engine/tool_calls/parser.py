"""The `ToolCallParser` base: text deltas in, text deltas and complete `ToolCall`s out."""

from __future__ import annotations

import json
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Item",
    "ToolCall",
    "ToolCallArguments",
    "ToolCallParser",
    "ToolCallStart",
    "held_suffix",
    "new_call_id",
]


@dataclass(frozen=True)
class ToolCall:
    """A complete call of a function tool.

    Attributes:
        name: the function's name.
        arguments: its arguments, a JSON object as text (re-serialised, so always valid JSON).
        id: a fresh `call_...` id.
    """

    name: str
    arguments: str
    id: str


@dataclass(frozen=True)
class ToolCallStart:
    """A call begins: its function is known, its arguments follow as `ToolCallArguments`.

    Attributes:
        name: the function's name.
        id: a fresh `call_...` id.
    """

    name: str
    id: str


@dataclass(frozen=True)
class ToolCallArguments:
    """The next piece of the open call's arguments (JSON text; the pieces of one call
    concatenate to one JSON object)."""

    text: str


Item = str | ToolCall | ToolCallStart | ToolCallArguments
"""What a parser returns: text deltas, and calls whole (`ToolCall`) or streamed piece by piece
(`ToolCallStart`, then `ToolCallArguments`), in the order the model wrote them."""


def new_call_id() -> str:
    """A fresh OpenAI-style tool call id (`call_` and 24 hex digits)."""
    return "call_" + uuid.uuid4().hex[:24]


def held_suffix(text: str, *markers: str) -> int:
    """How much of the end of `text` to hold: a marker's beginning and the whitespace before it."""
    partial = 0
    for marker in markers:
        for length in range(min(len(marker) - 1, len(text)), partial, -1):
            if text.endswith(marker[:length]):
                partial = length
                break
    rest = text[: len(text) - partial]
    return len(text) - len(rest.rstrip())


class ToolCallParser(ABC):
    """Splits a reply's text into text deltas and `ToolCall`s as it streams.

    `feed(delta)` and then `finish()` once; each returns the items it can release. Every split
    of the same text into deltas gives the same items, text concatenated.

    Args:
        prefill: text the reply continues (an assistant prefill, or the forced start of a
            call): parsed first, so a call it opens completes, but never returned as text.
        tool_names: the offered tools. A call written without its marker (Llama's bare JSON,
            Mistral's array once its special token is dropped) counts only if it names one.
        new_id: makes each call's id.
        tool_schemas: the JSON Schema of each offered function's parameters, by name (formats
            that write arguments untyped, like Qwen3-Coder's XML, type them by it).

    Attributes:
        cut_calls: calls ended by the parser rather than the model: their arguments broke off
            (bad JSON, a closing marker or the end of the reply before they closed) after
            their first piece was out, so they were closed where they stood.
    """

    def __init__(
        self,
        *,
        prefill: str = "",
        tool_names: Collection[str] | None = None,
        new_id: Callable[[], str] = new_call_id,
        tool_schemas: Mapping[str, Any] | None = None,
    ) -> None:
        self._tool_names = None if tool_names is None else frozenset(tool_names)
        self._tool_schemas = dict(tool_schemas or {})
        self._new_id = new_id
        self._made_call = False
        self.cut_calls = 0
        self._skip = 0
        self._pending: list[Item] = []  # a call the prefill started, for the first release
        if prefill:
            # The client has the prefill's text already; a call it started is still to come.
            started = self._parse(prefill)
            self._pending = [item for item in started if not isinstance(item, str)]
            self._skip = self._held_length()

    def feed(self, text: str) -> list[Item]:
        """Take a text delta; returns the text and calls it completes."""
        return self._output(self._parse(text)) if text else []

    def finish(self) -> list[Item]:
        """The reply ended: release what was held (an unclosed call as text, unless complete
        or already streaming, which is closed: see `cut_calls`)."""
        return self._output(self._end())

    def _output(self, items: list[Item]) -> list[Item]:
        """Merge adjacent text, drop empty text and the prefill's held text when released."""
        out: list[Item] = []
        if self._pending:
            items, self._pending = self._pending + items, []
        for item in items:
            if not isinstance(item, str):
                if not isinstance(item, ToolCallArguments):
                    self._skip = 0  # the call took the prefill's held text
                out.append(item)
                continue
            if self._skip:
                cut = min(self._skip, len(item))
                item, self._skip = item[cut:], self._skip - cut
            if not item:
                continue
            if out and isinstance(out[-1], str):
                out[-1] += item
            else:
                out.append(item)
        return out

    def _calls(self, text: str, *, marked: bool) -> list[ToolCall] | None:
        """The calls in `text` (one call object, or a list of them), or None if it holds none."""
        try:
            value = json.loads(text)
        except ValueError:
            return None
        values = value if isinstance(value, list) else [value]
        calls = [self._call(v, marked=marked) for v in values]
        if not calls or any(call is None for call in calls):
            return None
        self._made_call = True
        return [call for call in calls if call is not None]

    def _call(self, value: Any, *, marked: bool, name: str | None = None) -> ToolCall | None:
        """A call from `{"name", "arguments" | "parameters"}` (or arguments alone, given `name`)."""
        if name is None:
            if not isinstance(value, dict) or not isinstance(value.get("name"), str):
                return None
            name = value["name"]
            keys = [key for key in ("arguments", "parameters") if key in value]
            if not marked and not keys:
                return None
            value = value[keys[0]] if keys else {}
        if not name or (
            not marked and self._tool_names is not None and name not in self._tool_names
        ):
            return None
        if isinstance(value, str):  # some models write the arguments as a JSON string
            try:
                value = json.loads(value)
            except ValueError:
                return None
        if not isinstance(value, dict):
            return None
        return ToolCall(name, json.dumps(value, ensure_ascii=False), self._new_id())

    def _end_text(self, held: str) -> list[Item]:
        """Held text at the end: whitespace after the last call is dropped."""
        return [] if self._made_call and not held.strip() else [held]

    @abstractmethod
    def _parse(self, text: str) -> list[Item]: ...

    @abstractmethod
    def _end(self) -> list[Item]: ...

    @abstractmethod
    def _held_length(self) -> int:
        """How many characters are held back (they come out as text if no call takes them)."""

    @staticmethod
    @abstractmethod
    def forced_prefix(name: str | None) -> str:
        """The start of a call, to append to the prompt when a call is required.

        Args:
            name: the function that must be called; None: any of the offered ones.
        """

"""A reply's thought: the markers a model wraps it in, and a streaming splitter of its text.

Reasoning models write their thought between two markers before the answer: `<think>` and
`</think>` (Qwen3, DeepSeek-R1, QwQ, SmolLM3), `[THINK]` and `[/THINK]` (Magistral), or
`<|START_THINKING|>` and `<|END_THINKING|>` (Command A). `find_think_markers` finds the pair a
model knows from its vocabulary (or, for a marker that is not one token, its chat template).

Some templates open the thought themselves (Qwen3-Thinking ends the generation prompt with
`<think>\\n`; a prefill may hold half a thought): `ThinkMarkers.opens_in_thought` reads the
prompt as vLLM does, by whichever marker comes last in it. Others close it for the model when
thinking is off (`enable_thinking: false` renders `<think>\\n\\n</think>\\n\\n`), which the same
rule reads as "the reply is the answer".

`ReasoningSplitter` takes the reply's text deltas and returns `(reasoning, content)` deltas. It
holds back only what could still be a marker (`</thi`) and the whitespace before it; the
whitespace around the markers is dropped (the template writes it, not the model's thought);
a reply without a thought comes out as written.
Outside a thought, a start marker counts only before any answer text: a thought comes first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from cortex.engine.tool_calls.parser import held_suffix

if TYPE_CHECKING:
    from cortex.engine.tokenizer import Tokenizer

__all__ = ["KNOWN_THINK_MARKERS", "ReasoningSplitter", "ThinkMarkers", "find_think_markers"]

KNOWN_THINK_MARKERS: tuple[tuple[str, str], ...] = (
    ("<think>", "</think>"),
    ("[THINK]", "[/THINK]"),
    ("<|START_THINKING|>", "<|END_THINKING|>"),
)
"""The (start, end) marker pairs cortex recognises, tried in this order."""


@dataclass(frozen=True)
class ThinkMarkers:
    """The markers of a model's thought.

    Attributes:
        start: the opening marker (`<think>`).
        end: the closing marker (`</think>`).
    """

    start: str = "<think>"
    end: str = "</think>"

    @property
    def close_text(self) -> str:
        """What closes a thought the engine cuts short: a newline, the end marker, a blank line."""
        return f"\n{self.end}\n\n"

    def opens_in_thought(self, prompt: str) -> bool:
        """Whether a reply to `prompt` starts inside a thought (the last marker in it opens one)."""
        start = prompt.rfind(self.start)
        return start >= 0 and prompt.rfind(self.end) < start

    def splitter(self, *, in_thought: bool = False) -> ReasoningSplitter:
        """A fresh splitter for one reply."""
        return ReasoningSplitter(self, in_thought=in_thought)


def find_think_markers(tokenizer: Tokenizer) -> ThinkMarkers | None:
    """The thought markers of a model: the first known pair that are both tokens of its
    vocabulary or both written in its chat templates; None for a model that does not think."""
    templates = "".join(tokenizer.chat_templates.values())
    for start, end in KNOWN_THINK_MARKERS:
        in_vocab = (
            tokenizer.token_to_id(start) is not None and tokenizer.token_to_id(end) is not None
        )
        if in_vocab or (start in templates and end in templates):
            return ThinkMarkers(start, end)
    return None


class ReasoningSplitter:
    """Splits a reply's text deltas into thought and answer as they stream.

    `feed(delta)` for each delta, then `finish()` once; each returns `(reasoning, content)`.
    Every split of the same text into deltas gives the same concatenated results.

    Args:
        markers: the model's markers.
        in_thought: the reply starts inside a thought (the prompt opened it).

    Attributes:
        inside: whether the text seen so far ends inside a thought.
        closed: whether a thought has ended (so any further start marker is answer text).
    """

    def __init__(self, markers: ThinkMarkers, *, in_thought: bool = False) -> None:
        self.markers = markers
        self.inside = in_thought
        self.closed = False
        self._buffer = ""
        self._answered = False  # answer text seen: a start marker is text from now on
        self._lead = in_thought  # at the start of a thought or answer: drop leading whitespace

    def feed(self, text: str) -> tuple[str, str]:
        """Take one text delta; returns the (reasoning, content) that can be released."""
        self._buffer += text
        reasoning: list[str] = []
        content: list[str] = []
        while self._buffer:
            if self.inside:
                if not self._step_inside(reasoning):
                    break
            elif not self._step_outside(content):
                break
        return "".join(reasoning), "".join(content)

    def finish(self) -> tuple[str, str]:
        """The end of the reply: whatever is held back, as what it was."""
        held, self._buffer = self._buffer, ""
        if self._lead:
            held = held.lstrip()
        if self.inside:
            return held.rstrip(), ""
        return "", held

    def _step_inside(self, reasoning: list[str]) -> bool:
        """Inside a thought: release it up to the end marker. False when more text is needed."""
        buffer = self._buffer.lstrip() if self._lead else self._buffer
        self._buffer = buffer
        if not buffer:
            return False
        end = buffer.find(self.markers.end)
        if end >= 0:
            reasoning.append(buffer[:end].rstrip())
            self._buffer = buffer[end + len(self.markers.end) :]
            self.inside, self.closed, self._lead = False, True, True
            return True
        cut = len(buffer) - held_suffix(buffer, self.markers.end)
        if cut > 0:
            reasoning.append(buffer[:cut])
            self._lead = False
        self._buffer = buffer[cut:]
        return False

    def _step_outside(self, content: list[str]) -> bool:
        """Answer text; before any of it, a start marker opens a thought."""
        if self._answered or self.closed:
            if self._lead:
                self._buffer = self._buffer.lstrip()
                if not self._buffer:
                    return False
                self._lead = False
            content.append(self._buffer)
            self._answered, self._buffer = True, ""
            return False
        # Before any answer: leading whitespace and a (partial) start marker are held.
        buffer = self._buffer.lstrip()
        if buffer.startswith(self.markers.start):
            self._buffer = buffer[len(self.markers.start) :]
            self.inside, self._lead = True, True
            return True
        if not buffer or self.markers.start.startswith(buffer):
            return False
        content.append(self._buffer)  # no thought: the answer as written, leading space kept
        self._answered, self._buffer = True, ""
        return False

"""`IncrementalDetokenizer`: token ids in, final text out, never half a UTF-8 character."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

__all__ = ["Decoder", "IncrementalDetokenizer"]

# Prompt tokens decoded ahead of the first new token, so it gets its leading space right
# (SentencePiece decoders strip the space of whichever token comes first).
_CONTEXT_TOKENS = 5
_REPLACEMENT = "\ufffd"


class Decoder(Protocol):
    """Anything that decodes ids to text, like `cortex.engine.Tokenizer`."""

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        """The text of `ids`."""
        ...


class IncrementalDetokenizer:
    """Turns a stream of token ids into text deltas that are final.

    Byte-level BPE tokens can end in the middle of a UTF-8 character; decoding then yields
    U+FFFD at the end. Such trailing replacement characters are held back until the next
    token completes the character (or `finish` is called), and everything before them is
    emitted at once. Text is decoded over a small window of recent tokens, so each step costs
    the same however long the stream gets.

    Args:
        tokenizer: the model's `Tokenizer` (anything with its `decode`).
        prompt_ids: the prompt, whose last few tokens give the first new token its context.
        skip_special_tokens: leave special tokens (like end-of-turn) out of the text.

    Example:
        >>> detok = IncrementalDetokenizer(tokenizer)
        >>> text = "".join(detok.feed(t) for t in ids) + detok.finish()
    """

    def __init__(
        self,
        tokenizer: Decoder,
        *,
        prompt_ids: Sequence[int] = (),
        skip_special_tokens: bool = False,
    ) -> None:
        self._tokenizer = tokenizer
        self._skip_special_tokens = skip_special_tokens
        self._ids: list[int] = list(prompt_ids[-_CONTEXT_TOKENS:]) if prompt_ids else []
        # Window: ids[:_read] is emitted context, ids[_read:] the open tail.
        self._read = len(self._ids)
        self._prefix_text: str | None = None
        self._tail_emitted = 0  # characters of the open tail already emitted
        self._pieces: list[str] = []

    @property
    def text(self) -> str:
        """Everything emitted so far."""
        return "".join(self._pieces)

    def feed(self, token_id: int) -> str:
        """Add one token; return the text that became final (often all of it, maybe nothing)."""
        self._ids.append(token_id)
        tail = self._tail()
        stable = tail.rstrip(_REPLACEMENT)
        delta = stable[self._tail_emitted :] if len(stable) > self._tail_emitted else ""
        if len(tail) == len(stable):
            self._slide()
        else:
            self._tail_emitted = max(self._tail_emitted, len(stable))
        self._pieces.append(delta)
        return delta

    def finish(self) -> str:
        """End of stream: release whatever is held back (an incomplete character as U+FFFD)."""
        tail = self._tail()
        delta = tail[self._tail_emitted :]
        self._slide()
        self._pieces.append(delta)
        return delta

    def _slide(self) -> None:
        """At a clean boundary: the open tail becomes the context of the next decode."""
        del self._ids[: self._read]
        self._read = len(self._ids)
        self._prefix_text = None
        self._tail_emitted = 0

    def _tail(self) -> str:
        """The text of `ids[_read:]`, decoded in the context of `ids[:_read]`."""
        if self._prefix_text is None:
            self._prefix_text = self._tokenizer.decode(
                self._ids[: self._read], skip_special_tokens=self._skip_special_tokens
            )
        full = self._tokenizer.decode(self._ids, skip_special_tokens=self._skip_special_tokens)
        return full[len(self._prefix_text) :]

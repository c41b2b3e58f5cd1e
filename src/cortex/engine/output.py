"""What a request's client sees: token events, usage, detokenized text and when it stops."""

from __future__ import annotations

from collections.abc import Set
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cortex.engine.sampling import StopStringMatcher, TokenLogprob
from cortex.engine.sequence import Sequence

if TYPE_CHECKING:
    from cortex.engine.tokenizer import Tokenizer

__all__ = ["RequestOutput", "TokenEvent", "Usage"]


@dataclass(frozen=True)
class Usage:
    """Token counts of one request.

    Attributes:
        prompt_tokens: tokens in the prompt.
        completion_tokens: tokens generated, a final stop token included.
        cached_tokens: prompt tokens served from the prefix cache instead of computed.
    """

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0


@dataclass(frozen=True)
class TokenEvent:
    """One event of a request's stream.

    Attributes:
        token_id: the generated token; None on the final event.
        text: the text this event adds. It may be empty: text that could begin a stop string
            is held back until it cannot, and half a UTF-8 character waits for the rest.
        logprobs: when asked, one `TokenLogprob` for the token (with its top alternatives).
        finish_reason: None until the final event, then `stop`, `length` or `cancelled`.
        usage: on the final event, the request's token counts.
        stop_string: on the final event, the stop string that ended the request, if one did.
    """

    token_id: int | None
    text: str
    logprobs: list[TokenLogprob] | None = None
    finish_reason: str | None = None
    usage: Usage | None = None
    stop_string: str | None = None


class RequestOutput:
    """Turns one request's sampled tokens into events and decides when it is done.

    A token in `eos_ids` (unless `ignore_eos`) or in `stop_token_ids` ends the request with
    `stop` and adds no text; a stop string ends it with `stop` and is cut from the text;
    reaching `max_tokens` ends it with `length`.

    Args:
        tokenizer: the model's tokenizer (its incremental detokenizer makes the text).
        seq: the request's sequence (prompt, params).
        eos_ids: the model's end-of-turn tokens.
    """

    def __init__(self, tokenizer: Tokenizer, seq: Sequence, eos_ids: Set[int]) -> None:
        self.seq = seq
        params = seq.params
        self._stop_ids = set(params.stop_token_ids)
        if not params.ignore_eos:
            self._stop_ids |= set(eos_ids)
        self._detokenizer = tokenizer.detokenizer(
            prompt_ids=seq.prompt_token_ids, skip_special_tokens=True
        )
        self._matcher = StopStringMatcher(params.stop)

    def on_token(
        self, token_id: int, logprob: TokenLogprob | None
    ) -> tuple[list[TokenEvent], str | None]:
        """The events for a newly sampled token, and the finish reason if the request ends."""
        events: list[TokenEvent] = []
        finish_reason: str | None = None
        if token_id in self._stop_ids:
            finish_reason = "stop"
        else:
            text = self._matcher.feed(self._detokenizer.feed(token_id))
            events.append(TokenEvent(token_id, text, [logprob] if logprob else None))
            if self._matcher.stopped:
                finish_reason = "stop"
        if finish_reason is None and self.seq.num_output_tokens >= self.seq.params.max_tokens:
            finish_reason = "length"
        return events, finish_reason

    def finish(self, finish_reason: str) -> str:
        """The text still held back, released when the request ends (empty after a stop)."""
        if self._matcher.stopped:
            return ""
        return self._matcher.feed(self._detokenizer.finish()) + self._matcher.flush()

    def final_event(self, finish_reason: str) -> TokenEvent:
        """The last event: leftover text, the finish reason and the usage."""
        seq = self.seq
        usage = Usage(seq.num_prompt_tokens, seq.num_output_tokens, seq.num_cached_tokens or 0)
        text = self.finish(finish_reason)
        return TokenEvent(None, text, None, finish_reason, usage, self._matcher.matched)

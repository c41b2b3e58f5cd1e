"""`ThoughtReader`: a reasoning model's thought, read out of the text of its reply."""

from __future__ import annotations

from dataclasses import replace

from cortex.engine.reasoning import ReasoningSplitter, ThinkMarkers
from cortex.neuron.types import GenerationEvent

__all__ = ["ThoughtReader"]


class ThoughtReader:
    """Moves the thought of each generation event from `text` to `reasoning`.

    The tokens of the thought count as reasoning, its markers not: as OpenAI and vLLM count
    the hidden thought, so a thought of N tokens is N `reasoning_tokens` (on the final event's
    usage) whether the model opened it or the prompt did, and whether the model or the engine
    (at a budget) closed it. A marker that is one token, as in every model with `<think>`, is
    left out exactly; of an end marker written in several tokens, all but its last one count.

    Args:
        markers: the model's thought markers.
        in_thought: the prompt opened the thought (see `ThinkMarkers.opens_in_thought`).
    """

    def __init__(self, markers: ThinkMarkers, *, in_thought: bool) -> None:
        self.markers = markers
        self.splitter = ReasoningSplitter(markers, in_thought=in_thought)
        self.reasoning_tokens = 0

    @property
    def thinking(self) -> bool:
        """Whether the reply so far ends inside its thought."""
        return self.splitter.inside

    def read(self, event: GenerationEvent) -> GenerationEvent:
        """`event` with its thought under `reasoning` and its answer under `text`."""
        was_thinking = self.splitter.inside
        reasoning, text = self.splitter.feed(event.text)
        if event.finish_reason is not None:
            more_reasoning, more_text = self.splitter.finish()
            reasoning, text = reasoning + more_reasoning, text + more_text
        if was_thinking and self.splitter.inside:  # not the tokens that open or close it
            self.reasoning_tokens += event.token_count
        usage = event.usage
        if usage is not None:
            usage = replace(usage, reasoning_tokens=self.reasoning_tokens)
        return replace(event, text=text, reasoning=event.reasoning + reasoning, usage=usage)

"""ThoughtReader: the thought moved to `reasoning`, its tokens counted without the markers."""

from __future__ import annotations

from cortex.engine.reasoning import ThinkMarkers
from cortex.neuron.thought_reader import ThoughtReader
from cortex.neuron.types import GenerationEvent, TokenUsage


def read(reader: ThoughtReader, tokens: list[str]) -> list[GenerationEvent]:
    events = [GenerationEvent(text=token, token_count=1) for token in tokens]
    last = GenerationEvent(finish_reason="stop", usage=TokenUsage(5, len(tokens)))
    return [reader.read(event) for event in [*events, last]]


def test_a_thought_the_model_opens_counts_its_tokens_without_the_markers() -> None:
    reader = ThoughtReader(ThinkMarkers(), in_thought=False)
    events = read(reader, ["<think>", "\n", "two", " plus", "\n", "</think>", "\n\n", "4"])
    assert "".join(e.reasoning for e in events) == "two plus"
    assert "".join(e.text for e in events) == "4"
    usage = events[-1].usage
    assert usage is not None and usage.reasoning_tokens == 4  # "\n", "two", " plus", "\n"
    assert usage.completion_tokens == 8


def test_a_thought_the_prompt_opened_counts_from_the_first_token() -> None:
    reader = ThoughtReader(ThinkMarkers(), in_thought=True)
    events = read(reader, ["hm", "m", "</think>", "ok"])
    assert "".join(e.reasoning for e in events) == "hmm"
    usage = events[-1].usage
    assert usage is not None and usage.reasoning_tokens == 2


def test_a_reply_without_a_thought_has_no_reasoning_tokens() -> None:
    events = read(ThoughtReader(ThinkMarkers(), in_thought=False), ["Hi", " there"])
    usage = events[-1].usage
    assert usage is not None and usage.reasoning_tokens == 0

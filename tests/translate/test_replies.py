"""Golden replies both ways, non-streamed and streamed (through SSE bytes as well)."""

from __future__ import annotations

from typing import Any

import pytest

from cortex.translate import (
    DONE,
    AnthropicStreamTranslator,
    OpenAIStreamTranslator,
    SSEDecoder,
    anthropic_response_to_openai,
    collect_chat_completion,
    collect_message,
    encode_sse,
    openai_response_to_anthropic,
)

from .golden import FORWARD, REVERSE, fill_forward, fill_reverse
from .helpers import (
    check_anthropic_stream,
    check_openai_stream,
    chunks_from_completion,
    events_from_message,
    feed_all,
    ids,
    tool_inputs,
)

FORWARD_IDS = [c["name"] for c in FORWARD]
REVERSE_IDS = [c["name"] for c in REVERSE]


def stream_expected(case: dict[str, Any]) -> dict[str, Any]:
    expected = fill_forward(case["expected"])
    if "stream_usage" in case:
        expected["usage"] = case["stream_usage"]
    return expected


@pytest.mark.parametrize("case", FORWARD, ids=FORWARD_IDS)
def test_forward_reply(case: dict[str, Any]) -> None:
    got = openai_response_to_anthropic(case["completion"], request=case["request"], ids=ids())
    assert got.model_dump(mode="json") == fill_forward(case["expected"])


@pytest.mark.parametrize("case", FORWARD, ids=FORWARD_IDS)
def test_forward_stream(case: dict[str, Any]) -> None:
    translator = AnthropicStreamTranslator(case["request"], ids=ids(), input_tokens=0)
    events = feed_all(translator, chunks_from_completion(case["completion"]))
    check_anthropic_stream(events)
    assert collect_message(events).model_dump(mode="json") == stream_expected(case)
    assert translator.done and translator.stop_reason == case["expected"]["stop_reason"]


@pytest.mark.parametrize("pieces", [1, 2, 7])
@pytest.mark.parametrize("case", FORWARD, ids=FORWARD_IDS)
def test_forward_stream_through_bytes(case: dict[str, Any], pieces: int) -> None:
    """Upstream bytes split anywhere -> decoder -> translator -> bytes -> decoder -> message."""
    upstream = b"".join(encode_sse(c) for c in chunks_from_completion(case["completion"], pieces))
    decoder = SSEDecoder()
    translator = AnthropicStreamTranslator(case["request"], ids=ids(), input_tokens=0)
    out = b""
    for i in range(0, len(upstream), 13):
        for event in decoder.feed(upstream[i : i + 13]):
            out += b"".join(encode_sse(e) for e in translator.feed(event))
    out += b"".join(encode_sse(e) for e in translator.finish())
    client = SSEDecoder()
    events = [e.json() for e in client.feed(out)]
    assert all(e.event == e.json()["type"] for e in client.feed(out) if e.event)
    check_anthropic_stream(events)
    got, expected = collect_message(events).model_dump(mode="json"), stream_expected(case)
    if "stream_usage" in case:  # an estimate, which depends on how the text was cut
        got["usage"]["output_tokens"] = expected["usage"]["output_tokens"]
    assert got == expected


def test_usage_in_the_finish_chunk_ends_at_once() -> None:
    request = {"model": "m", "max_tokens": 5}
    translator = AnthropicStreamTranslator(request, ids=ids(), input_tokens=3)
    translator.feed({"choices": [{"delta": {"content": "x"}}]})
    usage = {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}
    events = translator.feed({"choices": [{"delta": {}, "finish_reason": "stop"}], "usage": usage})
    assert [e["type"] for e in events] == ["content_block_stop", "message_delta", "message_stop"]
    assert translator.feed(DONE) == [] and translator.finish() == []


def test_end_without_done_or_usage_still_ends_well() -> None:
    translator = AnthropicStreamTranslator({"model": "m"}, ids=ids(), input_tokens=9)
    events = translator.feed({"choices": [{"delta": {"content": "a"}}]})
    events += translator.feed({"choices": [{"delta": {"content": "b"}, "finish_reason": "stop"}]})
    assert [e["type"] for e in events][-1] == "content_block_stop"
    events += translator.finish()
    check_anthropic_stream(events)
    assert events[-2]["usage"]["input_tokens"] == 9 and events[-2]["usage"]["output_tokens"] == 2


def test_start_sends_message_start_and_ping_before_the_upstream() -> None:
    translator = AnthropicStreamTranslator({"model": "claude-x"}, ids=ids(), input_tokens=1234)
    first = translator.start()
    assert [e["type"] for e in first] == ["message_start", "ping"]
    assert first[0]["message"]["usage"]["input_tokens"] == 1234
    assert first[0]["message"]["model"] == "claude-x"
    assert first[0]["message"]["id"] == translator.message_id and translator.start() == []
    assert translator.ping() == [{"type": "ping"}]
    events = first + feed_all(translator, [DONE])
    check_anthropic_stream(events)
    assert collect_message(events).content == []


@pytest.mark.parametrize("case", REVERSE, ids=REVERSE_IDS)
def test_reverse_reply(case: dict[str, Any]) -> None:
    got = anthropic_response_to_openai(case["message"], request=case["request"], ids=ids())
    assert got.model_dump(mode="json") == fill_reverse(case["expected"])


@pytest.mark.parametrize("include_usage", [True, False])
@pytest.mark.parametrize("case", REVERSE, ids=REVERSE_IDS)
def test_reverse_stream(case: dict[str, Any], include_usage: bool) -> None:
    request = {**case["request"], "stream": True}
    if include_usage:
        request["stream_options"] = {"include_usage": True}
    translator = OpenAIStreamTranslator(request, ids=ids())
    chunks = feed_all(translator, events_from_message(case["message"]))
    check_openai_stream(chunks, include_usage=include_usage)
    expected = fill_reverse(case["expected"])
    got = collect_chat_completion(chunks).model_dump(mode="json")
    if not include_usage:
        expected.pop("usage")
    assert tool_inputs(got["choices"][0]["message"]) == tool_inputs(
        expected["choices"][0]["message"]
    )
    got["choices"][0]["message"] = expected["choices"][0]["message"]
    assert got == expected


def test_reverse_tool_input_given_whole_in_block_start() -> None:
    events = events_from_message(
        {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "m",
            "content": [],
            "stop_reason": "tool_use",
            "stop_sequence": None,
            "usage": {"input_tokens": 1, "output_tokens": 1},
        }
    )
    block = {"type": "tool_use", "id": "toolu_9", "name": "f", "input": {"a": [1, 2]}}
    events[2:2] = [
        {"type": "content_block_start", "index": 0, "content_block": block},
        {"type": "content_block_stop", "index": 0},
    ]
    chunks = feed_all(OpenAIStreamTranslator({"model": "m"}, ids=ids()), events)
    check_openai_stream(chunks, include_usage=False)
    call = collect_chat_completion(chunks).choices[0].message.tool_calls
    assert call is not None and call[0].function.arguments == '{"a": [1, 2]}'


def test_reverse_finish_without_message_stop() -> None:
    translator = OpenAIStreamTranslator({"model": "m"}, ids=ids())
    chunks = translator.feed(
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "x"}}
    )
    chunks += translator.finish()
    check_openai_stream(chunks, include_usage=False)
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert translator.finish() == [] and translator.feed(DONE) == []

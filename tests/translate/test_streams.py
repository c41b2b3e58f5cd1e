"""Stream translators on the upstream behaviours that broke other gateways (docs/translation.md)."""

from __future__ import annotations

from typing import Any

from cortex.errors import OverloadedError
from cortex.translate import (
    DONE,
    RAW_ARGUMENTS_KEY,
    AnthropicStreamTranslator,
    OpenAIStreamTranslator,
    SSEEvent,
    collect_chat_completion,
    collect_message,
    openai_response_to_anthropic,
)

from .helpers import check_anthropic_stream, check_openai_stream, chunk, feed_all, ids, usage_chunk

REQUEST = {"model": "claude-sonnet-4-5", "max_tokens": 100}


def translate(chunks: list[Any], **kwargs: Any) -> list[dict[str, Any]]:
    events = feed_all(AnthropicStreamTranslator(REQUEST, ids=ids(), **kwargs), chunks)
    check_anthropic_stream(events)
    return events


def call(
    index: int, *, id: str | None = None, name: str | None = None, args: str | None = None
) -> dict[str, Any]:
    function: dict[str, Any] = {}
    if name is not None:
        function["name"] = name
    if args is not None:
        function["arguments"] = args
    out: dict[str, Any] = {"index": index, "function": function}
    if id is not None:
        out["id"], out["type"] = id, "function"
    return out


def test_text_and_tool_call_in_one_chunk_lose_nothing() -> None:
    events = translate(
        [
            chunk(
                {
                    "content": "Let me look.",
                    "tool_calls": [call(0, id="call_1", name="read", args='{"path": "a"}')],
                }
            ),
            chunk({}, "tool_calls"),
            DONE,
        ]
    )
    message = collect_message(events)
    assert [b.type for b in message.content] == ["text", "tool_use"]
    assert message.content[1].input == {"path": "a"}  # type: ignore[union-attr]
    assert message.stop_reason == "tool_use"


def test_content_and_finish_in_one_chunk() -> None:
    events = translate([chunk({"content": "Bye"}, "stop"), DONE])
    assert collect_message(events).content[0].text == "Bye"  # type: ignore[union-attr]


def test_interleaved_tool_fragments_are_held_not_lost() -> None:
    events = translate(
        [
            chunk({"tool_calls": [call(0, id="call_a", name="f", args='{"x"')]}),
            chunk({"tool_calls": [call(1, id="call_b", name="g", args='{"y"')]}),
            chunk({"tool_calls": [call(0, args=": 1}"), call(1, args=": 2}")]}),
            chunk({}, "tool_calls"),
            usage_chunk({"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11}),
        ]
    )
    message = collect_message(events)
    assert [(b.id, b.input) for b in message.content] == [
        ("call_a", {"x": 1}),
        ("call_b", {"y": 2}),
    ]  # type: ignore[union-attr]
    # The first call streams live: its first fragment goes out before the second call exists.
    first_delta = next(e for e in events if e["type"] == "content_block_delta")
    assert first_delta == {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "input_json_delta", "partial_json": '{"x"'},
    }


def test_name_after_id_and_repeated_id_and_name() -> None:
    events = translate(
        [
            chunk({"tool_calls": [call(0, id="call_1")]}),
            chunk({"tool_calls": [call(0, id="call_1", name="read")]}),
            chunk({"tool_calls": [call(0, name="read", args='{"a":')]}),
            chunk({"tool_calls": [call(0, args="1}")]}),
            chunk({}, "tool_calls"),
            DONE,
        ]
    )
    starts = [e for e in events if e["type"] == "content_block_start"]
    assert starts == [
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "tool_use", "id": "call_1", "name": "read", "input": {}},
        }
    ]
    assert collect_message(events).content[0].input == {"a": 1}  # type: ignore[union-attr]


def test_name_in_pieces_waits_for_the_arguments() -> None:
    events = translate(
        [
            chunk({"tool_calls": [call(0, id="call_1", name="get_")]}),
            chunk({"tool_calls": [call(0, name="weather")]}),
            chunk({"tool_calls": [call(0, args="{}")]}),
            chunk({}, "tool_calls"),
        ]
    )
    assert collect_message(events).content[0].name == "get_weather"  # type: ignore[union-attr]


def test_tool_call_without_arguments_still_closes_with_empty_input() -> None:
    events = translate(
        [
            chunk({"tool_calls": [call(0, id="call_1", name="ls", args="")]}),
            chunk({}, "tool_calls"),
            DONE,
        ]
    )
    message = collect_message(events)
    assert message.content[0].input == {} and message.stop_reason == "tool_use"  # type: ignore[union-attr]


def test_invalid_json_arguments_do_not_crash() -> None:
    events = translate(
        [
            chunk({"tool_calls": [call(0, id="c", name="f", args="{oops")]}),
            chunk({}, "tool_calls"),
            DONE,
        ]
    )
    assert collect_message(events).content[0].input == {RAW_ARGUMENTS_KEY: "{oops"}  # type: ignore[union-attr]


def test_empty_deltas_open_no_block() -> None:
    events = translate(
        [
            chunk({"role": "assistant", "content": ""}),
            chunk({"content": ""}),
            chunk({}, "stop"),
            DONE,
        ]
    )
    assert not [e for e in events if e["type"] == "content_block_start"]
    assert collect_message(events).stop_reason == "end_turn"


def test_text_after_a_tool_call_is_written_after_it() -> None:
    events = translate(
        [
            chunk({"tool_calls": [call(0, id="c", name="f", args="{}")]}),
            chunk({"content": "and also"}),
            chunk({}, "tool_calls"),
            DONE,
        ]
    )
    assert [b.type for b in collect_message(events).content] == ["tool_use", "text"]


def test_reasoning_runs_and_signature() -> None:
    events = translate(
        [
            chunk({"reasoning_content": "Hmm"}),
            chunk({"reasoning": ", ok"}),
            chunk({"content": "Answer"}),
            chunk({}, "stop"),
            DONE,
        ]
    )
    message = collect_message(events)
    assert message.content[0].thinking == "Hmm, ok" and message.content[0].signature.startswith(
        "cortex-"
    )  # type: ignore[union-attr]
    assert message.content[1].text == "Answer"  # type: ignore[union-attr]


def test_usage_before_finish_and_continuous_usage() -> None:
    usage = {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11}
    events = feed_all(
        AnthropicStreamTranslator(REQUEST, ids=ids(), input_tokens=10),
        [
            {**chunk({"content": "a"}), "usage": usage},
            {**chunk({"content": "b"}), "usage": {**usage, "completion_tokens": 2}},
            {**chunk({}, "stop"), "usage": {**usage, "completion_tokens": 3}},
            usage_chunk({**usage, "completion_tokens": 3}),
            DONE,
        ],
    )
    check_anthropic_stream(events)
    assert events[-2]["usage"] == {
        "input_tokens": 10,
        "output_tokens": 3,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }


def test_upstream_error_mid_stream_becomes_an_error_event() -> None:
    translator = AnthropicStreamTranslator(REQUEST, ids=ids())
    events = translator.feed(chunk({"content": "partial"}))
    events += translator.feed(
        {
            "error": {
                "message": "queue full",
                "type": "overloaded_error",
                "param": None,
                "code": None,
            }
        }
    )
    assert events[-1] == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "queue full"},
    }
    assert translator.done and translator.feed(DONE) == [] and translator.finish() == []


def test_fail_turns_an_exception_into_an_error_event() -> None:
    translator = AnthropicStreamTranslator(REQUEST, ids=ids())
    assert translator.fail(OverloadedError("no capacity")) == [
        {"type": "error", "error": {"type": "overloaded_error", "message": "no capacity"}}
    ]
    assert translator.fail(RuntimeError("again")) == []
    other = AnthropicStreamTranslator(REQUEST, ids=ids())
    assert other.fail(ConnectionResetError("reset"))[0]["error"] == {
        "type": "api_error",
        "message": "reset",
    }


def test_sse_events_and_models_are_accepted() -> None:
    from cortex.protocol import openai as O

    translator = AnthropicStreamTranslator(REQUEST, ids=ids())
    model = O.ChatCompletionChunk.model_validate(
        {"id": "c", "created": 1, "model": "m", "choices": [{"delta": {"content": "x"}}]}
    )
    events = translator.feed(model)
    events += translator.feed(SSEEvent(data='{"choices":[{"delta":{},"finish_reason":"length"}]}'))
    events += translator.feed(SSEEvent(data="[DONE]"))
    check_anthropic_stream(events)
    assert collect_message(events).stop_reason == "max_tokens"


def test_openai_stream_error_event_and_pings() -> None:
    translator = OpenAIStreamTranslator({"model": "m"}, ids=ids())
    chunks = translator.feed({"type": "ping"})
    chunks += translator.feed(
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
    )
    chunks += translator.feed(
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hi"}}
    )
    chunks += translator.feed(
        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    )
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[-1] == {
        "error": {"message": "Overloaded", "type": "server_error", "param": None, "code": None}
    }
    assert translator.done and translator.finish() == []


def test_openai_stream_usage_follows_the_anthropic_counts() -> None:
    translator = OpenAIStreamTranslator(
        {"model": "m", "stream_options": {"include_usage": True}}, ids=ids()
    )
    message = {
        "id": "msg",
        "type": "message",
        "role": "assistant",
        "model": "u",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 7, "output_tokens": 1, "cache_read_input_tokens": 3},
    }
    chunks = translator.feed({"type": "message_start", "message": message})
    chunks += translator.feed(
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": 4, "input_tokens": None},
        }
    )
    chunks += translator.feed({"type": "message_stop"})
    check_openai_stream(chunks, include_usage=True)
    assert chunks[-2]["usage"] == {
        "prompt_tokens": 10,
        "completion_tokens": 4,
        "total_tokens": 14,
        "prompt_tokens_details": {"cached_tokens": 3},
    }
    assert (
        translator.finish_reason == "stop"
        and collect_chat_completion(chunks).choices[0].message.content == ""
    )


def test_whitespace_before_a_tool_call_opens_no_block() -> None:
    events = translate(
        [
            chunk({"content": "\n\n"}),
            chunk({"content": " "}),
            chunk({"tool_calls": [call(0, id="c", name="f", args="{}")]}),
            chunk({"content": "\n"}),
            chunk({}, "tool_calls"),
            DONE,
        ]
    )
    assert [b.type for b in collect_message(events).content] == ["tool_use"]
    whole = openai_response_to_anthropic(
        {
            "choices": [
                {
                    "message": {
                        "content": "\n\n",
                        "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{}"}}],
                    },
                    "finish_reason": "tool_calls",
                }
            ]
        },
        request=REQUEST,
        ids=ids(),
    )
    assert [b.type for b in whole.content] == ["tool_use"]


def test_leading_whitespace_joins_the_text_that_follows() -> None:
    events = translate(
        [chunk({"content": "\n"}), chunk({"content": " Hi"}), chunk({}, "stop"), DONE]
    )
    assert collect_message(events).content[0].text == "\n Hi"  # type: ignore[union-attr]


def test_a_later_call_streams_live_once_the_one_before_is_whole() -> None:
    """Calls one after another (as models write them): each streams as it comes, not at the end."""
    translator = AnthropicStreamTranslator(REQUEST, ids=ids())
    before_end: list[dict[str, Any]] = []
    for item in [
        chunk({"tool_calls": [call(0, id="call_a", name="f", args='{"x": 1}')]}),
        chunk({"content": "\n"}),
        chunk({"tool_calls": [call(1, id="call_b", name="g", args='{"y": ')]}),
        chunk({"tool_calls": [call(1, args='"two"}')]}),
    ]:
        before_end += translator.feed(item)
    events = before_end + translator.feed(chunk({}, "tool_calls")) + translator.finish()
    check_anthropic_stream(events)
    live = [
        (e["index"], e["delta"]["partial_json"])
        for e in before_end
        if e["type"] == "content_block_delta"
    ]
    assert live == [(0, '{"x": 1'), (0, "}"), (1, '{"y": '), (1, '"two"')]
    message = collect_message(events)
    assert [(b.id, b.input) for b in message.content] == [  # type: ignore[union-attr]
        ("call_a", {"x": 1}),
        ("call_b", {"y": "two"}),
    ]

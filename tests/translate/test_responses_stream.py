"""Chat replies -> Responses API output, whole and streamed: goldens, error paths, properties.

The official `openai` SDK judges: it accumulates the Chat chunks (its chat stream state) into
the non-streamed reply, validates every Responses event against its own types, and
accumulates them with the state machine behind `client.responses.stream`.
"""

# ruff: noqa: E501  (golden fixtures read best one event or message a line)
from __future__ import annotations

import doctest
import itertools
import json
from typing import Any, get_args

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai import omit
from openai._models import construct_type
from openai.lib.streaming.chat._completions import ChatCompletionStreamState
from openai.lib.streaming.responses._responses import ResponseStreamState
from openai.types.chat import ChatCompletionChunk as SDKChunk
from openai.types.responses import Response as SDKResponse
from openai.types.responses import ResponseStreamEvent as SDKEvent
from pydantic import BaseModel, TypeAdapter

from cortex.errors import ContextLengthExceededError, OverloadedError, UpstreamError
from cortex.protocol.openai import ChatCompletion, ChatCompletionChunk, ChatCompletionMessage
from cortex.protocol.responses import ResponsesRequest
from cortex.protocol.responses_events import ResponseStreamEvent
from cortex.translate import responses_stream
from cortex.translate.ids import IdFactory
from cortex.translate.responses_api import (
    openai_response_to_responses,
    responses_request_to_openai,
)
from cortex.translate.responses_stream import ResponsesStreamTranslator
from cortex.translate.sse import DONE, SSEDecoder, encode_sse

OUR_EVENT: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
SDK_EVENTS: dict[str, type[BaseModel]] = {
    get_args(cls.model_fields["type"].annotation)[0]: cls for cls in get_args(get_args(SDKEvent)[0])
}  # the SDK's event classes by `type`
TERMINAL = {"response.completed", "response.incomplete", "response.failed"}
TOOLS = [{"type": "function", "name": n, "parameters": {"type": "object"}} for n in ("f", "g")]
REQUEST = ResponsesRequest.model_validate({"model": "m", "input": "hi", "tools": TOOLS})


def ids() -> IdFactory:
    return IdFactory(seed=7, created=1_700_000_000)


def chunk(
    delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any
) -> dict[str, Any]:
    choices = [{"index": 0, "delta": delta or {}, "finish_reason": finish}]
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 0, "model": "m",
            "choices": [] if delta is None and finish is None else choices, **extra}  # fmt: skip


def usage(prompt: int = 5, completion: int = 3, cached: int = 0) -> dict[str, Any]:
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion, "prompt_tokens_details": {"cached_tokens": cached}}  # fmt: skip


def stream(
    chunks: list[dict[str, Any]], *, fail: BaseException | None = None
) -> list[dict[str, Any]]:
    """Translate `chunks` and return the events as the JSON a client reads."""
    translator = ResponsesStreamTranslator(REQUEST, ids=ids())
    events = translator.start()
    for c in chunks:
        events += translator.feed(c)
    events += translator.fail(fail) if fail is not None else translator.finish()
    for event in events:  # each is exactly what its envelope model dumps
        assert OUR_EVENT.validate_python(event).model_dump(mode="json") == event
    return [json.loads(encode_sse(e).split(b"data: ", 1)[1]) for e in events]


def sdk_accumulate(events: list[dict[str, Any]]) -> ResponseStreamState[Any]:
    """Validate each event against the SDK's types and feed its stream accumulator."""
    state: ResponseStreamState[Any] = ResponseStreamState(input_tools=TOOLS, text_format=omit)  # type: ignore[arg-type]
    for event in events:
        strict_check(event)
        state.handle_event(construct_type(type_=SDKEvent, value=event))
    return state


def strict_check(event: dict[str, Any]) -> None:
    """Validate strictly against the SDK's types, which list only the error codes OpenAI sends.

    cortex also sends `context_length_exceeded` (the Codex CLI compacts its history on it)
    and `server_is_overloaded` (retried); the SDK's own lenient parsing keeps them.
    """
    error = (event.get("response") or {}).get("error")
    if error is not None and error["code"] in ("context_length_exceeded", "server_is_overloaded"):
        event = json.loads(json.dumps(event))
        event["response"]["error"]["code"] = "server_error"
    SDK_EVENTS[event["type"]].model_validate(event)


def check_sequence(events: list[dict[str, Any]]) -> None:
    """The rules a Responses stream keeps, whatever the upstream did."""
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert [e["type"] for e in events[:2]] == ["response.created", "response.in_progress"]
    assert [e["type"] in TERMINAL for e in events] == [False] * (len(events) - 1) + [True]
    item: dict[str, Any] | None = None  # the open item
    part: int | None = None  # its open part
    text = ""
    added: list[str] = []
    for e in events[2:-1]:
        kind = e["type"]
        if kind == "response.output_item.added":
            assert item is None and e["output_index"] == len(added)
            item, text = e["item"], ""
            added.append(item["id"])
        elif kind == "response.output_item.done":
            assert item is not None and part is None and e["item"]["id"] == item["id"]
            if item["type"] == "function_call":
                assert e["item"]["arguments"] == (text or "{}")
            item = None
        else:
            assert item is not None and e["item_id"] == item["id"]
            assert e["output_index"] == len(added) - 1
            if kind == "response.content_part.added":
                assert part is None
                part, text = e["content_index"], ""
            elif kind == "response.content_part.done":
                assert part == e["content_index"]
                assert text == (e["part"].get("text") or e["part"].get("refusal") or "")
                part = None
            elif kind.endswith(".delta"):
                assert (
                    kind == "response.function_call_arguments.delta" or part == e["content_index"]
                )
                assert e["delta"]
                text += e["delta"]
            elif kind == "response.function_call_arguments.done":
                assert e["arguments"] == (text or "{}")
            else:
                assert kind.endswith(".done")
                assert (e.get("text") if "text" in e else e.get("refusal")) == text
    assert item is None
    assert [i["id"] for i in events[-1]["response"]["output"]] == added


def chat_reply(chunks: list[dict[str, Any]]) -> ChatCompletion:
    """The non-streamed reply the chunks add up to, accumulated by the SDK."""
    state: ChatCompletionStreamState[Any] = ChatCompletionStreamState()
    for c in chunks:
        state.handle_chunk(SDKChunk.model_validate(c))
    if not chunks:
        return ChatCompletion(id="none", created=0, model="m", choices=[])
    reply = state.current_completion_snapshot.to_dict()
    for choice in reply["choices"]:
        choice["message"]["role"] = "assistant"  # None when the stream sent no role chunk
    return ChatCompletion.model_validate(reply)


def project(sdk: Any, ours: Any) -> Any:
    """`sdk` cut down to the keys `ours` has (the SDK adds `parsed`, `phase`, ...)."""
    if isinstance(ours, dict) and isinstance(sdk, dict):
        return {key: project(sdk.get(key), value) for key, value in ours.items()}
    if isinstance(ours, list) and isinstance(sdk, list):
        return [project(a, b) for a, b in zip(sdk, ours, strict=False)]
    return sdk


# -- whole replies ---------------------------------------------------------------------------


def test_whole_reply_with_reasoning_text_and_tool_calls() -> None:
    reply = ChatCompletion.model_validate({
        "id": "chatcmpl-1", "created": 0, "model": "backend-name",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": "Let me check.", "reasoning": "Need weather.",
            "tool_calls": [
                {"id": "call_a", "type": "function", "function": {"name": "f", "arguments": '{"city":"Oslo"}'}},
                {"id": "call_b", "type": "function", "function": {"name": "g", "arguments": ""}},
            ]}}],
        "usage": usage(10, 7, cached=4) | {"completion_tokens_details": {"reasoning_tokens": 3}},
    })  # fmt: skip
    response = openai_response_to_responses(reply, request=REQUEST, ids=ids()).model_dump(
        mode="json"
    )
    expected_ids = ids()
    assert response["id"] == expected_ids.new("resp_")
    assert response["created_at"] == 1_700_000_000
    assert response["status"] == "completed"
    assert response["model"] == "m"
    assert response["error"] is None and response["incomplete_details"] is None
    assert response["output"] == [
        {"type": "reasoning", "id": expected_ids.new("rs_"), "summary": [], "status": "completed",
         "content": [{"type": "reasoning_text", "text": "Need weather."}]},
        {"type": "message", "id": expected_ids.new("msg_"), "role": "assistant", "status": "completed",
         "content": [{"type": "output_text", "text": "Let me check.", "annotations": [], "logprobs": []}]},
        {"type": "function_call", "id": expected_ids.new("fc_"), "call_id": "call_a", "name": "f",
         "arguments": '{"city":"Oslo"}', "status": "completed"},
        {"type": "function_call", "id": expected_ids.new("fc_"), "call_id": "call_b", "name": "g",
         "arguments": "{}", "status": "completed"},
    ]  # fmt: skip
    assert response["usage"] == {
        "input_tokens": 10, "input_tokens_details": {"cached_tokens": 4, "cache_write_tokens": 0},
        "output_tokens": 7, "output_tokens_details": {"reasoning_tokens": 3}, "total_tokens": 17,
    }  # fmt: skip
    assert [t["name"] for t in response["tools"]] == ["f", "g"]
    assert SDKResponse.model_validate(response).output_text == "Let me check."


def test_whole_reply_cut_by_the_token_limit_is_incomplete() -> None:
    reply = ChatCompletion.model_validate({
        "id": "c", "created": 0, "model": "m", "usage": usage(),
        "choices": [{"index": 0, "finish_reason": "length", "message": {"role": "assistant", "content": "Once upon"}}],
    })  # fmt: skip
    response = openai_response_to_responses(reply, request=REQUEST, ids=ids())
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.output[0].status == "incomplete"


# -- streams ---------------------------------------------------------------------------------

GOLDEN = (
    b'event: response.output_item.added\ndata: {"sequence_number":2,"type":"response.output_item.added","output_index":0,"item":{"type":"message","id":"MSG","role":"assistant","status":"in_progress","content":[]}}\n\n'
    b'event: response.content_part.added\ndata: {"sequence_number":3,"type":"response.content_part.added","item_id":"MSG","output_index":0,"content_index":0,"part":{"type":"output_text","text":"","annotations":[],"logprobs":[]}}\n\n'
    b'event: response.output_text.delta\ndata: {"sequence_number":4,"type":"response.output_text.delta","item_id":"MSG","output_index":0,"content_index":0,"delta":"Hi","logprobs":[]}\n\n'
    b'event: response.output_text.delta\ndata: {"sequence_number":5,"type":"response.output_text.delta","item_id":"MSG","output_index":0,"content_index":0,"delta":" there","logprobs":[]}\n\n'
    b'event: response.output_text.done\ndata: {"sequence_number":6,"type":"response.output_text.done","item_id":"MSG","output_index":0,"content_index":0,"text":"Hi there","logprobs":[]}\n\n'
    b'event: response.content_part.done\ndata: {"sequence_number":7,"type":"response.content_part.done","item_id":"MSG","output_index":0,"content_index":0,"part":{"type":"output_text","text":"Hi there","annotations":[],"logprobs":[]}}\n\n'
    b'event: response.output_item.done\ndata: {"sequence_number":8,"type":"response.output_item.done","output_index":0,"item":{"type":"message","id":"MSG","role":"assistant","status":"completed","content":[{"type":"output_text","text":"Hi there","annotations":[],"logprobs":[]}]}}\n\n'
)  # fmt: skip


def test_text_stream_bytes() -> None:
    translator = ResponsesStreamTranslator(REQUEST, ids=ids())
    head = b"".join(encode_sse(e) for e in translator.start())
    assert head.startswith(b'event: response.created\ndata: {"sequence_number":0,')
    assert b'event: response.in_progress\ndata: {"sequence_number":1,' in head
    body = b""
    for c in [chunk({"role": "assistant", "content": ""}), chunk({"content": "Hi"}),
              chunk({"content": " there"}, finish="stop")]:  # fmt: skip
        body += b"".join(encode_sse(e) for e in translator.feed(c))
    assert not translator.done and b"output_text.done" not in body  # open until the end
    tail = translator.feed(chunk(usage=usage()))  # finish reason and usage: the end
    assert translator.done
    body += b"".join(encode_sse(e) for e in tail[:-1])
    message_id = translator.response.output[0].id
    assert message_id is not None
    assert body == GOLDEN.replace(b"MSG", message_id.encode())
    assert tail[-1]["type"] == "response.completed" and tail[-1]["sequence_number"] == 9
    assert tail[-1]["response"]["usage"]["total_tokens"] == 8
    assert translator.finish() == [] and translator.fail(RuntimeError("late")) == []
    assert translator.feed(chunk({"content": "late"})) == []


def test_done_ends_the_stream_without_usage() -> None:
    translator = ResponsesStreamTranslator(REQUEST, ids=ids())
    events = translator.feed(chunk({"content": "Hi"}, finish="stop")) + translator.feed(DONE)
    check_sequence(events)
    assert events[-1]["response"]["usage"] is None
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == "Hi"


def test_sse_events_and_an_upstream_error_object() -> None:
    decoder = SSEDecoder()
    upstream = (
        b'data: {"id":"c","object":"chat.completion.chunk","created":0,"model":"m",'
        b'"choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null}]}\n\n'
        b'data: {"error":{"message":"neuron lost its GPU","type":"server_error","code":null}}\n\n'
    )
    translator = ResponsesStreamTranslator(REQUEST, ids=ids())
    events = [e for sse in decoder.feed(upstream) for e in translator.feed(sse)]
    check_sequence(events)
    failed = events[-1]["response"]
    assert events[-1]["type"] == "response.failed"
    assert failed["error"] == {"code": "server_error", "message": "neuron lost its GPU"}
    assert failed["output"][0]["content"][0]["text"] == "Hel"
    assert failed["output"][0]["status"] == "incomplete"


def test_tool_call_arguments_are_streamed_and_done() -> None:
    events = stream([
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "Checking."}),
        chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": ""}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Oslo"}'}},
                              {"index": 1, "id": "call_2", "type": "function", "function": {"name": "g", "arguments": "{}"}}]}),
        chunk({}, finish="tool_calls"),
        chunk(usage=usage()),
    ])  # fmt: skip
    check_sequence(events)
    kinds = [
        (e["type"], e.get("delta") or e.get("arguments"))
        for e in events
        if "function_call_arguments" in e["type"]
    ]
    assert kinds == [
        ("response.function_call_arguments.delta", '{"city":'),
        ("response.function_call_arguments.delta", '"Oslo"}'),
        ("response.function_call_arguments.done", '{"city":"Oslo"}'),
        ("response.function_call_arguments.delta", "{}"),
        ("response.function_call_arguments.done", "{}"),
    ]  # fmt: skip
    final = sdk_accumulate(events)._completed_response
    assert final is not None
    calls = [
        (o.call_id, o.name, o.parsed_arguments) for o in final.output if o.type == "function_call"
    ]
    assert calls == [("call_1", "f", None), ("call_2", "g", None)]
    assert final.output_text == "Checking."


def test_name_in_pieces_and_arguments_only_at_the_end() -> None:
    """Backends that send the name in pieces, or the arguments only at the end (`.done` only)."""
    events = stream([
        chunk({"tool_calls": [{"index": 0, "id": "call_1", "function": {"name": "get_"}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"name": "weather"}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"q":1}'}}]}, finish="tool_calls"),
    ])  # fmt: skip
    check_sequence(events)
    added = next(e for e in events if e["type"] == "response.output_item.added")
    assert added["item"]["name"] == "get_weather"
    events = stream(
        [chunk({"tool_calls": [{"index": 0, "id": "call_1", "function": {"name": "f"}}]})]
    )
    check_sequence(events)
    assert events[-1]["response"]["output"][0]["arguments"] == "{}"


def test_interleaved_tool_calls_and_late_text_are_held_not_lost() -> None:
    events = stream([
        chunk({"tool_calls": [{"index": 0, "id": "a", "function": {"name": "f", "arguments": '{"x":'}}]}),
        chunk({"tool_calls": [{"index": 1, "id": "b", "function": {"name": "g", "arguments": '{"y":'}}]}),
        chunk({"content": "by the way", "tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}),
        chunk({"tool_calls": [{"index": 1, "function": {"arguments": "2}"}}]}, finish="tool_calls"),
    ])  # fmt: skip
    check_sequence(events)
    output = events[-1]["response"]["output"]
    assert [(o["type"], o.get("arguments")) for o in output] == [
        ("function_call", '{"x":1}'), ("function_call", '{"y":2}'), ("message", None),
    ]  # fmt: skip
    live = [e["delta"] for e in events if e["type"] == "response.function_call_arguments.delta"]
    assert live == ['{"x":', "1}", '{"y":2}']  # the first call streams live, the rest at the end


def test_fragments_without_index_and_a_repeated_name() -> None:
    events = stream([
        chunk({"tool_calls": [{"id": "a", "function": {"name": "f", "arguments": "{"}}]}),
        chunk({"tool_calls": [{"function": {"name": "f", "arguments": "}"}}]}),
        chunk({"tool_calls": [{"id": "b", "function": {"name": "g", "arguments": "{}"}}]}),
    ])  # fmt: skip
    check_sequence(events)
    output = events[-1]["response"]["output"]
    assert [(o["call_id"], o["name"], o["arguments"]) for o in output] == [
        ("a", "f", "{}"), ("b", "g", "{}"),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (ContextLengthExceededError(9000, 100, 8192), "context_length_exceeded"),
        (OverloadedError("queue full"), "server_is_overloaded"),
        (UpstreamError("neuron went away"), "server_error"),
        (ConnectionResetError("reset"), "server_error"),
    ],
)
def test_failure_mid_stream_closes_items_and_ends_failed(error: BaseException, code: str) -> None:
    events = stream(
        [chunk({"reasoning_content": "hm"}), chunk({"content": "Half a sen"})], fail=error
    )
    check_sequence(events)
    failed = events[-1]["response"]
    assert events[-1]["type"] == "response.failed" and failed["status"] == "failed"
    assert failed["error"]["code"] == code and failed["error"]["message"]
    assert [i["status"] for i in failed["output"]] == ["completed", "incomplete"]
    state = sdk_accumulate(events)
    assert state._completed_response is None


def test_failure_before_any_chunk_still_starts_the_response() -> None:
    events = stream([], fail=OverloadedError("busy"))
    assert [e["type"] for e in events] == [
        "response.created",
        "response.in_progress",
        "response.failed",
    ]


def test_chunks_as_models_or_json_give_the_same_events() -> None:
    chunks = [chunk({"content": "a"}), chunk({"content": "b"}, finish="stop"), chunk(usage=usage())]
    one, two = (
        ResponsesStreamTranslator(REQUEST, ids=ids()),
        ResponsesStreamTranslator(REQUEST, ids=ids()),
    )
    from_json = [e for c in chunks for e in one.feed(c)] + one.finish()
    from_models = [
        e for c in chunks for e in two.feed(ChatCompletionChunk.model_validate(c))
    ] + two.finish()
    assert from_json == from_models


def test_a_late_finish_reason_length_makes_the_stream_incomplete() -> None:
    events = stream([chunk({"content": "Once"}), chunk({}, finish="length"), chunk(usage=usage())])
    check_sequence(events)
    assert events[-1]["type"] == "response.incomplete"
    assert events[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    assert sdk_accumulate(events)._completed_response is None


# -- properties ------------------------------------------------------------------------------

texts = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
json_args = st.dictionaries(
    st.text(max_size=4), st.integers() | st.text(max_size=5), max_size=3
).map(json.dumps)


@st.composite
def split(draw: st.DrawFn, text: str) -> list[str]:
    """`text` cut at random places into non-empty pieces."""
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(text) - 1)), max_size=4))) if text else []
    bounds = [0, *[c for c in cuts if c < len(text)], len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds) if b > a]


@st.composite
def chat_streams(draw: st.DrawFn, canonical: bool) -> list[dict[str, Any]]:
    """A Chat stream as a backend may send it.

    Canonical streams give reasoning, then text, then tool calls (what a non-streamed reply
    can express); the others interleave everything, tool calls among themselves too.
    """
    reasoning = [("reasoning_content", p) for p in draw(split(draw(texts)))]
    content = [("content", p) for p in draw(split(draw(texts)))]
    calls: list[list[tuple[str, Any]]] = []  # the fragments of each tool call
    for index in range(draw(st.integers(0, 3))):
        name = draw(st.sampled_from(["f", "g", "get_weather"]))
        arguments = draw(st.sampled_from(["", "{}"]) | json_args)
        name_pieces = draw(split(name))
        first = {"index": index, "id": f"call_{index}", "type": "function",
                 "function": {"name": name_pieces[0], "arguments": ""}}  # fmt: skip
        call = [("tool", first)]
        call += [("tool", {"index": index, "function": {"name": p}}) for p in name_pieces[1:]]
        call += [
            ("tool", {"index": index, "function": {"arguments": p}}) for p in draw(split(arguments))
        ]
        calls.append(call)
    if canonical:
        pieces = reasoning + content + [piece for call in calls for piece in call]
    else:
        # Anything interleaved with anything; each call's fragments keep their order and
        # calls start in index order (as Chat streams number them).
        pieces = []
        queues = [reasoning, content, *calls]
        started = [False] * len(calls)
        while any(queues):
            ready = [
                i for i, queue in enumerate(queues)
                if queue and (i < 2 or i == 2 or started[i - 2] or started[i - 3])
            ]  # fmt: skip
            i = draw(st.sampled_from(ready))
            pieces.append(queues[i].pop(0))
            if i >= 2:
                started[i - 2] = True
    chunks: list[dict[str, Any]] = []
    if draw(st.booleans()):
        chunks.append(chunk({"role": "assistant", "content": ""}))
    delta: dict[str, Any] = {}
    for key, value in pieces:
        if (key in delta and key != "tool") or draw(st.booleans()):
            if delta:
                chunks.append(chunk(delta))
            delta = {}
        if key == "tool":
            delta.setdefault("tool_calls", []).append(value)
        else:
            delta[key] = value
    finish = draw(st.sampled_from(["stop", "length", "tool_calls", "content_filter", None]))
    if delta or finish:
        chunks.append(chunk(delta, finish=finish))
    if draw(st.booleans()):
        chunks.append(chunk(usage=usage(draw(st.integers(0, 99)), draw(st.integers(0, 99)))))
    return chunks


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chat_streams(canonical=True))
def test_stream_adds_up_to_the_whole_reply(chunks: list[dict[str, Any]]) -> None:
    events = stream(chunks)
    check_sequence(events)
    state = sdk_accumulate(events)
    expected = openai_response_to_responses(
        chat_reply(chunks), request=REQUEST, ids=ids()
    ).model_dump(mode="json")
    assert events[-1]["response"] == expected
    if events[-1]["type"] == "response.completed":
        final = state._completed_response
        assert final is not None
        assert project(final.to_dict(), expected) == expected
        assert final.output_text == "".join(
            p["text"] for o in expected["output"] if o["type"] == "message" for p in o["content"]
        )


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chat_streams(canonical=False), st.data())
def test_any_stream_is_valid_and_loses_nothing(
    chunks: list[dict[str, Any]], data: st.DataObject
) -> None:
    cut = data.draw(st.integers(0, len(chunks)))
    failing = data.draw(st.booleans())
    events = stream(
        chunks[:cut] if failing else chunks, fail=UpstreamError("cut") if failing else None
    )
    check_sequence(events)
    sdk_accumulate(events)
    choices = chat_reply(chunks[:cut] if failing else chunks).choices
    reply = choices[0].message if choices else ChatCompletionMessage()
    output = events[-1]["response"]["output"]
    texts_of = lambda kind, part: "".join(  # noqa: E731
        p[part] for o in output if o["type"] == kind for p in o["content"] if part in p
    )
    assert texts_of("message", "text") == (reply.content or "")
    assert texts_of("reasoning", "text") == (reply.reasoning_content or "")
    calls = [
        (o["call_id"], o["name"], o["arguments"]) for o in output if o["type"] == "function_call"
    ]
    assert calls == [
        (c.id, c.function.name, c.function.arguments or "{}") for c in reply.tool_calls or []
    ]


def test_docstring_example_runs() -> None:
    result = doctest.testmod(responses_stream, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_a_request_for_a_summary_gets_the_thought_as_the_reasoning_summary() -> None:
    """cortex has no summarizer: asked for `reasoning.summary`, the whole thought is the
    summary, streamed with the summary events (what the Codex CLI shows) and the same as the
    non-streamed reply; sent back as input, it becomes the turn's `reasoning_content`."""
    request = ResponsesRequest.model_validate(
        {"model": "m", "input": "hi", "reasoning": {"effort": "high", "summary": "auto"}}
    )
    chunks = [
        chunk({"reasoning_content": "Need "}),
        chunk({"reasoning_content": "weather."}),
        chunk({"content": "Sunny."}),
        chunk(finish="stop", usage=usage()),
    ]
    translator = ResponsesStreamTranslator(request, ids=ids())
    raw = translator.start()
    for c in chunks:
        raw += translator.feed(c)
    for event in raw:
        assert OUR_EVENT.validate_python(event).model_dump(mode="json") == event
    events = [json.loads(encode_sse(e).split(b"data: ", 1)[1]) for e in raw]
    assert [e["type"] for e in events[2:9]] == [
        "response.output_item.added",
        "response.reasoning_summary_part.added",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.done",
        "response.reasoning_summary_part.done",
        "response.output_item.done",
    ]
    assert all(e["summary_index"] == 0 for e in events[3:8])
    assert events[6]["text"] == "Need weather."
    state = sdk_accumulate(events)
    final = state._completed_response
    assert final is not None and final.output_text == "Sunny."
    reasoning = final.output[0]
    assert reasoning.type == "reasoning" and not reasoning.content
    assert [part.text for part in reasoning.summary] == ["Need weather."]
    whole = openai_response_to_responses(chat_reply(chunks), request=request, ids=ids())
    assert whole.model_dump(mode="json") == events[-1]["response"]

    item = whole.output[0].model_dump(mode="json")
    history = responses_request_to_openai(
        {"model": "m", "input": [item, {"role": "assistant", "content": "Sunny."}]}
    )
    assert history.model_dump(mode="json")["messages"][-1]["reasoning_content"] == "Need weather."


def test_a_later_call_streams_live_once_the_one_before_is_whole() -> None:
    translator = ResponsesStreamTranslator(REQUEST, ids=ids())
    before_end = translator.start()
    for c in [
        chunk({"tool_calls": [{"index": 0, "id": "a", "function": {"name": "f", "arguments": '{"x": 1}'}}]}),
        chunk({"content": "then"}),
        chunk({"tool_calls": [{"index": 1, "id": "b", "function": {"name": "g", "arguments": '{"y":'}}]}),
        chunk({"tool_calls": [{"index": 1, "function": {"arguments": " 2}"}}]}),
    ]:  # fmt: skip
        before_end += translator.feed(c)
    events = before_end + translator.feed(chunk({}, finish="tool_calls")) + translator.finish()
    check_sequence([json.loads(encode_sse(e).split(b"data: ", 1)[1]) for e in events])
    live = [
        (e["output_index"], e["delta"])
        for e in before_end
        if e["type"] == "response.function_call_arguments.delta"
    ]
    assert live == [(0, '{"x": 1}'), (2, '{"y":'), (2, " 2}")]  # the text item sits between
    output = json.loads(encode_sse(events[-1]).split(b"data: ", 1)[1])["response"]["output"]
    assert [(o["type"], o.get("arguments")) for o in output] == [
        ("function_call", '{"x": 1}'), ("message", None), ("function_call", '{"y": 2}'),
    ]  # fmt: skip

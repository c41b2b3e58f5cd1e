"""SSE bytes: the exact encoding of each kind of event, and the incremental decoder."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from cortex.protocol import anthropic as A
from cortex.translate import DONE, SSEDecoder, SSEEvent, encode_sse, encode_sse_comment


def decode_all(data: bytes, cuts: list[int] | None = None) -> list[SSEEvent]:
    """Decode `data` fed in pieces cut at `cuts` (every byte when None)."""
    decoder = SSEDecoder()
    bounds = sorted(set(cuts)) if cuts is not None else list(range(1, len(data)))
    events: list[SSEEvent] = []
    start = 0
    for cut in [*bounds, len(data)]:
        events += decoder.feed(data[start:cut])
        start = cut
    return events + decoder.finish()


def test_anthropic_event_gets_its_event_line() -> None:
    event = {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "text_delta", "text": "é"},
    }
    assert encode_sse(event) == (
        b"event: content_block_delta\n"
        b'data: {"type":"content_block_delta","index":0,'
        b'"delta":{"type":"text_delta","text":"\xc3\xa9"}}\n\n'
    )


def test_openai_chunk_and_error_are_data_only() -> None:
    chunk = {"id": "c", "object": "chat.completion.chunk", "choices": []}
    assert (
        encode_sse(chunk) == b'data: {"id":"c","object":"chat.completion.chunk","choices":[]}\n\n'
    )
    error = {"error": {"message": "boom", "type": "server_error", "param": None, "code": None}}
    assert encode_sse(error).startswith(b'data: {"error":')


def test_done_and_comment() -> None:
    assert encode_sse(DONE) == b"data: [DONE]\n\n"
    assert encode_sse_comment("keep\nalive") == b": keep alive\n\n"


def test_models_encode_like_their_dump() -> None:
    ping = A.PingEvent()
    assert encode_sse(ping) == b'event: ping\ndata: {"type":"ping"}\n\n'


def test_decoder_crlf_cr_comments_multiline_and_done() -> None:
    data = (
        b": hello\r\n"
        b'event: message_start\r\ndata: {"a":\r\ndata: 1}\r\n\r\n'
        b"data: x\rdata: y\r\r"
        b"id: 7\nretry: 1500\ndata: [DONE]\n\n"
    )
    for cuts in (None, [], [len(data) // 2]):
        events = decode_all(data, cuts)
        assert events == [
            SSEEvent(data='{"a":\n1}', event="message_start"),
            SSEEvent(data="x\ny"),
            SSEEvent(data="[DONE]", id="7", retry=1500),
        ]
    assert events[0].json() == {"a": 1}
    assert events[2].is_done and not events[0].is_done


def test_cr_then_lf_in_the_next_chunk_is_one_line_end() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"\n") == []
    assert decoder.feed(b"\r") == [SSEEvent(data="a")]
    assert decoder.feed(b"\ndata: b\n\n") == [SSEEvent(data="b")]


def test_field_rules() -> None:
    data = b"data:no-space\nevent\ndata\nunknown: x\ndata:  two\n\nevent: lonely\n\n"
    assert decode_all(data) == [SSEEvent(data="no-space\n\n two")]


def test_bom_is_skipped_even_when_split() -> None:
    data = b"\xef\xbb\xbfdata: 1\n\n"
    assert decode_all(data) == [SSEEvent(data="1")]


def test_utf8_split_inside_a_character() -> None:
    data = "data: héllo 🙂\n\n".encode()
    assert decode_all(data) == [SSEEvent(data="héllo 🙂")]


def test_finish_dispatches_an_ended_line_but_not_a_cut_one() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: whole\n") == []
    assert decoder.finish() == [SSEEvent(data="whole")]
    decoder = SSEDecoder()
    assert decoder.feed(b"data: cut") == []
    assert decoder.finish() == []


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=60, deadline=None)
@given(
    payloads=st.lists(
        st.tuples(st.sampled_from([None, "message_start", "ping", "content_block_delta"]), _json),
        min_size=1,
        max_size=5,
    ),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=12),
    crlf=st.booleans(),
)
def test_encode_then_decode_any_split(
    payloads: list[tuple[str | None, object]], cuts: list[int], crlf: bool
) -> None:
    events = []
    for kind, body in payloads:
        events.append({"type": kind, "body": body} if kind else {"body": body})
    data = b"".join(encode_sse(e) for e in events) + encode_sse(DONE)
    if crlf:
        data = data.replace(b"\n", b"\r\n")
    decoded = decode_all(data, [c for c in cuts if c < len(data)])
    assert [e.event for e in decoded[:-1]] == [e.get("type") for e in events]
    assert [json.loads(e.data) for e in decoded[:-1]] == events
    assert decoded[-1].is_done

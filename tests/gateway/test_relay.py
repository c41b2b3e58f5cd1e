"""The OpenAI relay passes a node's plain chunks on as they came, unsplit, and says the same as
when it reads every chunk: the same bytes, tokens and usage, and the same faults."""

from __future__ import annotations

import json

import pytest

from cortex.errors import UpstreamError
from cortex.fleet import Batch, Chunk
from cortex.gateway.metrics import RequestRecord
from cortex.gateway.relay import OpenAIRelay


def event(delta: dict[str, object] | None = None, **fields: object) -> bytes:
    chunk: dict[str, object] = {"id": "c1", "object": "chat.completion.chunk", "model": "m1"}
    chunk["choices"] = [] if delta is None else [{"index": 0, "delta": delta}]
    chunk.update({"usage": None, **fields})
    return b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"


USAGE = {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
REPLY = [
    event({"role": "assistant", "content": ""}),
    event({"content": "Hel"}),
    event({"content": "lo \\n\\n"}),  # an escaped line end and quotes stay inside the JSON
    event({"content": 'say "usage":{}'}),
    event({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}),
    event({}, choices=[{"index": 0, "delta": {}, "finish_reason": "stop"}]),
    event(None, usage=USAGE),
    b"data: [DONE]\n\n",
]


def relayed(batches: list[Batch], *, include_usage: bool) -> tuple[bytes, int, int]:
    record = RequestRecord(None, "openai")
    relay = OpenAIRelay(record, include_usage=include_usage)
    out = b"".join(relay.feed(batch) for batch in batches) + relay.finish()
    return out, record.streamed_tokens, record.completion_tokens


def parsed(events: list[bytes]) -> Batch:
    return Batch("a", [Chunk(e[6:-2].decode(), "a") for e in events])


@pytest.mark.parametrize("include_usage", [True, False])
@pytest.mark.parametrize("split", [2, 3, 5, 7])
def test_unsplit_chunks_leave_as_every_chunk_read_would(include_usage: bool, split: int) -> None:
    read = relayed([parsed(REPLY)], include_usage=include_usage)
    tail = b"".join(REPLY[split:])
    unsplit = relayed(
        [parsed(REPLY[:split]), Batch("a", raw=tail, count=len(REPLY) - split)],
        include_usage=include_usage,
    )
    assert unsplit == read
    assert read[1] == 4 and read[2] == 4  # four tokens streamed, four in the usage
    assert (b'"usage":{' in read[0]) is include_usage


def test_a_chunk_that_is_not_json_is_the_same_fault_unsplit() -> None:
    events = [REPLY[2], b"data: not json\n\n", REPLY[3]]
    with pytest.raises(UpstreamError, match="not JSON"):
        relayed([parsed(REPLY[:2]), parsed(events)], include_usage=False)
    with pytest.raises(UpstreamError, match="not JSON"):
        relayed([parsed(REPLY[:2]), Batch("a", raw=b"".join(events), count=3)], include_usage=False)

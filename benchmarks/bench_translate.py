"""Stream translation cost per event and per token, both directions, against a plain relay.

Every row runs the work a gateway does for one streamed reply, on this machine: decode the
upstream SSE bytes, translate, encode the client's SSE bytes. The relay row does only
decode + JSON parse + encode (the floor any gateway pays); ratios are against it. The
`feed() only` rows time the state machine alone, on events already parsed. One upstream event
carries one token (text) or one argument fragment (tool call).

    python benchmarks/bench_translate.py [--tokens 2000] [--repeat 15]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from typing import Any

from cortex.protocol import openai as O
from cortex.translate import (
    DONE,
    AnthropicStreamTranslator,
    IdFactory,
    OpenAIStreamTranslator,
    SSEDecoder,
    encode_sse,
)

WORDS = ("the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "and", "cat")
Runner = Callable[[list[bytes], list[Any]], int]


def openai_stream(tokens: int, *, tool: bool) -> bytes:
    """An upstream chat stream: `tokens` text deltas, or one tool call in `tokens` fragments."""
    head = {"id": "chatcmpl-b", "object": "chat.completion.chunk", "created": 1, "model": "m"}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    def arguments(text: str) -> dict[str, Any]:
        return {"tool_calls": [{"index": 0, "function": {"arguments": text}}]}

    chunks: list[Any] = [chunk({"role": "assistant", "content": ""})]
    if tool:
        function = {"name": "write", "arguments": '{"text": "'}
        chunks.append(chunk({"tool_calls": [{"index": 0, "id": "call_1", "function": function}]}))
    for i in range(tokens):
        word = WORDS[i % len(WORDS)] + " "
        chunks.append(chunk(arguments(word) if tool else {"content": word}))
    if tool:
        chunks.append(chunk(arguments('"}')))
    chunks.append(chunk({}, "tool_calls" if tool else "stop"))
    usage = {"prompt_tokens": 10, "completion_tokens": tokens, "total_tokens": 10 + tokens}
    chunks += [{**head, "choices": [], "usage": usage}, DONE]
    return b"".join(encode_sse(c) for c in chunks)


def anthropic_stream(tokens: int, *, tool: bool) -> bytes:
    """An upstream Anthropic stream of the same reply."""
    translator = AnthropicStreamTranslator({"model": "m"}, ids=IdFactory(seed=0), input_tokens=10)
    events: list[Any] = []
    for event in SSEDecoder().feed(openai_stream(tokens, tool=tool)):
        events += translator.feed(event)
    return b"".join(encode_sse(e) for e in events + translator.finish())


def split(data: bytes, size: int = 1400) -> list[bytes]:
    """The stream as the network delivers it: arbitrary slices."""
    return [data[i : i + size] for i in range(0, len(data), size)]


def relay(pieces: list[bytes], _: list[Any]) -> int:
    """Decode, parse and re-encode every event without translating: the floor."""
    decoder = SSEDecoder()
    out = 0
    for piece in pieces:
        for event in decoder.feed(piece):
            out += len(encode_sse(DONE if event.is_done else json.loads(event.data)))
    return out


def validated_relay(pieces: list[bytes], _: list[Any]) -> int:
    """The relay, validating each chunk with the pydantic envelope: why streams use dicts."""
    decoder = SSEDecoder()
    out = 0
    for piece in pieces:
        for event in decoder.feed(piece):
            if event.is_done:
                out += len(encode_sse(DONE))
            else:
                chunk = O.ChatCompletionChunk.model_validate_json(event.data)
                out += len(chunk.model_dump_json())
    return out


def new_translator(kind: type[Any]) -> Any:
    if kind is AnthropicStreamTranslator:
        return kind({"model": "claude"}, ids=IdFactory(seed=1), input_tokens=10)
    return kind({"model": "gpt", "stream_options": {"include_usage": True}}, ids=IdFactory(seed=1))


def translated(kind: type[Any]) -> Runner:
    """Decode upstream bytes, translate, encode every emitted event."""

    def run(pieces: list[bytes], _: list[Any]) -> int:
        decoder = SSEDecoder()
        translator = new_translator(kind)
        out = 0
        for piece in pieces:
            for event in decoder.feed(piece):
                for emitted in translator.feed(event):
                    out += len(encode_sse(emitted))
        return out

    return run


def feed_only(kind: type[Any]) -> Runner:
    """Only the state machine: `feed` on events already parsed (no SSE, no JSON)."""

    def run(_: list[bytes], items: list[Any]) -> int:
        translator = new_translator(kind)
        return sum(len(translator.feed(item)) for item in items)

    return run


def timed(fn: Runner, pieces: list[bytes], items: list[Any]) -> float:
    start = time.perf_counter()
    fn(pieces, items)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--tokens", type=int, default=2000, help="tokens per streamed reply")
    parser.add_argument("--repeat", type=int, default=15, help="rounds (each row's best is kept)")
    args = parser.parse_args(argv)
    rows: list[dict[str, Any]] = []
    for shape in ("text", "tool"):
        upstream_openai = split(openai_stream(args.tokens, tool=shape == "tool"))
        upstream_anthropic = split(anthropic_stream(args.tokens, tool=shape == "tool"))
        cases: list[tuple[str, Runner, list[bytes]]] = [
            ("relay, no translation", relay, upstream_openai),
            ("relay + pydantic validation per chunk", validated_relay, upstream_openai),
            ("OpenAI -> Anthropic", translated(AnthropicStreamTranslator), upstream_openai),
            ("Anthropic -> OpenAI", translated(OpenAIStreamTranslator), upstream_anthropic),
            (
                "feed() only, OpenAI -> Anthropic",
                feed_only(AnthropicStreamTranslator),
                upstream_openai,
            ),
            (
                "feed() only, Anthropic -> OpenAI",
                feed_only(OpenAIStreamTranslator),
                upstream_anthropic,
            ),
        ]
        inputs: list[list[Any]] = []
        for _, _, pieces in cases:
            decoded = SSEDecoder().feed(b"".join(pieces))
            inputs.append([DONE if e.is_done else json.loads(e.data) for e in decoded])
        # Rounds run every row once, so a busy moment of the machine hits all rows alike.
        best = [float("inf")] * len(cases)
        for _ in range(args.repeat):
            for i, (_, fn, pieces) in enumerate(cases):
                best[i] = min(best[i], timed(fn, pieces, inputs[i]))
        floor = best[0]
        for (name, _, _), items, seconds in zip(cases, inputs, best, strict=True):
            rows.append(
                {
                    "shape": shape,
                    "name": name,
                    "events": len(items),
                    "us_per_event": seconds / len(items) * 1e6,
                    "us_per_token": seconds / args.tokens * 1e6,
                    "ratio": seconds / floor,
                }
            )
    given = argv if argv is not None else sys.argv[1:]
    python = f"{platform.python_implementation()} {platform.python_version()}"
    print(f"# python benchmarks/bench_translate.py {' '.join(given)}".rstrip())
    print(f"# {python}, {args.tokens} tokens per reply, best of {args.repeat}")
    print("| reply | path | upstream events | µs/event | µs/token | vs relay |")
    print("|---|---|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['shape']} | {row['name']} | {row['events']} | {row['us_per_event']:.2f} "
            f"| {row['us_per_token']:.2f} | {row['ratio']:.2f}x |"
        )
    return rows


if __name__ == "__main__":
    main()

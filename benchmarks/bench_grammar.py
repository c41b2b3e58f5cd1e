"""Structured output's cost per token: filling each row's mask, masking the logits, advancing.

The grammar is a JSON Schema (nested object, enum, array) compiled by llguidance against the
default model's tokenizer (SmolLM2, 49152 tokens); each row replays a different valid JSON
reply token by token, as the runner would: fill the batch's bitmasks, apply them to float32
logits of the model's width, then feed each row its token. Also run by
`python benchmarks/bench_engine.py --grammar`.

    python benchmarks/bench_grammar.py [--batches 1,16] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from cortex.engine.gguf import default_model_dir
from cortex.engine.grammar import GrammarCompiler, json_schema_grammar
from cortex.engine.sampling import apply_token_masks
from cortex.engine.tokenizer import Tokenizer

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "colour": {"enum": ["red", "green", "blue"]},
        "sizes": {"type": "array", "items": {"type": "integer"}},
        "address": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "zip": {"type": "string"}},
            "required": ["city", "zip"],
        },
    },
    "required": ["name", "colour", "sizes", "address"],
}
COLOURS = ("red", "green", "blue")


def reply(row: int) -> str:
    """A valid reply, different for every row (the writer's separators: `, ` and `: `)."""
    value = {
        "name": f"Person number {row} of the benchmark",
        "colour": COLOURS[row % 3],
        "sizes": list(range(row % 5 + 1)),
        "address": {"city": f"City {row * 7}", "zip": f"{10000 + row}"},
    }
    return json.dumps(value)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", default="1,16", help="batch sizes, comma separated")
    parser.add_argument("--repeats", type=int, default=5, help="runs per batch size (best kept)")
    args = parser.parse_args(argv)
    model_dir = default_model_dir(progress=False)
    tokenizer = Tokenizer.from_dir(model_dir)
    vocab = json.loads((model_dir / "config.json").read_text())["vocab_size"]
    compiler = GrammarCompiler((model_dir / "tokenizer.json").read_text(), vocab, {2})
    grammar = json_schema_grammar(SCHEMA, strict=True)

    start = time.perf_counter()
    compiler.matcher(grammar)
    first_compile_ms = (time.perf_counter() - start) * 1e3  # tokenizer build + compile
    start = time.perf_counter()
    compiler.matcher(json_schema_grammar({**SCHEMA, "title": "another"}, strict=True))
    compile_ms = (time.perf_counter() - start) * 1e3
    start = time.perf_counter()
    compiler.matcher(grammar)
    cached_ms = (time.perf_counter() - start) * 1e3

    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"load average {os.getloadavg()[0]:.1f}, vocabulary {vocab}, best of {args.repeats}"
    )
    print(
        f"first grammar (tokenizer build + compile) {first_compile_ms:.0f} ms, "
        f"a new grammar {compile_ms:.1f} ms, a cached one {cached_ms:.2f} ms"
    )
    print()
    print("| batch | fill masks us/row | apply masks us/row | advance us/row | total us/token |")
    print("|---|---|---|---|---|")
    for batch in (int(b) for b in args.batches.split(",")):
        tokens = [tokenizer.encode(reply(row)) for row in range(batch)]
        steps = min(len(t) for t in tokens)
        best: dict[str, float] = {}
        for _ in range(args.repeats):
            matchers = [compiler.matcher(grammar) for _ in range(batch)]
            logits = torch.randn(batch, vocab)
            masks = torch.empty((batch, compiler.mask_words), dtype=torch.int32)
            spent = {"fill": 0.0, "apply": 0.0, "advance": 0.0}
            for step in range(steps):
                t0 = time.perf_counter()
                for row, matcher in enumerate(matchers):
                    matcher.fill_mask(masks[row])
                t1 = time.perf_counter()
                apply_token_masks(logits, list(range(batch)), masks)
                t2 = time.perf_counter()
                for row, matcher in enumerate(matchers):
                    assert matcher.accept(tokens[row][step])
                t3 = time.perf_counter()
                spent["fill"] += t1 - t0
                spent["apply"] += t2 - t1
                spent["advance"] += t3 - t2
            for key, value in spent.items():
                per_row_us = value / steps / batch * 1e6
                best[key] = min(best.get(key, per_row_us), per_row_us)
        total = sum(best.values())
        print(
            f"| {batch} | {best['fill']:.1f} | {best['apply']:.1f} | {best['advance']:.1f} "
            f"| {total:.1f} |"
        )
    print()
    lengths = [len(tokenizer.encode(reply(row))) for row in range(16)]
    print(f"median reply length {statistics.median(lengths)} tokens")
    print("command: python " + " ".join([str(Path(sys.argv[0])), *sys.argv[1:]]))


if __name__ == "__main__":
    main()

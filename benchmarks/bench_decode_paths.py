"""CPU decode attention, 30 layers of SmolLM2-135M: the kernels' torch reference vs the lean path.

The lean path (`PagedKVCache` with `_DecodePlan`, what the engine runs on CPU) attends a lone
sequence on consecutive blocks in place and gathers otherwise; the reference re-derives the
layout, gathers, pads and zeroes at every layer. Cases alternate round by round, best of N.

    python benchmarks/bench_decode_paths.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from cortex.engine.device import read_cpu_features
from cortex.engine.kernels.metadata import AttentionMetadata
from cortex.engine.models.kv_cache import PagedKVCache

BLOCK, KV_HEADS, HEADS, DIM, LAYERS = 16, 3, 9, 64, 30


def meta_for(tables: list[list[int]], lens: list[int]) -> AttentionMetadata:
    width = max(len(t) for t in tables)
    slots = [
        t[(n - 1) // BLOCK] * BLOCK + (n - 1) % BLOCK for t, n in zip(tables, lens, strict=True)
    ]
    return AttentionMetadata(
        is_decode=True,
        slot_mapping=torch.tensor(slots),
        cu_seqlens_q=torch.arange(len(lens) + 1, dtype=torch.int32),
        seq_lens=torch.tensor(lens, dtype=torch.int32),
        block_tables=torch.tensor([t + [0] * (width - len(t)) for t in tables], dtype=torch.int32),
        max_seqlen_q=1,
        max_seqlen_k=max(lens),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dtype", default="bfloat16")
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(0)
    shape = (1200, BLOCK, KV_HEADS, DIM)
    cache = (torch.randn(shape).to(dtype), torch.randn(shape).to(dtype))
    caches = [cache] * LAYERS  # one cache for every layer: the same work, less memory
    cases: dict[str, tuple[list[list[int]], list[int]]] = {}
    for length in (128, 1024):
        n = -(-length // BLOCK)
        cases[f"1x{length}, consecutive blocks (in place)"] = ([list(range(10, 10 + n))], [length])
        cases[f"1x{length}, scattered blocks (gathered)"] = (
            [list(range(10, 10 + 2 * n, 2))],
            [length],
        )
        tables = [list(range(200 + i * 70, 200 + i * 70 + n)) for i in range(8)]
        cases[f"8x{length}, ragged (gathered, masked)"] = (
            tables,
            [length - 7 * i for i in range(8)],
        )
    best: dict[tuple[str, bool], float] = {}
    load = os.getloadavg()[0]
    with torch.inference_mode():
        for _ in range(args.rounds):
            for name, (tables, lens) in cases.items():
                meta = meta_for(tables, lens)
                seqs = len(lens)
                q = torch.randn(seqs, HEADS, DIM).to(dtype)
                k = torch.randn(seqs, KV_HEADS, DIM).to(dtype)
                for lean in (False, True):
                    paged = PagedKVCache(caches, meta, lean_decode=lean)
                    start = time.perf_counter()
                    for layer in range(LAYERS):
                        paged.attend(layer, q, k, k)
                    elapsed = time.perf_counter() - start
                    best[(name, lean)] = min(best.get((name, lean), float("inf")), elapsed)
    cpu = read_cpu_features().model_name or "unknown CPU"
    print(
        f"# {cpu}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{args.dtype}, best of {args.rounds}, load average {load:.1f} -> {os.getloadavg()[0]:.1f}"
    )
    print("| 30 layers of decode attention | reference ms | lean ms | lean speed-up |")
    print("|---|---:|---:|---:|")
    for name in cases:
        ref, lean_ms = best[(name, False)] * 1e3, best[(name, True)] * 1e3
        print(f"| {name} | {ref:.2f} | {lean_ms:.2f} | {ref / lean_ms:.2f}x |")


if __name__ == "__main__":
    main()

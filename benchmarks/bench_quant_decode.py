"""Batch-1 decode of the default model held each way, as the engine serves it: tok/s, resident
weights, and the fraction of the device's memory bandwidth that decode speed implies.

Each quant runs the batched `Engine` (CUDA graphs on a GPU) on one request: a 128-token prompt,
then `--tokens` greedy tokens with the end of turn ignored; decode speed is the median gap
between tokens. A decode step reads every weight once, so `weights x tok/s` is the bandwidth it
draws, printed against a measured device-to-device copy (the practical peak) of the same run.
On a GPU this is issue 14's "int4 decode tok/s vs bf16, with the memory-bandwidth fraction"; a
135M model at batch 1 is launch-bound there, so expect small fractions and read the ratios.

    python benchmarks/bench_quant_decode.py [--device cuda] [--quants none,int8,int4] [--tokens 128]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import statistics
import time
from pathlib import Path

import torch

from cortex.engine import Engine
from cortex.engine.device import read_cpu_features
from cortex.engine.gguf import default_model_dir
from cortex.engine.sampling import SamplingParams
from cortex.engine.tokenizer import Tokenizer

PROMPT_TOKENS = 128
TEXT = "The lighthouse keeper climbed the stairs at dusk and lit the lamp for the ships. "


def copy_bandwidth(device: torch.device, megabytes: int = 512, repeats: int = 5) -> float:
    """Bytes per second of the best device-to-device copy (read plus write) of `megabytes`."""
    source = torch.empty(megabytes * 2**20, dtype=torch.uint8, device=device)
    target = torch.empty_like(source)
    best = float("inf")
    for _ in range(repeats + 1):  # the first copy warms up
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        target.copy_(source)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * source.numel() / best


def decode(engine: Engine, prompt: list[int], tokens: int) -> float:
    """tok/s from the median gap between greedy tokens of one request."""

    async def run() -> list[float]:
        params = SamplingParams(temperature=0.0, max_tokens=tokens, ignore_eos=True)
        return [time.perf_counter() async for _ in engine.generate(prompt, params)]

    asyncio.run(run())  # warm-up (and CUDA graph replay paths)
    times = asyncio.run(run())
    return 1 / statistics.median(b - a for a, b in itertools.pairwise(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_device = "cuda" if torch.cuda.is_available() else "cpu"
    parser.add_argument("--device", default=default_device)
    parser.add_argument("--quants", default="none,int8,int4")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--model", type=Path, help="a model folder (default: SmolLM2-135M)")
    args = parser.parse_args()
    device = torch.device(args.device)
    model_dir = args.model or default_model_dir(progress=False)
    prompt = Tokenizer.from_dir(model_dir).encode(TEXT * 12)[:PROMPT_TOKENS]
    cpu = read_cpu_features().model_name or "CPU"
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu
    peak = copy_bandwidth(device)
    print(f"# {name}, torch {torch.__version__}, load average {os.getloadavg()[0]:.1f}")
    print(f"# device-to-device copy: {peak / 1e9:.0f} GB/s (read + write)")
    print()
    print("| quant | weights MB | decode tok/s | vs none | weights read GB/s | of copy bandwidth |")
    print("|---|---:|---:|---:|---:|---:|")
    first: float | None = None
    for quant in args.quants.split(","):
        engine = Engine.from_pretrained(
            model_dir,
            device=args.device,
            dtype="bfloat16",
            quant=quant,
            max_num_seqs=4,
            enable_prefix_caching=False,
        )
        try:
            tok_s = decode(engine, prompt, args.tokens)
        finally:
            weights = engine.weights_bytes
            engine.close()
        first = first or tok_s
        drawn = weights * tok_s
        print(
            f"| {quant} | {weights / 2**20:.1f} | {tok_s:.1f} | {tok_s / first:.2f}x | "
            f"{drawn / 1e9:.1f} | {drawn / peak:.1%} |"
        )
    print()
    print(
        f"command: python benchmarks/bench_quant_decode.py --device {args.device} "
        f"--quants {args.quants} --tokens {args.tokens}"
    )


if __name__ == "__main__":
    main()

"""Batched engine benchmark: cortex `Engine` beside transformers `generate`, same model, same run.

Measures batch-1 decode tok/s, time to first token at 128 and 1024 prompt tokens, aggregate
tok/s at 1, 4, 16 and 64 concurrent requests, and KV bytes per token, and prints one table with
ratios. Greedy decoding with `ignore_eos`, so every request makes exactly `--tokens` tokens;
prompts are distinct random token ids, so the prefix cache never helps.

    .venv/bin/python benchmarks/engine_batch.py --dtype bfloat16 --plot docs/img/engine_batch.svg
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import torch

from cortex.engine import Engine, SamplingParams, default_model_dir

CONCURRENCY = (1, 4, 16, 64)


def make_prompts(rng: random.Random, count: int, length: int) -> list[list[int]]:
    return [[rng.randrange(1000, 40000) for _ in range(length)] for _ in range(count)]


async def stream_times(engine: Engine, prompt: list[int], tokens: int) -> list[float]:
    """Wall-clock time of every token event of one request."""
    params = SamplingParams(temperature=0.0, max_tokens=tokens, ignore_eos=True)
    times = []
    async for event in engine.generate(prompt, params):
        if event.token_id is not None:
            times.append(time.perf_counter())
    return times


async def measure_cortex(engine: Engine, args: argparse.Namespace) -> dict[str, float]:
    rng = random.Random(1)
    await stream_times(engine, make_prompts(rng, 1, 16)[0], 4)  # warm-up
    result: dict[str, float] = {}
    times = await stream_times(engine, make_prompts(rng, 1, 16)[0], args.decode_tokens)
    result["decode_1"] = (len(times) - 1) / (times[-1] - times[0])
    for length in (128, 1024):
        best = float("inf")
        for prompt in make_prompts(rng, args.repeats, length):
            start = time.perf_counter()
            first = (await stream_times(engine, prompt, 1))[0]
            best = min(best, first - start)
        result[f"ttft_{length}"] = best
    for count in CONCURRENCY:
        prompts = make_prompts(rng, count, args.prompt_tokens)
        start = time.perf_counter()
        runs = await asyncio.gather(*(stream_times(engine, p, args.tokens) for p in prompts))
        result[f"agg_{count}"] = sum(map(len, runs)) / (time.perf_counter() - start)
    result["kv_bytes"] = engine.kv_bytes_per_token
    return result


def hf_generate(model: Any, prompts: list[list[int]], tokens: int) -> float:
    """Seconds for transformers to generate `tokens` greedy tokens for a batch of prompts."""
    ids = torch.tensor(prompts)
    start = time.perf_counter()
    with torch.inference_mode():
        model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=tokens,
            min_new_tokens=tokens,
            do_sample=False,
            pad_token_id=0,
        )
    return time.perf_counter() - start


def measure_transformers(
    model_dir: Path, dtype: torch.dtype, args: argparse.Namespace, full: bool
) -> dict[str, float]:
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).eval()
    rng = random.Random(1)
    hf_generate(model, make_prompts(rng, 1, 16), 4)  # warm-up
    result: dict[str, float] = {}
    prompt = make_prompts(rng, 1, 16)
    first = hf_generate(model, prompt, 1)
    result["decode_1"] = (args.decode_tokens - 1) / (
        hf_generate(model, prompt, args.decode_tokens) - first
    )
    if not full:
        return result
    for length in (128, 1024):
        result[f"ttft_{length}"] = min(
            hf_generate(model, [p], 1) for p in make_prompts(rng, args.repeats, length)
        )
    for count in CONCURRENCY:
        prompts = make_prompts(rng, count, args.prompt_tokens)
        result[f"agg_{count}"] = count * args.tokens / hf_generate(model, prompts, args.tokens)
    config = model.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    element = torch.empty((), dtype=dtype).element_size()
    layers, kv_heads = config.num_hidden_layers, config.num_key_value_heads
    result["kv_bytes"] = 2 * layers * kv_heads * head_dim * element  # DynamicCache
    return result


ROWS = [
    ("decode_1", "batch-1 decode (tok/s)", True),
    ("ttft_128", "TTFT, 128-token prompt (ms)", False),
    ("ttft_1024", "TTFT, 1024-token prompt (ms)", False),
    *((f"agg_{n}", f"aggregate, {n} concurrent (tok/s)", True) for n in CONCURRENCY),
    ("kv_bytes", "KV bytes per token", False),
]


def table(ours: dict[str, float], theirs: dict[str, float], fp32: dict[str, float]) -> str:
    lines = [
        "| metric | cortex | transformers | cortex advantage |",
        "|---|---:|---:|---:|",
    ]
    for key, label, higher_is_better in ROWS:
        a, b = ours[key], theirs[key]
        scale = 1000.0 if key.startswith("ttft") else 1.0
        ratio = a / b if higher_is_better else b / a  # > 1: cortex is better
        lines.append(f"| {label} | {a * scale:,.1f} | {b * scale:,.1f} | {ratio:.2f}x |")
    lines.append(
        f"| batch-1 decode vs transformers float32 (tok/s) | {ours['decode_1']:,.1f} "
        f"| {fp32['decode_1']:,.1f} | {ours['decode_1'] / fp32['decode_1']:.2f}x |"
    )
    scaling = ours["agg_16"] / ours["decode_1"]
    lines.append(f"| cortex aggregate at 16 / its batch-1 decode | | | {scaling:.2f}x |")
    return "\n".join(lines)


def svg_plot(ours: dict[str, float], theirs: dict[str, float], title: str) -> str:
    """A grouped bar chart of aggregate tok/s by concurrency, as a standalone SVG."""
    width, height, left, bottom, top = 560, 320, 60, 40, 40
    plot_w, plot_h = width - left - 20, height - bottom - top
    peak = max(max(ours[f"agg_{n}"], theirs[f"agg_{n}"]) for n in CONCURRENCY) * 1.1
    group = plot_w / len(CONCURRENCY)
    bar = group / 3
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        'font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{width / 2}" y="20" text-anchor="middle" font-size="14">{title}</text>',
    ]
    for i in range(5):
        value = peak * i / 4
        y = top + plot_h - plot_h * i / 4
        parts.append(
            f'<line x1="{left}" x2="{width - 20}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>'
        )
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{value:.0f}</text>')
    for g, n in enumerate(CONCURRENCY):
        x0 = left + g * group + bar / 2
        for k, (values, colour) in enumerate(((ours, "#2b6cb0"), (theirs, "#dd8452"))):
            h = plot_h * values[f"agg_{n}"] / peak
            x = x0 + k * bar
            parts.append(
                f'<rect x="{x:.1f}" y="{top + plot_h - h:.1f}" width="{bar * 0.9:.1f}" '
                f'height="{h:.1f}" fill="{colour}"/>'
            )
            parts.append(
                f'<text x="{x + bar * 0.45:.1f}" y="{top + plot_h - h - 4:.1f}" '
                f'text-anchor="middle" font-size="10">{values[f"agg_{n}"]:.0f}</text>'
            )
        parts.append(
            f'<text x="{x0 + bar:.1f}" y="{top + plot_h + 16}" text-anchor="middle">{n}</text>'
        )
    parts += [
        f'<text x="{left + plot_w / 2}" y="{height - 6}" text-anchor="middle">'
        "concurrent requests</text>",
        f'<text x="14" y="{top + plot_h / 2}" text-anchor="middle" '
        f'transform="rotate(-90 14 {top + plot_h / 2})">aggregate tok/s</text>',
        f'<rect x="{left + 10}" y="{top}" width="10" height="10" fill="#2b6cb0"/>',
        f'<text x="{left + 24}" y="{top + 9}">cortex Engine</text>',
        f'<rect x="{left + 120}" y="{top}" width="10" height="10" fill="#dd8452"/>',
        f'<text x="{left + 134}" y="{top + 9}">transformers generate (static batch)</text>',
        "</svg>",
    ]
    return "\n".join(parts) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    parser.add_argument("--tokens", type=int, default=32, help="tokens per request (aggregate)")
    parser.add_argument("--decode-tokens", type=int, default=64, help="tokens for batch-1 decode")
    parser.add_argument("--prompt-tokens", type=int, default=16, help="prompt length (aggregate)")
    parser.add_argument("--repeats", type=int, default=2, help="TTFT runs (best is kept)")
    parser.add_argument("--plot", type=Path, default=None, help="write an SVG bar chart here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model_dir = args.model_dir or default_model_dir(progress=False)
    dtype = getattr(torch, args.dtype)

    engine = Engine.from_pretrained(model_dir, dtype=dtype, kv_cache_mb=1024, max_num_seqs=64)
    try:
        ours = asyncio.run(measure_cortex(engine, args))
    finally:
        engine.close()
    theirs = measure_transformers(model_dir, dtype, args, full=True)
    fp32 = measure_transformers(model_dir, torch.float32, args, full=False)

    load = os.getloadavg()[0]
    print(
        f"SmolLM2-135M-Instruct, {args.dtype}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs ({platform.machine()}), "
        f"load average {load:.1f} before the run finished"
    )
    print(table(ours, theirs, fp32))
    print("command:", shlex.join([sys.executable, *sys.argv]))
    if args.plot:
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        title = f"SmolLM2-135M {args.dtype}, {torch.get_num_threads()} CPU threads"
        args.plot.write_text(svg_plot(ours, theirs, title))
        print("plot:", args.plot)


if __name__ == "__main__":
    main()

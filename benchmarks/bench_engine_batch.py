"""Batched engine benchmark: cortex `Engine` beside transformers `generate`, same model, same run.

Measures batch-1 decode tok/s, time to first token at 128 and 1024 prompt tokens, aggregate
tok/s at 1, 4, 16 and 64 concurrent requests, and KV bytes per token, and prints one table with
ratios. Greedy decoding with `ignore_eos`, so every request makes exactly `--tokens` tokens;
prompts are distinct random token ids, so the prefix cache never helps. Each measurement runs
for both sides back to back and the best of `--repeats` rounds is kept, so the ratios hold on a
busy machine; batch-1 decode is the median time between tokens over all rounds. transformers
runs the same dtype (and float32 for its default batch-1 decode);
its "concurrent" rows are one static batch of that many prompts.

    python benchmarks/bench_engine_batch.py --dtype bfloat16 --plot docs/img/engine_batch.svg
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import platform
import random
import shlex
import statistics
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


async def concurrent(engine: Engine, prompts: list[list[int]], tokens: int) -> list[list[float]]:
    """Token times of requests submitted all at once."""
    return await asyncio.gather(*(stream_times(engine, p, tokens) for p in prompts))


def hf_generate(model: Any, prompts: list[list[int]], tokens: int) -> float:
    """Seconds for transformers to generate `tokens` greedy tokens for a batch of prompts."""
    ids = torch.tensor(prompts, device=model.device)
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
    if ids.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start


def hf_token_times(model: Any, prompt: list[int], tokens: int) -> list[float]:
    """Wall-clock time at which transformers produced each token of a greedy generation."""
    import transformers

    times: list[float] = []

    class Clock(transformers.StoppingCriteria):  # called once per generated token
        def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
            times.append(time.perf_counter())
            return torch.zeros(input_ids.shape[0], dtype=torch.bool)

    ids = torch.tensor([prompt], device=model.device)
    with torch.inference_mode():
        model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=tokens,
            min_new_tokens=tokens,
            do_sample=False,
            pad_token_id=0,
            stopping_criteria=transformers.StoppingCriteriaList([Clock()]),
        )
    return times


def intervals(times: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(times)]


class Pair:
    """Runs each measurement for cortex and transformers back to back, keeping the best of
    several rounds (TTFT, aggregate) or the median inter-token time over all rounds (batch-1
    decode), so a busy moment on a shared machine hits both sides alike."""

    def __init__(self, engine: Engine, hf: Any, hf_fp32: Any, args: argparse.Namespace) -> None:
        self.engine, self.hf, self.hf_fp32, self.args = engine, hf, hf_fp32, args
        self.rng = random.Random(1)
        self.ours: dict[str, float] = {"kv_bytes": engine.kv_bytes_per_token}
        self.theirs: dict[str, float] = {"kv_bytes": hf_kv_bytes(hf)}
        self.theirs_fp32: dict[str, float] = {}

    def keep(self, table: dict[str, float], key: str, value: float, higher: bool) -> None:
        old = table.get(key)
        if old is None or (value > old if higher else value < old):
            table[key] = value

    def prompts(self, count: int, length: int) -> list[list[int]]:
        return make_prompts(self.rng, count, length)  # fresh ids: no prefix-cache hits

    def run(self, loop: asyncio.AbstractEventLoop) -> None:
        args = self.args
        n = args.decode_tokens
        gaps: dict[str, list[float]] = {"ours": [], "hf": [], "fp32": []}
        for _ in range(args.repeats):
            times = loop.run_until_complete(stream_times(self.engine, self.prompts(1, 16)[0], n))
            gaps["ours"] += intervals(times)
            gaps["hf"] += intervals(hf_token_times(self.hf, self.prompts(1, 16)[0], n))
            gaps["fp32"] += intervals(hf_token_times(self.hf_fp32, self.prompts(1, 16)[0], n))
            for length in (128, 1024):
                prompt = self.prompts(1, length)[0]
                start = time.perf_counter()
                first = loop.run_until_complete(stream_times(self.engine, prompt, 1))[0]
                self.keep(self.ours, f"ttft_{length}", first - start, False)
                ttft = hf_generate(self.hf, self.prompts(1, length), 1)
                self.keep(self.theirs, f"ttft_{length}", ttft, False)
            for count in CONCURRENCY:
                batch = self.prompts(count, args.prompt_tokens)
                start = time.perf_counter()
                runs = loop.run_until_complete(concurrent(self.engine, batch, args.tokens))
                rate = sum(map(len, runs)) / (time.perf_counter() - start)
                self.keep(self.ours, f"agg_{count}", rate, True)
                seconds = hf_generate(self.hf, self.prompts(count, args.prompt_tokens), args.tokens)
                self.keep(self.theirs, f"agg_{count}", count * args.tokens / seconds, True)
        self.ours["decode_1"] = 1 / statistics.median(gaps["ours"])
        self.theirs["decode_1"] = 1 / statistics.median(gaps["hf"])
        self.theirs_fp32["decode_1"] = 1 / statistics.median(gaps["fp32"])


def hf_kv_bytes(model: Any) -> float:
    """Bytes per token of transformers' DynamicCache for `model`."""
    config = model.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    element = next(model.parameters()).element_size()
    return float(2 * config.num_hidden_layers * config.num_key_value_heads * head_dim * element)


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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (both sides)")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    parser.add_argument("--tokens", type=int, default=32, help="tokens per request (aggregate)")
    parser.add_argument("--decode-tokens", type=int, default=64, help="tokens for batch-1 decode")
    parser.add_argument("--prompt-tokens", type=int, default=16, help="prompt length (aggregate)")
    parser.add_argument("--repeats", type=int, default=2, help="rounds (best is kept)")
    parser.add_argument("--plot", type=Path, default=None, help="write an SVG bar chart here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model_dir = args.model_dir or default_model_dir(progress=False)
    dtype = getattr(torch, args.dtype)

    import transformers

    transformers.logging.set_verbosity_error()
    load_before = os.getloadavg()[0]
    auto = transformers.AutoModelForCausalLM
    hf = auto.from_pretrained(model_dir, dtype=dtype).to(args.device).eval()
    hf_fp32 = auto.from_pretrained(model_dir, dtype=torch.float32).to(args.device)
    engine = Engine.from_pretrained(
        model_dir, device=args.device, dtype=dtype, kv_cache_mb=1024, max_num_seqs=64
    )
    pair = Pair(engine, hf, hf_fp32.eval(), args)
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(stream_times(engine, make_prompts(pair.rng, 1, 16)[0], 4))
        hf_generate(hf, make_prompts(pair.rng, 1, 16), 4)  # warm-ups
        hf_generate(hf_fp32, make_prompts(pair.rng, 1, 16), 4)
        pair.run(loop)
    finally:
        engine.close()
        loop.close()
    ours, theirs, fp32 = pair.ours, pair.theirs, pair.theirs_fp32
    print(
        f"SmolLM2-135M-Instruct, {args.dtype} on {args.device}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs ({platform.machine()}), "
        f"load average {load_before:.1f} -> {os.getloadavg()[0]:.1f}, best of {args.repeats} "
        "interleaved rounds"
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

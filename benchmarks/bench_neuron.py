"""The neuron's HTTP cost: TTFT and tok/s through `cortex-neuron` beside the engine called directly.

Both sides run the same model, device, dtype and KV budget and the same greedy chat requests
(`ignore_eos`, so every reply has `--max-tokens` tokens). The engine side calls
`Engine.generate` in this process; the neuron side streams `/v1/chat/completions` from a real
`cortex-neuron` process over loopback HTTP (SSE parsing included). Run:

    python benchmarks/bench_neuron.py [--device cpu|cuda] [--concurrency 1 4] [--batches 3]

The two paths alternate batch by batch so that other load on the machine hits both alike. A
third row streams from the fake harness at an unlimited token rate: the ceiling of the HTTP
layer alone (SSE framing, JSON, the event loop), with no model behind it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx

from cortex.engine.engine import Engine
from cortex.engine.gguf import default_model_dir
from cortex.engine.sampling import SamplingParams
from cortex.neuron.catalogue import DEFAULT_MODEL_ID, ModelCatalogue
from cortex.testing import start_neuron_process

PROMPT = [{"role": "user", "content": "Tell me a long story about a lighthouse keeper."}]


@dataclass
class Sample:
    ttft_s: float
    decode_tok_s: float  # tokens after the first, over the time after the first
    tokens: int


Run = Callable[[], Awaitable[Sample]]


async def engine_request(engine: Engine, max_tokens: int) -> Sample:
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)
    start = time.perf_counter()
    first = last = 0.0
    tokens = 0
    async for event in engine.generate(PROMPT, params):
        if event.token_id is not None:
            last = time.perf_counter()
            first = first or last
            tokens += 1
    return Sample(first - start, (tokens - 1) / max(last - first, 1e-9), tokens)


async def neuron_request(client: httpx.AsyncClient, max_tokens: int) -> Sample:
    body = {
        "model": DEFAULT_MODEL_ID,
        "messages": PROMPT,
        "max_tokens": max_tokens,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    start = time.perf_counter()
    first = last = 0.0
    tokens = 0
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                last = time.perf_counter()
                first = first or last
            elif not chunk["choices"]:
                tokens = chunk["usage"]["completion_tokens"]
    return Sample(first - start, (tokens - 1) / max(last - first, 1e-9), tokens)


async def measure(run: Run, concurrency: int, requests: int) -> tuple[list[Sample], float]:
    samples: list[Sample] = []
    start = time.perf_counter()
    for _ in range(0, requests, concurrency):
        samples += await asyncio.gather(*(run() for _ in range(concurrency)))
    return samples, time.perf_counter() - start


def summary(samples: list[Sample], wall_s: float) -> dict[str, float]:
    ttfts = sorted(s.ttft_s * 1000 for s in samples)
    return {
        "ttft_p50_ms": statistics.median(ttfts),
        "ttft_max_ms": ttfts[-1],
        "decode_tok_s": statistics.median(s.decode_tok_s for s in samples),
        "total_tok_s": sum(s.tokens for s in samples) / wall_s,
    }


async def main(args: argparse.Namespace) -> None:
    device = "cuda:0" if args.device == "cuda" else args.device
    dtype = "bfloat16" if device.startswith("cuda") else "float32"
    folder = default_model_dir(progress=False)
    (spec,) = [s for s in ModelCatalogue([], dtype_bytes=2 if dtype == "bfloat16" else 4).scan()]
    samples: dict[tuple[str, int], list[Sample]] = {}
    walls: dict[tuple[str, int], float] = {}

    async def record(path: str, c: int, run: Run) -> None:
        got, wall = await measure(run, c, c * args.rounds_per_batch)
        samples.setdefault((path, c), []).extend(got)
        walls[path, c] = walls.get((path, c), 0.0) + wall

    engine = Engine.from_pretrained(
        folder, device=device, dtype=dtype, kv_cache_mb=spec.kv_cache_mb, model_id=spec.id
    )
    config = {"device": device, "preload": [DEFAULT_MODEL_ID]}
    fake = {"fake": {"tokens_per_s": 1e9, "models": [{"id": DEFAULT_MODEL_ID}]}}
    try:
        with (
            start_neuron_process(config, harness="engine", startup_timeout_s=120) as node,
            start_neuron_process(fake) as fake_node,
        ):
            async with (
                httpx.AsyncClient(base_url=node.url, timeout=600) as client,
                httpx.AsyncClient(base_url=fake_node.url, timeout=600) as fake_client,
            ):
                await client.post("/models/load", json={"model": DEFAULT_MODEL_ID})
                await fake_client.post("/models/load", json={"model": DEFAULT_MODEL_ID})
                direct: Run = lambda: engine_request(engine, args.max_tokens)  # noqa: E731
                http: Run = lambda: neuron_request(client, args.max_tokens)  # noqa: E731
                ceiling: Run = lambda: neuron_request(fake_client, args.ceiling_tokens)  # noqa: E731
                await direct()  # warm-up
                await http()
                # Alternate the two paths batch by batch, so load on the machine hits both.
                for _ in range(args.batches):
                    for c in args.concurrency:
                        await record("engine", c, direct)
                        await record("neuron", c, http)
                for c in args.concurrency:
                    await record("neuron, fake harness", c, ceiling)
    finally:
        engine.close()

    print(f"\n{spec.id} on {device} ({dtype}), {args.max_tokens} tokens per reply, greedy\n")
    print(
        "| path | concurrency | requests | TTFT p50 ms | TTFT max ms | decode tok/s per request "
        "| total tok/s | TTFT vs engine | total tok/s vs engine |"
    )
    print("|" + "---|" * 9)
    order = {"engine": 0, "neuron": 1, "neuron, fake harness": 2}
    for (path, c), got in sorted(samples.items(), key=lambda kv: (kv[0][1], order[kv[0][0]])):
        row, base = summary(got, walls[path, c]), summary(samples["engine", c], walls["engine", c])
        ratios = (
            f"{row['ttft_p50_ms'] / base['ttft_p50_ms']:.2f} "
            f"| {row['total_tok_s'] / base['total_tok_s']:.2f}"
            if "fake" not in path
            else "- | -"
        )
        print(
            f"| {path} | {c} | {len(got)} | {row['ttft_p50_ms']:.1f} | {row['ttft_max_ms']:.1f} "
            f"| {row['decode_tok_s']:.1f} | {row['total_tok_s']:.1f} | {ratios} |"
        )
    print(
        f"\nThe fake-harness rows stream {args.ceiling_tokens}-token replies at an unlimited "
        "rate: the HTTP layer's own ceiling."
    )
    print(f"\ncommand: python {' '.join(sys.argv)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--batches", type=int, default=3, help="alternations of the two paths")
    parser.add_argument(
        "--rounds-per-batch", type=int, default=2, help="rounds of `concurrency` requests each"
    )
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument(
        "--ceiling-tokens", type=int, default=2000, help="reply length of the fake-harness rows"
    )
    asyncio.run(main(parser.parse_args()))

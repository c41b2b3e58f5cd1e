"""The gateway's cost: latency it adds over calling a neuron directly, and throughput.

One `cortex-neuron --harness fake` process streams replies at a high token rate, so that what
is measured is the gateway: a `cortex-gateway` process in front of it relays the same streamed
OpenAI chat requests. At each concurrency (closed loop: N clients, each sending its next request
when the last one ends) the direct and the gateway paths alternate round by round, so other load
on the machine hits both alike. TTFT is the first content chunk, total the `[DONE]`. "added" is
paired: the median over rounds of (gateway - direct) at that percentile within the round, which
cancels the machine's slow swings in load. Run:

    python benchmarks/bench_gateway.py [--concurrency 1 16 64 256] [--requests 256] [--tokens 32]
        [--token-rate 20000] [--baseline-src DIR]

With `--baseline-src DIR` (the `src/` of another checkout, e.g. from `git archive`) a second
gateway of that code runs in the same rounds, with its own rows.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from cortex.testing import GatewayProcess, start_gateway_process, start_neuron_process

MODEL = "bench"


@dataclass
class Series:
    ttft_s: list[float] = field(default_factory=list)
    total_s: list[float] = field(default_factory=list)
    tokens: int = 0
    wall_s: float = 0.0
    errors: int = 0
    cpu_s: float = 0.0


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def one(client: httpx.AsyncClient, url: str, body: dict[str, object], out: Series) -> None:
    try:
        await _one(client, url, body, out)
    except httpx.TransportError:
        out.errors += 1  # counted and reported, not timed


async def _one(client: httpx.AsyncClient, url: str, body: dict[str, object], out: Series) -> None:
    started = time.perf_counter()
    first = 0.0
    async with client.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
        if response.status_code != 200:
            raise RuntimeError(f"{url}: {response.status_code} {(await response.aread())[:300]!r}")
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            choices = json.loads(line[6:])["choices"]
            if choices and choices[0]["delta"].get("content"):
                first = first or time.perf_counter()
                out.tokens += 1
    out.ttft_s.append(first - started)
    out.total_s.append(time.perf_counter() - started)


async def round_of(url: str, concurrency: int, requests: int, tokens: int, out: Series) -> None:
    words = " ".join(["word"] * max(1, tokens - 7))  # the fake says 7 words, then echoes these
    body = {"model": MODEL, "messages": [{"role": "user", "content": words}], "stream": True}
    left = requests
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        await one(client, url, body, Series())  # warm the connection and the model

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                await one(client, url, body, out)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        out.wall_s += time.perf_counter() - started


def _add(whole: Series, part: Series) -> None:
    whole.ttft_s += part.ttft_s
    whole.total_s += part.total_s
    whole.tokens += part.tokens
    whole.wall_s += part.wall_s
    whole.errors += part.errors
    whole.cpu_s += part.cpu_s


def start_gateway(neuron_url: str, src: str | None = None) -> GatewayProcess:
    """A gateway over the benchmark's neuron; with `src`, another checkout's code runs it."""
    env = {"PYTHONPATH": str(Path(src).resolve())} if src else None
    return start_gateway_process({"neurons": [{"name": "bench", "endpoint": neuron_url}]}, env=env)


async def main(args: argparse.Namespace) -> None:
    fake = {"tokens_per_s": args.token_rate, "models": [{"id": MODEL, "context_length": 8192}]}
    neuron = start_neuron_process({"name": "bench", "fake": fake, "preload": [MODEL]})
    httpx.post(f"{neuron.url}/models/load", json={"model": MODEL}, timeout=60).raise_for_status()
    names = ["gateway"] + (["baseline"] if args.baseline_src else [])
    gateways = {
        name: start_gateway(neuron.url, args.baseline_src if name == "baseline" else None)
        for name in names
    }
    rows = []
    try:
        for concurrency in args.concurrency:
            direct = Series()
            through = {name: Series() for name in names}
            paired: dict[str, list[list[float]]] = {name: [] for name in names}
            per_round = max(args.requests // args.rounds, concurrency)
            for _ in range(args.rounds):
                d = Series()
                await round_of(neuron.url, concurrency, per_round, args.tokens, d)
                _add(direct, d)
                for name, gateway in gateways.items():
                    g = Series()
                    before = gateway.cpu_s()
                    await round_of(gateway.url, concurrency, per_round, args.tokens, g)
                    g.cpu_s = gateway.cpu_s() - before
                    paired[name].append(
                        [pct(g.ttft_s, q) - pct(d.ttft_s, q) for q in (0.5, 0.99)]
                        + [pct(g.total_s, q) - pct(d.total_s, q) for q in (0.5, 0.99)]
                    )
                    _add(through[name], g)
            added = {
                name: [statistics.median(column) for column in zip(*paired[name], strict=True)]
                for name in names
            }
            rows.append((concurrency, direct, through, added))
    finally:
        for gateway in gateways.values():
            gateway.stop()
        neuron.stop()
    ms = 1000.0
    print(
        "| streams | path | TTFT p50 ms | TTFT p99 ms | total p50 ms | total p99 ms "
        "| tok/s | tok/s vs direct | gateway CPU µs/token |\n|---|---|---|---|---|---|---|---|---|"
    )
    for concurrency, direct, through, added in rows:
        for name, s in (("direct", direct), *through.items()):
            rate = s.tokens / s.wall_s
            print(
                f"| {concurrency} | {name} | {pct(s.ttft_s, 0.5) * ms:.2f} | "
                f"{pct(s.ttft_s, 0.99) * ms:.2f} | {pct(s.total_s, 0.5) * ms:.2f} | "
                f"{pct(s.total_s, 0.99) * ms:.2f} | {rate:,.0f} | "
                f"{rate / (direct.tokens / direct.wall_s):.2f} | "
                + (f"{s.cpu_s / s.tokens * 1e6:.0f} |" if name != "direct" else " |")
            )
        for name in names:
            cells = " | ".join(f"{a * ms:+.2f}" for a in added[name])
            label = "**added**" if name == "gateway" else f"**{name} added**"
            print(f"| {concurrency} | {label} | {cells} | | | |")
    errors = {
        f"{c} {name}": s.errors
        for c, d, through, _ in rows
        for name, s in (("direct", d), *through.items())
    }
    if any(errors.values()):
        print(
            "\nconnection errors (not timed): "
            + ", ".join(f"{k}: {v}" for k, v in errors.items() if v)
        )
    mean_tokens = statistics.mean([rows[0][1].tokens / len(rows[0][1].total_s)])
    print(
        f"\n{mean_tokens:.0f} content tokens per reply, fake neuron at {args.token_rate:,.0f} "
        f"tok/s per stream, {args.rounds} alternating rounds per concurrency; "
        f"load average {os.getloadavg()[0]:.1f}."
    )
    print("command: python benchmarks/bench_gateway.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64, 256])
    parser.add_argument("--requests", type=int, default=512, help="requests per path and level")
    parser.add_argument("--rounds", type=int, default=8, help="alternating rounds per level")
    parser.add_argument("--tokens", type=int, default=32, help="content tokens per reply")
    parser.add_argument("--token-rate", type=float, default=20000.0, help="fake tok/s per stream")
    parser.add_argument("--baseline-src", help="src/ of another checkout: a second gateway")
    asyncio.run(main(parser.parse_args()))

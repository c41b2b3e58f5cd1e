"""What the gateway costs as the fleet grows: N fake neurons x M models each.

For each size, N `cortex-neuron --harness fake` processes (M models each, one loaded) and a
`cortex-gateway` over them (poll interval 1 s) are started; then the gateway's idle CPU (share of
one core over `--idle-s` seconds, polling only), `GET /v1/models` latency and a warm chat's
latency (a loaded model, not streamed) are measured, p50 over `--requests` each. With
`--baseline-src DIR` (the `src/` of another checkout, e.g. from `git archive`) a second gateway
of that code runs over the same neurons, alternating with this one, so both compare in one run.

With `--simulate 100x200 ...` the sizes run in this process instead, at sizes no machine runs as
processes: a `Fleet` over in-memory nodes (`cortex.testing.FakeNodeClient`, no HTTP) and the
gateway app over it through ASGI; it prints the CPU of one poll round of every node (and the
share of a core that is at a 1 s interval), `/v1/models` and a warm chat's latency, p50.

    python benchmarks/bench_fleet_scale.py [--sizes 2x10 2x200 6x200] [--baseline-src DIR]
    python benchmarks/bench_fleet_scale.py --simulate 2x10 6x200 100x200
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from cortex.fleet import Fleet
from cortex.fleet.transport import StreamingASGITransport
from cortex.gateway import create_gateway_app
from cortex.testing import (
    FakeNodeClient,
    GatewayProcess,
    NeuronProcess,
    start_gateway_process,
    start_neuron_process,
)


def start_neurons(nodes: int, models: int) -> list[NeuronProcess]:
    def one(i: int) -> NeuronProcess:
        fake = {
            "tokens_per_s": 20000.0,
            "models": [
                {"id": f"m{j}", "memory_mb": 10.0, "context_length": 4096} for j in range(models)
            ],
        }
        config = {"name": f"n{i}", "memory_mb": 1e6, "fake": fake, "preload": ["m0"]}
        return start_neuron_process(config)

    with ThreadPoolExecutor(nodes) as pool:
        return list(pool.map(one, range(nodes)))


def start_gateway(neurons: list[NeuronProcess], src: str | None) -> GatewayProcess:
    """A gateway polling `neurons` every second; with `src`, another checkout's code runs it."""
    config = {
        "gateway": {"poll_interval_s": 1.0},
        "neurons": [{"name": f"n{i}", "endpoint": n.url} for i, n in enumerate(neurons)],
    }
    env = {"PYTHONPATH": str(Path(src).resolve())} if src else None
    return start_gateway_process(config, env=env)


def measure(gateway: GatewayProcess, idle_s: float, requests: int) -> list[float]:
    """[idle % of a core, /v1/models p50 ms, warm chat p50 ms]."""
    time.sleep(2.0)  # the first polls, the warm-up
    before, started = gateway.cpu_s(), time.monotonic()
    time.sleep(idle_s)
    idle = 100.0 * (gateway.cpu_s() - before) / (time.monotonic() - started)
    chat = {"model": "m0", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
    listing, answer = [], []
    with httpx.Client(timeout=60) as client:
        for _ in range(requests):
            t = time.perf_counter()
            client.get(f"{gateway.url}/v1/models").raise_for_status()
            listing.append(time.perf_counter() - t)
            t = time.perf_counter()
            client.post(f"{gateway.url}/v1/chat/completions", json=chat).raise_for_status()
            answer.append(time.perf_counter() - t)
    return [idle, statistics.median(listing) * 1e3, statistics.median(answer) * 1e3]


async def simulate(nodes: int, models: int, rounds: int, requests: int) -> list[float]:
    """[CPU ms per poll round, % of a core at 1 s, /v1/models p50 ms, warm chat p50 ms] of a
    gateway over `nodes` in-memory nodes of `models` models (m0 loaded on each)."""
    ids = [f"m{j}" for j in range(models)]
    clients = [FakeNodeClient(f"n{i}", ids, loaded=["m0"]) for i in range(nodes)]
    fleet = Fleet(clients, poll_interval_s=3600.0)  # rounds are driven by hand below
    async with fleet:
        app = create_gateway_app(fleet)
        transport = StreamingASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            (await client.get("/v1/models")).raise_for_status()  # the first build
            before = time.process_time()
            for _ in range(rounds):
                await fleet.poller.poll_once()
            round_ms = (time.process_time() - before) / rounds * 1e3
            chat = {"model": "m0", "messages": [{"role": "user", "content": "hi"}]}
            listing, answer = [], []
            for _ in range(requests):
                t = time.perf_counter()
                (await client.get("/v1/models")).raise_for_status()
                listing.append(time.perf_counter() - t)
                t = time.perf_counter()
                (await client.post("/v1/chat/completions", json=chat)).raise_for_status()
                answer.append(time.perf_counter() - t)
    return [
        round_ms,
        round_ms / 10.0,  # ms of CPU per 1000 ms: % of a core
        statistics.median(listing) * 1e3,
        statistics.median(answer) * 1e3,
    ]


def main_simulated(args: argparse.Namespace) -> None:
    print(
        "| nodes x models (in-process) | CPU per poll round ms | idle % of a core at 1 s "
        "| /v1/models p50 ms | warm chat p50 ms |"
    )
    print("|---|---|---|---|---|")
    for size in args.simulate:
        nodes, models = (int(x) for x in size.split("x"))
        cells = asyncio.run(simulate(nodes, models, args.poll_rounds, args.requests))
        print(
            f"| {nodes} x {models} | {cells[0]:.2f} | {cells[1]:.2f} | {cells[2]:.2f} | "
            f"{cells[3]:.2f} |",
            flush=True,
        )
    print(f"\nload average {os.getloadavg()[0]:.1f}; {args.poll_rounds} poll rounds per size")
    print("command: python benchmarks/bench_fleet_scale.py " + " ".join(sys.argv[1:]))


def main(args: argparse.Namespace) -> None:
    print(
        "| nodes x models | gateway | idle CPU % of a core | /v1/models p50 ms | warm chat p50 ms |"
    )
    print("|---|---|---|---|---|")
    for size in args.sizes:
        nodes, models = (int(x) for x in size.split("x"))
        neurons = start_neurons(nodes, models)
        try:
            variants = [("this", None)] + (
                [("baseline", args.baseline_src)] if args.baseline_src else []
            )
            rows: dict[str, list[list[float]]] = {name: [] for name, _ in variants}
            for _ in range(args.rounds):
                for name, src in variants:
                    with start_gateway(neurons, src) as gateway:
                        rows[name].append(measure(gateway, args.idle_s, args.requests))
            for name, _ in variants:
                cells = [statistics.median(column) for column in zip(*rows[name], strict=True)]
                print(
                    f"| {nodes} x {models} | {name} | {cells[0]:.1f} | {cells[1]:.2f} | "
                    f"{cells[2]:.2f} |",
                    flush=True,
                )
        finally:
            for neuron in neurons:
                neuron.stop()
    print(f"\nload average {os.getloadavg()[0]:.1f}; poll interval 1 s; {args.rounds} round(s)")
    print("command: python benchmarks/bench_fleet_scale.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["2x10", "2x200", "6x200"])
    parser.add_argument("--idle-s", type=float, default=10.0, help="idle window per gateway")
    parser.add_argument("--requests", type=int, default=30, help="requests per kind and size")
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds per size")
    parser.add_argument("--baseline-src", help="src/ of another checkout, run alongside")
    parser.add_argument("--simulate", nargs="+", help="sizes to run in-process over fake nodes")
    parser.add_argument("--poll-rounds", type=int, default=50, help="poll rounds per simulation")
    arguments = parser.parse_args()
    if arguments.simulate:
        main_simulated(arguments)
    else:
        main(arguments)

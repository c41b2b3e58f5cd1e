"""Sustained load: hundreds of streaming clients in both dialects, and nothing lost.

Two `cortex-neuron --harness fake` processes (models m1 on a, m2 on b) sit behind one
`cortex-gateway` with an API key. Closed loop: N clients, each sending its next streamed request
when the last one ends, alternating OpenAI chat and Anthropic messages and the two models. Every
request is classified: `complete` (OpenAI: a finish_reason and `[DONE]`; Anthropic:
`message_stop`), `error` (a well-formed error in its dialect: an HTTP error body or the stream's
error event), or `lost` (anything else: a reset, a timeout, a stream cut without its error). With
`--chaos`, node a is killed with SIGKILL a third of the way in and restarted in place at two
thirds: its streams must end with error events and its traffic move to b. The same clients first
stream straight to the neurons (OpenAI only) for the peer row: "added" is gateway minus direct
at the same percentile. Gateway RSS is sampled each second after the warm-up. `--real-clients`
adds a shorter run against the real default model (engine harness). Run:

    python benchmarks/bench_load.py [--clients 300] [--duration 120] [--chaos] [--real-clients 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from cortex.testing import (
    GatewayProcess,
    NeuronProcess,
    start_gateway_process,
    start_neuron_process,
)

KEY = "sk-load"
TEXT = " ".join(f"w{i}" for i in range(24))  # the fake echoes it: 31 tokens per reply
_TOKEN = re.compile(rb'"content":"[^"]|event: content_block_delta')


@dataclass
class Run:
    """One phase's outcomes and timings."""

    name: str
    complete: int = 0
    errors: int = 0
    lost: int = 0
    lost_why: dict[str, int] = field(default_factory=dict)
    ttft_s: list[float] = field(default_factory=list)
    total_s: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    rss_mb: list[float] = field(default_factory=list)

    def lose(self, why: str) -> None:
        self.lost += 1
        self.lost_why[why] = self.lost_why.get(why, 0) + 1


@dataclass(frozen=True)
class Target:
    """Where requests go: the two model names alternated, the URL(s) (direct: one per model),
    and `max_tokens`."""

    models: tuple[str, str]
    urls: tuple[str, ...]
    max_tokens: int


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else 0.0


def _well_formed(body: Any, anthropic: bool) -> bool:
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict) or not isinstance(error.get("message"), str):
        return False
    return body.get("type") == "error" if anthropic else "type" in error


def classify(status: int, data: bytes, anthropic: bool) -> str:
    """`complete`, `error`, or why it is lost."""
    if status != 200:
        try:
            return "error" if _well_formed(json.loads(data), anthropic) else "bad error body"
        except ValueError:
            return f"HTTP {status} without a JSON body"
    if anthropic:
        if b"event: message_stop" in data:
            return "complete"
        match = re.search(rb"event: error\ndata: (.*)\n", data)
        ok = match is not None and _well_formed(json.loads(match.group(1)), anthropic=True)
        return "error" if ok else "stream cut without message_stop or error"
    if not data.rstrip().endswith(b"data: [DONE]"):
        return "stream cut without [DONE]"
    match = re.search(rb'data: (\{"error".*)\n', data)
    if match is not None:
        return "error" if _well_formed(json.loads(match.group(1)), anthropic=False) else "bad event"
    return "complete" if b'"finish_reason":"' in data else "no finish_reason"


async def one(client: httpx.AsyncClient, target: Target, i: int, run: Run, *, direct: bool) -> None:
    anthropic = not direct and i % 2 == 1
    which = (i // 2) % 2
    model, url = target.models[which], target.urls[which if direct else 0]
    messages = [{"role": "user", "content": TEXT}]
    body: dict[str, Any] = {"model": model, "messages": messages, "max_tokens": target.max_tokens}
    if anthropic:
        path, headers = "/v1/messages", {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
    else:
        path, headers = "/v1/chat/completions", {"authorization": f"Bearer {KEY}"}
    body["stream"] = True
    started = time.perf_counter()
    first = None
    data = bytearray()
    try:
        async with client.stream("POST", url + path, json=body, headers=headers) as response:
            async for piece in response.aiter_raw():
                if first is None and _TOKEN.search(piece):
                    first = time.perf_counter()
                data += piece
            status = response.status_code
    except httpx.HTTPError as exc:
        run.lose(f"{type(exc).__name__} after {len(data)} bytes")
        return
    outcome = classify(status, bytes(data), anthropic)
    if outcome == "complete":
        run.complete += 1
        run.total_s.append(time.perf_counter() - started)
        if first is not None:
            run.ttft_s.append(first - started)
    elif outcome == "error":
        run.errors += 1
    else:
        run.lose(outcome)


async def drive(target: Target, clients: int, duration_s: float, run: Run, *, direct: bool) -> None:
    """`clients` closed-loop clients for `duration_s`."""
    limits = httpx.Limits(max_connections=clients + 8, max_keepalive_connections=clients + 8)
    deadline = time.perf_counter() + duration_s
    async with httpx.AsyncClient(timeout=httpx.Timeout(60.0), limits=limits) as client:

        async def client_loop(n: int) -> None:
            i = n
            while time.perf_counter() < deadline:
                await one(client, target, i, run, direct=direct)
                i += 1

        started = time.perf_counter()
        await asyncio.gather(*(client_loop(n) for n in range(clients)))
        run.wall_s = time.perf_counter() - started


def rss_mb(pid: int) -> float:
    """A process's resident memory (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def sample_rss(pid: int, run: Run, stop: asyncio.Event) -> None:
    while not stop.is_set():
        run.rss_mb.append(rss_mb(pid))
        await asyncio.sleep(1.0)


async def chaos(node: NeuronProcess, config: dict[str, Any], duration_s: float) -> NeuronProcess:
    """Kill node a at a third of the run, restart it in place at two thirds."""
    await asyncio.sleep(duration_s / 3)
    node.kill()
    await asyncio.sleep(duration_s / 3)
    port = urlsplit(node.url).port
    return await asyncio.to_thread(start_neuron_process, config, port=port)


def start_gateway(
    neurons: dict[str, str], models: list[dict[str, Any]]
) -> tuple[GatewayProcess, str]:
    """A keyed gateway over `neurons` with these model profiles, and its URL."""
    config = {
        "gateway": {"poll_interval_s": 1.0, "request_timeout_s": 30.0},
        "auth": {"keys": [KEY]},
        "neurons": [{"name": n, "endpoint": url} for n, url in neurons.items()],
    }
    gateway = start_gateway_process(config, models)
    return gateway, gateway.url


async def phase(
    name: str,
    gateway: GatewayProcess,
    gateway_target: Target,
    direct: Target,
    clients: int,
    duration_s: float,
) -> tuple[Run, Run]:
    """A warm-up through the gateway (it warms the neurons too), the direct peer run (a quarter
    of the time), then the gateway run with its RSS sampled each second."""
    await drive(gateway_target, clients, min(10.0, duration_s / 6), Run("warm-up"), direct=False)
    peer = Run(f"{name}, direct to the neurons (OpenAI)")
    await drive(direct, clients, max(10.0, duration_s / 4), peer, direct=True)
    run = Run(f"{name}, through the gateway (both dialects)")
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample_rss(gateway.pid, run, stop))
    await drive(gateway_target, clients, duration_s, run, direct=False)
    stop.set()
    await sampler
    return peer, run


def row(run: Run, peer: Run | None, clients: int) -> str:
    requests = run.complete + run.errors + run.lost
    cells = [
        run.name,
        str(clients),
        str(requests),
        str(run.complete),
        str(run.errors),
        str(run.lost),
        f"{requests / run.wall_s:.0f}" if run.wall_s else "-",
        f"{pct(run.ttft_s, 0.5) * 1e3:.0f}",
        f"{pct(run.ttft_s, 0.99) * 1e3:.0f}",
        f"{pct(run.total_s, 0.5) * 1e3:.0f}",
        f"{pct(run.total_s, 0.99) * 1e3:.0f}",
    ]
    if peer is None:
        cells += ["-", "-", "-"]
    else:
        added = [(pct(run.ttft_s, q) - pct(peer.ttft_s, q)) * 1e3 for q in (0.5, 0.99)]
        ratio = pct(run.ttft_s, 0.5) / max(pct(peer.ttft_s, 0.5), 1e-9)
        cells += [f"{added[0]:+.0f}", f"{added[1]:+.0f}", f"{ratio:.2f}x"]
    rss = (
        f"{run.rss_mb[0]:.0f} / {run.rss_mb[-1]:.0f} / {max(run.rss_mb):.0f}" if run.rss_mb else "-"
    )
    return "| " + " | ".join([*cells, rss]) + " |"


def fake_fleet(args: argparse.Namespace) -> tuple[dict[str, NeuronProcess], dict[str, Any]]:
    """Two fake neurons: a serves m1, b serves m2 (each may take the other's on failover)."""
    fake = {"tokens_per_s": args.tokens_per_s, "models": [{"id": m} for m in ("m1", "m2")]}
    configs = {n: {"name": n, "fake": fake, "preload": [m]} for n, m in (("a", "m1"), ("b", "m2"))}
    return {n: start_neuron_process(c) for n, c in configs.items()}, configs


PROFILES = [{"id": "m1", "nodes": ["a", "b"]}, {"id": "m2", "nodes": ["b", "a"]}]


def stop_all(gateway: GatewayProcess, nodes: list[NeuronProcess]) -> None:
    gateway.stop(60)
    for node in nodes:
        node.stop()


HEADER = (
    "| run | clients | requests | complete | errors | lost | req/s | TTFT p50 ms | TTFT p99 ms "
    "| total p50 ms | total p99 ms | added TTFT p50 ms | added TTFT p99 ms | TTFT vs direct "
    "| gateway RSS MB start / end / max |\n" + "|" + "---|" * 15
)


def report(rows: list[tuple[Run, Run | None, int]]) -> None:
    """Print rows as soon as they are measured (a long run keeps what it got)."""
    for measured, baseline, clients in rows:
        print(row(measured, baseline, clients), flush=True)
        if measured.lost:
            print(f"# LOST in {measured.name}: {measured.lost_why}", flush=True)


async def main(args: argparse.Namespace) -> None:
    print(f"# python benchmarks/bench_load.py {' '.join(sys.argv[1:])}")
    print(f"# {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the start")
    print(HEADER, flush=True)
    if args.clients:
        await fake_run(args)
    if args.chaos:
        report([await chaos_run(args)])
    if args.real_clients:
        report(await real_run(args))
    print(f"# load average {os.getloadavg()[0]:.1f} at the end")


async def fake_run(args: argparse.Namespace) -> None:
    """The fake fleet, direct and through the gateway."""
    nodes, _ = fake_fleet(args)
    gateway, url = start_gateway({n: p.url for n, p in nodes.items()}, PROFILES)
    try:
        direct = Target(("m1", "m2"), (nodes["a"].url, nodes["b"].url), 64)
        through = Target(("m1", "m2"), (url,), 64)
        peer, run = await phase("fake", gateway, through, direct, args.clients, args.duration)
        report([(peer, None, args.clients), (run, peer, args.clients)])
    finally:
        stop_all(gateway, list(nodes.values()))


async def chaos_run(args: argparse.Namespace) -> tuple[Run, Run | None, int]:
    """The same load with node a killed (SIGKILL) at a third and restarted at two thirds."""
    nodes, configs = fake_fleet(args)
    gateway, url = start_gateway({n: p.url for n, p in nodes.items()}, PROFILES)
    run = Run("fake, through the gateway, node a SIGKILLed at 1/3, restarted at 2/3")
    try:
        duration = args.chaos_duration
        killer = asyncio.create_task(chaos(nodes["a"], configs["a"], duration))
        stop = asyncio.Event()
        sampler = asyncio.create_task(sample_rss(gateway.pid, run, stop))
        await drive(Target(("m1", "m2"), (url,), 64), args.clients, duration, run, direct=False)
        stop.set()
        await sampler
        nodes["a"] = await killer
    finally:
        stop_all(gateway, list(nodes.values()))
    return run, None, args.clients


async def real_run(args: argparse.Namespace) -> list[tuple[Run, Run | None, int]]:
    """A shorter run against the real default model (engine harness), 16 tokens per reply."""
    model = "smollm2-135m-instruct"
    for _ in range(3):  # a free port can be taken by another program while the engine imports
        node = start_neuron_process(None, harness="engine", startup_timeout_s=600)
        status = httpx.get(f"{node.url}/status", timeout=60)
        if status.status_code == 200 and status.json().get("harness") == "engine":
            break
        node.stop()
    else:
        raise RuntimeError("could not start an engine neuron")
    httpx.post(f"{node.url}/models/load", json={"model": model}, timeout=600).raise_for_status()
    gateway, url = start_gateway({"engine": node.url}, [{"id": model}])
    try:
        peer, run = await phase(
            "smollm2-135m (engine, CPU)",
            gateway,
            Target((model, model), (url,), 16),
            Target((model, model), (node.url, node.url), 16),
            args.real_clients,
            args.real_duration,
        )
    finally:
        stop_all(gateway, [node])
    return [(peer, None, args.real_clients), (run, peer, args.real_clients)]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=300, help="0: no fake-fleet run")
    parser.add_argument("--duration", type=float, default=120.0, help="seconds of gateway load")
    parser.add_argument("--tokens-per-s", type=float, default=50.0, help="the fake's token rate")
    parser.add_argument("--chaos", action="store_true", help="also a run with node a killed")
    parser.add_argument("--chaos-duration", type=float, default=60.0, help="seconds")
    parser.add_argument("--real-clients", type=int, default=0, help="clients on the real model")
    parser.add_argument("--real-duration", type=float, default=40.0, help="seconds")
    asyncio.run(main(parser.parse_args()))

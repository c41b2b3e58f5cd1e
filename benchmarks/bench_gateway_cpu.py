"""The gateway's CPU per request and per relayed token, from its own /proc counters.

One fake neuron streams at 20,000 tok/s (`--token-rate`); a `cortex-gateway` relays sequential
streamed chats of 8 and of 128 content tokens, alternating round by round. Per token is the
slope between the two lengths, per request the intercept. At a rate close to what the gateway
can relay, events pile up while it is busy and are read and written together, which makes a
token cheaper the slower the gateway is; at a lower rate (2,000 tok/s here) every token is its
own read and write, for both gateways alike. With `--baseline-src DIR` (the `src/` of another
checkout, e.g. from `git archive`) a gateway of that code runs in the same rounds, for a paired
comparison.

    python benchmarks/bench_gateway_cpu.py [--requests 300] [--rounds 3] [--baseline-src DIR]
        [--token-rate 20000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

import httpx
from bench_gateway import start_gateway  # the sibling script

from cortex.testing import start_neuron_process

MODEL = "bench"
SHORT, LONG = 8, 128  # content tokens: the fake says 7 words, then echoes the prompt's


def run(client: httpx.Client, url: str, tokens: int, requests: int) -> None:
    words = " ".join(["w"] * (tokens - 7))
    body = {"model": MODEL, "messages": [{"role": "user", "content": words}], "stream": True}
    for _ in range(requests):
        with client.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
            for _ in response.iter_raw():
                pass


def main(args: argparse.Namespace) -> None:
    fake = {"tokens_per_s": args.token_rate, "models": [{"id": MODEL, "context_length": 8192}]}
    neuron = start_neuron_process({"name": "bench", "fake": fake, "preload": [MODEL]})
    variants = [("this", None)] + ([("baseline", args.baseline_src)] if args.baseline_src else [])
    gateways = {name: start_gateway(neuron.url, src) for name, src in variants}
    per: dict[tuple[str, int], list[float]] = {}
    try:
        with httpx.Client(timeout=60) as client:
            for gateway in gateways.values():
                run(client, gateway.url, SHORT, 30)  # warm up
            for _ in range(args.rounds):
                for name, gateway in gateways.items():
                    for tokens in (SHORT, LONG):
                        before = gateway.cpu_s()
                        run(client, gateway.url, tokens, args.requests)
                        spent = (gateway.cpu_s() - before) / args.requests
                        per.setdefault((name, tokens), []).append(spent)
    finally:
        for gateway in gateways.values():
            gateway.stop()
        neuron.stop()
    print("| gateway | CPU ms / 8-token stream | CPU ms / 128-token stream "
          "| CPU µs / token | CPU ms / request (no tokens) |")  # fmt: skip
    print("|---|---|---|---|---|")
    for name, _ in variants:
        short, long = (statistics.median(per[(name, t)]) for t in (SHORT, LONG))
        token = (long - short) / (LONG - SHORT)
        request = short - SHORT * token
        print(
            f"| {name} | {short * 1e3:.3f} | {long * 1e3:.3f} | {token * 1e6:.1f} | "
            f"{request * 1e3:.3f} |"
        )
    print(
        f"\nload average {os.getloadavg()[0]:.1f}; medians of {args.rounds} rounds; the fake at "
        f"{args.token_rate:,.0f} tok/s"
    )
    print("command: python benchmarks/bench_gateway_cpu.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=300, help="streams per length and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline-src", help="src/ of another checkout, run alongside")
    parser.add_argument(
        "--token-rate",
        type=float,
        default=20000.0,
        help="the fake's tok/s per stream (at a rate the gateway keeps up with, every token "
        "is one read and one write: the per-token cost without batching)",
    )
    main(parser.parse_args())

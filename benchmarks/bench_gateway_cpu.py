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
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from cortex.testing import free_port, start_neuron_process, toml_dumps

MODEL = "bench"
SHORT, LONG = 8, 128  # content tokens: the fake says 7 words, then echoes the prompt's


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_gateway(neuron_url: str, src: str | None) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    config = {
        "gateway": {"listen": f"127.0.0.1:{port}", "metrics_listen": f"127.0.0.1:{free_port()}"},
        "neurons": [{"name": "bench", "endpoint": neuron_url}],
    }
    path = Path(tempfile.mkdtemp(prefix="cpu-")) / "cortex.toml"
    path.write_text(toml_dumps(config))
    env = {**os.environ, **({"PYTHONPATH": src} if src else {})}
    command = [sys.executable, "-m", "cortex", "serve", "--config", str(path)]
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health").json()["nodes_up"] == 1:
                return process, url
        except (httpx.TransportError, ValueError, KeyError):
            pass
        time.sleep(0.1)
    process.kill()
    raise RuntimeError("cortex-gateway did not start")


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
            for _, url in gateways.values():
                run(client, url, SHORT, 30)  # warm up
            for _ in range(args.rounds):
                for name, (process, url) in gateways.items():
                    for tokens in (SHORT, LONG):
                        before = cpu_s(process.pid)
                        run(client, url, tokens, args.requests)
                        spent = (cpu_s(process.pid) - before) / args.requests
                        per.setdefault((name, tokens), []).append(spent)
    finally:
        for process, _ in gateways.values():
            process.terminate()
            process.wait(30)
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

